"""An int8 export (cpu target) published and served by a real tritonserver: the runner loads the quantized
ONNX artifacts like any other, and the ensembles answer what ONNX Runtime in process computes on the same
artifacts; against eager PyTorch they stay within the stated int8 tolerances."""

from types import SimpleNamespace

import numpy as np
import pytest
from release_load import serve
from request_samples import random_users

from duet_sdk.client import DuetClient
from duet_sdk.export.pipeline import export_all
from duet_sdk.export.signature import EMBEDDING_ATOL, PROBABILITY_ATOL
from duet_sdk.export.spec import ExportSpec, ShapeSpec
from duet_sdk.export.torch2onnx import onnxruntime_runner
from duet_sdk.export.verify import Case
from duet_sdk.interface import FreshRequest
from duet_sdk.serving.reference import InProcessDuet
from duet_sdk.serving.repository import publish

pytestmark = pytest.mark.slow
# Same artifact, same ONNX Runtime, same batch: integer GEMMs are exact, the fp32 ops around them may sum
# in another order across 1 (server) vs default (here) threads. Each user is sent alone: int8 activation
# ranges are taken per call over the whole batch, so a user's outputs move (within the int8 tolerance)
# with the users batched beside it.
SAME_ARTIFACT_ATOL = 1e-5


@pytest.fixture(scope="module")
def int8_served(tiny_runs, tmp_path_factory):
    """(client, eager reference, in-process ONNX Runtime reference on the int8 artifacts)."""
    out = tmp_path_factory.mktemp("export-int8")
    spec = ExportSpec(
        checkpoints=tiny_runs,
        formats=("onnx",),
        encoders=("click", "conv"),
        ranker="duet",
        precision="int8",
        shapes=ShapeSpec(opt_batch=4, max_batch=16, opt_candidates=4, max_candidates=16),
    )
    manifest = export_all(spec, out, cases=(Case(3, "short", "mixed"), Case(16, "max", "full")))
    assert {a["precision"] for a in manifest["artifacts"]} == {"int8"}
    repo = tmp_path_factory.mktemp("repository-int8")
    published = publish(out, repo, "cpu")
    assert set(published.models.values()) == {"onnx"}
    with serve(repo) as server, DuetClient(server.endpoints.grpc_url, timeout_s=60) as client:
        interface = client.connect()
        eager = InProcessDuet(tiny_runs, interface)
        ort = InProcessDuet(tiny_runs, interface)
        for record in manifest["artifacts"]:
            ort.models[record["model"]] = SimpleNamespace(
                signature=ort.models[record["model"]].signature, eager=onnxruntime_runner(out / record["path"])
            )
        yield client, eager, ort


def test_served_int8_encoders_answer_like_onnxruntime_in_process_on_the_same_artifact(int8_served):
    client, eager, ort = int8_served
    users = random_users(client.interface, 12, seed=11)
    for history, _ in users:  # one user per call: activation ranges are per call (see onnx2int8)
        (got,) = client.embed([history])
        want, reference = ort.embed(history), eager.embed(history)
        for name in client.interface.embeddings:
            assert got.codes[name] == tuple(want[f"{name}_codes"].tolist())
            np.testing.assert_allclose(got.vectors[name], want[f"{name}_embedding"], atol=SAME_ARTIFACT_ATOL)
            np.testing.assert_allclose(got.vectors[name], reference[f"{name}_embedding"], atol=EMBEDDING_ATOL["int8"])


def test_served_int8_fresh_scores_answer_like_onnxruntime_in_process_on_the_same_artifacts(int8_served):
    client, eager, ort = int8_served
    users = random_users(client.interface, 12, seed=12)
    for history, candidates in users:
        (got,) = client.score_fresh([FreshRequest(history, candidates)])
        want, codes = ort.score_fresh(history, candidates)
        assert got.codes == {n: tuple(c.tolist()) for n, c in codes.items()}
        np.testing.assert_allclose(np.array(got.scores.scores), want, atol=SAME_ARTIFACT_ATOL)
        reference_codes = {n: tuple(c.tolist()) for n, c in eager.score_fresh(history, candidates)[1].items()}
        if got.codes == reference_codes:  # a near-tie code flip changes the decoded input; scores then differ more
            np.testing.assert_allclose(
                np.array(got.scores.scores), eager.score_fresh(history, candidates)[0], atol=PROBABILITY_ATOL["int8"]
            )
