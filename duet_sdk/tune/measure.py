"""Load on one Triton model, measured the way ``perf_analyzer`` does: a warm-up, then fixed measurement
windows until the last ``stable_windows`` agree within ``stability`` (both requests/s and mean latency,
each within ±10 % of their mean over those windows), at most ``max_windows`` windows; a load that never
settles is reported with ``stable=False``, never dropped or passed off as stable.

Two kinds of load, as perf_analyzer's ``--concurrency-range`` and ``--request-rate-range``:

- ``concurrency``: C requests always in flight (each answer sends the next one), closed loop;
- ``rate``: requests sent at R per second on a fixed schedule (open loop, at most ``max_in_flight``).

Latency is client-side, from send to answer (gRPC, tritonclient's async API). A window counts the
requests answered within it; the reported figures pool the stable (or last) windows.

Example:
    >>> m = measure_concurrency("127.0.0.1:8001", "duet_upstream", requests, 4, MeasureConfig(window_s=1))
    >>> m.rps, m.p99_ms, m.stable
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from duet_sdk.errors import ConfigError
from duet_sdk.validation import require_int


@dataclass(frozen=True)
class MeasureConfig:
    """Windows and stability of one measurement (perf_analyzer's defaults are 5 s windows, 10 %, 3 windows)."""

    warmup_s: float = 1.0
    window_s: float = 2.0
    max_windows: int = 10
    stable_windows: int = 3
    stability: float = 0.10
    max_in_flight: int = 256
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("warmup_s", "window_s", "stability", "timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 <= value < float("inf")) or (
                name == "window_s" and value == 0
            ):
                raise ConfigError(f"measure.{name}", "a finite number >= 0 (window_s > 0)", value)
        require_int("measure.stable_windows", self.stable_windows, 1)
        require_int("measure.max_in_flight", self.max_in_flight, 1)
        if not isinstance(self.max_windows, int) or self.max_windows < self.stable_windows:
            raise ConfigError(
                "measure.max_windows", f"an int >= stable_windows ({self.stable_windows})", self.max_windows
            )


@dataclass(frozen=True)
class Measurement:
    """One load point: ``mode`` ("concurrency" or "rate") at ``load``; figures pooled over the reported windows."""

    model: str
    mode: str
    load: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    requests: int
    errors: int
    stable: bool
    windows: int
    window_rps: list[float] = field(default_factory=list)
    first_error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class _Recorder:
    """Thread-safe (answer time, latency s) pairs and errors."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done: list[tuple[float, float]] = []
        self.errors = 0
        self.first_error: str | None = None
        self.in_flight = 0
        self.idle = threading.Condition(self.lock)

    def started(self) -> None:
        with self.lock:
            self.in_flight += 1

    def finished(self, sent: float, error) -> None:
        now = time.perf_counter()
        with self.lock:
            self.in_flight -= 1
            if error is None:
                self.done.append((now, now - sent))
            else:
                self.errors += 1
                self.first_error = self.first_error or str(error)[:500]
            self.idle.notify_all()

    def between(self, start: float, end: float) -> np.ndarray:
        with self.lock:
            return np.array([lat for t, lat in self.done if start <= t < end], dtype=np.float64)

    def drain(self, timeout_s: float) -> None:
        deadline = time.perf_counter() + timeout_s
        with self.lock:
            while self.in_flight and time.perf_counter() < deadline:
                self.idle.wait(deadline - time.perf_counter())


def _stable(rps: Sequence[float], means: Sequence[float], stability: float) -> bool:
    for values in (rps, means):
        mean = float(np.mean(values))
        if mean <= 0 or any(abs(v - mean) > stability * mean for v in values):
            return False
    return True


def _windows(
    recorder: _Recorder, model: str, mode: str, load: float, config: MeasureConfig, stop: threading.Event
) -> Measurement:
    """Warm up, then measure windows until stable or ``max_windows``; sets ``stop`` when done."""
    time.sleep(config.warmup_s)
    bounds, lats = [], []
    start = time.perf_counter()
    stable = False
    for k in range(config.max_windows):
        end = start + config.window_s
        time.sleep(max(0.0, end - time.perf_counter()))
        bounds.append((start, end))
        lats.append(recorder.between(start, end))
        start = end
        if k + 1 >= config.stable_windows:
            recent = lats[-config.stable_windows :]
            rps = [len(x) / config.window_s for x in recent]
            means = [float(x.mean()) if len(x) else 0.0 for x in recent]
            if _stable(rps, means, config.stability):
                stable = True
                break
    stop.set()
    recorder.drain(config.timeout_s)
    recent = lats[-config.stable_windows :]
    pooled = np.concatenate(recent) * 1e3 if recent else np.zeros(0)
    pct = np.percentile(pooled, [50, 90, 99]) if len(pooled) else [float("nan")] * 3
    return Measurement(
        model,
        mode,
        float(load),
        len(pooled) / (len(recent) * config.window_s),
        float(pct[0]),
        float(pct[1]),
        float(pct[2]),
        float(pooled.mean()) if len(pooled) else float("nan"),
        len(pooled),
        recorder.errors,
        stable,
        len(lats),
        [round(len(x) / config.window_s, 2) for x in lats],
        recorder.first_error,
    )


def _client(url: str):
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(url)


def measure_concurrency(
    url: str, model: str, requests: Sequence[list], concurrency: int, config: MeasureConfig | None = None
) -> Measurement:
    """``concurrency`` requests in flight on ``model`` (closed loop), cycling through ``requests``
    (each a list of ``tritonclient.grpc.InferInput``)."""
    require_int("concurrency", concurrency, 1)
    if not requests:
        raise ConfigError("requests", "at least one request", 0)
    config = config or MeasureConfig()
    recorder, stop = _Recorder(), threading.Event()
    cycle, cycle_lock = itertools.cycle(requests), threading.Lock()
    with _client(url) as client:

        def send() -> None:
            with cycle_lock:
                inputs = next(cycle)
            sent = time.perf_counter()
            recorder.started()

            def answered(result, error) -> None:
                recorder.finished(sent, error)
                if not stop.is_set():
                    send()

            client.async_infer(model, inputs, answered, client_timeout=config.timeout_s)

        for _ in range(concurrency):
            send()
        return _windows(recorder, model, "concurrency", concurrency, config, stop)


def measure_rate(
    url: str, model: str, requests: Sequence[list], rate: float, config: MeasureConfig | None = None
) -> Measurement:
    """Requests on ``model`` at ``rate`` per second on a fixed schedule (open loop); a request is skipped,
    and the achieved rate falls below ``rate``, when ``max_in_flight`` are outstanding."""
    if not (isinstance(rate, int | float) and 0 < rate < float("inf")):
        raise ConfigError("rate", "requests per second > 0", rate)
    if not requests:
        raise ConfigError("requests", "at least one request", 0)
    config = config or MeasureConfig()
    recorder, stop = _Recorder(), threading.Event()
    with _client(url) as client:

        def schedule() -> None:
            t0 = time.perf_counter()
            for i, inputs in enumerate(itertools.cycle(requests)):
                if stop.is_set():
                    return
                time.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
                if recorder.in_flight >= config.max_in_flight:
                    continue
                sent = time.perf_counter()
                recorder.started()
                client.async_infer(
                    model,
                    inputs,
                    lambda result, error, sent=sent: recorder.finished(sent, error),
                    client_timeout=config.timeout_s,
                )

        sender = threading.Thread(target=schedule, daemon=True)
        sender.start()
        try:
            return _windows(recorder, model, "rate", rate, config, stop)
        finally:
            stop.set()
            sender.join(config.timeout_s)
