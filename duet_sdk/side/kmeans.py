"""One codebook level: scikit-learn k-means (k-means++ init) on residuals, then dead-code reseeding."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.cluster import KMeans, kmeans_plusplus
from sklearn.exceptions import ConvergenceWarning

FIT_POINTS_PER_CODE = 64  # Lloyd runs on a random subsample of at most this many points per codeword
INIT_POINTS_PER_CODE = 32  # k-means++ seeds on a subsample of at most this many points per codeword
RESEED_ROUNDS = 10  # at most this many reseed-and-refine rounds per level
REFINE_ITERS = 3  # Lloyd iterations over all points after each reseeding
_CHUNK = 65536  # rows per distance matrix in ``nearest`` (bounds memory at _CHUNK x K floats)


def nearest(points: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """points (N, d), centroids (K, d) -> nearest centroid index (N,) int64 and squared distance (N,)."""
    sqnorms = (centroids * centroids).sum(1)
    index = torch.cat([(sqnorms - 2 * chunk @ centroids.T).argmin(1) for chunk in points.split(_CHUNK)])
    return index, ((points - centroids[index]) ** 2).sum(1)


def code_counts(index: torch.Tensor, k: int) -> torch.Tensor:
    """Assignments (N,) -> points per code (k,) int64."""
    return torch.bincount(index, minlength=k)


def lloyd(points: torch.Tensor, centroids: torch.Tensor, iters: int) -> torch.Tensor:
    """``iters`` Lloyd steps over all of points (N, d); a centroid with no points stays where it is."""
    for _ in range(iters):
        index, _ = nearest(points, centroids)
        counts = code_counts(index, len(centroids))
        sums = torch.zeros_like(centroids).index_add_(0, index, points)
        means = sums / counts.clamp(min=1).unsqueeze(1).to(points.dtype)
        centroids = torch.where((counts > 0).unsqueeze(1), means, centroids)
    return centroids


def reseed_dead_codes(points: torch.Tensor, centroids: torch.Tensor, min_usage: int) -> torch.Tensor:
    """Move the codes assigned fewer than ``min_usage`` of points (N, d) onto the points of largest
    quantization error and refine with Lloyd, until none is dead or ``RESEED_ROUNDS`` have run.

    A seed point whose code is dead again a round later (a duplicate of a point another code holds, or an
    isolated point when ``min_usage`` > 1) is not used again, or it could win every round. Returns the
    centroids (K, d) of the round with the fewest dead codes: never more than k-means left.
    """
    spent = torch.zeros(len(points), dtype=torch.bool)
    seeds = dead = torch.zeros(0, dtype=torch.int64)
    best, fewest = centroids, len(centroids) + 1
    for round_ in range(RESEED_ROUNDS + 1):
        index, sqdist = nearest(points, centroids)
        counts = code_counts(index, len(centroids))
        spent[seeds[counts[dead] < min_usage]] = True
        dead = (counts < min_usage).nonzero().squeeze(1)
        if len(dead) < fewest:
            best, fewest = centroids, len(dead)
        if fewest == 0 or round_ == RESEED_ROUNDS:
            break
        seeds = sqdist.masked_fill(spent, -1.0).topk(len(dead)).indices
        centroids = centroids.clone()
        centroids[dead] = points[seeds]
        centroids = lloyd(points, centroids, REFINE_ITERS)
    return best


def train_codebook(points: torch.Tensor, k: int, iters: int, min_usage: int, rng: np.random.Generator) -> torch.Tensor:
    """points (N, d) float32 with N >= k -> codebook (k, d) float32.

    scikit-learn's k-means++ seeds on a random subsample of at most ``INIT_POINTS_PER_CODE * k`` points (in
    float64: its seeding is several times slower on float32), then Lloyd runs on at most
    ``FIT_POINTS_PER_CODE * k``; both subsamples are drawn with ``rng``. Usage and reseeding use all points.
    """
    sample = points[rng.permutation(len(points))[: FIT_POINTS_PER_CODE * k]].numpy()
    seed = int(rng.integers(2**31))
    with warnings.catch_warnings():  # "fewer distinct points than clusters": the reseeding handles it
        warnings.simplefilter("ignore", ConvergenceWarning)
        init, _ = kmeans_plusplus(sample[: INIT_POINTS_PER_CODE * k].astype(np.float64), k, random_state=seed)
        kmeans = KMeans(k, init=init.astype(np.float32), n_init=1, max_iter=iters, random_state=seed).fit(sample)
    centroids = torch.from_numpy(kmeans.cluster_centers_).to(torch.float32)
    return reseed_dead_codes(points, centroids, min_usage)
