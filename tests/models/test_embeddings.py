"""MultiHashEmbedding of raw int64 ids against a pure-Python hash; TimeEncoding depends on age and time of day."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from duet_sdk.models import HashConfig, MultiHashEmbedding, TimeEncoding
from duet_sdk.models.embeddings import HASH_PRIME, SECONDS_PER_DAY

INT64 = st.integers(-(2**63), 2**63 - 1)
EDGE_IDS = [0, 1, -1, 7, -3, 2**31 - 1, 2**31, HASH_PRIME, -HASH_PRIME, 2**62, -(2**62), 2**63 - 1, -(2**63)]


def _embedding(num_fields=3, num_hashes=2, table_size=64, dim=4, seed=0):
    torch.manual_seed(seed)
    return MultiHashEmbedding(num_fields, HashConfig(num_hashes=num_hashes, table_size=table_size, dim=dim), seed=seed)


def _python_slots(emb, field, raw_id):
    """Row indices of ``raw_id`` in field ``field`` with Python's unbounded ints (cannot overflow)."""
    p, size = HASH_PRIME, emb.table_size
    slots = []
    for h in range(emb.mult.shape[1]):
        a, b, offset = int(emb.mult[field, h]), int(emb.add[field, h]), int(emb.offsets[field, h])
        slots.append(((raw_id % p) * a + b) % p % size + offset)
    return slots


def _python_embedding(emb, ids, fields=None):
    fields = list(range(emb.mult.shape[0])) if fields is None else fields
    table = emb.table.weight.detach().double()
    out = torch.zeros(len(ids), len(fields), table.shape[1], dtype=torch.float64)
    for i, row in enumerate(ids):
        for j, (field, raw_id) in enumerate(zip(fields, row)):
            for slot in _python_slots(emb, field, raw_id):
                out[i, j] += table[slot]
    return out


def test_hash_parameters_are_int64_buffers_fixed_by_the_seed():
    a, b, c = _embedding(seed=5), _embedding(seed=5), _embedding(seed=6)
    assert {name for name, _ in a.named_buffers()} == {"mult", "add", "offsets"}
    assert a.mult.dtype == a.add.dtype == a.offsets.dtype == torch.int64
    assert torch.equal(a.mult, b.mult) and torch.equal(a.add, b.add)
    assert not torch.equal(a.mult, c.mult)
    assert ((a.mult >= 1) & (a.mult < HASH_PRIME)).all() and ((a.add >= 0) & (a.add < HASH_PRIME)).all()


def test_embedding_is_deterministic_for_repeated_calls():
    emb = _embedding()
    ids = torch.tensor([[5, -9, 2**62]])
    assert torch.equal(emb(ids), emb(ids))


def test_edge_case_ids_are_accepted_and_finite():
    emb = _embedding(num_fields=1)
    ids = torch.tensor(EDGE_IDS, dtype=torch.int64).unsqueeze(-1)  # (N, 1)
    out = emb(ids)
    assert out.shape == (len(EDGE_IDS), 1, 4)
    assert torch.isfinite(out).all()


def test_edge_case_ids_match_python_int_hash():
    emb = _embedding(num_fields=1, table_size=97)
    ids = [[i] for i in EDGE_IDS]
    out = emb(torch.tensor(ids, dtype=torch.int64))
    # Sum of num_hashes fp32 table rows vs the same rows summed in fp64: ~1e-8 for |rows| ~ 0.05; 1e-6 is ample,
    # and any wrong slot moves the value by ~0.05.
    torch.testing.assert_close(out.double(), _python_embedding(emb, ids), atol=1e-6, rtol=0)


@settings(max_examples=40, deadline=None)
@given(ids=st.lists(st.lists(INT64, min_size=3, max_size=3), min_size=1, max_size=6),
       num_hashes=st.integers(1, 3), table_size=st.integers(1, 200))
def test_embedding_equals_sum_of_rows_at_python_int_universal_hash(ids, num_hashes, table_size):
    emb = _embedding(num_fields=3, num_hashes=num_hashes, table_size=table_size)
    out = emb(torch.tensor(ids, dtype=torch.int64))
    torch.testing.assert_close(out.double(), _python_embedding(emb, ids), atol=1e-6, rtol=0)  # fp32 sums of 1-3 rows


def test_every_slot_lands_inside_its_own_field_and_hash_table():
    emb = _embedding(num_fields=3, num_hashes=2, table_size=16)
    for field in range(3):
        for raw_id in EDGE_IDS:
            for h, slot in enumerate(_python_slots(emb, field, raw_id)):
                lo = (field * 2 + h) * 16
                assert lo <= slot < lo + 16


