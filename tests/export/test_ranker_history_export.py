"""A ranker with DARE target attention exports with its history inputs (ragged on L): TorchScript and
ONNX verified against eager PyTorch by `duet-export`, symbolic history dims, padding-invariant artifacts."""

import json

import pytest
import torch
from export_fixtures import SCHEMA, write_spec

from duet_sdk.checkpoint import save_checkpoint
from duet_sdk.data import schema as keys
from duet_sdk.export.extract import extract_ranker
from duet_sdk.export.torch2onnx import graph_io, onnxruntime_runner
from duet_sdk.export.torch2torchscript import torchscript_runner
from duet_sdk.gate import CheckpointRegistry, registry_name
from duet_sdk.models.config import (
    HashConfig,
    RankerConfig,
    TargetAttentionConfig,
    TaskSpec,
)
from duet_sdk.models.ranker import Ranker
from duet_sdk.training.ranker import ranker_checkpoint_config

onnx = pytest.importorskip("onnx")

TA = TargetAttentionConfig(
    variant="dare",
    stream="click",
    fields=("item_id", "author_id"),
    max_len=24,
    top_k=4,
    d_repr=8,
    d_att=4,
    table_size=128,
    aux_loss_weight=1.0,  # a checkpoint with the training-only auxiliary head exports like any other
)
# fp32 artifacts run the same ops as eager with other kernels; probabilities within 1e-5.
PROBABILITY_ATOL = 1e-5


@pytest.fixture(scope="module")
def ranker_runs(tmp_path_factory):
    """An accepted baseline ranker with DARE target attention (no upstream embeddings) in its own registry."""
    runs = tmp_path_factory.mktemp("runs_ta")
    config = RankerConfig(
        schema=SCHEMA,
        tasks=(TaskSpec("offsite_conversion"), TaskSpec("link_click")),
        primary_task="offsite_conversion",
        d_feature=8,
        projection_hidden=(16,),
        hashing=HashConfig(num_hashes=2, table_size=64, dim=8),
        overarch_hidden=(16,),
        target_attention=TA,
    )
    torch.manual_seed(3)
    ranker = Ranker(config).eval()
    with torch.no_grad():
        for p in ranker.target_attention.parameters():
            p.normal_()  # spread the scores so the top-k is decided by clear margins
    lineage = {"predecessor": None, "data": {"rows": 1}, "step": 1, "seed": 0, "upstream": {}}
    checkpoint = save_checkpoint(
        runs / "ranker",
        "ranker-baseline-dare-0001",
        ranker.state_dict(),
        ranker_checkpoint_config(config),
        {"val_ne": {"offsite_conversion": 0.8}, "primary_task": "offsite_conversion"},
        lineage,
    )
    assert CheckpointRegistry(runs / "registry", registry_name("baseline", "codes", "dare")).submit(checkpoint).accepted
    return runs, ranker


@pytest.fixture(scope="module")
def exported(ranker_runs, tmp_path_factory):
    from duet_sdk.export.cli import main

    runs, _ = ranker_runs
    out = tmp_path_factory.mktemp("repo_ta")
    spec = write_spec(out.parent / "spec_ta.toml", runs, encoders=[], ranker="baseline-dare")
    assert main(["--spec", str(spec), "--out", str(out), "--no-progress"]) == 0
    return out


def _request(users: int, candidates: int, lengths: list[int], width: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    history = torch.randint(-(2**63), 2**63 - 1, (users, width, 2), generator=g)
    for u, n in enumerate(lengths):
        history[u, : width - min(n, width)] = 0
    return {
        keys.STATIC_SPARSE: torch.randint(-(2**63), 2**63 - 1, (users, len(SCHEMA.static_sparse)), generator=g),
        keys.STATIC_DENSE: torch.randn(users, len(SCHEMA.static_dense), generator=g),
        keys.ITEM_SPARSE: torch.randint(-(2**63), 2**63 - 1, (users, candidates, len(SCHEMA.item_sparse)), generator=g),
        keys.ITEM_DENSE: torch.randn(users, candidates, len(SCHEMA.item_dense), generator=g),
        keys.HISTORY_IDS: history,
        keys.HISTORY_LEN: torch.tensor(lengths),
    }


def test_ranker_with_history_exports_both_formats_verified_within_tolerance(exported):
    manifest = json.loads((exported / "manifest.json").read_text())
    ranker = [a for a in manifest["artifacts"] if a["model"] == "ranker"]
    assert {a["format"] for a in ranker} == {"torchscript", "onnx"}
    for artifact in ranker:
        inputs = {i["name"]: i for i in artifact["inputs"]}
        assert inputs[keys.HISTORY_IDS]["shape"] == ["batch", keys.HISTORY_LEN, 2]
        assert inputs[keys.HISTORY_LEN]["shape"] == ["batch"]
        assert artifact["max_abs_diff"] <= PROBABILITY_ATOL and artifact["verified_rows"] >= 64


def test_onnx_graph_keeps_the_history_length_symbolic(exported):
    io = graph_io(exported / "artifacts/ranker/onnx/model.onnx")
    shapes = {name: dims for name, _, dims in io["inputs"]}
    assert shapes[keys.HISTORY_IDS] == ["batch", keys.HISTORY_LEN, 2]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_artifacts_equal_eager_on_history_widths_never_seen_and_ignore_padding(exported, ranker_runs, fmt):
    _, ranker = ranker_runs
    path = exported / "artifacts/ranker" / fmt / ("model.onnx" if fmt == "onnx" else "model.pt")
    run = onnxruntime_runner(path) if fmt == "onnx" else torchscript_runner(path, extract_ranker(ranker).signature)
    for users, candidates, lengths, width in ((1, 1, [1], 1), (3, 9, [0, 2, 30], 2), (2, 16, [24, 5], 24)):
        request = _request(users, candidates, lengths, width, seed=width)
        with torch.no_grad():
            want = torch.sigmoid(ranker(request))
        got = run(request)["scores"]
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, atol=PROBABILITY_ATOL, rtol=0)
    narrow = _request(2, 4, [3, 0], 3, seed=7)
    padded = dict(
        narrow, **{keys.HISTORY_IDS: torch.cat([torch.randint(1, 10**9, (2, 20, 2)), narrow[keys.HISTORY_IDS]], dim=1)}
    )
    torch.testing.assert_close(run(padded)["scores"], run(narrow)["scores"], atol=PROBABILITY_ATOL, rtol=0)
