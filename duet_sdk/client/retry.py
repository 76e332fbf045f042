"""Retry transient server errors (``Unavailable``, ``DeadlineExceeded``) with exponential backoff and jitter.

Attempt ``k`` (0-based) that fails transiently waits ``delay(k)`` in [d/2, d], d = min(max_backoff_s,
backoff_s * 2**k), then tries again, at most ``retries`` times; any other error is raised at once.

Example:
    >>> policy = RetryPolicy(retries=3, backoff_s=0.05, max_backoff_s=1.0)
    >>> call_with_retry(lambda: client.infer(...), policy)
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from duet_sdk.client.errors import TRANSIENT
from duet_sdk.validation import require_int, require_number

R = TypeVar("R")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry transient errors."""

    retries: int = 3
    backoff_s: float = 0.05
    max_backoff_s: float = 1.0

    def __post_init__(self) -> None:
        require_int("retries", self.retries, 0)
        require_number("backoff_s", self.backoff_s)
        require_number("max_backoff_s", self.max_backoff_s, self.backoff_s, f"a number >= backoff_s {self.backoff_s}")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based): in [d/2, d], d doubling up to the cap."""
        ceiling = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        return ceiling * (0.5 + 0.5 * (rng or random).random())


def call_with_retry(fn: Callable[[], R], policy: RetryPolicy,
                    sleep: Callable[[float], None] = time.sleep) -> R:
    """``fn()``, retried on ``Unavailable``/``DeadlineExceeded`` up to ``policy.retries`` times."""
    for attempt in range(policy.retries + 1):
        try:
            return fn()
        except TRANSIENT:
            if attempt == policy.retries:
                raise
        sleep(policy.delay(attempt))
    raise AssertionError("unreachable")


async def acall_with_retry(fn: Callable[[], Awaitable[R]], policy: RetryPolicy,
                           sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> R:
    """``await fn()``, retried like ``call_with_retry`` without blocking the event loop."""
    for attempt in range(policy.retries + 1):
        try:
            return await fn()
        except TRANSIENT:
            if attempt == policy.retries:
                raise
        await sleep(policy.delay(attempt))
    raise AssertionError("unreachable")
