"""Verification cases come from the signature's own profile (min/opt/max), never a fixed batch 64."""

import pytest
import torch
from export_fixtures import CODEBOOK, LEVELS, tiny_upstream

from duet_sdk.errors import ConfigError
from duet_sdk.export.extract import extract_encoder
from duet_sdk.export.verify import Case, profile_cases, verify_artifact
from duet_sdk.side import SideCodec, SideConfig


@pytest.fixture(scope="module")
def small_profile_encoder():
    """An encoder exported with max_batch 8, opt 3 (the old fixed cases used batch 64)."""
    net = tiny_upstream("click")
    codec = SideCodec(SideConfig(levels=LEVELS, codebook_size=CODEBOOK), torch.randn(LEVELS, CODEBOOK, 16) * 0.3)
    return extract_encoder(net, codec, "click", max_batch=8, opt_batch=3)


def test_profile_cases_use_min_opt_max_batch_and_widths(small_profile_encoder):
    signature = small_profile_encoder.signature
    cases = profile_cases(signature)
    assert {c.batch for c in cases} == {1, 3, 5, 8}  # min, opt, between opt and max, max
    assert {c.width for c in cases} >= {"1", "opt", "max"}
    assert {c.lengths for c in cases} >= {"empty", "heavy_padding", "full", "mixed"}


def test_verification_runs_every_profile_point_and_nothing_beyond_it(small_profile_encoder):
    seen = []

    def eager_runner(inputs):
        seen.append((inputs["request_time"].shape[0], inputs["click_ids"].shape[1], inputs["conv_ids"].shape[1]))
        return small_profile_encoder.eager(inputs)

    result = verify_artifact(small_profile_encoder, eager_runner)
    batches = {b for b, _, _ in seen}
    assert batches == {1, 3, 5, 8} and max(batches) <= 8
    dims = small_profile_encoder.signature.dims
    assert (8, dims["click_len"][2], dims["conv_len"][2]) in seen  # max batch at max widths
    assert (3, dims["click_len"][1], dims["conv_len"][1]) in seen  # the opt point
    assert (1, 1, 1) in seen  # the min point
    assert result.cases == len(seen) and result.max_abs_diff["click_embedding"] == 0.0


def test_a_case_outside_the_profile_is_refused_naming_the_range(small_profile_encoder):
    with pytest.raises(ConfigError, match=r"batch within the profile \[1, 8\]"):
        verify_artifact(small_profile_encoder, small_profile_encoder.eager, cases=(Case(64, "max", "mixed"),))
