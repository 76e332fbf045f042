"""train_side_codec: input checks, determinism, levels that pay off, and dead-code reseeding."""

import dataclasses

import pytest
import torch

from duet_sdk.errors import DataError
from duet_sdk.side import SideCodec, SideConfig, train_side_codec
from duet_sdk.side.kmeans import code_counts, nearest, reseed_dead_codes

SMALL = SideConfig(levels=2, codebook_size=16)


def usage_counts(codec, x):
    """Training points per code, (L, K): what the trainer's dead-code check counts."""
    codes = codec.encode(x)
    return torch.stack([torch.bincount(codes[:, level], minlength=codec.config.codebook_size)
                        for level in range(codec.config.levels)])


@pytest.mark.parametrize("x, message", [
    (torch.full((64, 4), float("nan")), "expected finite values"),
    (torch.zeros(64, 4).index_fill_(0, torch.tensor([5]), float("inf")), r"NaN/Inf in 1 rows \(first: 5\)"),
    (torch.zeros(64), r"expected shape \(N, d\)"),
    (torch.zeros(4, 16, 4), r"expected shape \(N, d\)"),
    (torch.zeros(64, 4, dtype=torch.int32), "floating-point"),
    ("embeddings", "floating-point"),
])
def test_bad_embeddings_raise_data_error_naming_the_problem(x, message):
    with pytest.raises(DataError, match=message):
        train_side_codec(x, SMALL)


def test_fewer_embeddings_than_codewords_is_a_data_error():
    with pytest.raises(DataError, match="15 rows cannot fill a codebook of codebook_size=16"):
        train_side_codec(torch.randn(15, 4), SMALL)


def test_training_is_deterministic_for_a_seed(clustered):
    x = clustered(600, 8, seed=0)
    first, again = train_side_codec(x, SMALL), train_side_codec(x, SMALL)
    other = train_side_codec(x, dataclasses.replace(SMALL, seed=1))
    assert torch.equal(first.codebooks, again.codebooks)
    assert not torch.equal(first.codebooks, other.codebooks)


def test_reconstruction_error_decreases_as_levels_are_added(clustered):
    config = SideConfig(levels=4, codebook_size=16)
    codec = train_side_codec(clustered(4096, 16, seed=0), config)
    held_out = clustered(1024, 16, seed=1)
    # Levels are trained one after another on residuals, so the first l codebooks are the l-level codec.
    errors = [SideCodec(dataclasses.replace(config, levels=n), codec.codebooks[:n]).metrics(held_out)["relative_mse"]
              for n in range(1, 5)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.5 * errors[0], errors  # the extra levels do real work


def near_duplicates() -> torch.Tensor:
    """400 points at only 4 places (half exact copies, half within 1e-3), for 16 codes a level: k-means
    alone tends to leave codes empty, yet 200 distinct points can give every code one."""
    g = torch.Generator().manual_seed(0)
    x = (5 * torch.randn(4, 8, generator=g)).repeat_interleave(100, 0)
    x[::2] += 1e-3 * torch.randn(200, 8, generator=g)
    return x


def test_reseeding_revives_codes_that_no_point_uses():
    # Deterministic dead codes: 8 of 16 centroids sit far away from every point.
    x = near_duplicates()
    g = torch.Generator().manual_seed(1)
    centroids = torch.cat([x[torch.randperm(len(x), generator=g)[:8]], 1e3 + torch.randn(8, 8, generator=g)])
    assert (code_counts(nearest(x, centroids)[0], 16) == 0).sum() >= 8  # dead before
    revived = reseed_dead_codes(x, centroids, min_usage=1)
    assert (code_counts(nearest(x, revived)[0], 16) >= 1).all()  # 200 distinct points can give every code one


def test_trained_codec_leaves_no_code_dead_on_near_duplicate_data():
    x = near_duplicates()
    reseeded = usage_counts(train_side_codec(x, SideConfig(levels=2, codebook_size=16, min_code_usage=1)), x)
    assert (reseeded >= 1).all(), reseeded


def test_reseeding_never_leaves_more_dead_codes_than_plain_k_means(clustered):
    # min_code_usage 10 with isolated 3-point groups: the largest-error rule cannot always absorb them
    # (they keep winning reseeds), but the trainer keeps the round with the fewest dead codes. One level:
    # deeper levels see different residuals with and without reseeding, so only level 0 compares.
    g = torch.Generator().manual_seed(0)
    groups = [sign * 30 + 0.1 * torch.randn(3, 8, generator=g) for sign in (1, -1)]
    x = torch.cat([clustered(600, 8, seed=0), *groups])
    config = SideConfig(levels=1, codebook_size=16, min_code_usage=10)
    plain = usage_counts(train_side_codec(x, dataclasses.replace(config, min_code_usage=0)), x)
    reseeded = usage_counts(train_side_codec(x, config), x)
    assert (plain < 10).sum() > 0, "no code under-used without reseeding: this test would prove nothing"
    assert (reseeded < 10).sum() <= (plain < 10).sum()
