"""A harder synthetic benchmark that looks like a real log: long tail, churn in time, heavy users.

The latent model is the one of ``synthetic`` (shared / click / conversion user traits; items with
latent parts grouped by author and semantic-ID codes), but the world around it is built like a
production log:

* **Zipf items**: item popularity ~ rank^-``zipf_exponent`` over a large catalogue, so most items
  are seen a handful of times and per-item ID rows cannot be learned from their own labels.
* **New items and users over time**: a fraction of items launch, and of users sign up, at uniform
  times in the window; nothing is shown before its launch or to a user before sign-up. With the
  **global temporal split** (train on requests before T1 = end - ``val_days``, validate on requests
  in [T1, end)) validation meets items and users with no training rows.
* **Heavy-tailed activity**: a user's impressions and rows scale with a log-normal activity
  (sigma ``activity_sigma``); a few users own much of the data.
* **Signal in behaviour**: labels follow the user's latent traits (visible only through their event
  history) and the item's latent (visible through author and semantic codes); the per-item effect that
  an item-ID row could memorise is small (``item_effect``), and the candidate's popularity feature is
  what was observed before T1, not the truth.

Static sparse features are coarse attributes; ``static_user_id=True`` adds the raw user ID (opt-in:
it lets a model memorise users, which the temporal split then punishes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from duet_sdk.data.events import EventDataset, EventTable, ExampleSet
from duet_sdk.data.routing import (
    CLICK_TASKS,
    CONV_TASKS,
    concat_examples,
    downsample_negatives,
    ranker_examples,
    synthetic_conv_examples,
)
from duet_sdk.data.schema import EventSchema, StreamSpec
from duet_sdk.data.synthetic import (
    ACTIONS,
    DAY,
    OFFSITE_EVENTS,
    OFFSITE_LABELS,
    START_TIME,
    USER_ID_BASE,
    World,
    _item_ids,
    _sigmoid,
    _stream_events,
)
from duet_sdk.errors import ConfigError
from duet_sdk.validation import require_int, require_number


@dataclass(frozen=True)
class LongTailConfig:
    """Size and shape of the long-tail world. ``seed`` fixes everything."""

    num_users: int = 3000
    num_items: int = 20_000
    num_authors: int = 300
    trait_dim: int = 2
    shared_weight: float = 0.5
    zipf_exponent: float = 1.05
    days: int = 28
    val_days: int = 7
    late_item_fraction: float = 0.5
    late_user_fraction: float = 0.3
    activity_sigma: float = 1.2
    mean_impressions: float = 60.0
    mean_rows: float = 24.0
    mean_ranker_rows: float = 24.0
    max_rows_per_user: int = 200
    item_effect: float = 0.4
    downsample_rate: float = 0.5
    max_click_len: int = 32
    max_conv_len: int = 8
    static_user_id: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "num_users",
            "num_items",
            "num_authors",
            "trait_dim",
            "val_days",
            "max_rows_per_user",
            "max_click_len",
            "max_conv_len",
        ):
            require_int(f"LongTailConfig.{name}", getattr(self, name), 1)
        require_int("LongTailConfig.days", self.days, self.val_days + 2)
        for name in (
            "shared_weight",
            "zipf_exponent",
            "activity_sigma",
            "mean_impressions",
            "mean_rows",
            "mean_ranker_rows",
            "item_effect",
        ):
            require_number(f"LongTailConfig.{name}", getattr(self, name))
        for name in ("late_item_fraction", "late_user_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"LongTailConfig.{name}", "a number in [0, 1]", getattr(self, name))
        if not 0.0 < self.downsample_rate <= 1.0:
            raise ConfigError("LongTailConfig.downsample_rate", "a number in (0, 1]", self.downsample_rate)

    @property
    def split_time(self) -> int:
        """T1: requests before it train, requests at or after it validate."""
        return START_TIME + (self.days - self.val_days) * DAY

    @property
    def end_time(self) -> int:
        return START_TIME + self.days * DAY

    def schema(self) -> EventSchema:
        static = ("user_id", "region", "device") if self.static_user_id else ("age_bucket", "region", "device")
        return EventSchema(
            streams=(StreamSpec("click", self.max_click_len), StreamSpec("conv", self.max_conv_len)),
            static_sparse=static,
            static_dense=("log_train_events", "tenure_days"),
            item_dense=("log_train_popularity",),
        )


@dataclass
class LongTailDataset(EventDataset):
    """The dataset plus its latent truth and per-item launch / per-user sign-up times."""

    world: World
    item_launch: np.ndarray
    user_signup: np.ndarray


def _late_times(cfg: LongTailConfig, n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """(n,) start times: 0 offset for most, uniform over the window for a ``fraction``."""
    late = rng.random(n) < fraction
    return START_TIME + np.where(late, rng.integers(0, (cfg.days - 1) * DAY, n), 0)


def _make_world(cfg: LongTailConfig, rng: np.random.Generator) -> World:
    k = cfg.trait_dim
    centroids = rng.normal(size=(cfg.num_authors, 3 * k))
    author = np.minimum(rng.zipf(1.3, cfg.num_items) - 1, cfg.num_authors - 1)  # a few prolific authors
    author = rng.permutation(cfg.num_authors)[author]
    latent = 0.9 * centroids[author] + 0.45 * rng.normal(size=(cfg.num_items, 3 * k))
    popularity = 1.0 / np.arange(1, cfg.num_items + 1) ** cfg.zipf_exponent
    return World(
        shared=rng.normal(size=(cfg.num_users, k)),
        click=rng.normal(size=(cfg.num_users, k)),
        conv=rng.normal(size=(cfg.num_users, k)),
        item_latent=latent,
        item_author=author,
        popularity=rng.permutation(popularity / popularity.sum()),
        item_quality=cfg.item_effect * rng.normal(size=cfg.num_items),
        shared_weight=cfg.shared_weight,
    )


def _shown_items(world: World, launch: np.ndarray, time: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n,) items drawn by popularity among those launched before ``time`` (n,)."""
    cdf = np.cumsum(world.popularity)
    draw = lambda m: np.minimum(np.searchsorted(cdf, rng.random(m) * cdf[-1], side="right"), len(cdf) - 1)  # noqa: E731
    item = draw(len(time))
    for _ in range(32):
        early = launch[item] > time
        if not early.any():
            break
        item[early] = draw(int(early.sum()))
    early = launch[item] > time
    item[early] = np.argmax(world.popularity * (launch == launch.min()))  # the top catalogue item
    return item


