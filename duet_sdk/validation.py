"""Shared checks that config dataclasses run in ``__post_init__``."""

from __future__ import annotations

from duet_sdk.errors import ConfigError


def require_int(field: str, value: object, minimum: int | None = None) -> None:
    """Raise ``ConfigError`` naming ``field`` unless ``value`` is an int (not a bool), at least ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
        raise ConfigError(field, "an int" if minimum is None else f"an int >= {minimum}", value)
