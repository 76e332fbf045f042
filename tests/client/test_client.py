"""DuetClient / AsyncDuetClient against a fake Triton: results per user, splitting, retries, errors."""

import asyncio

import numpy as np
import pytest
from client_fakes import INTERFACE, FakeTriton, error, fresh_request, history, score_request

from duet_sdk.client import client as client_module
from duet_sdk.client.client import (
    RELEASE_WINDOW,
    AsyncDuetClient,
    DuetClient,
    Releases,
    expected_inputs,
    interface_from_config,
)
from duet_sdk.client.errors import InvalidArgument, InvalidRequest, ServerError, Unavailable
from duet_sdk.errors import ConfigError
from duet_sdk.interface import DOWNSTREAM, FRESH, UPSTREAM, split_release_model

FAST = {"timeout_s": 0.25, "retries": 2, "backoff_s": 0.001, "max_backoff_s": 0.002}


def test_connect_reads_the_interface_from_the_upstream_config(fake):
    with DuetClient(**FAST) as client:
        assert client.interface == INTERFACE
        client.connect()
    assert [c[:2] for c in fake.calls] == [("config", UPSTREAM)] and fake.closed


def test_a_pinned_call_goes_to_its_releases_ensemble_and_its_results_name_that_release(fake):
    with DuetClient(**FAST) as client:
        scores = client.score([score_request(0)], release=3)
        embeddings = client.embed([history(0)], release=3)
    assert [c[1] for c in fake.infers] == ["duet_downstream_v3", "duet_upstream_v3"]
    assert scores[0].model_version == "3" and embeddings[0].model_version == "3"
    assert ("config", "duet_upstream_v3") in [c[:2] for c in fake.calls]  # release 3's own interface


def test_releases_come_from_the_alias_metadata_and_release_readiness_without_the_repository_index(fake):
    fake.release, fake.loaded = "10", {1, 9, 10}  # 1 is outside the probed window around 10
    with DuetClient(**FAST) as client:
        assert client.releases() == Releases(current=10, loaded=(9, 10))
    assert ("metadata", UPSTREAM) in [c[:2] for c in fake.calls]
    probed = sorted(split_release_model(c[1])[1] for c in fake.calls if c[0] == "ready")
    assert probed == list(range(10 - RELEASE_WINDOW, 10 + RELEASE_WINDOW + 1))


def test_an_unpinned_response_from_a_new_release_makes_the_client_adopt_it_without_a_restart(fake):
    with DuetClient(**FAST) as client:
        assert client.connect().version == "7"
        fake.release = "8"  # the server swapped: the aliases now serve release 8
        fresh = client.score_fresh([fresh_request(0)])
        assert fresh[0].scores.model_version == "8" and client.interface.version == "8"
    assert [c[:2] for c in fake.calls if c[0] == "config"] == [("config", UPSTREAM), ("config", "duet_upstream_v8")]


def test_embed_returns_one_embedding_per_user_in_order_across_split_requests(fake):
    users = [history(u) for u in range(10)]  # max_batch 4 -> requests of 4, 4, 2
    with DuetClient(**FAST) as client:
        embeddings = client.embed(users)
    assert [len(c[3]["static_sparse"]) for c in fake.infers] == [4, 4, 2]
    assert [e.user_id for e in embeddings] == [f"u{u}" for u in range(10)]
    assert embeddings[5].codes == {"click": (5, 6), "conv": (5, 6, 7)}
    assert embeddings[9].codes["conv"] == (1, 2, 3)  # (9 + j) % 8
    assert embeddings[5].vectors["click"] == (5.0, 5.5, 6.0, 6.5)
    assert {e.model_version for e in embeddings} == {INTERFACE.version}
    assert {c[2] for c in fake.infers} == {FAST["timeout_s"]}  # per-call deadline sent to infer


