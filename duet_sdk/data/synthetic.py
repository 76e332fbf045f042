"""Deterministic synthetic event data with planted, learnable structure.

Every user has three latent traits: ``shared`` (s), ``click`` (c) and ``conv`` (v). Items carry the
same three latent parts, grouped by author, and semantic-ID codes that quantize their latent vector.

* Click behaviour follows ``w s·a_s + c·a_c`` (``w = shared_weight``): impressions turn into clicks
  (the dense ``click`` stream).
* Conversion behaviour follows ``w s·a_s + v·a_v``, offsite conversions partly click affinity too:
  clicked items turn, after a delay of hours to days, into offsite conversions, link clicks and
  button clicks, and some conversions happen without any click (unattributed). These form the
  sparse ``conv`` stream.

So the two streams are driven by overlapping but different traits. Labels of training examples are
drawn from the same latent model at request times after most of the history, so an encoder must
infer the traits from the events to predict them. The ranker's offsite-conversion label depends most
on conversion affinity, which makes baseline < +ClickAUE < +ConvAUE < DUET the expected ordering.
Static user IDs are coarse attributes (age bucket, region, device), not a per-user ID.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from duet_sdk.data.events import EventDataset, EventTable, ExampleSet, StreamEvents
from duet_sdk.data.routing import (
    CLICK_TASKS,
    CONV_TASKS,
    concat_examples,
    downsample_negatives,
    ranker_examples,
    synthetic_conv_examples,
)
from duet_sdk.data.schema import EventSchema, StreamSpec
from duet_sdk.errors import ConfigError
from duet_sdk.validation import require_int

DAY = 86_400
START_TIME = 1_700_000_000
ACTIONS = {
    "click": 0,
    "onsite_conversion": 1,
    "offsite_conversion": 2,
    "link_click": 3,
    "button_click": 4,
    "unattributed_conversion": 5,
}
USER_ID_BASE, ITEM_ID_BASE, AUTHOR_ID_BASE = 10_000_000, 500_000_000, 9_000_000
# Offsite events after a click: (conv-affinity scale, click-affinity scale, bias) of their logit.
OFFSITE_EVENTS = {
    "offsite_conversion": (2.5, 0.8, -5.0),
    "link_click": (1.5, 0.3, -3.8),
    "button_click": (1.5, 0.3, -4.3),
}
# The same for conv-stream labels, by CONV_TASKS column (attributed conversion, link click, button click).
OFFSITE_LABELS = {0: (2.5, 0.8, -5.7), 2: (1.5, 0.3, -2.5), 3: (1.5, 0.3, -3.0)}


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and shape of the synthetic world. ``seed`` fixes everything."""

    num_users: int = 3000
    num_items: int = 1000
    num_authors: int = 50
    trait_dim: int = 2
    shared_weight: float = 0.5
    days: int = 30
    mean_impressions: float = 120.0
    examples_per_user: int = 16
    ranker_examples_per_user: int = 32
    val_fraction: float = 0.2
    downsample_rate: float = 0.5
    max_click_len: int = 32
    max_conv_len: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "num_users",
            "num_items",
            "num_authors",
            "trait_dim",
            "examples_per_user",
            "ranker_examples_per_user",
            "max_click_len",
            "max_conv_len",
        ):
            require_int(f"SyntheticConfig.{name}", getattr(self, name), 1)
        if self.days < 4:
            raise ConfigError("SyntheticConfig.days", "an int >= 4", self.days)
        if not self.shared_weight >= 0.0:
            raise ConfigError("SyntheticConfig.shared_weight", "a float >= 0", self.shared_weight)
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError("SyntheticConfig.val_fraction", "a float in (0, 1)", self.val_fraction)
        if not 0.0 < self.downsample_rate <= 1.0:
            raise ConfigError("SyntheticConfig.downsample_rate", "a float in (0, 1]", self.downsample_rate)

    def schema(self) -> EventSchema:
        # Static IDs are coarse user attributes: validation users are held out, so a raw user ID would
        # only let models memorise training users and hash unseen ones into their rows.
        return EventSchema(
            streams=(StreamSpec("click", self.max_click_len), StreamSpec("conv", self.max_conv_len)),
            static_sparse=("age_bucket", "region", "device"),
        )


