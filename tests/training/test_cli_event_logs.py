"""duet-train / duet-experiment on event logs through a preset or ``--event-spec FILE``."""

from __future__ import annotations

from pathlib import Path

from duet_sdk.checkpoint import load_checkpoint
from duet_sdk.experiments.cli import build_parser as experiment_parser
from duet_sdk.training.cli import main
from duet_sdk.training.upstream import registry_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MOVIELENS = FIXTURES / "movielens_small.inter"


def _train(out: Path, *extra: str) -> int:
    return main(["click", "--events", str(MOVIELENS), "--out", str(out), "--no-progress", "--epochs", "1", *extra])


def test_movielens_preset_with_the_global_split_trains_a_gated_checkpoint(tmp_path, capsys):
    # the preset and the split's plumbing, not the model: one pass over 737 ratings is a handful of
    # steps, so the base-rate rule is off here (the fixture runs below and in test_cli.py check NE < 1)
    assert _train(tmp_path, "--event-format", "movielens", "--split", "global", "--gate-max-ne", "off") == 0
    out = capsys.readouterr().out
    assert "global temporal split" in out and "gate: ACCEPTED" in out and "val NE ctr" in out
    lineage = load_checkpoint(Path(registry_for(tmp_path, "click").latest_accepted().path)).lineage["data"]
    assert lineage["source"] == "movielens" and lineage["options"]["split"] == "global"
    assert lineage["spec"]["behavior"] == "rating:float" and len(lineage["sha256"]) == 64


def test_event_spec_file_overrides_the_preset_and_spills_when_asked(tmp_path, capsys):
    spill = tmp_path / "spill"
    assert _train(tmp_path / "run", "--event-spec", str(FIXTURES / "movielens_items.toml"), "--spill-dir", str(spill),
                  "--gate-max-ne", "off") == 0  # a 40-user fixture: this test is about the spec, not the model
    assert "item_table" in capsys.readouterr().out  # the report counts items without a side-table row
    lineage = load_checkpoint(Path(registry_for(tmp_path / "run", "click").latest_accepted().path)).lineage["data"]
    assert lineage["source"] == "movielens_items" and lineage["spec"]["item_table"]["sparse"] == ["genre_id"]
    assert list(spill.glob("events-*/stream_click_ids.bin"))


def test_bad_spec_file_exits_2_naming_the_field(tmp_path, capsys):
    spec = tmp_path / "bad.toml"
    spec.write_text(
        (FIXTURES / "movielens_items.toml").read_text().replace('timestamp_unit = "s"', 'timestamp_unit = "minutes"')
    )
    assert _train(tmp_path, "--event-spec", str(spec)) == 2
    assert "columns.timestamp_unit" in capsys.readouterr().err and not (tmp_path / "click").exists()


def test_a_log_in_the_wrong_layout_exits_2_naming_the_missing_columns(tmp_path, capsys):
    assert _train(tmp_path, "--event-format", "taobao") == 2  # a RecBole file read as Taobao CSV
    assert "expected 5 fields" in capsys.readouterr().err


def test_duet_experiment_accepts_event_spec_and_format():
    args = experiment_parser().parse_args(
        ["table1", "--events", "x.inter", "--event-spec", "s.toml", "--event-format", "movielens"]
    )
    assert args.event_spec == Path("s.toml") and args.event_format == "movielens"


def test_conv_encoder_on_a_generated_movielens_log_beats_the_base_rate_with_the_default_recipe(tmp_path, capsys):
    # movielens_3k.inter: 3,360 generated ratings in ML-100K's layout (tests/fixtures/make_movielens_fixture.py).
    # The default recipe, except enough steps for a log this small (one pass is 12 steps): the restored
    # best state must beat the base rate on the global split's validation users, and the gate says so.
    code = main(
        [
            "conv",
            "--events",
            str(FIXTURES / "movielens_3k.inter"),
            "--event-format",
            "movielens",
            "--split",
            "global",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--threads",
            "1",
            "--min-steps",
            "200",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "gate: ACCEPTED" in out
    checkpoint = registry_for(tmp_path, "conv").latest_accepted()
    assert checkpoint.primary_task == "attributed_conversion" and checkpoint.primary_ne < 1.0
    assert checkpoint.metrics["best_step"] in [h["step"] for h in checkpoint.metrics["history"]]
    data = checkpoint.lineage["data"]["options"]
    assert data["negatives_exclude_history"] and data["popularity_at_request"]