def test_score_slices_each_users_scores_from_padded_candidates(fake):
    requests = [score_request(0, n=3), score_request(1, n=5), score_request(2, n=1)]
    with DuetClient(**FAST) as client:
        scores = client.score(requests)
    (_, model, _, sent), = fake.infers
    assert model == DOWNSTREAM and sent["item_dense"].shape == (3, 8, 3)
    np.testing.assert_array_equal(sent["conv_codes"], [[0, 1, 7]] * 3)
    assert [len(s.scores) for s in scores] == [3, 5, 1] and {s.path for s in scores} == {"stored"}
    assert scores[1].user_id == "u1" and scores[1].scores[4] == (14.0, 28.0)  # item_dense[0] * (k + 1)
    assert scores[0].model_version == INTERFACE.version


def test_score_fresh_returns_scores_and_the_codes_to_store(fake):
    with DuetClient(**FAST) as client:
        results = client.score_fresh([fresh_request(u, n=2 + u) for u in range(6)])
    assert [c[1] for c in fake.infers] == [FRESH, FRESH]
    assert [len(r.scores.scores) for r in results] == [2, 3, 4, 5, 6, 7]
    assert results[3].scores.path == "fresh" and results[3].scores.scores[1] == (31.0, 62.0)
    assert results[3].codes == {"click": (3, 4), "conv": (3, 4, 5)}


def test_invalid_request_raises_before_any_inference(fake):
    with DuetClient(**FAST) as client, pytest.raises(InvalidRequest, match=r"histories\[1\]\.static_sparse"):
        client.embed([history(0), history(1, static_sparse=(1,))])
    assert fake.infers == []


def test_empty_request_raises_before_any_network_call(fake):
    with DuetClient(**FAST) as client, pytest.raises(InvalidRequest, match="requests: expected at least one user"):
        client.score([])
    assert fake.calls == []


def test_transient_errors_are_retried(fake):
    with DuetClient(**FAST) as client:
        client.connect()
        fake.failures = [error("StatusCode.UNAVAILABLE"), error("StatusCode.DEADLINE_EXCEEDED")]
        assert len(client.embed([history()])) == 1
    assert len(fake.infers) == 3


def test_gives_up_after_retries_with_the_transient_error(fake):
    with DuetClient(**FAST) as client:
        client.connect()
        fake.failures = [error("StatusCode.UNAVAILABLE", "server is not ready")] * 5
        with pytest.raises(Unavailable, match="server is not ready") as info:
            client.embed([history()])
    assert info.value.model == UPSTREAM and len(fake.infers) == FAST["retries"] + 1


def test_other_server_errors_raise_at_once_with_the_servers_message(fake):
    with DuetClient(**FAST) as client:
        client.connect()
        fake.failures = [error("StatusCode.INVALID_ARGUMENT", "unexpected shape for input 'item_dense'")]
        with pytest.raises(ServerError, match="unexpected shape for input 'item_dense'") as info:
            client.score([score_request()])
    assert type(info.value) is InvalidArgument and info.value.status == "StatusCode.INVALID_ARGUMENT"
    assert info.value.model == DOWNSTREAM and len(fake.infers) == 1


def test_interface_fetch_is_retried_too(fake):
    fake.failures = [error("StatusCode.UNAVAILABLE")]
    with DuetClient(**FAST) as client:
        assert client.connect() == INTERFACE


def test_server_without_the_interface_parameter_is_a_server_error(monkeypatch):
    fake = FakeTriton(parameters={})
    monkeypatch.setattr(client_module, "_triton_client", lambda url: fake)
    with DuetClient(**FAST) as client, pytest.raises(ServerError, match="duet_interface"):
        client.connect()
    with pytest.raises(ServerError, match="duet_interface"):
        interface_from_config({"config": {"parameters": {"duet_interface": {"string_value": "{not json"}}}})


