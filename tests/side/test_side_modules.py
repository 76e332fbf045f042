"""SideEncoder / SideDecoder: the rule-based decoder, greedy and beam encoding, trace and export."""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.export import Dim

from duet_sdk.side import SideCodec, SideConfig, SideDecoder, SideEncoder

pytestmark = pytest.mark.filterwarnings("ignore:.*jit.*:DeprecationWarning", "ignore:.*jit.*:FutureWarning",
                                        "ignore:.*jit.*:UserWarning")

# Encoder (running residual) and decoder (sum of codewords) add the same float32 values in different
# orders; squared norms of O(10) then differ by ~1e-6, far below any gap between distinct paths tested.
NORM_TOL = 1e-4


def random_case(levels, size, dim, batch, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(levels, size, dim, generator=g), torch.randn(batch, dim, generator=g)


def final_sq_residual(books, x, codes):
    return ((x - SideDecoder(books)(codes)) ** 2).sum(1)


def test_decoder_output_is_the_sum_of_the_chosen_codewords():
    books, _ = random_case(4, 16, 8, 1, seed=0)
    codes = torch.randint(16, (5, 4), generator=torch.Generator().manual_seed(1))
    by_hand = torch.stack([sum(books[level, row[level]] for level in range(4)) for row in codes])
    # Same four float32 additions, possibly in another order: equal to within float32 rounding.
    torch.testing.assert_close(SideDecoder(books)(codes), by_hand, rtol=0, atol=1e-6)


@pytest.mark.parametrize("beam_width", [1, 4])
def test_encode_inverts_decode_on_well_separated_codebooks(separated_codebooks, beam_width):
    codec = SideCodec(SideConfig(levels=3, codebook_size=8, beam_width=beam_width), separated_codebooks)
    codes = torch.randint(8, (200, 3), generator=torch.Generator().manual_seed(0))
    assert torch.equal(codec.encode(codec.decode(codes)), codes)


def test_codebooks_are_frozen_buffers_not_parameters(separated_codebooks):
    for module in (SideEncoder(separated_codebooks, beam_width=2), SideDecoder(separated_codebooks)):
        assert list(module.parameters()) == []
        assert list(module.state_dict()) == ["codebooks"]
        assert not module.codebooks.requires_grad


def test_beam_search_finds_what_greedy_misses():
    # 1-D: greedy takes 1.1 (closest to 2) and is left with 0.9; the path 0 then 2 reaches 0 exactly.
    books = torch.tensor([[[0.0], [1.1]], [[0.0], [2.0]]])
    x = torch.tensor([[2.0]])
    assert SideEncoder(books)(x).tolist() == [[1, 0]]
    assert SideEncoder(books, beam_width=2)(x).tolist() == [[0, 1]]


@settings(max_examples=60, deadline=None)
@given(levels=st.integers(1, 4), size=st.integers(2, 6), dim=st.integers(1, 5), batch=st.integers(1, 8),
       beam=st.integers(2, 8), seed=st.integers(0, 2**16))
def test_beam_final_residual_is_never_larger_than_greedy(levels, size, dim, batch, beam, seed):
    books, x = random_case(levels, size, dim, batch, seed)
    greedy = final_sq_residual(books, x, SideEncoder(books)(x))
    beamed = final_sq_residual(books, x, SideEncoder(books, beam_width=beam)(x))
    assert (beamed <= greedy + NORM_TOL).all()


@settings(max_examples=40, deadline=None)
@given(levels=st.integers(1, 3), size=st.integers(2, 4), dim=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_beam_as_wide_as_all_paths_finds_the_exhaustive_optimum(levels, size, dim, seed):
    books, x = random_case(levels, size, dim, 6, seed)
    codes = SideEncoder(books, beam_width=size**levels)(x)
    every_path = torch.tensor(list(itertools.product(range(size), repeat=levels)))
    optimum = ((x[:, None] - SideDecoder(books)(every_path)[None]) ** 2).sum(-1).min(1).values
    torch.testing.assert_close(final_sq_residual(books, x, codes), optimum, rtol=0, atol=NORM_TOL)


@pytest.mark.parametrize("beam_width", [1, 3])
def test_traced_at_batch_3_gives_the_same_codes_and_values_at_batch_17(beam_width):
    books, x17 = random_case(3, 16, 8, 17, seed=2)
    encoder, decoder = SideEncoder(books, beam_width).eval(), SideDecoder(books).eval()
    codes17 = encoder(x17)
    traced_encoder = torch.jit.trace(encoder, x17[:3])
    traced_decoder = torch.jit.trace(decoder, codes17[:3])
    assert torch.equal(traced_encoder(x17), codes17)
    torch.testing.assert_close(traced_decoder(codes17), decoder(codes17), rtol=0, atol=1e-6)


@pytest.mark.parametrize("beam_width", [1, 3])
def test_export_with_a_dynamic_batch_dimension(beam_width):
    books, x = random_case(3, 16, 8, 17, seed=3)
    encoder, decoder = SideEncoder(books, beam_width).eval(), SideDecoder(books).eval()
    codes = encoder(x)
    batch = Dim("batch")
    exported_encoder = torch.export.export(encoder, (x,), dynamic_shapes=({0: batch},)).module()
    exported_decoder = torch.export.export(decoder, (codes,), dynamic_shapes=({0: batch},)).module()
    for n in (1, 5, 17):
        assert torch.equal(exported_encoder(x[:n]), codes[:n])
        torch.testing.assert_close(exported_decoder(codes[:n]), decoder(codes[:n]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("bad", [16, 17, 31, -1, -16, 2**40])
def test_decoder_never_aliases_an_out_of_range_code_into_another_level(bad):
    """The flat (L*K)-row table would read level 1's codeword for code K at level 0; the mask reads zeros."""
    books, _ = random_case(3, 16, 8, 1, seed=2)
    codes = torch.tensor([[bad, 3, 5]])
    want = books[1, 3] + books[2, 5]  # level 0 masked out
    torch.testing.assert_close(SideDecoder(books)(codes)[0], want, rtol=0, atol=1e-6)
