"""Check requests against a ``ServingInterface`` before anything is sent; raise ``InvalidRequest``.

Every error names the offending field by its path, e.g. ``histories[3].streams.click[5].ids``.

Valid, on purpose:
    * a missing or empty stream (sent with length 0);
    * a stream longer than its ``max_len``: only the most recent ``max_len`` events are sent
      (``tensors.recent``), but every given event is still checked;
    * more users than ``max_batch``: the clients split them into several requests;
    * a ranker history (``recent_history``) longer than ``history.max_len``: only the most recent
      ``max_len`` rows are sent; an empty one (sent as one padding slot with length 0).

Example:
    >>> check_histories([history], interface)  # raises InvalidRequest or returns None
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from duet_sdk.client.errors import InvalidRequest
from duet_sdk.interface import Candidates, Event, FreshRequest, ScoreRequest, ServingInterface, UserHistory

TS_MAX = 2**32  # timestamps and request times are Unix seconds in [0, 2**32]
_I64 = np.iinfo(np.int64)
_F32_MAX = float(np.finfo(np.float32).max)  # floats travel as float32: 1e39 is finite here, inf there


def check_histories(histories: Sequence[UserHistory], interface: ServingInterface, field: str = "histories") -> None:
    """Check the users of an ``embed`` call."""
    check_users(histories, field)
    for i, history in enumerate(histories):
        check_history(history, interface, f"{field}[{i}]")


def check_score_requests(requests: Sequence[ScoreRequest], interface: ServingInterface,
                         field: str = "requests") -> None:
    """Check the users of a ``score`` call (stored codes, ``duet_downstream``)."""
    check_users(requests, field)
    for i, request in enumerate(requests):
        path = f"{field}[{i}]"
        _check_type(request, ScoreRequest, path)
        _check_type(request.user_id, str, f"{path}.user_id")
        check_static(request.static_sparse, request.static_dense, interface, path)
        check_codes(request.codes, interface, f"{path}.codes")
        check_candidates(request.candidates, interface, f"{path}.candidates")
        if interface.history is not None:
            if request.recent_history is None:
                raise InvalidRequest(f"{path}.recent_history", f"the user's recent {interface.history.fields} rows, "
                                     "oldest first (the ranker takes a history; () for none)", None)
            check_recent_history(request.recent_history, interface, f"{path}.recent_history")


def check_fresh_requests(requests: Sequence[FreshRequest], interface: ServingInterface,
                         field: str = "requests") -> None:
    """Check the users of a ``score_fresh`` call (``duet_fresh``)."""
    check_users(requests, field)
    for i, request in enumerate(requests):
        path = f"{field}[{i}]"
        _check_type(request, FreshRequest, path)
        check_history(request.history, interface, f"{path}.history")
        check_candidates(request.candidates, interface, f"{path}.candidates")
        if interface.history is not None and request.recent_history is not None:
            check_recent_history(request.recent_history, interface, f"{path}.recent_history")


def check_recent_history(rows: Sequence[Sequence[int]], interface: ServingInterface, path: str) -> None:
    """The ranker's history of one user: rows of ``len(history.fields)`` int64 IDs, any number of them
    (only the most recent ``history.max_len`` are sent), none for an empty history."""
    if isinstance(rows, (str, bytes)) or not isinstance(rows, (Sequence, np.ndarray)):
        raise InvalidRequest(path, f"a sequence of {interface.history.fields} rows, oldest first", type(rows).__name__)
    _int_rows(rows, len(interface.history.fields), lambda i: f"{path}[{i}]")


def check_history(history: UserHistory, interface: ServingInterface, path: str) -> None:
    """One user's request time, static features and streams (known names, ID widths, times)."""
    _check_type(history, UserHistory, path)
    _check_type(history.user_id, str, f"{path}.user_id")
    request_time = history.request_time
    if not _is_int(request_time) or not 0 <= request_time <= TS_MAX:
        raise InvalidRequest(f"{path}.request_time", "a Unix time in [0, 2**32]", request_time)
    check_static(history.static_sparse, history.static_dense, interface, path)
    _check_type(history.streams, Mapping, f"{path}.streams")
    widths = {name: info.event_fields for name, info in interface.streams.items()}
    if interface.history is not None:  # the ranker's history may come from a stream no encoder reads
        widths.setdefault(interface.history.stream, interface.history.event_fields)
    for name, events in history.streams.items():
        spath = f"{path}.streams.{name}"
        if name not in widths:
            raise InvalidRequest(spath, f"a stream of {sorted(widths)}", name)
        _check_events(events, widths[name], request_time, spath)


def check_static(sparse: Sequence[int], dense: Sequence[float], interface: ServingInterface, path: str) -> None:
    """A user's static features: ``static_sparse`` int64s and finite ``static_dense`` floats."""
    _int_rows([sparse], interface.static_sparse, lambda _: f"{path}.static_sparse")
    _float_rows([dense], interface.static_dense, lambda _: f"{path}.static_dense")


def check_candidates(candidates: Candidates, interface: ServingInterface, path: str) -> None:
    """1..max_candidates candidates; (N, item_sparse) int64s and (N, item_dense) finite floats."""
    _check_type(candidates, Candidates, path)
    n = len(candidates.item_sparse)
    if not 1 <= n <= interface.max_candidates:
        raise InvalidRequest(f"{path}.item_sparse", f"1..{interface.max_candidates} candidates", n)
    if len(candidates.item_dense) != n:
        raise InvalidRequest(f"{path}.item_dense", f"{n} rows, one per candidate", len(candidates.item_dense))
    _int_rows(candidates.item_sparse, interface.item_sparse, lambda i: f"{path}.item_sparse[{i}]")
    _float_rows(candidates.item_dense, interface.item_dense, lambda i: f"{path}.item_dense[{i}]")