def test_leading_batch_dims_are_preserved():
    emb = _embedding(num_fields=3)
    ids = torch.randint(-(2**62), 2**62, (2, 5, 3))
    out = emb(ids)
    assert out.shape == (2, 5, 3, 4)
    torch.testing.assert_close(out[1, 3], emb(ids[1, 3].unsqueeze(0))[0], atol=0, rtol=0)  # same op per row: exact


def test_fields_argument_selects_the_hash_parameters_of_those_fields():
    emb = _embedding(num_fields=4, table_size=50)
    ids = [[11, -2**40], [2**62, 3]]
    fields = [3, 1]
    out = emb(torch.tensor(ids), torch.tensor(fields))
    assert out.shape == (2, 2, 4)
    torch.testing.assert_close(out.double(), _python_embedding(emb, ids, fields), atol=1e-6, rtol=0)  # fp32 sums
    # Column j embedded as field fields[j] equals the full embedding's column fields[j] for the same id.
    full = emb(torch.tensor([[0, -2**40, 0, 11]]))
    torch.testing.assert_close(out[0, 0], full[0, 3], atol=0, rtol=0)  # identical rows: exact
    torch.testing.assert_close(out[0, 1], full[0, 1], atol=0, rtol=0)


def test_same_id_in_different_fields_gets_different_embeddings():
    emb = _embedding(num_fields=2)
    out = emb(torch.tensor([[123, 123]]))
    assert not torch.allclose(out[0, 0], out[0, 1])


# ---------------------------------------------------------------------------------------------- TimeEncoding

REQUEST = 1_700_000_000


def _time_encoding(seed=0):
    torch.manual_seed(seed)
    return TimeEncoding(4, 8)


@settings(max_examples=30, deadline=None)
@given(ages=st.lists(st.integers(0, 400 * SECONDS_PER_DAY), min_size=1, max_size=6),
       days=st.integers(-15_000, 15_000), request=st.integers(10**9, 2 * 10**9))
def test_time_encoding_is_unchanged_by_shifting_request_and_events_by_whole_days(ages, days, request):
    enc = _time_encoding()
    ts = torch.tensor([[request - a for a in ages]], dtype=torch.int64)
    req = torch.tensor([request], dtype=torch.int64)
    shift = days * SECONDS_PER_DAY
    # Age and time of day are computed in int64 before any float conversion, so the only difference can come
    # from fp32 rounding of identical values: 1e-5 absolute.
    torch.testing.assert_close(enc(req + shift, ts + shift), enc(req, ts), atol=1e-5, rtol=0)


def test_time_encoding_depends_on_age_and_time_of_day():
    enc = _time_encoding()
    req = torch.tensor([REQUEST])
    base = enc(req, torch.tensor([[REQUEST - 3600]]))
    older = enc(req + 3600, torch.tensor([[REQUEST - 3600]]))  # same time of day, one hour older
    other_time_of_day = enc(req + 3600, torch.tensor([[REQUEST]]))  # same age, one hour later in the day
    assert (base - older).abs().max() > 1e-3
    assert (base - other_time_of_day).abs().max() > 1e-3


def test_time_encoding_treats_future_events_as_age_zero_and_stays_finite():
    enc = _time_encoding()
    req = torch.tensor([REQUEST, REQUEST])
    ts = torch.tensor([[REQUEST + 500, REQUEST, -(2**62)], [2**62, 0, REQUEST - 1]])
    out = enc(req, ts)
    assert out.shape == (2, 3, 8)
    assert torch.isfinite(out).all()


def test_time_encoding_batch_rows_are_independent():
    enc = _time_encoding()
    req = torch.tensor([REQUEST, REQUEST + 77])
    ts = torch.tensor([[REQUEST - 10, REQUEST - 1000], [REQUEST - 5, REQUEST - 86_000]])
    out = enc(req, ts)
    torch.testing.assert_close(out[1:], enc(req[1:], ts[1:]), atol=1e-6, rtol=0)  # same row math: fp32 noise only


@pytest.mark.parametrize("shift_days", [1, 365])
def test_time_encoding_of_single_event_shift_example(shift_days):
    enc = _time_encoding()
    req, ts = torch.tensor([REQUEST]), torch.tensor([[REQUEST - 12_345]])
    shift = shift_days * SECONDS_PER_DAY
    torch.testing.assert_close(enc(req + shift, ts + shift), enc(req, ts), atol=1e-5, rtol=0)  # see property test