def _user_times(
    cfg: LongTailConfig, counts: np.ndarray, signup: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(user, time) for ``counts[u]`` moments of each user, uniform between sign-up and the end."""
    user = np.repeat(np.arange(len(counts)), counts)
    time = signup[user] + (rng.random(len(user)) * (cfg.end_time - signup[user])).astype(np.int64)
    return user, time


def _events(
    cfg: LongTailConfig,
    world: World,
    launch: np.ndarray,
    signup: np.ndarray,
    activity: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, list]:
    """Impressions -> click / onsite events (click stream) and offsite events (conv stream)."""
    user, time = _user_times(cfg, rng.poisson(cfg.mean_impressions * activity), signup, rng)
    item = _shown_items(world, launch, time, rng)
    position = rng.integers(0, 10, len(user))
    click_aff, conv_aff = world.click_affinity(user, item), world.conv_affinity(user, item)
    clicked = rng.random(len(user)) < _sigmoid(2.0 * click_aff + world.item_quality[item] - 0.15 * position - 1.5)
    streams: dict[str, list] = {
        "click": [(user[clicked], time[clicked], item[clicked], position[clicked], ACTIONS["click"])],
        "conv": [],
    }
    c = np.flatnonzero(clicked)
    onsite = c[rng.random(len(c)) < _sigmoid(1.5 * click_aff[c] + 0.5 * conv_aff[c] - 3.0)]
    streams["click"].append(
        (
            user[onsite],
            time[onsite] + rng.integers(60, 3600, len(onsite)),
            item[onsite],
            position[onsite],
            ACTIONS["onsite_conversion"],
        )
    )
    for action, (scale, click_scale, bias) in OFFSITE_EVENTS.items():
        hit = c[rng.random(len(c)) < _sigmoid(scale * conv_aff[c] + click_scale * click_aff[c] + bias)]
        delay = rng.exponential(DAY, len(hit)).astype(np.int64) + 60
        streams["conv"].append(
            (user[hit], np.minimum(time[hit] + delay, cfg.end_time - 1), item[hit], position[hit], ACTIONS[action])
        )
    lone = rng.random(len(user)) < 0.004 * _sigmoid(2.5 * conv_aff - 1.0)
    streams["conv"].append((user[lone], time[lone], item[lone], position[lone], ACTIONS["unattributed_conversion"]))
    return streams


class _RowMaker:
    """Labelled rows of the world; candidates' dense feature is their popularity observed before T1."""

    def __init__(
        self, cfg: LongTailConfig, world: World, item_ids: np.ndarray, launch: np.ndarray, observed: np.ndarray
    ) -> None:
        self.cfg, self.world, self.item_ids, self.launch = cfg, world, item_ids, launch
        self.log_popularity = np.log1p(observed).astype(np.float32)

    def _rows(self, tasks, user, request, item, labels, mask) -> ExampleSet:
        dense = self.log_popularity[item][:, None]
        return ExampleSet(
            tasks, user, request, self.item_ids[item], dense, labels.astype(np.float32), mask, np.zeros(len(user), bool)
        )

    def click_rows(self, user: np.ndarray, request: np.ndarray, rng: np.random.Generator) -> ExampleSet:
        w, item = self.world, _shown_items(self.world, self.launch, request, rng)
        click_aff, conv_aff = w.click_affinity(user, item), w.conv_affinity(user, item)
        ctr = rng.random(len(user)) < _sigmoid(2.0 * click_aff + w.item_quality[item] - 1.5)
        onsite = ctr & (rng.random(len(user)) < _sigmoid(1.5 * click_aff + 0.5 * conv_aff - 1.0))
        labels = np.stack([ctr, onsite], 1)
        return self._rows(CLICK_TASKS, user, request, item, labels, np.ones(labels.shape, np.float32))

    def attributed_rows(self, user: np.ndarray, request: np.ndarray, rng: np.random.Generator) -> ExampleSet:
        w, item = self.world, _shown_items(self.world, self.launch, request, rng)
        click_aff, conv_aff = w.click_affinity(user, item), w.conv_affinity(user, item)
        labels = np.zeros((len(user), len(CONV_TASKS)), np.float32)
        for column, (scale, click_scale, bias) in OFFSITE_LABELS.items():
            labels[:, column] = rng.random(len(user)) < _sigmoid(
                scale * conv_aff + click_scale * click_aff + w.item_quality[item] + bias
            )
        mask = np.ones_like(labels)
        mask[:, CONV_TASKS.index("unattributed_conversion")] = 0.0
        return self._rows(CONV_TASKS, user, request, item, labels, mask)

    def unattributed_rows(self, user: np.ndarray, request: np.ndarray, rng: np.random.Generator) -> ExampleSet:
        item = _shown_items(self.world, self.launch, request, rng)
        labels = np.zeros((len(user), len(CONV_TASKS)), np.float32)
        labels[:, CONV_TASKS.index("unattributed_conversion")] = rng.random(len(user)) < _sigmoid(
            2.5 * self.world.conv_affinity(user, item) - 4.0
        )
        return synthetic_conv_examples(self._rows(CONV_TASKS, user, request, item, labels, np.ones_like(labels)))


def _split(rows: ExampleSet, t1: int) -> tuple[ExampleSet, ExampleSet]:
    """(train, validation) by request time: before T1, and at or after it."""
    val = rows.request_time >= t1
    return rows.subset(np.flatnonzero(~val)), rows.subset(np.flatnonzero(val))


def _request_moments(
    cfg: LongTailConfig, mean: float, activity: np.ndarray, signup: np.ndarray, rng: np.random.Generator
):
    counts = np.minimum(rng.poisson(mean * activity), cfg.max_rows_per_user)
    return _user_times(cfg, counts, signup, rng)


def generate_longtail(cfg: LongTailConfig) -> LongTailDataset:
    """Build the world, its event table and the temporally split train/validation example sets."""
    rng = np.random.default_rng(cfg.seed)
    world = _make_world(cfg, rng)
    item_ids = _item_ids(world, rng)
    launch = _late_times(cfg, cfg.num_items, cfg.late_item_fraction, rng)
    signup = _late_times(cfg, cfg.num_users, cfg.late_user_fraction, rng)
    activity = rng.lognormal(-0.5 * cfg.activity_sigma**2, cfg.activity_sigma, cfg.num_users)  # mean 1
    streams = _events(cfg, world, launch, signup, activity, rng)
    table_streams = {name: _stream_events(parts, item_ids, cfg.num_users) for name, parts in streams.items()}
    t1 = cfg.split_time
    click_before = [(p[0][p[1] < t1], p[2][p[1] < t1]) for p in streams["click"]]
    observed = np.bincount(np.concatenate([i for _, i in click_before]), minlength=cfg.num_items)
    train_events = np.bincount(np.concatenate([u for u, _ in click_before]), minlength=cfg.num_users)
    region = np.argmax(world.shared @ rng.normal(size=(cfg.trait_dim, 8)), axis=1)
    age_bucket = np.digitize(world.shared[:, -1] + rng.normal(size=cfg.num_users), [-1.5, -0.5, 0.5, 1.5])
    first = (USER_ID_BASE + np.arange(cfg.num_users)) if cfg.static_user_id else age_bucket
    static_sparse = np.stack([first, region, rng.integers(0, 3, cfg.num_users)], 1).astype(np.int64)
    tenure = np.maximum(0, t1 - signup) / DAY
    static_dense = np.stack([np.log1p(train_events), tenure], 1).astype(np.float32)
    table = EventTable(
        cfg.schema(),
        (USER_ID_BASE + np.arange(cfg.num_users)).astype(np.int64),
        static_sparse,
        static_dense,
        table_streams,
    )

    rows = _RowMaker(cfg, world, item_ids, launch, observed)
    click = rows.click_rows(*_request_moments(cfg, cfg.mean_rows, activity, signup, rng), rng)
    conv = concat_examples(
        [
            rows.attributed_rows(*_request_moments(cfg, cfg.mean_rows, activity, signup, rng), rng),
            rows.unattributed_rows(*_request_moments(cfg, cfg.mean_rows / 4, activity, signup, rng), rng),
        ]
    )
    ranker = ranker_examples(
        rows.attributed_rows(*_request_moments(cfg, cfg.mean_ranker_rows, activity, signup, rng), rng)
    )
    click_train, click_val = _split(click, t1)
    conv_train, conv_val = _split(conv, t1)
    ranker_train, ranker_val = _split(ranker, t1)
    return LongTailDataset(
        cfg.schema(),
        table,
        downsample_negatives(click_train, cfg.downsample_rate, cfg.seed),
        click_val,
        conv_train,
        conv_val,
        ranker_train,
        ranker_val,
        world,
        launch,
        signup,
    )


def describe(ds: LongTailDataset, cfg: LongTailConfig) -> dict[str, float]:
    """Shape figures of the generated data: tail, churn and activity skew (for reports and tests)."""
    t1 = cfg.split_time
    events = ds.table.streams["click"]
    per_user = np.diff(events.offsets)
    top = np.sort(per_user)[::-1]
    item_counts = np.bincount(ds.click_train.item_sparse[:, 0] - ds.click_train.item_sparse[:, 0].min(initial=0))
    train_items = set(ds.click_train.item_sparse[:, 0].tolist())
    train_users = set(ds.click_train.user_index.tolist())
    val_items, val_users = ds.ranker_val.item_sparse[:, 0], ds.ranker_val.user_index
    return {
        "click_events": int(len(events.timestamps)),
        "top_1pct_users_share_of_events": float(top[: max(1, len(top) // 100)].sum() / max(1, top.sum())),
        "train_items_seen_once_fraction": float(np.mean(item_counts[item_counts > 0] == 1)),
        "val_rows_with_unseen_item": float(np.mean([i not in train_items for i in val_items.tolist()])),
        "val_rows_with_new_user": float(np.mean([u not in train_users for u in val_users.tolist()])),
        "items_launched_after_split": float(np.mean(ds.item_launch >= t1)),
        "users_signed_up_after_split": float(np.mean(ds.user_signup >= t1)),
    }
