"""Extraction keeps the serving parts only and reports what it kept and dropped (no conversion)."""

import torch
from export_fixtures import CODEBOOK, LEVELS, save_ranker, tiny_upstream

from duet_sdk.export.extract import EncoderServing, extract_encoder, extract_ranker
from duet_sdk.export.verify import Case, sample_inputs
from duet_sdk.side import SideCodec, SideConfig


def _codec(dim: int) -> SideCodec:
    return SideCodec(SideConfig(levels=LEVELS, codebook_size=CODEBOOK), torch.randn(LEVELS, CODEBOOK, dim))


def test_encoder_extraction_drops_item_branch_overarch_heads_and_reports_params_and_bytes():
    net = tiny_upstream("conv")
    serving = extract_encoder(net, _codec(net.config.embedding_dim), "conv")
    names = list(serving.module.state_dict())
    assert not any(n.startswith(("item_branch", "overarch", "heads")) for n in names)
    report = serving.report.to_dict()
    assert set(report["dropped"]) == {"item_branch", "overarch", "heads"}
    dropped = sum(p.numel() for part in ("item_branch", "overarch", "heads") for p in getattr(net, part).parameters())
    assert report["dropped_params"] == dropped > 0
    assert report["kept_params"] == sum(p.numel() for p in net.encoder.parameters())  # SIDE codebooks are buffers
    kept_bytes = sum(t.numel() * t.element_size() for t in serving.module.state_dict().values())
    assert report["kept_bytes"] == kept_bytes
    assert "dropped item_branch, overarch, heads" in serving.report.summary()


def test_encoder_serving_returns_side_codes_of_the_eager_embedding():
    net = tiny_upstream("click")
    codec = _codec(net.config.embedding_dim)
    serving = extract_encoder(net, codec, "click")
    assert serving.signature.output_names == ("click_codes", "click_embedding")
    assert serving.signature.input_names[:3] == ("request_time", "static_sparse", "static_dense")
    inputs = sample_inputs(serving.signature, Case(7, "max", "mixed"))
    out = serving.eager(inputs)
    with torch.no_grad():
        embedding = net.encoder(inputs)
    torch.testing.assert_close(out["click_embedding"], embedding, atol=0, rtol=0)
    assert torch.equal(out["click_codes"], codec.encode(embedding))


def test_ranker_serving_outputs_sigmoid_of_listwise_logits(tmp_path):
    net = tiny_upstream("click")
    codec = _codec(net.config.embedding_dim)
    ranker, _ = save_ranker(tmp_path, codec, "e" * 64, "c" * 64)
    serving = extract_ranker(ranker, max_batch=8, max_candidates=6, opt_batch=2, opt_candidates=3)
    assert serving.signature.output_names == ("scores",)
    assert serving.signature.input_names[-1] == "click_codes"
    inputs = sample_inputs(serving.signature, Case(7, "max", "full"))
    scores = serving.eager(inputs)["scores"]
    assert scores.shape == (7, 6, 2)
    with torch.no_grad():
        torch.testing.assert_close(scores, torch.sigmoid(ranker(inputs)), atol=0, rtol=0)
    assert serving.report.dropped == {}


def test_near_tie_rows_flag_embeddings_equidistant_from_two_codewords():
    books = torch.zeros(1, 4, 2)
    books[0, 0], books[0, 1], books[0, 2], books[0, 3] = (
        torch.tensor([1.0, 0]),
        torch.tensor([-1.0, 0]),
        torch.tensor([0, 5.0]),
        torch.tensor([0, -5.0]),
    )
    codec = SideCodec(SideConfig(levels=1, codebook_size=4), books)
    module = EncoderServing(tiny_upstream("click").encoder, codec.encoder(), ())
    x = torch.tensor([[0.0, 0.3], [0.9, 0.1], [1e-9, 0.2]])  # tie, clear, tie within 1e-4 relative
    assert module.near_tie_rows(x, rtol=1e-4).tolist() == [True, False, True]
