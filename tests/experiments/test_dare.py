"""duet-experiment dare on a tiny long-history world: every arm trains, NDCG@k is reported where the
search exists, and the summary's paired comparisons are what the per-seed figures say."""

import json
import math

import numpy as np
import pytest
import torch

from duet_sdk.errors import ConfigError
from duet_sdk.experiments.cli import main
from duet_sdk.experiments.dare import DareConfig, ndcg_at_k
from duet_sdk.experiments.dare_cli import run_dare

TINY = DareConfig(
    seeds=(0, 1), arms=("off", "twin", "dare", "dare_d2"), num_users=120, history_len=64, top_k=8, d_repr=8, epochs=1
)


@pytest.fixture(scope="module")
def dare(tmp_path_factory):
    out = tmp_path_factory.mktemp("dare")
    return out, run_dare(TINY, out)


def test_every_arm_trains_for_every_seed_with_finite_metrics(dare):
    _, summary = dare
    assert {(r["arm"], r["seed"]) for r in summary["per_seed"]} == {(a, s) for a in TINY.arms for s in TINY.seeds}
    for r in summary["per_seed"]:
        assert math.isfinite(r["val_ne"]) and 0.0 <= r["val_auc"] <= 1.0
        assert ("search_ndcg" in r) == (r["arm"] != "off")
        if r["arm"] != "off":
            assert 0.0 <= r["random_search_ndcg"] <= 1.0 and 0.0 <= r["search_ndcg"] <= 1.0
    assert summary["arms"]["dare_d2"]["d_att"] == 4 and summary["arms"]["dare"]["d_att"] == 8


def test_paired_comparisons_match_the_per_seed_figures(dare):
    out, summary = dare
    by = {(r["arm"], r["seed"]): r for r in summary["per_seed"]}
    gaps = [by[("dare", s)]["val_ne"] - by[("twin", s)]["val_ne"] for s in TINY.seeds]
    assert summary["comparisons"]["dare_minus_twin_ne"]["mean"] == pytest.approx(np.mean(gaps), abs=1e-12)
    assert summary["comparisons"]["dare_minus_twin_ne"]["std"] == pytest.approx(np.std(gaps, ddof=1), abs=1e-12)
    rel = [
        100 * (by[("dare_d2", s)]["val_ne"] - by[("dare", s)]["val_ne"]) / by[("dare", s)]["val_ne"] for s in TINY.seeds
    ]
    assert summary["comparisons"]["dare_d2_vs_dare_ne_pct"]["mean"] == pytest.approx(np.mean(rel), abs=1e-9)
    assert json.loads((out / "dare.json").read_text())["config"]["seeds"] == [0, 1]
    assert "| dare_d2 | 4 |" in (out / "dare.md").read_text()


def test_ndcg_is_one_for_the_ideal_order_and_lower_for_a_worse_one():
    ideal = np.array([[3.0, 1.0, 0.0]])
    assert ndcg_at_k(ideal, ideal)[0] == pytest.approx(1.0)
    assert ndcg_at_k(np.array([[0.0, 1.0, 3.0]]), ideal)[0] < 0.7
    assert math.isnan(ndcg_at_k(np.zeros((1, 3)), np.zeros((1, 3)))[0])


def test_an_existing_output_is_never_overwritten(dare):
    out, _ = dare
    with pytest.raises(ConfigError):
        run_dare(DareConfig(seeds=(0,), arms=("off",), num_users=50, epochs=1), out)


def test_unknown_arm_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        DareConfig(arms=("din",))
    assert info.value.field == "DareConfig.arms"
    assert main(["dare", "--seeds", "0", "0", "--out", "/nonexistent/x"]) == 2


def test_label_options_outside_the_long_history_benchmark_are_a_config_error():
    """``--label-relevance`` shapes only the long-history generator's labels: refused, not ignored."""
    with pytest.raises(ConfigError) as info:
        DareConfig(dataset="longtail", label_relevance="signed")
    assert info.value.field == "DareConfig.label_relevance"
    with pytest.raises(ConfigError):
        DareConfig(events="ml-100k.inter", relevance_scale=2.0)
    assert DareConfig(label_relevance="signed", relevance_scale=2.0).label_relevance == "signed"


