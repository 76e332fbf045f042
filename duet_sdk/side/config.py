"""Config of a SIDE codec: residual quantization of user embeddings into ``levels`` codes per user."""

from __future__ import annotations

from dataclasses import dataclass

from duet_sdk.errors import ConfigError


def _int_at_least(field: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"SideConfig.{field}", f"an int >= {minimum}", value)


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
        _int_at_least("levels", self.levels, 1)
        _int_at_least("codebook_size", self.codebook_size, 2)
        _int_at_least("kmeans_iters", self.kmeans_iters, 1)
        _int_at_least("beam_width", self.beam_width, 1)
        _int_at_least("min_code_usage", self.min_code_usage, 0)
        _int_at_least("seed", self.seed, 0)
        if self.seed >= 2**32:
            raise ConfigError("SideConfig.seed", "an int < 2**32", self.seed)
