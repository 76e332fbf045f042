"""Long-history synthetic benchmark for target attention, with the truly relevant behaviours known.

Users have one long behaviour stream (``behavior``: item and category IDs, hundreds to thousands of
events, heavy-tailed per user); items have Zipf popularity within Zipf-popular categories, and a share
of them appear only during the window (new items are never seen before their birth). Every category is
related to a few partner categories.

The relevance of a past behaviour ``b`` to a candidate ``t`` is known exactly::

    rel(b, t) = 2 if item(b) == item(t), else 1 if same category, 0.5 if partner category, else 0

and a row's labels follow ``sigmoid(a log1p(sum_b rel(b, t)) + quality(t) + bias)`` over the user's
``label_window`` most recent behaviours before the request (``label_relevance="max"``: ``max_b``
instead of the sum, so the label depends on the most relevant behaviour, not on how many there are).
So a model must find the relevant behaviours in a long history: static features and the candidate
alone cannot tell whom an item suits.

``label_relevance="signed"`` makes attention and representation want different things (the conflict
DARE removes): every item also has a latent satisfaction ``s(i)`` of +1 or -1 (half each, independent
of its category, popularity and quality), and ``S = sum_b rel(b, t) s(b)`` drives the label through
``a sign(S) log1p(|S|)``: a related satisfying behaviour raises the click rate, a related
disappointing one lowers it. The search must still retrieve every related behaviour whatever its
satisfaction, while the representation must encode the satisfaction, which is not a relevance.
``relevance="complements"`` changes the truth itself: only the partner categories are relevant
(``rel = 1``; the same item or category ``0``), like a phone case after a phone. A freshly
initialised embedding matches an ID with itself, so this is the relevance a search must learn rather
than inherit from its initialisation.
``World.relevance`` gives the relevance of any history position, for NDCG@k of a search stage (the
same truth for every ``label_relevance``: what carries information about the label).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from duet_sdk.data.events import EventTable, ExampleSet, StreamEvents
from duet_sdk.data.routing import RANKER_TASKS
from duet_sdk.data.schema import EventSchema, StreamSpec
from duet_sdk.errors import ConfigError
from duet_sdk.validation import require_int

DAY = 86_400
START_TIME = 1_700_000_000
ITEM_ID_BASE, CATEGORY_ID_BASE, USER_ID_BASE = 700_000_000, 3_000_000, 40_000_000
STREAM = "behavior"
SAME_ITEM, SAME_CATEGORY, PARTNER = 2.0, 1.0, 0.5
# Label logit offsets per ranker task (offsite conversion is the rarest, link clicks the most common).
LABEL_RELEVANCE = ("sum", "max", "signed")  # how a row's behaviours' relevance to the candidate drives its labels
RELEVANCE = ("graded", "complements")  # what makes a behaviour relevant to a candidate
TASK_BIAS = {"offsite_conversion": 0.0, "link_click": 1.0, "button_click": 0.5}


@dataclass(frozen=True)
class LongHistoryConfig:
    """Size and shape of the long-history world. ``seed`` fixes everything."""

    num_users: int = 2000
    num_items: int = 20_000
    num_categories: int = 300
    partners_per_category: int = 3
    median_events: float = 300.0
    events_sigma: float = 0.8
    max_events: int = 3000
    new_item_fraction: float = 0.3
    days: int = 60
    examples_per_user: int = 16
    label_window: int = 200
    relevance_scale: float = 1.0
    label_relevance: str = "sum"
    relevance: str = "graded"
    val_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "num_users",
            "num_items",
            "num_categories",
            "partners_per_category",
            "max_events",
            "examples_per_user",
            "label_window",
        ):
            require_int(f"LongHistoryConfig.{name}", getattr(self, name), 1)
        require_int("LongHistoryConfig.days", self.days, 4)
        if self.num_items < self.num_categories:
            raise ConfigError(
                "LongHistoryConfig.num_items", f">= num_categories ({self.num_categories})", self.num_items
            )
        if self.label_relevance not in LABEL_RELEVANCE:
            raise ConfigError("LongHistoryConfig.label_relevance", f"one of {LABEL_RELEVANCE}", self.label_relevance)
        if self.relevance not in RELEVANCE:
            raise ConfigError("LongHistoryConfig.relevance", f"one of {RELEVANCE}", self.relevance)
        if not self.median_events >= 1.0:
            raise ConfigError("LongHistoryConfig.median_events", "a float >= 1", self.median_events)
        for name in ("new_item_fraction", "val_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"LongHistoryConfig.{name}", "a float in [0, 1)", getattr(self, name))

    def schema(self) -> EventSchema:
        return EventSchema(
            streams=(StreamSpec(STREAM, self.max_events),),
            id_fields=("item_id", "category_id"),
            num_semantic_codes=0,
            static_sparse=("age_bucket", "region", "device"),
            static_dense=("activity", "tenure"),
            item_sparse=("item_id", "category_id"),
            item_dense=("popularity", "quality"),
        )


@dataclass
class World:
    """Latent truth: item categories, popularity, quality and birth times; category partner relations."""

    item_category: np.ndarray  # (I,)
    item_popularity: np.ndarray  # (I,) sums to 1
    item_quality: np.ndarray  # (I,)
    item_birth: np.ndarray  # (I,) Unix seconds
    related: np.ndarray  # (C, C) float: 1 on the diagonal, PARTNER for partners, else 0
    item_satisfaction: np.ndarray  # (I,) +1 or -1: the sign a related behaviour gives ``signed`` labels
    kind: str = "graded"  # LongHistoryConfig.relevance

    def relevance(self, history: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Relevance of behaviours to candidates.

        Args:
            history: (..., T, 2) raw (item_id, category_id); target: (..., 2) raw IDs of the candidate.
        Returns:
            (..., T) float64 in {0, 0.5, 1, 2} (``graded``) or {0, 1} (``complements``); IDs outside
            the world (padding) get 0.
        """
        h_item, h_cat = history[..., 0] - ITEM_ID_BASE, history[..., 1] - CATEGORY_ID_BASE
        t_item, t_cat = target[..., 0:1] - ITEM_ID_BASE, target[..., 1:2] - CATEGORY_ID_BASE
        c = len(self.related)
        inside = (h_cat >= 0) & (h_cat < c) & (h_item >= 0)
        rel = self.related[np.clip(h_cat, 0, c - 1), np.clip(t_cat, 0, c - 1)]
        if self.kind == "complements":
            rel = (rel == PARTNER).astype(np.float64)
        else:
            rel = np.where(h_item == t_item, SAME_ITEM, rel)
        return np.where(inside, rel, 0.0)