def _naive_search_ndcg(ranker, rows, table_of) -> float:
    """Per validation row: history sliced from the event table, attention embeddings read from the
    variant's own table, float64 scores, a full stable sort, DCG by hand."""
    from duet_sdk.data.long_history import STREAM

    ta = ranker.target_attention
    k, fields = ta.config.top_k, [rows.table.schema.event_fields.index(f) for f in ta.config.fields]
    columns = [rows.table.schema.item_sparse.index(f) for f in ta.config.fields]
    events, val = rows.table.streams[STREAM], rows.val
    end = rows.table.history_end(STREAM, val.user_index, val.request_time)
    embed = lambda ids: table_of(ta)(torch.from_numpy(ids)).flatten(-2).detach().double().numpy()  # noqa: E731
    values = []
    for r in range(len(val)):
        start = max(int(events.offsets[val.user_index[r]]), int(end[r]) - ta.config.max_len)
        history, target = events.ids[start : end[r]][:, fields], val.item_sparse[r][columns]
        gains = 2.0 ** rows.world.relevance(history, target) - 1.0 if len(history) else np.zeros(0)
        ideal = np.sort(gains)[::-1][:k]
        if ideal.sum() <= 0:
            continue
        picked = gains[np.argsort(-(embed(history) @ embed(target[None])[0]), kind="stable")[:k]]
        dcg = lambda g: sum(x / math.log2(i + 2) for i, x in enumerate(g))  # noqa: E731
        values.append(dcg(picked) / dcg(ideal))
    return float(np.mean(values))


@pytest.mark.parametrize(
    ("arm", "table_of"),
    [("dare", lambda ta: ta.att_table), ("dare_d2", lambda ta: ta.att_table), ("twin", lambda ta: ta.repr_table)],
)
def test_search_ndcg_matches_a_naive_per_row_reference_reading_the_variants_attention_table(arm, table_of):
    from duet_sdk.experiments.dare import load_rows, search_ndcg
    from duet_sdk.models.ranker import Ranker
    from duet_sdk.training.ranker import ranker_config

    config = DareConfig(seeds=(0,), num_users=60, history_len=48, top_k=6, d_repr=8)
    rows = load_rows(config, 0)
    torch.manual_seed(0)
    ranker = Ranker(ranker_config("baseline", rows.table.schema, {}, target_attention=config.target_attention(arm)))
    with torch.no_grad():  # a trained-looking attention table: relevance is not a by-product of the init
        table_of(ranker.target_attention).table.weight.normal_(std=0.3)
    expected = _naive_search_ndcg(ranker, rows, table_of)
    assert search_ndcg(ranker, rows.table, rows.val, rows.world) == pytest.approx(expected, abs=1e-9)
    # a search with the other table (or at random) scores differently: the figure depends on the right table
    assert search_ndcg(ranker, rows.table, rows.val, rows.world, random_seed=0) != pytest.approx(expected, abs=1e-3)


def test_dare_merge_of_per_seed_parts_equals_the_summary_of_one_run(dare, tmp_path):
    """Seeds run as separate processes merge into the table one process over all seeds writes;
    parts with other settings are refused."""
    _, summary = dare
    parts = []
    for seed in TINY.seeds:
        part = tmp_path / f"seed-{seed}"
        part.mkdir()
        rows = [r for r in summary["per_seed"] if r["seed"] == seed]
        config = {**summary["config"], "seeds": [seed]}
        (part / "dare.json").write_text(json.dumps({"config": config, "per_seed": rows}))
        parts.append(str(part))
    assert main(["dare-merge", "--out", str(tmp_path / "merged"), *parts]) == 0
    merged = json.loads((tmp_path / "merged" / "dare.json").read_text())
    same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # noqa: E731  (NaN == NaN)
    assert same(merged["arms"], summary["arms"]) and same(merged["comparisons"], summary["comparisons"])
    assert same(merged["config"], summary["config"])
    other = json.loads((tmp_path / "seed-1" / "dare.json").read_text())
    other["config"]["aux_loss_weight"] = 1.0
    (tmp_path / "seed-1" / "dare.json").write_text(json.dumps(other))
    assert main(["dare-merge", "--out", str(tmp_path / "refused"), *parts]) == 2
