"""A trained SIDE codec: codebooks (L, K, d), its encoder/decoder modules, checked helpers and metrics."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from duet_sdk.errors import ConfigError, DataError
from duet_sdk.side.config import SideConfig
from duet_sdk.side.modules import SideDecoder, SideEncoder


def bytes_per_user(levels: int, codebook_size: int) -> int:
    """Stored bytes per user: ``levels * ceil(log2(codebook_size) / 8)`` (whole bytes per code)."""
    bits = (codebook_size - 1).bit_length()  # ceil(log2(K)) for K >= 2
    return levels * -(-bits // 8)


def compression_ratio_vs_fp16(dim: int, levels: int, codebook_size: int) -> float:
    """FP16 bytes of a d-dim embedding (2 * d) over the codes' bytes."""
    return 2 * dim / bytes_per_user(levels, codebook_size)


def check_embeddings(x: object, dim: int | None = None, what: str = "embeddings") -> torch.Tensor:
    """``x`` as a (N, d) float32 tensor; a non-tensor, wrong rank or dim, or a non-finite value is a DataError."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise DataError(f"{what}: expected a floating-point torch.Tensor, got {getattr(x, 'dtype', type(x))}")
    if x.dim() != 2:
        raise DataError(f"{what}: expected shape (N, d), got {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise DataError(f"{what}: expected dim {dim}, got shape {tuple(x.shape)}")
    bad_rows = (~torch.isfinite(x)).any(1)
    if bad_rows.any():
        raise DataError(f"{what}: expected finite values, got NaN/Inf in {int(bad_rows.sum())} rows "
                        f"(first: {int(bad_rows.nonzero()[0])})")
    return x.to(torch.float32)


@dataclass(frozen=True, eq=False)
class SideCodec:
    """Residual-quantization codec: ``codebooks`` (L, K, d) float32 trained under ``config``."""

    config: SideConfig
    codebooks: torch.Tensor

    def __post_init__(self) -> None:
        c = self.config
        books = self.codebooks
        if not isinstance(books, torch.Tensor) or books.dtype != torch.float32 or books.dim() != 3 \
                or books.shape[:2] != (c.levels, c.codebook_size) or books.shape[2] < 1:
            raise ConfigError("SideCodec.codebooks", f"a float32 tensor of shape ({c.levels}, {c.codebook_size}, d)",
                              getattr(books, "shape", books))
        if not torch.isfinite(books).all():
            raise ConfigError("SideCodec.codebooks", "finite values", "NaN/Inf")

    @property
    def dim(self) -> int:
        return self.codebooks.shape[2]

    def encoder(self) -> SideEncoder:
        """The exportable encoder (beam width from the config), in eval mode."""
        return SideEncoder(self.codebooks, self.config.beam_width).eval()

    def decoder(self) -> SideDecoder:
        """The exportable rule-based decoder, in eval mode."""
        return SideDecoder(self.codebooks).eval()

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, d) float -> codes (N, L) int64; DataError on a dim mismatch or non-finite values."""
        return self.encoder()(check_embeddings(x, self.dim))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (N, L) integer in [0, K) -> (N, d) float32; DataError otherwise."""
        levels, size = self.config.levels, self.config.codebook_size
        if not isinstance(codes, torch.Tensor) or codes.is_floating_point() or codes.is_complex() \
                or codes.dtype == torch.bool:
            raise DataError(f"codes: expected an integer torch.Tensor, got {getattr(codes, 'dtype', type(codes))}")
        if codes.dim() != 2 or codes.shape[1] != levels:
            raise DataError(f"codes: expected shape (N, {levels}), got {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= size):
            raise DataError(f"codes: expected values in [0, {size}), got [{int(codes.min())}, {int(codes.max())}]")
        return self.decoder()(codes.to(torch.int64))

    def metrics(self, x: torch.Tensor) -> dict:
        """Compression and reconstruction quality of the codec on embeddings x (N, d) (JSON-able)."""
        x = check_embeddings(x, self.dim)
        codes = self.encode(x)
        x_hat = self.decode(codes)
        energy = (x.double() ** 2).sum()
        if energy == 0:
            raise DataError("embeddings: relative_mse is undefined for all-zero embeddings")
        levels, size = self.config.levels, self.config.codebook_size
        return {
            "compression_ratio_vs_fp16": compression_ratio_vs_fp16(self.dim, levels, size),
            "bytes_per_user": bytes_per_user(levels, size),
            "relative_mse": float(((x - x_hat).double() ** 2).sum() / energy),
            "mean_cosine": float(F.cosine_similarity(x.double(), x_hat.double(), dim=1).mean()),
            "code_usage": [float((torch.bincount(codes[:, level], minlength=size) > 0).double().mean())
                           for level in range(levels)],
        }
