"""Training a SIDE codec: one k-means codebook per level, each fit on the previous levels' residuals."""

from __future__ import annotations

import numpy as np
import torch

from duet_sdk.errors import DataError
from duet_sdk.side.codec import SideCodec, check_embeddings
from duet_sdk.side.config import SideConfig
from duet_sdk.side.kmeans import nearest, train_codebook


def train_side_codec(embeddings: torch.Tensor, config: SideConfig = SideConfig()) -> SideCodec:
    """embeddings (N, d) float, N >= codebook_size -> a codec; deterministic for ``config.seed``."""
    x = check_embeddings(embeddings)
    if len(x) < config.codebook_size:
        raise DataError(f"embeddings: {len(x)} rows cannot fill a codebook of codebook_size="
                        f"{config.codebook_size} codewords; need at least that many training embeddings")
    rng = np.random.default_rng(config.seed)
    residuals, books = x.detach().cpu().clone(), []
    for _ in range(config.levels):
        book = train_codebook(residuals, config.codebook_size, config.kmeans_iters, config.min_code_usage, rng)
        residuals = residuals - book[nearest(residuals, book)[0]]
        books.append(book)
    return SideCodec(config, torch.stack(books))
