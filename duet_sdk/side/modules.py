"""Exportable SIDE modules: tensors in, tensors out, codebooks as frozen buffers.

Both trace with ``torch.jit.trace`` and ``torch.export`` with a dynamic batch dimension: loops run over
levels (static), never over data values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SideEncoder(nn.Module):
    """x (B, d) float32 -> codes (B, L) int64 from codebooks (L, K, d).

    ``beam_width`` 1: greedy nearest codeword per level on the running residual. Wider: a beam search over
    levels keeping the ``beam_width`` paths of least residual; the greedy path is scored too, so the
    result's final residual is never larger than greedy's.
    """

    def __init__(self, codebooks: torch.Tensor, beam_width: int = 1) -> None:
        super().__init__()
        self.levels, self.codebook_size, self.dim = codebooks.shape
        self.register_buffer("codebooks", codebooks.detach().to(torch.float32).clone())
        self.register_buffer("sqnorms", (self.codebooks**2).sum(-1), persistent=False)  # (L, K)
        # Paths kept after each level: beam_width, or all paths while there are fewer (static per level).
        self.widths = [min(beam_width, self.codebook_size ** (level + 1)) for level in range(self.levels)]
        self.beam_width = beam_width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes, residual = self._greedy(x)
        if self.beam_width == 1:
            return codes
        beam_codes, beam_residual = self._beam(x)
        better = (beam_residual**2).sum(1) < (residual**2).sum(1)
        return torch.where(better.unsqueeze(1), beam_codes, codes)

    def _greedy(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, d) -> codes (B, L), final residual (B, d)."""
        residual, codes = x, []
        for level in range(self.levels):
            book = self.codebooks[level]
            index = (self.sqnorms[level] - 2 * residual @ book.T).argmin(1)
            residual = residual - book[index]
            codes.append(index)
        return torch.stack(codes, 1), residual

    def _beam(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, d) -> codes (B, L), final residual (B, d) of the best beam path."""
        residual = x.unsqueeze(1)  # (B, P, d): one residual per path, P = 1 before level 0
        codes: list[torch.Tensor] = []  # per level (B, P)
        for level, width in enumerate(self.widths):
            book = self.codebooks[level]
            # Squared residual norm of every (path, codeword) extension: (B, P, K) -> (B, P * K).
            cost = (residual**2).sum(-1, keepdim=True) - 2 * residual @ book.T + self.sqnorms[level]
            best = cost.flatten(1).topk(width, dim=1, largest=False).indices  # (B, W)
            parent, code = best // self.codebook_size, best % self.codebook_size
            residual = residual.gather(1, parent.unsqueeze(-1).expand(-1, -1, self.dim)) - book[code]
            codes = [c.gather(1, parent) for c in codes] + [code]
        pick = (residual**2).sum(-1).argmin(1, keepdim=True)  # (B, 1)
        final = residual.gather(1, pick.unsqueeze(-1).expand(-1, -1, self.dim)).squeeze(1)
        return torch.cat([c.gather(1, pick) for c in codes], 1), final


class SideDecoder(nn.Module):
    """The rule-based decoder: codes (B, L) int64 -> (B, d) float32, the sum over levels l of
    ``codebooks[l, codes[:, l]]``.

    A code outside [0, K) never reads another level's codeword: it is masked (contributes zeros), and
    no index leaves the table, so an exported decoder cannot raise on it either. Callers reject such
    codes before decoding (``SideCodec.decode``, the client, the serving runner); the mask only keeps
    a code that got past them from aliasing.
    """

    def __init__(self, codebooks: torch.Tensor) -> None:
        super().__init__()
        levels, size, _ = codebooks.shape
        self.codebook_size = size
        self.register_buffer("codebooks", codebooks.detach().to(torch.float32).clone())
        self.register_buffer("offsets", torch.arange(levels) * size, persistent=False)  # (L,)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        valid = (codes >= 0) & (codes < self.codebook_size)  # (B, L)
        index = torch.where(valid, codes, torch.zeros_like(codes)) + self.offsets  # (B, L), inside the table
        rows = F.embedding(index, self.codebooks.flatten(0, 1))  # (B, L, d)
        return (rows * valid.unsqueeze(-1).to(rows.dtype)).sum(1)  # (B, d)
