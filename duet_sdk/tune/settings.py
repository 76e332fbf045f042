"""What the tuner may change in one model's config, read from and written into Triton's ``ModelConfig``
the way ``duet-publish`` writes it (``serving/config.py``), and the search space over it.

Example:
    >>> s = read_settings(config)            # ModelSettings(max_queue_delay_us=0, ...)
    >>> apply_settings(config, replace(s, instances=2))
    >>> policy_for(s, ServingPolicy())       # what duet-publish needs to write the same config
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tritonclient.grpc import model_config_pb2 as pb

from duet_sdk.errors import ConfigError
from duet_sdk.serving.config import ServingPolicy
from duet_sdk.validation import require_int

DIMENSIONS = ("max_queue_delay_us", "preferred_batch_sizes", "instances", "threads", "inter_op_threads")


@dataclass(frozen=True)
class ModelSettings:
    """One model's scheduling: dynamic batcher queue delay and preferred batch sizes, instance count,
    ONNX Runtime intra-op (``threads``) and inter-op threads per instance."""

    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    instances: int = 1
    threads: int = 1
    inter_op_threads: int = 1

    def __post_init__(self) -> None:
        require_int("settings.max_queue_delay_us", self.max_queue_delay_us, 0)
        for name in ("instances", "threads", "inter_op_threads"):
            require_int(f"settings.{name}", getattr(self, name), 1)
        for size in self.preferred_batch_sizes:
            require_int("settings.preferred_batch_sizes[]", size, 1)

    def describe(self) -> str:
        preferred = ",".join(map(str, self.preferred_batch_sizes)) or "none"
        return (f"delay {self.max_queue_delay_us}us, preferred {preferred}, {self.instances} inst, "
                f"{self.threads}x{self.inter_op_threads} thr")


def read_settings(config: pb.ModelConfig) -> ModelSettings:
    """The tunable settings of a runner model's config (ConfigError if it has no dynamic batcher)."""
    if not config.HasField("dynamic_batching"):
        raise ConfigError(f"{config.name} dynamic_batching", "a dynamic batcher (publish with batching on)", "none")
    params = config.parameters
    return ModelSettings(
        max_queue_delay_us=int(config.dynamic_batching.max_queue_delay_microseconds),
        preferred_batch_sizes=tuple(config.dynamic_batching.preferred_batch_size),
        instances=sum(g.count for g in config.instance_group) or 1,
        threads=int(params["threads"].string_value) if "threads" in params else 1,
        inter_op_threads=int(params["inter_op_threads"].string_value) if "inter_op_threads" in params else 1)


def apply_settings(config: pb.ModelConfig, settings: ModelSettings) -> pb.ModelConfig:
    """A copy of ``config`` with ``settings``, fields set exactly as ``runner_config`` sets them."""
    if any(size > config.max_batch_size for size in settings.preferred_batch_sizes):
        raise ConfigError(f"{config.name} preferred_batch_sizes", f"sizes <= max_batch_size {config.max_batch_size}",
                          list(settings.preferred_batch_sizes))
    out = pb.ModelConfig()
    out.CopyFrom(config)
    out.dynamic_batching.max_queue_delay_microseconds = settings.max_queue_delay_us
    del out.dynamic_batching.preferred_batch_size[:]
    out.dynamic_batching.preferred_batch_size.extend(settings.preferred_batch_sizes)
    del out.instance_group[1:]
    out.instance_group[0].count = settings.instances
    out.parameters["threads"].string_value = str(settings.threads)
    out.parameters["inter_op_threads"].string_value = str(settings.inter_op_threads)
    return out


def policy_for(settings: ModelSettings, base: ServingPolicy) -> ServingPolicy:
    """``base`` with ``settings``: the policy under which duet-publish writes these settings."""
    return dataclasses.replace(base, max_queue_delay_us=settings.max_queue_delay_us,
                               preferred_batch_sizes=settings.preferred_batch_sizes, instances=settings.instances,
                               threads=settings.threads, inter_op_threads=settings.inter_op_threads)


@dataclass(frozen=True)
class SearchSpace:
    """Values tried per dimension (coordinate descent from the current config). ``preferred_batch_sizes``
    holds tuples; the empty tuple means none."""

    max_queue_delay_us: tuple[int, ...] = (0, 200, 1000, 4000)
    preferred_batch_sizes: tuple[tuple[int, ...], ...] = ((), (4,), (8, 16))
    instances: tuple[int, ...] = (1, 2)
    threads: tuple[int, ...] = (1, 2)
    inter_op_threads: tuple[int, ...] = (1,)

    def __post_init__(self) -> None:
        for name in DIMENSIONS:
            values = getattr(self, name)
            if not values:
                raise ConfigError(f"search.{name}", "at least one value", values)
        ModelSettings(
            max(self.max_queue_delay_us), (), max(self.instances), max(self.threads), max(self.inter_op_threads)
        )
        ModelSettings(
            min(self.max_queue_delay_us), (), min(self.instances), min(self.threads), min(self.inter_op_threads)
        )

    def values(self, dimension: str, max_batch: int) -> tuple:
        """The values of ``dimension`` valid for a model of ``max_batch`` (preferred sizes above it dropped)."""
        values = getattr(self, dimension)
        if dimension == "preferred_batch_sizes":
            values = tuple(v for v in values if all(s <= max_batch for s in v))
        return values