@dataclass
class World:
    """Latent truth: user traits (U, k) each, item latents (N, 3k), item popularity (N,), the shared-trait weight."""

    shared: np.ndarray
    click: np.ndarray
    conv: np.ndarray
    item_latent: np.ndarray
    item_author: np.ndarray
    popularity: np.ndarray
    item_quality: np.ndarray
    shared_weight: float

    def _affinity(self, own: np.ndarray, part: int, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        """(E,) ``(w s·a_s + t·a_t) / sqrt(k (1 + w^2))`` for the user's own trait t: unit variance."""
        k, w = self.shared.shape[1], self.shared_weight
        a = self.item_latent[item]
        shared = np.sum(self.shared[user] * a[:, :k], 1)
        specific = np.sum(own[user] * a[:, part * k : (part + 1) * k], 1)
        return (w * shared + specific) / np.sqrt(k * (1.0 + w * w))

    def click_affinity(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        return self._affinity(self.click, 1, user, item)

    def conv_affinity(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        return self._affinity(self.conv, 2, user, item)


@dataclass
class SyntheticDataset(EventDataset):
    """The synthetic dataset (with its own ranker rows) plus the latent truth it was drawn from."""

    world: World


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _make_world(cfg: SyntheticConfig, rng: np.random.Generator) -> World:
    k = cfg.trait_dim
    centroids = rng.normal(size=(cfg.num_authors, 3 * k))
    author = rng.integers(0, cfg.num_authors, cfg.num_items)
    latent = 0.9 * centroids[author] + 0.45 * rng.normal(size=(cfg.num_items, 3 * k))
    popularity = 1.0 / np.arange(1, cfg.num_items + 1) ** 0.7
    return World(
        shared=rng.normal(size=(cfg.num_users, k)),
        click=rng.normal(size=(cfg.num_users, k)),
        conv=rng.normal(size=(cfg.num_users, k)),
        item_latent=latent,
        item_author=author,
        popularity=rng.permutation(popularity / popularity.sum()),
        item_quality=rng.normal(size=cfg.num_items),
        shared_weight=cfg.shared_weight,
    )


def _item_ids(world: World, rng: np.random.Generator) -> np.ndarray:
    """(N, 3 + 2) per item: item id, author id, media type, then two semantic codes of its latent."""
    n, dim = world.item_latent.shape
    coarse = np.argmax(world.item_latent @ rng.normal(size=(dim, 16)), axis=1)
    fine = np.argmax(world.item_latent @ rng.normal(size=(dim, 64)), axis=1)
    media = rng.integers(0, 4, n)
    return np.stack([ITEM_ID_BASE + np.arange(n), AUTHOR_ID_BASE + world.item_author, media, coarse, fine], axis=1)


def _events(cfg: SyntheticConfig, world: World, rng: np.random.Generator) -> tuple[dict[str, list], np.ndarray]:
    """Simulate impressions over ``cfg.days``; return per-stream (user, time, item, position, action) columns."""
    activity = rng.lognormal(0.0, 0.5, cfg.num_users)
    counts = rng.poisson(cfg.mean_impressions * activity)
    user = np.repeat(np.arange(cfg.num_users), counts)
    item = rng.choice(cfg.num_items, size=len(user), p=world.popularity)
    time = START_TIME + rng.integers(0, cfg.days * DAY, len(user))
    position = rng.integers(0, 10, len(user))
    click_aff, conv_aff = world.click_affinity(user, item), world.conv_affinity(user, item)
    clicked = rng.random(len(user)) < _sigmoid(2.0 * click_aff - 0.15 * position - 1.5)
    streams: dict[str, list] = {"click": [], "conv": []}
    streams["click"].append((user[clicked], time[clicked], item[clicked], position[clicked], ACTIONS["click"]))
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
        streams["conv"].append((user[hit], time[hit] + delay, item[hit], position[hit], ACTIONS[action]))
    lone = rng.random(len(user)) < 0.004 * _sigmoid(2.5 * conv_aff - 1.0)
    streams["conv"].append((user[lone], time[lone], item[lone], position[lone], ACTIONS["unattributed_conversion"]))
    return streams, activity


def _stream_events(parts: list, item_ids: np.ndarray, num_users: int) -> StreamEvents:
    user, time, item, position, action = (
        np.concatenate([np.broadcast_to(p[i], p[0].shape) for p in parts]) for i in range(5)
    )
    order = np.lexsort((time, user))
    user, time, item, position, action = user[order], time[order], item[order], position[order], action[order]
    ids = item_ids[item]  # (N, 5): item, author, media, coarse, fine
    packed = np.stack([ids[:, 0], ids[:, 1], ids[:, 2], position, action, ids[:, 3], ids[:, 4]], axis=1)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(user, minlength=num_users))])
    return StreamEvents(offsets.astype(np.int64), time.astype(np.int64), packed.astype(np.int64))


