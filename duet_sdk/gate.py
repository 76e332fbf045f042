"""The checkpoint gate: a checkpoint is accepted only if it is intact, compatible and does not regress.

Each model has a registry, ``root/<model>/registry.json``, recording every gate decision in order.
The last accepted checkpoint is the baseline the next one is judged against; a checkpoint no better
than the base rate (primary val NE >= 1.0 by default) is rejected even without a predecessor.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from duet_sdk import serialization
from duet_sdk.atomic_io import atomic_write_json
from duet_sdk.checkpoint import Checkpoint, load_checkpoint
from duet_sdk.errors import CheckpointError, ConfigError, GateRejected


@dataclass(frozen=True)
class GatePolicy:
    """Reject when the new primary NE exceeds the baseline's by more than ``max_relative_regression``,
    or is at or above ``max_primary_ne`` (default 1.0: no better than predicting the validation base
    rate; None turns that rule off)."""

    max_relative_regression: float = 0.01
    max_primary_ne: float | None = 1.0

    def __post_init__(self) -> None:
        value = self.max_relative_regression
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < math.inf:
            raise ConfigError("max_relative_regression", "a finite number >= 0", value)
        limit = self.max_primary_ne
        if limit is not None and (
            not isinstance(limit, (int, float)) or isinstance(limit, bool) or not 0 < limit < math.inf
        ):
            raise ConfigError("max_primary_ne", "a finite number > 0, or None to turn the base-rate rule off", limit)


@dataclass(frozen=True)
class GateDecision:
    """One verdict of the gate; ``digest`` is None when the checkpoint could not be verified."""

    accepted: bool
    reason: str
    checkpoint: str
    digest: str | None
    kind: str | None
    primary_task: str | None
    val_ne: float | None
    baseline_digest: str | None
    baseline_ne: float | None
    decided_at: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GateDecision:
        return serialization.from_dict(cls, data)

    def __str__(self) -> str:
        verdict = "ACCEPTED" if self.accepted else "REJECTED"
        baseline = "" if self.baseline_ne is None else f" (baseline {self.baseline_ne:.4f})"
        ne = "n/a" if self.val_ne is None else f"{self.val_ne:.4f}"
        return f"{verdict} {self.kind or '?'} {Path(self.checkpoint).name} NE {ne}{baseline}: {self.reason}"


class CheckpointRegistry:
    """The gate decisions of one model, shared safely by concurrent submitters (``flock``)."""

    def __init__(self, root: Path, model: str) -> None:
        if not isinstance(model, str) or not model or model.startswith(".") or Path(model).name != model:
            raise ConfigError("model", "a plain directory name not starting with '.'", model)
        self.model = model
        self.dir = Path(root) / model
        self.file = self.dir / "registry.json"

    def submit(
        self, checkpoint: Path | str | Checkpoint, policy: GatePolicy = GatePolicy(), raise_on_reject: bool = False
    ) -> GateDecision:
        """Judge the checkpoint's files on disk and record the decision.

        A digest decided before gets that verdict again (reason "already decided: ...") and is not
        recorded twice. Raises ``CheckpointError``, recording nothing, if the baseline itself is damaged.
        """
        path = Path(checkpoint.path if isinstance(checkpoint, Checkpoint) else checkpoint).absolute()
        with self._locked():
            decisions = self.decisions()
            decision, is_new = self._evaluate(path, policy, decisions)
            if is_new:
                records = [d.to_dict() for d in [*decisions, decision]]
                atomic_write_json(self.file, {"model": self.model, "decisions": records})
        if raise_on_reject and not decision.accepted:
            raise GateRejected(decision)
        return decision

    def latest_accepted(self) -> Checkpoint | None:
        """The last accepted checkpoint, loaded and verified; None before any was accepted."""
        return self._load_baseline(self.decisions())

    def decisions(self) -> list[GateDecision]:
        """Every recorded decision, oldest first."""
        if not self.file.exists():
            return []
        try:
            data = json.loads(self.file.read_text(encoding="utf-8"))
            if data["model"] != self.model:
                raise ValueError(f"registry is for model {data['model']!r}, not {self.model!r}")
            return [GateDecision.from_dict(d) for d in data["decisions"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{self.file}: corrupt registry: {exc}") from exc

    def is_accepted(self, digest: str) -> bool:
        """Whether a checkpoint with this digest was accepted."""
        return any(d.accepted and d.digest == digest for d in self.decisions())

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "registry.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
            yield

    def _evaluate(self, path: Path, policy: GatePolicy, decisions: list[GateDecision]) -> tuple[GateDecision, bool]:
        """The decision, and whether it is new (to be recorded)."""
        try:
            candidate = load_checkpoint(path)
        except CheckpointError as exc:
            return _decision(False, f"corrupt or unreadable checkpoint: {exc}", path), True
        earlier = next((d for d in decisions if d.digest == candidate.digest), None)
        if earlier is not None:
            return dataclasses.replace(earlier, reason=f"already decided: {earlier.reason}"), False
        baseline = self._load_baseline(decisions)
        accepted, reason = _judge(candidate, baseline, policy)
        return _decision(accepted, reason, path, candidate, baseline), True

    def _load_baseline(self, decisions: list[GateDecision]) -> Checkpoint | None:
        last = next((d for d in reversed(decisions) if d.accepted), None)
        if last is None:
            return None
        baseline = load_checkpoint(Path(last.checkpoint))
        if baseline.digest != last.digest:
            raise CheckpointError(f"{last.checkpoint}: digest {baseline.digest} is not the accepted {last.digest}")
        return baseline


def registry_name(variant: str, embedding_input: str = "codes", target_attention: str | None = None) -> str:
    """Gate registry of a ranker variant, e.g. ``ranker-duet``, ``ranker-duet-float`` or, with target
    attention (another serving interface: it takes a history), ``ranker-duet-dare``."""
    name = f"ranker-{variant}" + ("" if embedding_input == "codes" else f"-{embedding_input}")
    return name + (f"-{target_attention}" if target_attention else "")


def _judge(candidate: Checkpoint, baseline: Checkpoint | None, policy: GatePolicy) -> tuple[bool, str]:
    """(accepted, reason) for a verified candidate against the last accepted checkpoint."""
    if "val_ne" not in candidate.metrics:
        return False, "metrics.json has no val_ne: the gate judges validation NE"
    incompatible = _incompatibility(candidate, baseline) if baseline is not None else None
    if incompatible:
        return False, incompatible
    ne = candidate.primary_ne
    if not math.isfinite(ne):
        return False, f"primary val NE ({candidate.primary_task}) is not finite: {ne}"
    if policy.max_primary_ne is not None and ne >= policy.max_primary_ne:
        what = "no better than the base rate" if policy.max_primary_ne >= 1.0 else "not below the configured NE limit"
        return False, (
            f"{what}: primary val NE ({candidate.primary_task}) {ne:.6g} >= {policy.max_primary_ne:g} "
            "(NE 1.0 is what predicting the validation positive rate scores)"
        )
    if baseline is None:
        return True, "no accepted predecessor"
    return _compare_ne(ne, baseline.primary_ne, policy.max_relative_regression)


def _incompatibility(candidate: Checkpoint, baseline: Checkpoint) -> str | None:
    if candidate.kind != baseline.kind:
        return f"incompatible kind: {candidate.kind!r}, but the model's accepted kind is {baseline.kind!r}"
    new, old = candidate.config["interface"], baseline.config["interface"]
    keys = sorted(k for k in new.keys() | old.keys() if new.get(k, KeyError) != old.get(k, KeyError))
    if keys:
        return f"incompatible config: interface keys {keys} differ from baseline {baseline.digest[:12]}"
    if candidate.primary_task != baseline.primary_task:
        return f"primary task {candidate.primary_task!r} differs from the baseline's {baseline.primary_task!r}"
    return None


def _compare_ne(ne: float, baseline_ne: float, threshold: float) -> tuple[bool, str]:
    if baseline_ne > 0:
        change = (ne - baseline_ne) / baseline_ne
    else:
        change = 0.0 if ne == baseline_ne else math.inf
    detail = f"primary NE {ne:.6g} vs baseline {baseline_ne:.6g} ({change:+.2%}, threshold {threshold:.2%})"
    if ne > baseline_ne * (1 + threshold):
        return False, f"regressed beyond threshold: {detail}"
    return True, f"{'improved' if ne < baseline_ne else 'within threshold'}: {detail}"


def _decision(
    accepted: bool, reason: str, path: Path, candidate: Checkpoint | None = None, baseline: Checkpoint | None = None
) -> GateDecision:
    return GateDecision(
        accepted=accepted,
        reason=reason,
        checkpoint=str(path),
        digest=candidate.digest if candidate else None,
        kind=candidate.kind if candidate else None,
        primary_task=candidate.primary_task if candidate and "val_ne" in candidate.metrics else None,
        val_ne=candidate.primary_ne if candidate and "val_ne" in candidate.metrics else None,
        baseline_digest=baseline.digest if baseline else None,
        baseline_ne=baseline.primary_ne if baseline else None,
        decided_at=datetime.now(UTC).isoformat(),
    )