def check_codes(codes: Mapping[str, Sequence[int]], interface: ServingInterface, path: str) -> None:
    """Stored SIDE codes: exactly the interface's embeddings, ``levels`` codes each in [0, codebook_size)."""
    _check_type(codes, Mapping, path)
    for name in codes:
        if name not in interface.embeddings:
            raise InvalidRequest(f"{path}.{name}", f"an embedding of {sorted(interface.embeddings)}", name)
    for name, info in interface.embeddings.items():
        if name not in codes:
            raise InvalidRequest(f"{path}.{name}", f"{info.levels} codes", "nothing")
        row = codes[name]
        if isinstance(row, (str, bytes)) or not hasattr(row, "__len__") or len(row) != info.levels:
            raise InvalidRequest(f"{path}.{name}", f"{info.levels} codes", row)
        for j, code in enumerate(row):
            if not _is_int(code) or not 0 <= code < info.codebook_size:
                raise InvalidRequest(f"{path}.{name}[{j}]", f"a code in [0, {info.codebook_size})", code)


def check_users(users: Sequence[object], field: str) -> None:
    """A non-empty sequence of users (its size is not limited: the clients split it by ``max_batch``)."""
    if isinstance(users, (str, bytes)) or not isinstance(users, Sequence):
        raise InvalidRequest(field, "a sequence of users", type(users).__name__)
    if len(users) == 0:
        raise InvalidRequest(field, "at least one user", 0)


def _check_type(value: object, kind: type, path: str) -> None:
    if not isinstance(value, kind):
        raise InvalidRequest(path, f"a {kind.__name__}", type(value).__name__)


def _check_events(events: Sequence[Event], width: int, request_time: int, path: str) -> None:
    if isinstance(events, (str, bytes)) or not isinstance(events, Sequence):
        raise InvalidRequest(path, "a sequence of Events, oldest first", type(events).__name__)
    for i, event in enumerate(events):
        if not isinstance(event, Event):
            raise InvalidRequest(f"{path}[{i}]", "an Event", type(event).__name__)
    _int_rows([e.ids for e in events], width, lambda i: f"{path}[{i}].ids")
    ts = _as_array([e.ts for e in events])
    fast_ok = (ts is not None and ts.dtype.kind in "iu" and (ts.size == 0 or (
        ts.min() >= 0 and ts.max() <= min(TS_MAX, request_time) and bool(np.all(ts[1:] >= ts[:-1])))))
    if fast_ok:
        return
    previous = 0
    for i, event in enumerate(events):  # slow path: find the first bad event for the message
        at = f"{path}[{i}].ts"
        if not _is_int(event.ts) or not 0 <= event.ts <= TS_MAX:
            raise InvalidRequest(at, "a Unix time in [0, 2**32]", event.ts)
        if event.ts < previous:
            raise InvalidRequest(at, f"events sorted by time (>= the previous event's {previous})", event.ts)
        if event.ts > request_time:
            raise InvalidRequest(at, f"a time <= request_time {request_time}", event.ts)
        previous = event.ts


def _int_rows(rows: Sequence[Sequence[int]], width: int, where: Callable[[int], str]) -> None:
    """Rows of ``width`` int64s: a numpy fast path, then a per-value pass that names the bad one."""
    arr = _as_array(rows)
    if len(rows) == 0 or (arr is not None and arr.ndim == 2 and arr.shape[1] == width and (
            arr.size == 0 or (arr.dtype.kind in "iu" and arr.max() <= _I64.max))):
        return
    for i, row in enumerate(rows):
        _check_row(row, width, "int64s", where(i))
        for j, value in enumerate(row):
            if not _is_int(value) or not _I64.min <= value <= _I64.max:
                raise InvalidRequest(f"{where(i)}[{j}]", "an int64", value)


def _float_rows(rows: Sequence[Sequence[float]], width: int, where: Callable[[int], str]) -> None:
    """Rows of ``width`` floats that are finite as float32 (ints allowed; |x| <= 3.4e38)."""
    arr = _as_array(rows)
    if len(rows) == 0 or (arr is not None and arr.ndim == 2 and arr.shape[1] == width and (
            arr.size == 0 or (arr.dtype.kind in "iuf" and bool(np.all(np.abs(arr) <= _F32_MAX))))):
        return
    for i, row in enumerate(rows):
        _check_row(row, width, "floats", where(i))
        for j, value in enumerate(row):
            if not _is_real(value) or not math.isfinite(value) or abs(float(value)) > _F32_MAX:
                raise InvalidRequest(f"{where(i)}[{j}]", "a float finite as float32 (|x| <= 3.4e38)", value)


def _check_row(row: object, width: int, what: str, path: str) -> None:
    if isinstance(row, (str, bytes)) or not hasattr(row, "__len__"):
        raise InvalidRequest(path, f"{width} {what}", row)
    if len(row) != width:
        raise InvalidRequest(path, f"{width} {what}", f"{len(row)} values")


def _as_array(values: object) -> np.ndarray | None:
    try:
        return np.asarray(values)
    except (ValueError, TypeError, OverflowError):
        return None


def _is_int(value: object) -> bool:
    """A Python or numpy int (``bool`` counts, as it does for numpy's fast path)."""
    return isinstance(value, (int, np.integer, np.bool_))


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating, np.bool_))
