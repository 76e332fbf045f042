"""SIDE codecs as checkpoints: round trip, digest verification, and rejection of inconsistent ones."""

import pytest
import torch

from duet_sdk.checkpoint import WEIGHTS, load_checkpoint, save_checkpoint
from duet_sdk.errors import CheckpointError
from duet_sdk.serialization import to_dict
from duet_sdk.side import load_side_codec, save_side_codec

LINEAGE = {"predecessor": None, "data": {"encoder_digest": "ab" * 32}, "step": 0, "seed": 0}


def test_save_then_load_round_trips_codec_metrics_and_lineage(tmp_path, small_codec, clustered):
    metrics = small_codec.metrics(clustered(256, 8, seed=1))
    saved = save_side_codec(tmp_path, "side-v1", small_codec, metrics, LINEAGE)
    checkpoint = load_checkpoint(saved.path)
    loaded = load_side_codec(checkpoint)
    assert torch.equal(loaded.codebooks, small_codec.codebooks) and loaded.config == small_codec.config
    assert checkpoint.kind == "side" and checkpoint.digest == saved.digest
    assert checkpoint.config["interface"] == {"dim": 8, "levels": 3, "codebook_size": 16}
    assert checkpoint.config["model"] == {**to_dict(small_codec.config), "dim": 8}
    assert checkpoint.metrics == metrics
    assert checkpoint.lineage["data"] == LINEAGE["data"]


def test_tampered_weights_fail_checkpoint_verification(tmp_path, small_codec):
    saved = save_side_codec(tmp_path, "side-v1", small_codec, {}, LINEAGE)
    weights = bytearray((saved.path / WEIGHTS).read_bytes())
    weights[-1] ^= 0xFF  # one bit pattern of one codebook float
    (saved.path / WEIGHTS).write_bytes(bytes(weights))
    with pytest.raises(CheckpointError, match="digest mismatch"):
        load_side_codec(load_checkpoint(saved.path))


def save_raw(tmp_path, state_dict, config):
    return save_checkpoint(tmp_path, "raw", state_dict, config, {}, LINEAGE)


def side_config(**model):
    base = {"levels": 2, "codebook_size": 4, "kmeans_iters": 25, "beam_width": 1, "min_code_usage": 1,
            "seed": 0, "dim": 3}
    model = {**base, **model}
    interface = {"dim": model["dim"], "levels": model["levels"], "codebook_size": model["codebook_size"]}
    return {"kind": "side", "interface": interface, "model": model}


@pytest.mark.parametrize("state_dict, config, message", [
    ({"codebooks": torch.zeros(2, 4, 3)}, {**side_config(), "kind": "click"}, "not a SIDE codec"),
    ({"codebooks": torch.zeros(2, 4, 3)}, side_config(levels=0), "does not describe a SIDE codec"),
    ({"codebooks": torch.zeros(2, 4, 3)}, {**side_config(), "interface": {"dim": 3}}, "does not match model"),
    ({"codebooks": torch.zeros(2, 4, 5)}, side_config(), r"codebooks of shape \(2, 4, 5\)"),
    ({"codebooks": torch.zeros(2, 4, 3), "extra": torch.zeros(1)}, side_config(), "expected weights"),
    ({"codebooks": torch.zeros(2, 4, 3, dtype=torch.float16)}, side_config(), "invalid codebooks"),
])
def test_load_rejects_checkpoints_that_do_not_describe_a_codec(tmp_path, state_dict, config, message):
    with pytest.raises(CheckpointError, match=message):
        load_side_codec(load_checkpoint(save_raw(tmp_path, state_dict, config).path))


def test_find_codec_for_encoder_returns_the_newest_codec_of_that_encoder(tmp_path, small_codec):
    from duet_sdk.side import find_codec_by_digest, find_codec_for_encoder

    directory = tmp_path / "side" / "click"

    def lineage(encoder: str) -> dict:
        return {**LINEAGE, "data": {"encoder": encoder}}

    old = save_side_codec(directory, "side-click-1", small_codec, {}, lineage("a" * 64))
    other = save_side_codec(directory, "side-click-2", small_codec, {}, lineage("b" * 64))
    new = save_side_codec(directory, "side-click-3", small_codec, {"note": 1}, lineage("a" * 64))
    assert find_codec_for_encoder(tmp_path, "click", "a" * 64).digest == new.digest != old.digest
    assert find_codec_for_encoder(tmp_path, "click", "c" * 64) is None
    assert find_codec_by_digest(tmp_path, "click", other.digest).path == other.path
    with pytest.raises(CheckpointError, match="no SIDE codec with digest"):
        find_codec_by_digest(tmp_path, "click", "0" * 64)
