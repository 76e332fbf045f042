"""The ranker with target attention: listwise = pointwise with the user's history, padding and
ordering invariance, history rows built from the event table, config errors, old checkpoints intact."""

import dataclasses

import numpy as np
import pytest
import torch

from duet_sdk.data import schema as keys
from duet_sdk.data.batching import HistorySpec, collate_ranker
from duet_sdk.data.synthetic import SyntheticConfig, generate
from duet_sdk.errors import ConfigError
from duet_sdk.gate import registry_name
from duet_sdk.models.config import RankerConfig, TargetAttentionConfig, TaskSpec
from duet_sdk.models.ranker import Pointwise, Ranker
from duet_sdk.training.ranker import history_spec, ranker_checkpoint_config

SCHEMA = SyntheticConfig().schema()
TA = TargetAttentionConfig(
    variant="dare",
    stream="click",
    fields=("item_id", "author_id"),
    max_len=16,
    top_k=4,
    d_repr=8,
    d_att=4,
    table_size=256,
)
# Same arithmetic on the same values, batched differently: fp32 agreement within 1e-5.
ATOL = 1e-5


def _config(**overrides) -> RankerConfig:
    base = RankerConfig(
        schema=SCHEMA,
        tasks=(TaskSpec("offsite_conversion"), TaskSpec("link_click", 0.3)),
        primary_task="offsite_conversion",
        d_feature=8,
        target_attention=TA,
    )
    return dataclasses.replace(base, **overrides)


