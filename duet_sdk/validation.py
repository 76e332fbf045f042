"""Shared checks that config dataclasses run in ``__post_init__``."""

from __future__ import annotations

from duet_sdk.errors import ConfigError


def require_int(field: str, value: object, minimum: int | None = None) -> None:
    """Raise ``ConfigError`` naming ``field`` unless ``value`` is an int (not a bool), at least ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
        raise ConfigError(field, "an int" if minimum is None else f"an int >= {minimum}", value)


def require_number(field: str, value: object, minimum: float = 0.0, expected: str = "a number >= 0") -> None:
    """Raise ``ConfigError`` naming ``field`` unless ``value`` is an int or float (not a bool) >= ``minimum``."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= minimum:
        raise ConfigError(field, expected, value)
