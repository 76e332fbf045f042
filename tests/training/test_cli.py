"""duet-train end to end on the Taobao-layout fixture: a gated checkpoint, a rejection, bad input."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from duet_sdk.checkpoint import load_checkpoint
from duet_sdk.data.eventlog import EventLogOptions, load_event_log
from duet_sdk.data.routing import recalibrate_tasks
from duet_sdk.data.spec import preset
from duet_sdk.gate import CheckpointRegistry, registry_name
from duet_sdk.metrics import normalized_entropy
from duet_sdk.models.config import RANKER_VARIANTS
from duet_sdk.models.loading import load_ranker, load_upstream
from duet_sdk.side import load_side_codec
from duet_sdk.training.cli import EXIT_REJECTED, main
from duet_sdk.training.datasets import without_user_id
from duet_sdk.training.trainer import EventBatches, predict
from duet_sdk.training.upstream import registry_for

EVENTS = Path(__file__).resolve().parents[1] / "fixtures" / "taobao_small.csv"


def _train(out: Path, *extra: str) -> int:
    return main(
        [
            "click",
            "--events",
            str(EVENTS),
            "--event-format",
            "taobao",
            "--out",
            str(out),
            "--no-progress",
            "--epochs",
            "2",
            *extra,
        ]
    )


def test_train_on_a_taobao_log_writes_an_accepted_checkpoint(tmp_path, capsys):
    assert _train(tmp_path) == 0
    assert "gate: ACCEPTED" in capsys.readouterr().out
    decision = registry_for(tmp_path, "click").decisions()[-1]
    checkpoint = load_checkpoint(Path(decision.checkpoint))
    assert checkpoint.digest == decision.digest
    assert checkpoint.lineage["data"]["source"] == "taobao" and checkpoint.lineage["predecessor"] is None
    assert set(checkpoint.val_ne) == {"ctr", "onsite_conversion"}


def test_checkpoint_reloads_to_a_model_that_reproduces_its_recorded_val_ne(tmp_path):
    assert _train(tmp_path) == 0
    checkpoint = registry_for(tmp_path, "click").latest_accepted()
    model = load_upstream(checkpoint)
    data = without_user_id(load_event_log(EVENTS, preset("taobao"), EventLogOptions(seed=0)))  # as duet-train reads it
    probs = recalibrate_tasks(
        predict(model, EventBatches(data.table, data.click_val)), data.click_train.downsample_rate,
        data.click_val.label_mask,
    )
    ne = normalized_entropy(data.click_val.labels[:, 0], probs[:, 0], data.click_val.label_mask[:, 0])
    assert ne == pytest.approx(checkpoint.val_ne["ctr"], abs=1e-9)  # same weights, same data: same NE


def test_a_regressed_checkpoint_is_rejected_and_reported(tmp_path, capsys):
    assert _train(tmp_path) == 0
    first = registry_for(tmp_path, "click").latest_accepted()
    # a learning rate of 1e-9 leaves the model at its initialisation: NE far above the trained one
    assert _train(tmp_path, "--lr", "1e-9") == EXIT_REJECTED
    out = capsys.readouterr().out
    assert "gate: REJECTED" in out and "regress" in out
    registry = registry_for(tmp_path, "click")
    assert registry.latest_accepted().digest == first.digest
    rejected = registry.decisions()[-1]
    assert not rejected.accepted and rejected.baseline_digest == first.digest
    assert load_checkpoint(Path(rejected.checkpoint)).lineage["predecessor"] == first.digest


def test_a_checkpoint_at_or_above_the_ne_limit_is_rejected_and_reported(tmp_path, capsys):
    assert _train(tmp_path, "--gate-max-ne", "0.5") == EXIT_REJECTED  # the fixture's model is far from NE 0.5
    captured = capsys.readouterr()
    assert "gate: REJECTED" in captured.out and "NE limit" in captured.out
    assert "the gate rejected a checkpoint" in captured.err
    decision = registry_for(tmp_path, "click").decisions()[-1]
    assert not decision.accepted and decision.baseline_digest is None  # rejected without any predecessor


def test_missing_event_file_exits_2_with_a_message_naming_it(tmp_path, capsys):
    code = main(["click", "--events", str(tmp_path / "nope.csv"), "--out", str(tmp_path)])
    assert code == 2
    assert "nope.csv" in capsys.readouterr().err
    assert not (tmp_path / "click").exists()


def test_console_script_is_installed():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "duet-train"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "checkpoint gate" in result.stdout


def test_ranker_trains_the_four_variants_on_accepted_encoders_behind_the_gate(tmp_path, capsys):
    # 30 users cannot beat the base rate on every task: this test is about the plumbing, so the
    # base-rate rule is off here (it has its own tests below and in tests/test_gate.py)
    off = ("--gate-max-ne", "off")
    for model in ("click", "conv"):
        assert (
            main([model, "--events", str(EVENTS), "--out", str(tmp_path), "--no-progress", "--epochs", "1", *off]) == 0
        )
    code = main(
        [
            "ranker",
            "--events",
            str(EVENTS),
            "--out",
            str(tmp_path),
            "--no-progress",
            "--epochs",
            "1",
            "--levels",
            "2",
            "--codebook-size",
            "8",
            *off,
        ]
    )
    assert code in (0, EXIT_REJECTED)
    out = capsys.readouterr().out
    for variant in ("baseline", "click", "conv", "duet"):
        assert f"ranker {variant}: trained" in out
        decision = CheckpointRegistry(tmp_path / "registry", registry_name(variant)).decisions()[-1]
        assert decision.accepted, decision  # first checkpoint of each variant: no predecessor to regress from
        lineage = load_checkpoint(Path(decision.checkpoint)).lineage
        assert set(lineage["upstream"]) == set(RANKER_VARIANTS[variant])
    assert len(list((tmp_path / "side").glob("*/side-*"))) == 2  # one codec per encoder, trained once
    duet = CheckpointRegistry(tmp_path / "registry", registry_name("duet")).latest_accepted()
    ranker = load_ranker(duet)
    codec = load_side_codec(load_checkpoint(next((tmp_path / "side" / "conv").glob("side-*"))))
    assert torch.equal(
        ranker.decoders["conv"].codebooks, codec.codebooks
    )  # the frozen codebooks travel with the ranker


def test_ranker_without_accepted_encoders_exits_2_naming_the_missing_step(tmp_path, capsys):
    assert main(["ranker", "--events", str(EVENTS), "--out", str(tmp_path), "--no-progress"]) == 2
    assert "duet-train click" in capsys.readouterr().err


MOVIELENS = Path(__file__).resolve().parents[1] / "fixtures" / "movielens_small.inter"


def test_short_run_on_a_movielens_fixture_with_the_global_split_beats_the_base_rate(tmp_path, capsys):
    # a few passes with early stopping over ~400 rows: the restored best state is accepted by the
    # gate, whose default rule rejects anything at or above the base rate (NE 1.0)
    code = main(
        [
            "click",
            "--events",
            str(MOVIELENS),
            "--event-format",
            "movielens",
            "--split",
            "global",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--epochs",
            "8",
            "--batch-size",
            "32",
            "--lr",
            "3e-3",
            "--eval-every",
            "4",
            "--patience",
            "4",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "gate: ACCEPTED" in out
    checkpoint = registry_for(tmp_path, "click").latest_accepted()
    assert checkpoint.primary_ne < 1.0
    history = checkpoint.metrics["history"]
    assert len(history) >= 2 and checkpoint.metrics["best_step"] in [h["step"] for h in history]
    assert checkpoint.lineage["data"]["static_user_id"] is False  # the raw user ID is opt-in


def test_target_attention_flags_build_the_config_with_the_auxiliary_loss_weight():
    from duet_sdk.training.cli import build_parser, target_attention_config

    args = build_parser().parse_args(
        ["ranker", "--events", str(EVENTS), "--target-attention", "dare", "--d-att", "16", "--aux-loss-weight", "0.5"]
    )
    config = target_attention_config(args)
    assert (config.variant, config.attention_dim, config.aux_loss_weight) == ("dare", 16, 0.5)
    args = build_parser().parse_args(["ranker", "--events", str(EVENTS)])
    assert target_attention_config(args) is None
