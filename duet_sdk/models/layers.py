"""Small building blocks: RMSNorm, MLP, the transformer FFN and the DCNv2 cross network."""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * weight`` over the last dim.

    Args:
        dim: size of the last dim. Input (..., dim) -> output (..., dim).
    Example:
        >>> RMSNorm(8)(torch.ones(2, 8)).shape
        torch.Size([2, 8])
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # (..., 1)
        return x * scale * self.weight


class MLP(nn.Module):
    """Linear layers with SiLU between them (none after the last).

    Args:
        dims: (in, hidden..., out). Input (..., in) -> output (..., out).
    Example:
        >>> MLP((4, 16, 2))(torch.zeros(3, 4)).shape
        torch.Size([3, 2])
    """

    def __init__(self, dims: tuple[int, ...], dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(d_in, d_out))
            if i < len(dims) - 2:
                layers.append(nn.SiLU())
                if dropout:
                    layers.append(nn.Dropout(dropout))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FeedForward(nn.Module):
    """Position-wise transformer FFN: ``Linear(d, mult*d) -> SiLU -> Linear(mult*d, d)``. (B, L, d) -> (B, L, d)."""

    def __init__(self, d_model: int, mult: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.mlp = MLP((d_model, mult * d_model, d_model), dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class CrossNetV2(nn.Module):
    """DCNv2 cross layers: ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l``.

    Args:
        dim: feature width; num_layers: number of cross layers. (B, dim) -> (B, dim).
    Example:
        >>> CrossNetV2(8, 2)(torch.randn(4, 8)).shape
        torch.Size([4, 8])
    """

    def __init__(self, dim: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x  # (B, dim)
        return x