def _item_features(
    cfg: SyntheticConfig, world: World, item_ids: np.ndarray, items: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate features of ``items`` (E,): sparse (E, 5) int64 and dense (E, 2) float32 (popularity, quality)."""
    dense = np.stack([np.log1p(world.popularity[items] * cfg.num_items), world.item_quality[items]], 1)
    return item_ids[items], dense.astype(np.float32)


def _request_times(cfg: SyntheticConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) request times in the last third of the window, after most of the history."""
    return START_TIME + rng.integers((cfg.days * 2 // 3) * DAY, cfg.days * DAY, n)


def _attributed_rows(
    cfg: SyntheticConfig,
    world: World,
    item_ids: np.ndarray,
    user: np.ndarray,
    request: np.ndarray,
    rng: np.random.Generator,
) -> ExampleSet:
    """Conversion-stream rows for clicked candidates: attributed conversion, link and button click labels."""
    clicked = rng.choice(cfg.num_items, size=len(user), p=world.popularity)
    click_aff, conv_aff = world.click_affinity(user, clicked), world.conv_affinity(user, clicked)
    labels = np.zeros((len(user), len(CONV_TASKS)), np.float32)
    for column, (scale, click_scale, bias) in OFFSITE_LABELS.items():
        labels[:, column] = rng.random(len(user)) < _sigmoid(
            scale * conv_aff + click_scale * click_aff + 0.3 * world.item_quality[clicked] + bias
        )
    mask = np.ones_like(labels)
    mask[:, CONV_TASKS.index("unattributed_conversion")] = 0.0
    return ExampleSet(
        CONV_TASKS,
        user,
        request,
        *_item_features(cfg, world, item_ids, clicked),
        labels,
        mask,
        np.zeros(len(user), bool),
    )


def _examples(
    cfg: SyntheticConfig, world: World, item_ids: np.ndarray, users: np.ndarray, rng: np.random.Generator
) -> tuple[ExampleSet, ExampleSet]:
    """Click-stream and conversion-stream examples (not downsampled) for ``users``."""
    user = np.repeat(users, cfg.examples_per_user)
    request = _request_times(cfg, len(user), rng)
    shown = rng.choice(cfg.num_items, size=len(user), p=world.popularity)
    click_aff, conv_aff = world.click_affinity(user, shown), world.conv_affinity(user, shown)
    ctr = rng.random(len(user)) < _sigmoid(2.0 * click_aff + 0.3 * world.item_quality[shown] - 1.5)
    onsite = ctr & (rng.random(len(user)) < _sigmoid(1.5 * click_aff + 0.5 * conv_aff - 1.0))
    ones = np.ones((len(user), len(CLICK_TASKS)), np.float32)
    labels = np.stack([ctr, onsite], 1).astype(np.float32)
    clicks = ExampleSet(
        CLICK_TASKS,
        user,
        request,
        *_item_features(cfg, world, item_ids, shown),
        labels,
        ones,
        np.zeros(len(user), bool),
    )
    attributed = _attributed_rows(cfg, world, item_ids, user, request, rng)

    n_syn = len(users) * max(1, cfg.examples_per_user // 4)
    s_user = rng.choice(users, n_syn)
    s_item = rng.choice(cfg.num_items, size=n_syn, p=world.popularity)
    s_labels = np.zeros((n_syn, len(CONV_TASKS)), np.float32)
    s_labels[:, CONV_TASKS.index("unattributed_conversion")] = rng.random(n_syn) < _sigmoid(
        2.5 * world.conv_affinity(s_user, s_item) - 4.0
    )
    s_request = _request_times(cfg, n_syn, rng)
    unattributed = ExampleSet(
        CONV_TASKS,
        s_user,
        s_request,
        *_item_features(cfg, world, item_ids, s_item),
        s_labels,
        np.ones_like(s_labels),
        np.zeros(n_syn, bool),
    )
    return clicks, concat_examples([attributed, synthetic_conv_examples(unattributed)])


def _ranker_rows(
    cfg: SyntheticConfig, world: World, item_ids: np.ndarray, users: np.ndarray, rng: np.random.Generator
) -> ExampleSet:
    """The downstream ranker's own rows for ``users``: attributed conversion-stream rows, ranker tasks."""
    user = np.repeat(users, cfg.ranker_examples_per_user)
    return ranker_examples(_attributed_rows(cfg, world, item_ids, user, _request_times(cfg, len(user), rng), rng))


def generate(cfg: SyntheticConfig) -> SyntheticDataset:
    """Build the world, its event table and the routed train/validation example sets."""
    rng = np.random.default_rng(cfg.seed)
    world = _make_world(cfg, rng)
    item_ids = _item_ids(world, rng)
    streams, activity = _events(cfg, world, rng)
    schema = cfg.schema()
    region = np.argmax(world.shared @ rng.normal(size=(cfg.trait_dim, 8)), axis=1)
    age_bucket = np.digitize(world.shared[:, -1] + rng.normal(size=cfg.num_users), [-1.5, -0.5, 0.5, 1.5])
    static_sparse = np.stack([age_bucket, region, rng.integers(0, 3, cfg.num_users)], 1)
    tenure = rng.exponential(1.0, cfg.num_users)
    spend = world.conv[:, 0] * 0.5 + rng.normal(size=cfg.num_users)
    static_dense = np.stack([np.log(activity), tenure, spend], 1).astype(np.float32)
    table = EventTable(
        schema=schema,
        user_ids=(USER_ID_BASE + np.arange(cfg.num_users)).astype(np.int64),
        static_sparse=static_sparse.astype(np.int64),
        static_dense=static_dense,
        streams={name: _stream_events(parts, item_ids, cfg.num_users) for name, parts in streams.items()},
    )
    users = rng.permutation(cfg.num_users)
    n_val = max(1, int(round(cfg.val_fraction * cfg.num_users)))
    val_users, train_users = np.sort(users[:n_val]), np.sort(users[n_val:])
    click_train, conv_train = _examples(cfg, world, item_ids, train_users, rng)
    click_val, conv_val = _examples(cfg, world, item_ids, val_users, rng)
    click_train = downsample_negatives(click_train, cfg.downsample_rate, cfg.seed)
    ranker_train = _ranker_rows(cfg, world, item_ids, train_users, rng)
    ranker_val = _ranker_rows(cfg, world, item_ids, val_users, rng)
    return SyntheticDataset(
        schema, table, click_train, click_val, conv_train, conv_val, ranker_train, ranker_val, world
    )
