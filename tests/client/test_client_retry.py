"""Retry policy: transient errors only, gives up after ``retries``, backoff doubles with jitter up to a cap."""

import asyncio
import random

import pytest

from duet_sdk.client.errors import DeadlineExceeded, ServerError, Unavailable
from duet_sdk.client.retry import RetryPolicy, acall_with_retry, call_with_retry
from duet_sdk.errors import ConfigError


def _flaky(failures, result="ok"):
    """A function raising ``failures`` in turn, then returning ``result``; counts its calls."""
    failures = list(failures)

    def fn():
        fn.calls += 1
        if failures:
            raise failures.pop(0)
        return result

    fn.calls = 0
    return fn


def test_retries_transient_errors_then_succeeds():
    sleeps = []
    fn = _flaky([Unavailable("down"), DeadlineExceeded("slow")])
    assert call_with_retry(fn, RetryPolicy(retries=3), sleep=sleeps.append) == "ok"
    assert fn.calls == 3 and len(sleeps) == 2


def test_gives_up_after_retries_with_the_last_error():
    fn = _flaky([Unavailable(f"down {i}") for i in range(10)])
    with pytest.raises(Unavailable, match="down 3"):
        call_with_retry(fn, RetryPolicy(retries=3), sleep=lambda s: None)
    assert fn.calls == 4


def test_other_errors_raise_at_once():
    for error in (ServerError("bad input", "StatusCode.INVALID_ARGUMENT"), ValueError("bug")):
        fn = _flaky([error])
        with pytest.raises(type(error)):
            call_with_retry(fn, RetryPolicy(retries=3), sleep=lambda s: pytest.fail("must not sleep"))
        assert fn.calls == 1


def test_zero_retries_tries_once():
    fn = _flaky([Unavailable("down")])
    with pytest.raises(Unavailable):
        call_with_retry(fn, RetryPolicy(retries=0), sleep=lambda s: None)
    assert fn.calls == 1


def test_backoff_doubles_with_jitter_up_to_the_cap():
    policy, sleeps = RetryPolicy(retries=6, backoff_s=0.05, max_backoff_s=0.4), []
    with pytest.raises(Unavailable):
        call_with_retry(_flaky([Unavailable("down")] * 10), policy, sleep=sleeps.append)
    ceilings = [0.05, 0.1, 0.2, 0.4, 0.4, 0.4]
    assert len(sleeps) == 6
    assert all(c / 2 <= s <= c for s, c in zip(sleeps, ceilings))
    assert sleeps[:4] == sorted(sleeps[:4])  # equal jitter: each wait >= the previous ceiling >= previous wait
    rng = random.Random(0)
    assert len({policy.delay(0, rng) for _ in range(20)}) > 1  # jittered, not fixed


def test_async_retry_matches_the_sync_policy():
    sleeps = []

    async def sleep(seconds):
        sleeps.append(seconds)

    fn = _flaky([Unavailable("down")])

    async def call():
        return fn()

    assert asyncio.run(acall_with_retry(call, RetryPolicy(retries=2), sleep=sleep)) == "ok"
    assert fn.calls == 2 and len(sleeps) == 1


@pytest.mark.parametrize("kwargs, field", [
    ({"retries": -1}, "retries"), ({"backoff_s": -0.1}, "backoff_s"),
    ({"backoff_s": 0.5, "max_backoff_s": 0.1}, "max_backoff_s"),
])
def test_invalid_policy_names_the_field(kwargs, field):
    with pytest.raises(ConfigError) as info:
        RetryPolicy(**kwargs)
    assert info.value.field == field