def test_misshapen_output_is_a_server_error(fake, monkeypatch):
    def bad_answer(model, arrays):
        return {name: a[:1] for name, a in FakeTriton.answer(fake, model, arrays).items()}

    monkeypatch.setattr(fake, "answer", bad_answer)
    with DuetClient(**FAST) as client, pytest.raises(ServerError, match="click_codes' has shape"):
        client.embed([history(0), history(1)])


def test_expected_inputs_lists_every_ensemble_input():
    fresh = expected_inputs(INTERFACE, FRESH)
    assert fresh["request_time"] == ("INT64", (-1, 1)) and fresh["click_ids"] == ("INT64", (-1, -1, 3))
    assert fresh["item_dense"] == ("FP32", (-1, -1, 3)) and "click_codes" not in fresh
    assert expected_inputs(INTERFACE, DOWNSTREAM)["conv_codes"] == ("INT64", (-1, 3))
    assert set(expected_inputs(INTERFACE, FRESH)) == set(expected_inputs(INTERFACE, UPSTREAM)) | {
        "item_sparse", "item_dense"}


def test_unreachable_server_raises_unavailable_after_retries():
    """A real gRPC channel to a closed port: tritonclient reports StatusCode.UNAVAILABLE."""
    with DuetClient("127.0.0.1:1", **FAST) as client, pytest.raises(Unavailable) as info:
        client.connect()
    assert info.value.status == "StatusCode.UNAVAILABLE" and info.value.model == UPSTREAM


def test_async_client_sends_split_requests_concurrently(async_fake):
    async def run():
        async with AsyncDuetClient(**FAST) as client:
            embeddings = await client.embed([history(u) for u in range(10)])
            scores = await client.score([score_request(u, n=u + 1) for u in range(5)])
            fresh = await client.score_fresh([fresh_request(u) for u in range(2)])
        return embeddings, scores, fresh

    embeddings, scores, fresh = asyncio.run(run())
    assert [e.user_id for e in embeddings] == [f"u{u}" for u in range(10)]
    assert embeddings[9].codes["click"] == (9, 10)
    assert [len(s.scores) for s in scores] == [1, 2, 3, 4, 5] and fresh[1].codes["click"] == (1, 2)
    assert async_fake.max_in_flight == 3 and async_fake.closed


def test_async_client_retries_and_raises_server_errors(async_fake):
    async def run():
        async with AsyncDuetClient(**FAST) as client:
            await client.connect()
            async_fake.fake.failures = [error("StatusCode.UNAVAILABLE")]
            assert len(await client.embed([history()])) == 1
            async_fake.fake.failures = [error("StatusCode.INTERNAL", "onnxruntime failed")]
            with pytest.raises(ServerError, match="onnxruntime failed"):
                await client.embed([history()])
            with pytest.raises(InvalidRequest):
                await client.score_fresh([])

    asyncio.run(run())
    assert len(async_fake.fake.infers) == 3


@pytest.mark.parametrize("url", ["not a host", "http://127.0.0.1:8001", "127.0.0.1", "127.0.0.1:99999", "127.0.0.1:0",
                                 "", "127.0.0.1:80x", "::1:8001", None])
def test_a_malformed_address_is_a_config_error_not_an_unavailable_server(url):
    """gRPC would report these as UNAVAILABLE (retried as if the server were down), default the port to
    443, or wrap port 99999 onto 34463; the client refuses them up front, naming the field."""
    with pytest.raises(ConfigError, match="url: expected host:port"):
        DuetClient(url)


@pytest.mark.parametrize("url", ["127.0.0.1:8001", "localhost:1", "[::1]:8001", "unix:/tmp/triton.sock"])
def test_well_formed_addresses_are_accepted(url):
    DuetClient(url)


@pytest.mark.parametrize("timeout_s", [0, -1, float("nan"), float("inf"), True])
def test_a_deadline_must_be_finite_and_positive(timeout_s):
    with pytest.raises(ConfigError, match="timeout_s"):
        DuetClient("127.0.0.1:8001", timeout_s=timeout_s)
