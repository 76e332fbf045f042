"""DUET Figure 5 analyses: PCA of ClickAUE vs ConvAUE, and cosine distances between a user's two embeddings."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, d) -> (N, 2) projection on the top two principal components, and their explained variance ratios (2,)."""
    centred = x - x.mean(axis=0, keepdims=True)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2
    return centred @ vt[:2].T, variance[:2] / variance.sum()


def cosine_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) 1 - cos(a_i, b_i) for row-aligned (N, d) arrays (0 = aligned, 1 = orthogonal, 2 = opposed)."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return 1.0 - np.sum(a * b, axis=1) / np.maximum(norms, 1e-12)


def plot_pca(embeddings: dict[str, np.ndarray], path: Path) -> dict[str, list[float]]:
    """Scatter of each embedding's top-2 PCA projection side by side; returns explained variance ratios."""
    fig, axes = plt.subplots(1, len(embeddings), figsize=(5 * len(embeddings), 4.5))
    ratios = {}
    for ax, (name, x) in zip(np.atleast_1d(axes), embeddings.items()):
        projected, ratio = pca_2d(x)
        ratios[name] = [float(r) for r in ratio]
        ax.scatter(projected[:, 0], projected[:, 1], s=4, alpha=0.5)
        ax.set_title(f"{name} (PC1 {ratio[0]:.0%}, PC2 {ratio[1]:.0%} of variance)")
        ax.set_xlabel("PC1")
        ax.set_ylabel("PC2")
    fig.suptitle("PCA of user embeddings (validation users)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return ratios


def plot_cosine_distances(distances: np.ndarray, path: Path, title: str) -> dict[str, float]:
    """Density histogram of cosine distances; returns mean and quartiles."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(distances, bins=40, range=(0.0, 2.0), density=True, alpha=0.8)
    ax.set_xlabel("cosine distance between a user's ClickAUE and ConvAUE")
    ax.set_ylabel("density")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    q1, median, q3 = np.quantile(distances, [0.25, 0.5, 0.75])
    return {"mean": float(distances.mean()), "q1": float(q1), "median": float(median), "q3": float(q3)}
