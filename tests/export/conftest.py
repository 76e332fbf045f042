"""Fixtures of the export tests: one tiny training output dir and one real export of it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from export_fixtures import save_codec, save_encoder, save_ranker, tiny_upstream, write_spec


@pytest.fixture(autouse=True, scope="session")
def _single_thread_torch():
    """Tiny models: intra-op threads only add contention on the 2-core box."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> Path:
    """A training output dir: accepted click encoder, its SIDE codec, an accepted click-only ranker."""
    root = tmp_path_factory.mktemp("runs")
    net = tiny_upstream("click")
    encoder, _ = save_encoder(root, net, "click-0001")
    codec, codec_checkpoint = save_codec(root, "click", encoder.digest, net.config.embedding_dim)
    save_ranker(root, codec, encoder.digest, codec_checkpoint.digest)
    return root


@pytest.fixture(scope="session")
def exported(runs, tmp_path_factory) -> Path:
    """One real `duet-export` run (TorchScript + ONNX of the click encoder and the ranker) shared by tests."""
    from duet_sdk.export.cli import main

    out = tmp_path_factory.mktemp("repo")
    assert main(["--spec", str(write_spec(out.parent / "spec.toml", runs)), "--out", str(out), "--no-progress"]) == 0
    return out
