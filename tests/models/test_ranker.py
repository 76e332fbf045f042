"""Downstream ranker: listwise = pointwise, user side once per user, frozen codebooks, config errors."""

import dataclasses

import pytest
import torch

from duet_sdk.data.synthetic import SyntheticConfig
from duet_sdk.errors import ConfigError
from duet_sdk.models.config import RankerConfig, TaskSpec, UserEmbeddingInput
from duet_sdk.models.ranker import Pointwise, Ranker

SCHEMA = SyntheticConfig().schema()
EMBEDDINGS = (
    UserEmbeddingInput("click", dim=12, levels=3, codebook_size=8),
    UserEmbeddingInput("conv", dim=6, levels=3, codebook_size=8),
)


def _config(**overrides) -> RankerConfig:
    base = RankerConfig(
        schema=SCHEMA,
        tasks=(TaskSpec("offsite_conversion"), TaskSpec("link_click", 0.3)),
        primary_task="offsite_conversion",
        embeddings=EMBEDDINGS,
        d_feature=8,
    )
    return dataclasses.replace(base, **overrides)


def _ranker(config: RankerConfig) -> Ranker:
    torch.manual_seed(0)
    ranker = Ranker(config).eval()
    for decoder in ranker.decoders.values():
        decoder.codebooks.normal_()
    return ranker


def _batch(users: int, candidates: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        "static_sparse": torch.randint(0, 10**9, (users, len(SCHEMA.static_sparse)), generator=generator),
        "static_dense": torch.randn(users, len(SCHEMA.static_dense), generator=generator),
        "item_sparse": torch.randint(0, 10**9, (users, candidates, len(SCHEMA.item_sparse)), generator=generator),
        "item_dense": torch.randn(users, candidates, len(SCHEMA.item_dense), generator=generator),
        "click_codes": torch.randint(0, 8, (users, 3), generator=generator),
        "conv_codes": torch.randint(0, 8, (users, 3), generator=generator),
        "click_embedding": torch.randn(users, 12, generator=generator),
        "conv_embedding": torch.randn(users, 6, generator=generator),
    }


def _pairs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same (user, candidate) pairs as U*N rows of one candidate each."""
    users, candidates = batch["item_sparse"].shape[:2]
    rows = {k: v.repeat_interleave(candidates, dim=0) for k, v in batch.items() if not k.startswith("item_")}
    rows["item_sparse"] = batch["item_sparse"].reshape(users * candidates, 1, -1)
    rows["item_dense"] = batch["item_dense"].reshape(users * candidates, 1, -1)
    return rows


@pytest.mark.parametrize("embedding_input", ["codes", "float"])
def test_listwise_scores_equal_pointwise_scores_for_the_same_pairs(embedding_input):
    ranker = _ranker(_config(embedding_input=embedding_input))
    batch = _batch(users=5, candidates=7, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        listwise = ranker(batch)  # (5, 7, K)
        pointwise = Pointwise(ranker)(_pairs(batch))  # (35, K)
    # Same arithmetic on the same values, only batched differently: fp32 agreement within 1e-5.
    torch.testing.assert_close(listwise.reshape(35, -1), pointwise, atol=1e-5, rtol=0)


def test_user_side_is_computed_once_per_user_not_per_candidate():
    ranker = _ranker(_config())
    seen = []
    ranker.projections["click"].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[0]))
    ranker(_batch(users=4, candidates=50, generator=torch.Generator().manual_seed(2)))
    assert seen == [4]


def test_codebooks_are_frozen_buffers_untouched_by_training():
    ranker = _ranker(_config())
    frozen = {name: d.codebooks.clone() for name, d in ranker.decoders.items()}
    assert not any("codebooks" in name for name, _ in ranker.named_parameters())
    optimizer = torch.optim.SGD(ranker.parameters(), lr=1.0)
    loss = ranker(_batch(3, 4, torch.Generator().manual_seed(3))).sum()
    loss.backward()
    optimizer.step()
    for name, decoder in ranker.decoders.items():
        assert torch.equal(decoder.codebooks, frozen[name])


def test_float_embeddings_receive_no_gradient_from_the_ranker():
    ranker = _ranker(_config(embedding_input="float"))
    batch = _batch(3, 4, torch.Generator().manual_seed(4))
    batch["click_embedding"].requires_grad_(False)
    ranker(batch).sum().backward()
    assert batch["click_embedding"].grad is None


def test_baseline_reads_no_user_embedding():
    ranker = _ranker(_config(embeddings=()))
    batch = _batch(2, 3, torch.Generator().manual_seed(5))
    for key in ("click_codes", "conv_codes", "click_embedding", "conv_embedding"):
        del batch[key]
    assert ranker(batch).shape == (2, 3, 2)


@pytest.mark.parametrize(
    "field, overrides",
    [
        ("RankerConfig.primary_task", {"primary_task": "ctr"}),
        ("RankerConfig.embedding_input", {"embedding_input": "bf16"}),
        ("RankerConfig.overarch_hidden", {"overarch_hidden": ()}),
        ("RankerConfig.embeddings", {"embeddings": EMBEDDINGS[:1] * 2}),
    ],
)
def test_bad_ranker_config_raises_config_error_naming_the_field(field, overrides):
    with pytest.raises(ConfigError) as info:
        _config(**overrides)
    assert info.value.field == field
