"""A tiny DUET deployment for serving tests (``serving_fixtures``), one real tritonserver shared by the
session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from serving_fixtures import export_runs, make_runs


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> Path:
    return make_runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def tiny_export(tiny_runs, tmp_path_factory) -> Path:
    return export_runs(tiny_runs, tmp_path_factory.mktemp("export"), ("onnx", "torchscript"))


@pytest.fixture(scope="session")
def gpu_export(tiny_runs, tmp_path_factory) -> Path:
    """A real gpu-target duet-export (ONNX: prep models, engines, ranker) of the tiny runs."""
    return export_runs(tiny_runs, tmp_path_factory.mktemp("export-gpu"), ("onnx",), target="gpu")


@pytest.fixture(scope="session")
def cpu_repository(tiny_export, tmp_path_factory) -> Path:
    from duet_sdk.serving.repository import publish

    repo = tmp_path_factory.mktemp("repository")
    publish(tiny_export, repo, "cpu")
    return repo


@pytest.fixture(scope="session")
def triton(cpu_repository):
    """One real tritonserver on the cpu repository for the whole session."""
    from release_load import serve

    with serve(cpu_repository) as server:
        yield server


@pytest.fixture(scope="session")
def client(triton):
    """A connected DuetClient of the session's server."""
    from duet_sdk.client import DuetClient

    with DuetClient(triton.endpoints.grpc_url, timeout_s=30) as c:
        c.connect()
        yield c


@pytest.fixture(scope="session")
def reference(tiny_runs, client):
    """In-process PyTorch for the tiny deployment."""
    from duet_sdk.serving.reference import InProcessDuet

    return InProcessDuet(tiny_runs, client.interface)


@pytest.fixture()
def repository_copy(cpu_repository, tmp_path) -> Path:
    """A private copy of the published repository, for tests that publish into it."""
    return Path(shutil.copytree(cpu_repository, tmp_path / "repository"))


@pytest.fixture(scope="session")
def second_runs(tmp_path_factory) -> Path:
    """Another training output: other seeds, so other weights and other codebooks than ``tiny_runs``."""
    return make_runs(tmp_path_factory.mktemp("runs_b"), seed=100)


@pytest.fixture(scope="session")
def second_export(second_runs, tmp_path_factory) -> Path:
    return export_runs(second_runs, tmp_path_factory.mktemp("export_b"), ("onnx",))
