"""Records kept in online storage."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StoredCodes:
    """One user's SIDE codes per embedding (``{"click": (c0, c1, ...), ...}``), the model version that
    produced them and when (Unix seconds, float)."""

    user_id: str
    codes: dict[str, tuple[int, ...]]
    model_version: str
    produced_at: float