@dataclass
class LongHistoryDataset:
    """The event table, the ranker's train/validation rows and the latent truth."""

    schema: EventSchema
    table: EventTable
    ranker_train: ExampleSet
    ranker_val: ExampleSet
    world: World


def _zipf(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return rng.permutation(weights / weights.sum())


def _make_world(cfg: LongHistoryConfig, rng: np.random.Generator) -> World:
    c = cfg.num_categories
    category_pop = _zipf(c, 1.0, rng)
    category = np.concatenate(
        [np.arange(c), rng.choice(c, cfg.num_items - c, p=category_pop)]
    )  # every category has an item
    popularity = _zipf(cfg.num_items, 1.1, rng)
    window = cfg.days * DAY
    birth = np.where(
        rng.random(cfg.num_items) < cfg.new_item_fraction,
        START_TIME + rng.integers(0, window, cfg.num_items),
        START_TIME - DAY,
    )
    birth[:c] = START_TIME - DAY  # the first item of each category exists from the start
    related = np.eye(c)
    for cat in range(c):
        partners = rng.choice(np.delete(np.arange(c), cat), cfg.partners_per_category, replace=False)
        related[cat, partners] = related[partners, cat] = PARTNER
    # Drawn from its own stream, so adding it changed no other draw of a seed's world.
    satisfaction = np.random.default_rng((cfg.seed, 1)).choice(np.array([-1.0, 1.0]), cfg.num_items)
    return World(category, popularity, rng.normal(size=cfg.num_items), birth, related, satisfaction, cfg.relevance)


class _ItemSampler:
    """Draws items of a category by popularity among those already born at a given time."""

    def __init__(self, world: World) -> None:
        self.world = world
        order = np.argsort(world.item_category, kind="stable")
        self.items = order
        self.bounds = np.searchsorted(world.item_category[order], np.arange(len(world.related) + 1))
        weights = world.item_popularity[order]
        self.cum = np.cumsum(weights)
        self.first = order[self.bounds[:-1]]  # an item of each category born before the window

    def sample(self, category: np.ndarray, time: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        lo, hi = self.bounds[category], self.bounds[category + 1]
        base = np.where(lo > 0, self.cum[np.maximum(lo - 1, 0)], 0.0)
        u = base + rng.random(len(category)) * (self.cum[hi - 1] - base)
        pos = np.minimum(np.searchsorted(self.cum, u), hi - 1)
        item = self.items[pos]
        return np.where(self.world.item_birth[item] <= time, item, self.first[category])


def _user_interest(cfg: LongHistoryConfig, world: World, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per user up to 6 anchor categories (U, 6) and their weights (U, 6) (unused slots weigh 0)."""
    category_pop = np.bincount(world.item_category, weights=world.item_popularity, minlength=cfg.num_categories)
    anchors = rng.choice(cfg.num_categories, (cfg.num_users, 6), p=category_pop / category_pop.sum())
    count = np.minimum(2 + rng.poisson(1.5, cfg.num_users), 6)
    weights = rng.dirichlet(np.full(6, 0.7), cfg.num_users) * (np.arange(6)[None, :] < count[:, None])
    return anchors, weights / weights.sum(1, keepdims=True)


def _interest_categories(
    user: np.ndarray, anchors: np.ndarray, weights: np.ndarray, world: World, rng: np.random.Generator
) -> np.ndarray:
    """(E,) categories drawn from each user's anchors; a quarter of the time a partner of the anchor."""
    cum = np.cumsum(weights[user], 1)
    slot = np.minimum((rng.random(len(user))[:, None] > cum).sum(1), anchors.shape[1] - 1)
    cat = anchors[user, slot]
    partner_rows = world.related[cat] == PARTNER  # (E, C)
    partner = np.argmax(partner_rows * rng.random(partner_rows.shape), axis=1)
    return np.where(rng.random(len(user)) < 0.25, partner, cat)


def _random_categories(n: int, world: World, rng: np.random.Generator) -> np.ndarray:
    pop = np.bincount(world.item_category, weights=world.item_popularity, minlength=len(world.related))
    return rng.choice(len(world.related), n, p=pop / pop.sum())


def _events(
    cfg: LongHistoryConfig, world: World, sampler: _ItemSampler, anchors, weights, rng
) -> tuple[StreamEvents, np.ndarray]:
    counts = np.clip(
        np.round(rng.lognormal(np.log(cfg.median_events), cfg.events_sigma, cfg.num_users)), 5, cfg.max_events
    ).astype(np.int64)
    user = np.repeat(np.arange(cfg.num_users), counts)
    time = START_TIME + rng.integers(0, cfg.days * DAY, len(user))
    explore = rng.random(len(user)) < 0.1
    category = np.where(
        explore, _random_categories(len(user), world, rng), _interest_categories(user, anchors, weights, world, rng)
    )
    item = sampler.sample(category, time, rng)
    order = np.lexsort((time, user))
    ids = np.stack([ITEM_ID_BASE + item[order], CATEGORY_ID_BASE + world.item_category[item[order]]], 1)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return StreamEvents(offsets.astype(np.int64), time[order].astype(np.int64), ids.astype(np.int64)), counts


def _rows(
    cfg: LongHistoryConfig,
    world: World,
    sampler: _ItemSampler,
    table: EventTable,
    users: np.ndarray,
    anchors,
    weights,
    rng: np.random.Generator,
) -> ExampleSet:
    """Ranker rows of ``users``: half the candidates from the user's interests, half from the catalogue."""
    user = np.repeat(users, cfg.examples_per_user)
    n = len(user)
    request = START_TIME + rng.integers(cfg.days * 3 // 4 * DAY, cfg.days * DAY, n)
    category = np.where(
        rng.random(n) < 0.5, _interest_categories(user, anchors, weights, world, rng), _random_categories(n, world, rng)
    )
    item = sampler.sample(category, request, rng)
    target = np.stack([ITEM_ID_BASE + item, CATEGORY_ID_BASE + world.item_category[item]], 1)
    events = table.streams[STREAM]
    end = table.history_end(STREAM, user, request)
    start = np.maximum(events.offsets[user], end - cfg.label_window)
    relevance = np.zeros(n)
    for lo in range(0, n, 512):  # bounded memory: (512, label_window) at a time
        sl = slice(lo, lo + 512)
        span = np.arange(cfg.label_window)[None, :] + start[sl, None]
        inside = span < end[sl, None]
        history = events.ids[np.where(inside, span, 0)]
        rel = world.relevance(history, target[sl]) * inside
        if cfg.label_relevance == "signed":
            rel = rel * world.item_satisfaction[history[..., 0] - ITEM_ID_BASE]
        relevance[sl] = rel.max(1) if cfg.label_relevance == "max" else rel.sum(1)
    signal = np.sign(relevance) * np.log1p(np.abs(relevance))  # log1p(relevance) unless signed
    logit = cfg.relevance_scale * signal + 0.5 * world.item_quality[item] - 4.0
    labels = np.stack([rng.random(n) < 1.0 / (1.0 + np.exp(-(logit + TASK_BIAS[t]))) for t in RANKER_TASKS], 1)
    dense = np.stack([np.log1p(world.item_popularity[item] * cfg.num_items), world.item_quality[item]], 1)
    return ExampleSet(
        RANKER_TASKS,
        user,
        request,
        target.astype(np.int64),
        dense.astype(np.float32),
        labels.astype(np.float32),
        np.ones((n, len(RANKER_TASKS)), np.float32),
        np.zeros(n, bool),
    )


def generate_long_history(cfg: LongHistoryConfig) -> LongHistoryDataset:
    """Build the world, every user's behaviour stream and the ranker's train/validation rows (users held out)."""
    rng = np.random.default_rng(cfg.seed)
    world = _make_world(cfg, rng)
    sampler = _ItemSampler(world)
    anchors, weights = _user_interest(cfg, world, rng)
    stream, counts = _events(cfg, world, sampler, anchors, weights, rng)
    static_sparse = np.stack(
        [rng.integers(0, 5, cfg.num_users), rng.integers(0, 8, cfg.num_users), rng.integers(0, 3, cfg.num_users)], 1
    )
    static_dense = np.stack([np.log(counts), rng.exponential(1.0, cfg.num_users)], 1).astype(np.float32)
    schema = cfg.schema()
    table = EventTable(
        schema,
        (USER_ID_BASE + np.arange(cfg.num_users)).astype(np.int64),
        static_sparse.astype(np.int64),
        static_dense,
        {STREAM: stream},
    )
    users = rng.permutation(cfg.num_users)
    n_val = max(1, int(round(cfg.val_fraction * cfg.num_users)))
    val_users, train_users = np.sort(users[:n_val]), np.sort(users[n_val:])
    train = _rows(cfg, world, sampler, table, train_users, anchors, weights, rng)
    val = _rows(cfg, world, sampler, table, val_users, anchors, weights, rng)
    return LongHistoryDataset(schema, table, train, val, world)
