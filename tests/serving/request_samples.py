"""Random requests for the tiny deployment's interface (a module of its own: test files import it by
name, which a second ``conftest`` on the path would shadow)."""

import numpy as np

from duet_sdk.interface import Candidates, Event, UserHistory


def random_users(interface, n: int, seed: int = 0, lengths: dict[str, list[int]] | None = None):
    """``n`` (UserHistory, Candidates) pairs: stream lengths cycle through empty, 1, full and longer than
    max_len (the client keeps the most recent) unless ``lengths`` says; candidate counts vary too."""
    rng = np.random.default_rng(seed)
    users = []
    for u in range(n):
        request_time = 1_700_000_000 + int(rng.integers(0, 10**6))
        streams = {}
        for name, info in interface.streams.items():
            cycle = (lengths or {}).get(name) or [
                0,
                1,
                info.max_len,
                info.max_len + 3,
                int(rng.integers(0, info.max_len + 1)),
            ]
            count = cycle[u % len(cycle)]
            ts = np.sort(request_time - rng.integers(0, 30 * 86_400, count))
            streams[name] = [
                Event(int(t), tuple(int(x) for x in rng.integers(0, 10**9, info.event_fields))) for t in ts
            ]
        history = UserHistory(
            f"user-{seed}-{u}",
            request_time,
            [int(x) for x in rng.integers(0, 50, interface.static_sparse)],
            [float(x) for x in rng.normal(size=interface.static_dense)],
            streams,
        )
        k = 1 + u % 7
        candidates = Candidates(
            [[int(x) for x in rng.integers(0, 10**6, interface.item_sparse)] for _ in range(k)],
            [[float(x) for x in rng.normal(size=interface.item_dense)] for _ in range(k)],
        )
        users.append((history, candidates))
    return users
