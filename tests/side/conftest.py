"""Shared data of the SIDE tests."""

import pytest
import torch

from duet_sdk.side import SideConfig, train_side_codec


def make_clustered(n: int, dim: int, seed: int) -> torch.Tensor:
    """(n, dim) points with structure at three scales: 16 centres (spread 4), 8 sub-centres each (spread 1)
    and noise (0.25), so each residual level has something left to capture."""
    structure = torch.Generator().manual_seed(1234)  # the same mixture for every seed
    centres = 4 * torch.randn(16, dim, generator=structure)
    offsets = torch.randn(16, 8, dim, generator=structure)
    g = torch.Generator().manual_seed(seed)
    i, j = torch.randint(16, (n,), generator=g), torch.randint(8, (n,), generator=g)
    return centres[i] + offsets[i, j] + 0.25 * torch.randn(n, dim, generator=g)


@pytest.fixture(scope="session")
def clustered():
    return make_clustered


@pytest.fixture(scope="session")
def small_codec():
    """A 3 x 16 codec of 8-dim embeddings, trained on 1024 clustered points."""
    return train_side_codec(make_clustered(1024, 8, seed=0), SideConfig(levels=3, codebook_size=16))


@pytest.fixture(scope="session")
def separated_codebooks():
    """(3, 8, 16) codebooks shrinking 10x per level, so that at every level the codewords are further apart
    than twice the most the later levels can add: greedy encoding of any codeword sum recovers its codes."""
    g = torch.Generator().manual_seed(7)
    books = torch.randn(3, 8, 16, generator=g) * torch.tensor([1.0, 0.1, 0.01]).view(3, 1, 1)
    for level in range(3):
        tail = sum(books[m].norm(dim=1).max() for m in range(level + 1, 3))
        assert torch.pdist(books[level]).min() > 2 * tail  # the premise of the round-trip tests
    return books
