"""Frozen upstream features for the ranker: embeddings of accepted encoders and their SIDE codecs.

A row's features are computed once, offline: the user's float embedding from the history at the row's
request time, and its SIDE codes. The codec is trained on embeddings of the training rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from duet_sdk.checkpoint import Checkpoint
from duet_sdk.data.events import EventTable, ExampleSet
from duet_sdk.models.loading import load_upstream
from duet_sdk.models.ranker import codes_key, embedding_key
from duet_sdk.models.upstream import UserEncoder
from duet_sdk.side import (
    SideCodec,
    SideConfig,
    find_codec_for_encoder,
    load_side_codec,
    save_side_codec,
    train_side_codec,
)
from duet_sdk.training.trainer import EventBatches


@dataclass
class UpstreamFeatures:
    """An accepted encoder checkpoint, its encoder, and the SIDE codec trained on its embeddings."""

    checkpoint: Checkpoint
    encoder: UserEncoder
    codec: SideCodec
    codec_checkpoint: Checkpoint


@torch.no_grad()
def embed_rows(encoder: UserEncoder, table: EventTable, examples: ExampleSet, batch_size: int = 1024) -> np.ndarray:
    """(E, dim) float32 user embeddings, each from the row's history at its request time."""
    encoder.eval()
    parts = [encoder(batch).numpy() for batch in EventBatches(table, examples).batches(batch_size)]
    return np.concatenate(parts).astype(np.float32)


def row_features(
    upstream: Mapping[str, UpstreamFeatures], table: EventTable, examples: ExampleSet
) -> dict[str, np.ndarray]:
    """Per row and upstream ``name``: ``<name>_embedding`` (E, dim) float32 and ``<name>_codes`` (E, L) int64."""
    features: dict[str, np.ndarray] = {}
    for name, parts in upstream.items():
        embedding = embed_rows(parts.encoder, table, examples)
        features[embedding_key(name)] = embedding
        features[codes_key(name)] = parts.codec.encode(torch.from_numpy(embedding)).numpy()
    return features


def prepare_upstream(
    name: str,
    encoder_checkpoint: Checkpoint,
    table: EventTable,
    train_rows: ExampleSet,
    val_rows: ExampleSet,
    out: Path,
    config: SideConfig = SideConfig(),
) -> UpstreamFeatures:
    """Load the encoder; reuse its codec from ``out/side/<name>`` or train one on ``train_rows``' embeddings
    (metrics on ``val_rows``) and save it."""
    encoder = load_upstream(encoder_checkpoint).encoder
    found = find_codec_for_encoder(out, name, encoder_checkpoint.digest)
    if found is not None:
        return UpstreamFeatures(encoder_checkpoint, encoder, load_side_codec(found), found)
    codec = train_side_codec(torch.from_numpy(embed_rows(encoder, table, train_rows)), config)
    metrics = codec.metrics(torch.from_numpy(embed_rows(encoder, table, val_rows)))
    lineage = {
        "predecessor": None,
        "data": {
            "encoder": encoder_checkpoint.digest,
            "encoder_kind": encoder_checkpoint.kind,
            "train_rows": len(train_rows),
        },
        "step": 0,
        "seed": config.seed,
    }
    stamp = f"side-{name}-{datetime.now(UTC):%Y%m%dT%H%M%S%f}"
    saved = save_side_codec(Path(out) / "side" / name, stamp, codec, metrics, lineage)
    return UpstreamFeatures(encoder_checkpoint, encoder, codec, saved)
