"""Backfill: re-embed the users of a feature store onto one release, at a bounded rate, resumably.

After a swap, stored codes of the old release are still scored by the old release's downstream while it
is loaded (``Scorer``), but that release is unloaded K releases later. The backfill walks the store
(``FeatureStore.scan``), re-embeds every user whose codes come from another release with the target
release's ``duet_upstream_vT`` (pinned, so a swap in the middle cannot mix releases), and writes the new
codes with that release. It goes no faster than ``rate_users_s``, saves its scan cursor after every
batch (``resume``: a JSON file; a restart continues where it stopped), and stops when a full count finds
no user on another release, or after ``max_passes`` passes (users with no profile cannot be re-embedded;
``BackfillProgress.remaining_old`` says how many are left).

Example:
    >>> progress = Backfill(client, store, history, target=2, rate_users_s=200).run()
    >>> progress.remaining_old
    0
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from duet_sdk.atomic_io import atomic_write_json
from duet_sdk.online.history import HistoryStore
from duet_sdk.online.store import FeatureStore
from duet_sdk.online.types import StoredCodes
from duet_sdk.validation import require_int, require_number

log = logging.getLogger(__name__)


@dataclass
class BackfillProgress:
    """Where a backfill stands. ``remaining_old``: users whose codes come from another release, as of the
    last count (None before the first); ``cursor``: where the current pass resumes (None: pass done);
    ``elapsed_s`` and ``run_reembedded``: time and users of this run alone (a resumed run starts both at 0)."""

    target: str
    scanned: int = 0
    reembedded: int = 0
    no_profile: int = 0
    passes: int = 0
    remaining_old: int | None = None
    cursor: str | None = ""
    elapsed_s: float = 0.0
    run_reembedded: int = 0

    @property
    def rate_users_s(self) -> float:
        """Users re-embedded per second by this run (``reembedded`` also counts the runs it resumed)."""
        return self.run_reembedded / self.elapsed_s if self.elapsed_s > 0 else 0.0


class Backfill:
    """Re-embed stored users onto ``target`` (default: the server's current release).

    Args:
        client: a ``DuetClient``; store, history: the feature store and the users' profiles/events.
        rate_users_s: the most users re-embedded per second; batch: users per ``embed`` call.
        resume: JSON file holding the cursor of an unfinished pass for the same target.
    """

    def __init__(self, client, store: FeatureStore, history: HistoryStore, target: int | None = None,
                 rate_users_s: float = 100.0, batch: int = 16, resume: Path | None = None, max_passes: int = 3,
                 clock: Callable[[], float] = time.time) -> None:
        require_number("rate_users_s", rate_users_s, 1e-9, "a number of users per second > 0")
        require_int("batch", batch, 1)
        require_int("max_passes", max_passes, 1)
        self.client, self.store, self.history = client, store, history
        self.target = target if target is not None else client.releases().current
        self.rate_users_s, self.batch, self.max_passes = float(rate_users_s), batch, max_passes
        self.resume, self.clock = None if resume is None else Path(resume), clock

    def _load(self) -> BackfillProgress:
        progress = BackfillProgress(str(self.target))
        if self.resume is not None and self.resume.exists():
            saved = json.loads(self.resume.read_text(encoding="utf-8"))
            if saved.get("target") == progress.target:
                progress = BackfillProgress(
                    **{k: v for k, v in saved.items() if k not in ("elapsed_s", "run_reembedded")}
                )
        return progress

    def _save(self, progress: BackfillProgress) -> None:
        if self.resume is not None:
            atomic_write_json(self.resume, asdict(progress))

    def count_old(self) -> int:
        """Users whose stored codes come from another release than the target."""
        return sum(n for version, n in self.store.version_counts().items() if version != str(self.target))

    def run(
        self, stop: threading.Event | None = None, on_progress: Callable[[BackfillProgress], None] | None = None
    ) -> BackfillProgress:
        """Backfill until no user is on another release, ``max_passes`` passes, or ``stop`` is set."""
        progress, started = self._load(), time.monotonic()
        done_at_start = progress.reembedded
        stop = stop or threading.Event()
        progress.remaining_old = self.count_old()
        while progress.remaining_old and progress.passes < self.max_passes and not stop.is_set():
            if progress.cursor is None:
                progress.cursor = ""
            while progress.cursor is not None and not stop.is_set():
                records, next_cursor = self.store.scan(progress.cursor, self.batch)
                progress.scanned += len(records)
                self._reembed([r for r in records if r.model_version != progress.target], progress)
                progress.cursor = next_cursor
                progress.elapsed_s = time.monotonic() - started
                progress.run_reembedded = progress.reembedded - done_at_start
                self._save(progress)
                if on_progress is not None:
                    on_progress(progress)
                wait = progress.run_reembedded / self.rate_users_s - (time.monotonic() - started)
                if wait > 0:
                    stop.wait(wait)
            if progress.cursor is None:
                progress.passes += 1
                progress.remaining_old = self.count_old()
                log.info(
                    "backfill to release %s: pass %d done, %d users re-embedded, %d still on other releases",
                    progress.target,
                    progress.passes,
                    progress.reembedded,
                    progress.remaining_old,
                )
        progress.elapsed_s = time.monotonic() - started
        progress.run_reembedded = progress.reembedded - done_at_start
        self._save(progress)
        return progress

    def _reembed(self, old: list[StoredCodes], progress: BackfillProgress) -> None:
        if not old:
            return
        now = self.clock()
        histories = self.history.histories([r.user_id for r in old], int(now))
        progress.no_profile += len(old) - len(histories)
        if not histories:
            return
        embeddings = self.client.embed(histories, release=int(self.target))
        written = [StoredCodes(e.user_id, e.codes, e.model_version, float(now)) for e in embeddings]
        self.store.put_many(written)
        progress.reembedded += len(written)
