"""The package's exception hierarchy: every error duet_sdk raises on purpose is a ``DuetError``."""


class DuetError(Exception):
    """Base class of all duet_sdk errors."""


class ConfigError(DuetError, ValueError):
    """A config value is invalid. The message names the field and what was expected."""

    def __init__(self, field: str, expected: str, got: object) -> None:
        self.field, self.expected, self.got = field, expected, got
        super().__init__(f"{field}: expected {expected}, got {got!r}")


class DataError(DuetError, ValueError):
    """Event data is malformed (bad rows, wrong shapes or dtypes in a batch)."""


class CheckpointError(DuetError):
    """A checkpoint is missing, incomplete, corrupt or unreadable."""


class GateRejected(DuetError):
    """The checkpoint gate rejected a checkpoint; ``decision`` holds the recorded reason."""

    def __init__(self, decision: object) -> None:
        self.decision = decision
        super().__init__(str(decision))


class StoreError(DuetError):
    """Online storage failed: a Redis or SQLite backend, or a ``redis-server`` that would not start."""


class ArtifactError(DuetError):
    """An exported or published artifact is missing, incomplete, or differs from its recorded sha256."""
