"""duet-experiment table1 on a tiny synthetic world: every configuration trains and the outputs are written."""

import json
import math

import pytest

from duet_sdk.errors import ConfigError
from duet_sdk.experiments.cli import run_table1
from duet_sdk.experiments.figures import cosine_distances, pca_2d
from duet_sdk.experiments.table1 import VARIANTS, Table1Config
from duet_sdk.gate import registry_name
from duet_sdk.side import SideConfig

TINY = Table1Config(
    seeds=(0, 1), num_users=300, encoder_epochs=1, ranker_epochs=1, side=SideConfig(levels=2, codebook_size=16)
)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    out = tmp_path_factory.mktemp("table1")
    return out, run_table1(TINY, out)


def test_the_four_ranker_configurations_and_duet_on_floats_train_for_every_seed(table):
    out, summary = table
    for row in summary["per_seed"]:
        assert set(row["ne"]) == set(VARIANTS)
        assert all(math.isfinite(ne) for ne in row["ne"].values()) and math.isfinite(row["duet_float_ne"])
    from duet_sdk.gate import CheckpointRegistry

    for row in summary["per_seed"]:
        for variant in VARIANTS:
            decisions = CheckpointRegistry(out / f"seed-{row['seed']}" / "registry", registry_name(variant)).decisions()
            # first checkpoint of each variant: accepted exactly when it beats the base rate (NE < 1.0)
            assert (
                len(decisions) == 1 and decisions[0].accepted == (row["ne"][variant] < 1.0) == row["accepted"][variant]
            )


def test_table_reports_gains_bound_share_and_side_cost(table):
    out, summary = table
    row = summary["per_seed"][0]
    gains = row["gain_pct"]
    assert row["additive_bound_pct"] == pytest.approx(gains["click"] + gains["conv"], abs=1e-12)
    ne = row["ne"]
    assert gains["duet"] == pytest.approx(100 * (ne["baseline"] - ne["duet"]) / ne["baseline"], abs=1e-12)
    assert row["side_ne_cost_pct"] == pytest.approx(
        100 * (ne["duet"] - row["duet_float_ne"]) / row["duet_float_ne"], abs=1e-12
    )
    assert row["codec"]["click"]["compression_ratio_vs_fp16"] == pytest.approx(2 * 64 / 2)  # d=64, 2 levels x 1 byte
    stats = summary["mean_std"]["ne"]["baseline"]
    assert stats["mean"] == pytest.approx(sum(r["ne"]["baseline"] for r in summary["per_seed"]) / 2, abs=1e-12)
    assert json.loads((out / "table1.json").read_text())["seeds"] == [0, 1]
    markdown = (out / "table1.md").read_text()
    assert "DUET (both)" in markdown and "Additive upper bound" in markdown


def test_table_counts_seeds_below_the_base_rate_and_compares_duet_with_the_baseline_sd(table):
    _, summary = table
    rows = summary["per_seed"]
    for variant in VARIANTS:
        assert summary["below_base_rate"][variant] == f"{sum(r['ne'][variant] < 1.0 for r in rows)}/{len(rows)}"
    ms, vs = summary["mean_std"]["ne"], summary["duet_vs_baseline"]
    assert vs["ne_gap"] == pytest.approx(ms["baseline"]["mean"] - ms["duet"]["mean"], abs=1e-12)
    assert vs["gap_exceeds_one_sd"] == (vs["ne_gap"] > max(ms["baseline"]["std"], ms["duet"]["std"]))


def test_seeds_run_apart_merge_into_the_same_table(table, tmp_path):
    from duet_sdk.experiments.cli import main
    from duet_sdk.experiments.table1 import runs_from_summary, summarize

    out, summary = table
    again = summarize(runs_from_summary(summary), TINY.side)
    assert json.dumps(again["mean_std"], sort_keys=True) == json.dumps(summary["mean_std"], sort_keys=True)  # NaN-safe
    assert main(["table1-merge", "--out", str(tmp_path / "m"), str(out), str(out)]) == 2  # the same seeds twice


def test_figures_are_written_as_png(table):
    out, summary = table
    for name in ("figure5_pca.png", "figure5_cosine.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cosine = summary["figures"]["cosine_distance"]
    assert 0.0 <= cosine["q1"] <= cosine["median"] <= cosine["q3"] <= 2.0


def test_an_existing_seed_directory_is_never_overwritten(table):
    out, _ = table
    with pytest.raises(ConfigError, match="does not exist yet"):
        run_table1(TINY, out)


def test_pca_and_cosine_distance_match_hand_values():
    import numpy as np

    x = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    projected, ratio = pca_2d(x)
    assert ratio.tolist() == pytest.approx([0.8, 0.2])  # variances 8 and 2 along the axes
    assert np.abs(projected[:, 0]).tolist() == pytest.approx([2, 2, 0, 0])
    a = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    b = np.array([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    assert cosine_distances(a, b).tolist() == pytest.approx([0.0, 1.0, 2.0])


def test_ranker_learning_rate_applies_to_rankers_only():
    config = Table1Config(seeds=(3,), ranker_lr=1e-3)
    assert config.recipe("ranker", 3).lr == 1e-3 and config.recipe("ranker", 3).seed == 3
    assert config.recipe("click", 3).lr == config.recipe("conv", 3).lr == config.train.lr == 3e-3
    assert Table1Config().recipe("ranker", 0).lr == 3e-3  # None: the rankers use the encoders' recipe