def _batch(users: int, candidates: int, lengths: list[int], width: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    history = torch.randint(-(2**62), 2**62, (users, width, 2), generator=g)
    for u, n in enumerate(lengths):
        history[u, : width - min(n, width)] = 0
    return {
        keys.STATIC_SPARSE: torch.randint(0, 10**9, (users, len(SCHEMA.static_sparse)), generator=g),
        keys.STATIC_DENSE: torch.randn(users, len(SCHEMA.static_dense), generator=g),
        keys.ITEM_SPARSE: torch.randint(0, 10**9, (users, candidates, len(SCHEMA.item_sparse)), generator=g),
        keys.ITEM_DENSE: torch.randn(users, candidates, len(SCHEMA.item_dense), generator=g),
        keys.HISTORY_IDS: history,
        keys.HISTORY_LEN: torch.tensor(lengths),
    }


def _ranker(variant: str = "dare") -> Ranker:
    torch.manual_seed(0)
    d_att = 0 if variant == "twin" else 4
    return Ranker(_config(target_attention=dataclasses.replace(TA, variant=variant, d_att=d_att))).eval()


@pytest.mark.parametrize("variant", ["dare", "twin", "twin_proj"])
def test_listwise_scores_with_history_equal_pointwise_scores(variant):
    ranker = _ranker(variant)
    batch = _batch(users=4, candidates=6, lengths=[16, 3, 0, 40], width=16)
    rows = {k: v.repeat_interleave(6, dim=0) for k, v in batch.items() if not k.startswith("item_")}
    rows[keys.ITEM_SPARSE] = batch[keys.ITEM_SPARSE].reshape(24, 1, -1)
    rows[keys.ITEM_DENSE] = batch[keys.ITEM_DENSE].reshape(24, 1, -1)
    with torch.no_grad():
        listwise = ranker(batch)
        pointwise = Pointwise(ranker)(rows)
    torch.testing.assert_close(listwise.reshape(24, -1), pointwise, atol=ATOL, rtol=0)
    assert torch.isfinite(listwise).all()


def test_ranker_scores_ignore_history_padding():
    ranker = _ranker()
    batch = _batch(users=3, candidates=5, lengths=[4, 1, 0], width=4)
    wider = dict(batch)
    wider[keys.HISTORY_IDS] = torch.cat([torch.randint(0, 10**12, (3, 9, 2)), batch[keys.HISTORY_IDS]], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(ranker(batch), ranker(wider), atol=ATOL, rtol=0)


def test_history_changes_the_scores_of_a_ranker_with_target_attention():
    ranker = _ranker()
    batch = _batch(users=2, candidates=3, lengths=[8, 8], width=8)
    empty = dict(batch, **{keys.HISTORY_LEN: torch.zeros(2, dtype=torch.int64)})
    with torch.no_grad():
        assert (ranker(batch) - ranker(empty)).abs().max() > 1e-4


def test_auxiliary_loss_sends_gradient_to_behaviours_the_search_did_not_retrieve():
    """With top_k = 1 the ranker's loss reaches only the retrieved behaviour's attention-table rows;
    the auxiliary full-history loss reaches every valid behaviour's (DARE's reference recipe)."""
    ta = dataclasses.replace(TA, top_k=1, num_hashes=1, table_size=4096, aux_loss_weight=1.0)
    torch.manual_seed(0)
    model = Pointwise(Ranker(_config(target_attention=ta)))
    batch = _batch(1, 1, [10], width=16)
    table = model.ranker.target_attention.att_table

    def touched_rows(loss: torch.Tensor) -> int:
        model.zero_grad(set_to_none=True)
        loss.backward()
        return int((table.table.weight.grad.abs().sum(1) > 0).sum())

    assert model.auxiliary_weight == 1.0
    main_rows = touched_rows(model(batch).sum())
    aux_rows = touched_rows(model.auxiliary_logits(batch).sum())
    assert main_rows <= 2 * 2  # the retrieved behaviour and the candidate, two fields each
    assert aux_rows >= 2 * 10  # ten valid behaviours (and the candidate), two fields each


def test_auxiliary_head_changes_neither_the_initialisation_nor_the_scores():
    """The training-only head is built last and never read by ``forward``: the served scores of a
    ranker trained with it are those of the same weights without it."""
    torch.manual_seed(0)
    plain = Ranker(_config()).eval()
    torch.manual_seed(0)
    with_aux = Ranker(_config(target_attention=dataclasses.replace(TA, aux_loss_weight=0.5))).eval()
    extra = set(with_aux.state_dict()) - set(plain.state_dict())
    assert extra == {"target_attention_aux.weight", "target_attention_aux.bias"}
    assert all(torch.equal(v, with_aux.state_dict()[k]) for k, v in plain.state_dict().items())
    batch = _batch(2, 3, [16, 4], width=16)
    with torch.no_grad():
        assert torch.equal(plain(batch), with_aux(batch))
        assert with_aux.auxiliary_logits(batch).shape == (2, 3, 2)
    with pytest.raises(ValueError):
        plain.auxiliary_logits(batch)


def test_ranker_without_target_attention_keeps_its_state_dict_keys():
    plain = Ranker(_config(target_attention=None))
    assert not any("target" in k for k in plain.state_dict())
    assert "target_attention" not in ranker_checkpoint_config(plain.config)["interface"]
    assert "target_attention" in ranker_checkpoint_config(_config())["interface"]
    assert (
        registry_name("duet") == "ranker-duet" and registry_name("baseline", "codes", "dare") == "ranker-baseline-dare"
    )


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"stream": "views"}, "RankerConfig.target_attention.stream"),
        ({"fields": ("item_id", "position")}, "RankerConfig.target_attention.fields"),  # not a candidate field
        ({"fields": ("item_id", "price")}, "RankerConfig.target_attention.fields"),  # not an event field
    ],
)
def test_target_attention_fields_must_exist_in_the_schema(overrides, field):
    with pytest.raises(ConfigError) as info:
        _config(target_attention=dataclasses.replace(TA, **overrides))
    assert info.value.field == field


def test_ranker_rows_carry_each_users_most_recent_history_before_the_request():
    data = generate(SyntheticConfig(num_users=40, mean_impressions=60.0, seed=3))
    spec = history_spec(_config())
    assert spec == HistorySpec("click", (0, 1), 16)
    rows = data.ranker_val
    index = np.arange(min(len(rows), 32))
    batch = collate_ranker(data.table, rows, index, {}, spec)
    ids, lengths = batch[keys.HISTORY_IDS].numpy(), batch[keys.HISTORY_LEN].numpy()
    events = data.table.streams["click"]
    for r, i in enumerate(index):
        u, t = rows.user_index[i], rows.request_time[i]
        lo, hi = events.offsets[u], events.offsets[u + 1]
        before = events.ids[lo:hi][events.timestamps[lo:hi] < t][:, :2][-16:]
        assert lengths[r] == len(before)
        assert np.array_equal(ids[r, ids.shape[1] - len(before) :], before)
        assert not ids[r, : ids.shape[1] - len(before)].any()
