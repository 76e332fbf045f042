"""Config of a SIDE codec: residual quantization of user embeddings into ``levels`` codes per user."""

from __future__ import annotations

from dataclasses import dataclass

from duet_sdk.errors import ConfigError
from duet_sdk.validation import require_int


@dataclass(frozen=True)
class SideConfig:
    """``levels`` codebooks of ``codebook_size`` codewords each, trained by k-means on residuals.

    ``beam_width`` 1 encodes greedily; more runs a beam search over levels. A code assigned fewer than
    ``min_code_usage`` training points is dead and reseeded (0 disables reseeding). ``seed`` fixes training.
    """

    levels: int = 4
    codebook_size: int = 256
    kmeans_iters: int = 25
    beam_width: int = 1
    min_code_usage: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        for name, minimum in (("levels", 1), ("codebook_size", 2), ("kmeans_iters", 1), ("beam_width", 1),
                              ("min_code_usage", 0), ("seed", 0)):
            require_int(f"SideConfig.{name}", getattr(self, name), minimum)
        if self.seed >= 2**32:
            raise ConfigError("SideConfig.seed", "an int < 2**32", self.seed)
