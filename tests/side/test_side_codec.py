"""SideCodec: compression arithmetic, metrics, and typed errors of its checked helpers."""

import json

import pytest
import torch

from duet_sdk.errors import ConfigError, DataError
from duet_sdk.side import SideCodec, SideConfig, bytes_per_user, compression_ratio_vs_fp16


@pytest.mark.parametrize("dim, levels, size, n_bytes, ratio", [
    (64, 4, 256, 4, 32.0),    # 128 FP16 bytes over 4 one-byte codes
    (256, 4, 256, 4, 128.0),
    (64, 4, 1024, 8, 16.0),   # 10 bits round up to 2 bytes per level
    (64, 4, 257, 8, 16.0),    # 9 bits: 2 bytes
    (64, 3, 2, 3, 128 / 3),   # 1 bit still takes a byte
    (64, 2, 65536, 4, 32.0),  # exactly 16 bits
])
def test_bytes_per_user_and_compression_ratio(dim, levels, size, n_bytes, ratio):
    assert bytes_per_user(levels, size) == n_bytes
    assert compression_ratio_vs_fp16(dim, levels, size) == pytest.approx(ratio)


def test_metrics_match_their_definitions_and_are_json_able(small_codec, clustered):
    x = clustered(512, 8, seed=1)  # held out: the codec was trained on seed 0
    metrics = small_codec.metrics(x)
    x_hat = small_codec.decode(small_codec.encode(x))
    assert metrics["bytes_per_user"] == 3 and metrics["compression_ratio_vs_fp16"] == pytest.approx(16 / 3)
    # float64 accumulation in both; 1e-6 covers the float32 inputs' rounding.
    assert metrics["relative_mse"] == pytest.approx(float(((x - x_hat) ** 2).sum() / (x**2).sum()), rel=1e-6)
    cosine = (x * x_hat).sum(1) / (x.norm(dim=1) * x_hat.norm(dim=1))
    assert metrics["mean_cosine"] == pytest.approx(float(cosine.mean()), rel=1e-6)
    assert 0 < metrics["relative_mse"] < 0.05 and metrics["mean_cosine"] > 0.97  # clustered data compresses
    assert len(metrics["code_usage"]) == 3 and all(0 < u <= 1 for u in metrics["code_usage"])
    json.dumps(metrics)


def test_exact_codeword_sums_reconstruct_perfectly(separated_codebooks):
    codec = SideCodec(SideConfig(levels=3, codebook_size=8), separated_codebooks)
    codes = torch.cartesian_prod(torch.arange(8), torch.arange(8), torch.arange(8))  # every path once
    metrics = codec.metrics(codec.decode(codes))
    assert metrics["relative_mse"] < 1e-12 and metrics["mean_cosine"] == pytest.approx(1.0)
    assert metrics["code_usage"] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("x, message", [
    (torch.zeros(2, 7), "expected dim 8"),
    (torch.zeros(8), r"expected shape \(N, d\)"),
    (torch.tensor([[float("nan")] * 8]), "expected finite values"),
    (torch.tensor([[float("inf")] * 8]), "expected finite values"),
    (torch.zeros(2, 8, dtype=torch.int64), "floating-point"),
    ([[0.0] * 8], "floating-point"),
])
def test_encode_rejects_bad_embeddings_with_data_error(small_codec, x, message):
    with pytest.raises(DataError, match=message):
        small_codec.encode(x)
    with pytest.raises(DataError, match=message):
        small_codec.metrics(x)


@pytest.mark.parametrize("codes, message", [
    (torch.tensor([[0, 16, 0]]), r"values in \[0, 16\)"),
    (torch.tensor([[0, -1, 0]]), r"values in \[0, 16\)"),
    (torch.zeros(2, 2, dtype=torch.int64), r"shape \(N, 3\)"),
    (torch.zeros(2, 3), "integer"),
])
def test_decode_rejects_bad_codes_with_data_error(small_codec, codes, message):
    with pytest.raises(DataError, match=message):
        small_codec.decode(codes)


def test_metrics_of_all_zero_embeddings_is_a_data_error(small_codec):
    with pytest.raises(DataError, match="all-zero"):
        small_codec.metrics(torch.zeros(4, 8))


@pytest.mark.parametrize("books", [
    torch.zeros(3, 8, 4),                     # one level too many
    torch.zeros(2, 16, 4),                    # codebooks too large
    torch.zeros(2, 8, 4, dtype=torch.float64),
    torch.full((2, 8, 4), float("nan")),
])
def test_codebooks_must_match_the_config(books):
    with pytest.raises(ConfigError, match="SideCodec.codebooks"):
        SideCodec(SideConfig(levels=2, codebook_size=8), books)
