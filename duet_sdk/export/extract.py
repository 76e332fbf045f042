"""Serving modules from training checkpoints, and what extraction kept and dropped (no conversion here).

Encoder: from an ``UpstreamNet`` keep the ``UserEncoder`` (static embeddings + event towers + DCN
summarizer) and fuse the SIDE encode step: inputs -> (``<name>_codes`` (B, L) int64,
``<name>_embedding`` (B, E) float32). The item branch, overarch and heads are dropped.
Ranker: SIDE decode + projection + ranker in one module, listwise: inputs -> ``scores`` (U, N, K) =
sigmoid(logits); a ranker with target attention also takes ``history_ids`` (U, T, F') and
``history_len`` (U,), T dynamic up to the attention's L. Serving modules take positional tensors in the
signature's order and return a tuple.
"""

from __future__ import annotations

import keyword
from collections.abc import Sequence
from dataclasses import dataclass, field

from duet_sdk._extras import missing_extra

try:
    import torch
    from torch import nn
except ModuleNotFoundError as exc:  # the [train] extra is not installed
    raise missing_extra(exc, __name__) from exc

from duet_sdk.data import schema as keys
from duet_sdk.errors import ConfigError
from duet_sdk.export.signature import ModelSignature, TensorSpec
from duet_sdk.models.ranker import Ranker, codes_key
from duet_sdk.models.upstream import UpstreamNet, UserEncoder
from duet_sdk.side import SideCodec, SideEncoder

DROPPED_UPSTREAM = ("item_branch", "overarch", "heads")
BATCH = "batch"


def _size(module: nn.Module) -> tuple[int, int]:
    """(parameters, bytes of parameters and persistent buffers) of ``module``."""
    params = sum(p.numel() for p in module.parameters())
    nbytes = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    return params, nbytes


@dataclass(frozen=True)
class ExtractionReport:
    """Parameters and bytes per part kept in and dropped from the serving module."""

    kept: dict[str, tuple[int, int]]
    dropped: dict[str, tuple[int, int]] = field(default_factory=dict)
    tasks: tuple[str, ...] = ()  # a ranker's task names, in the order of its scores
    history: dict | None = None  # a ranker with target attention: where its history comes from (``history_info``)

    def totals(self, which: str) -> tuple[int, int]:
        parts = getattr(self, which).values()
        return sum(p for p, _ in parts), sum(b for _, b in parts)

    def to_dict(self) -> dict:
        def block(parts: dict) -> dict:
            return {name: {"params": p, "bytes": b} for name, (p, b) in parts.items()}

        (kp, kb), (dp, db) = self.totals("kept"), self.totals("dropped")
        return {"kept": block(self.kept), "dropped": block(self.dropped),
                "kept_params": kp, "kept_bytes": kb, "dropped_params": dp, "dropped_bytes": db,
                **({"tasks": list(self.tasks)} if self.tasks else {}),
                **({"history": self.history} if self.history else {})}

    def summary(self) -> str:
        (kp, kb), (dp, db) = self.totals("kept"), self.totals("dropped")
        dropped = ", ".join(self.dropped) or "nothing"
        return f"kept {kp:,} params ({kb / 2**20:.2f} MiB); dropped {dropped}: {dp:,} params ({db / 2**20:.2f} MiB)"


def with_named_forward(cls: type, names: Sequence[str]) -> type:
    """A subclass of ``cls`` whose ``forward(self, <names>...)`` calls ``self.run(inputs)``.

    Explicit parameter names (the batch keys) carry over to the traced TorchScript signature, the
    ``torch.export`` graph and ONNX, which Triton's backends match inputs by.
    """
    for name in names:
        if not name.isidentifier() or keyword.iskeyword(name):
            raise ConfigError("input name", "a Python identifier", name)
    params = ", ".join(names)
    namespace: dict = {}
    exec(f"def forward(self, {params}):\n    return self.run(({params}{',' if len(names) == 1 else ''}))", namespace)
    namespace["forward"].__doc__ = f"Positional serving inputs: {params}."
    return type(cls.__name__, (cls,), {"forward": namespace["forward"], "__module__": cls.__module__})


class EncoderServing(nn.Module):
    """Positional ``UserEncoder`` + fused greedy/beam SIDE encode.

    ``with_named_forward`` gives it ``forward(request_time, static_sparse, ...)``; ``run`` takes the tuple.

    Args:
        inputs: tensors in ``input_names`` order (request_time (B,), static_sparse (B, S),
            static_dense (B, D), then per stream ``_ids`` (B, T, F), ``_ts`` (B, T), ``_len`` (B,)).
    Returns:
        (codes (B, L) int64, embedding (B, E) float32).
    """

    def __init__(self, encoder: UserEncoder, side: SideEncoder, input_names: Sequence[str]) -> None:
        super().__init__()
        self.encoder = encoder
        self.side = side
        self.input_names = tuple(input_names)

    def run(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.encoder(dict(zip(self.input_names, inputs)))  # (B, E)
        return self.side(embedding), embedding

    @torch.no_grad()
    def near_tie_rows(self, embedding: torch.Tensor, rtol: float) -> torch.Tensor:
        """(B,) bool: rows whose greedy path meets a level where the best and second-best squared
        distances differ by less than ``rtol`` relative (either choice is a correct rounding)."""
        books, sqnorms = self.side.codebooks, self.side.sqnorms
        residual = embedding.to(torch.float64)
        tie = torch.zeros(embedding.shape[0], dtype=torch.bool)
        for level in range(books.shape[0]):
            book = books[level].to(torch.float64)
            dist = (residual**2).sum(1, keepdim=True) - 2 * residual @ book.T + sqnorms[level].double()  # (B, K)
            two = dist.topk(min(2, dist.shape[1]), dim=1, largest=False).values  # (B, 2)
            gap = two[:, -1] - two[:, 0]
            tie |= gap <= rtol * two[:, 0].abs().clamp(min=1e-12) + 1e-9
            residual = residual - book[dist.argmin(1)]
        return tie


class RankerServing(nn.Module):
    """Positional listwise ranker with SIDE decode: inputs -> (probabilities (U, N, K),)."""

    def __init__(self, ranker: Ranker, input_names: Sequence[str]) -> None:
        super().__init__()
        self.ranker = ranker
        self.input_names = tuple(input_names)

    def run(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
        return (torch.sigmoid(self.ranker(dict(zip(self.input_names, inputs)))),)  # (U, N, K)


@dataclass
class ServingModel:
    """A serving module, its declared signature and the extraction report.

    ``role``: ``"fused"`` (raw inputs to outputs), or for the gpu target's split encoders ``"prep"``
    and ``"engine"``; an engine carries its ``prep`` model and the fused ``reference`` it is verified
    against (through the prep model, on raw inputs).
    """

    module: nn.Module
    signature: ModelSignature
    report: ExtractionReport
    role: str = "fused"
    reference: ServingModel | None = None
    prep: ServingModel | None = None

    @property
    def name(self) -> str:
        return self.signature.model

    @torch.no_grad()
    def eager(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        outputs = self.module(*(inputs[n] for n in self.signature.input_names))
        return dict(zip(self.signature.output_names, outputs))


def encoder_signature(net_config, codec: SideCodec, name: str, max_batch: int, opt_batch: int) -> ModelSignature:
    """Inputs of the encoder's streams, outputs ``<name>_codes`` and ``<name>_embedding``."""
    schema = net_config.schema
    f, s, d = len(schema.event_fields), len(schema.static_sparse), len(schema.static_dense)
    inputs = [
        TensorSpec(keys.REQUEST_TIME, "int64", (BATCH,)),
        TensorSpec(keys.STATIC_SPARSE, "int64", (BATCH, s)),
        TensorSpec(keys.STATIC_DENSE, "float32", (BATCH, d)),
    ]
    dims = {BATCH: (1, opt_batch, max_batch)}
    for stream in net_config.streams:
        t = f"{stream}_len"
        max_len = schema.stream(stream).max_len
        dims[t] = (1, max_len, max_len)
        inputs += [
            TensorSpec(keys.ids_key(stream), "int64", (BATCH, t, f)),
            TensorSpec(keys.ts_key(stream), "int64", (BATCH, t)),
            TensorSpec(keys.len_key(stream), "int64", (BATCH,)),
        ]
    outputs = (
        TensorSpec(codes_key(name), "int64", (BATCH, codec.config.levels)),
        TensorSpec(f"{name}_embedding", "float32", (BATCH, net_config.embedding_dim)),
    )
    kinds = {codes_key(name): "codes", f"{name}_embedding": "embedding"}
    return ModelSignature(f"{name}_encoder", tuple(inputs), outputs, dims, kinds)


def extract_encoder(
    net: UpstreamNet, codec: SideCodec, name: str, max_batch: int = 64, opt_batch: int = 16
) -> ServingModel:
    """The encoder serving module of ``net`` with ``codec``'s SIDE encode fused; item branch, overarch
    and heads dropped (and reported)."""
    config = net.config
    if codec.dim != config.embedding_dim:
        raise ConfigError("codec.dim", f"the encoder's embedding_dim {config.embedding_dim}", codec.dim)
    signature = encoder_signature(config, codec, name, max_batch, opt_batch)
    serving_cls = with_named_forward(EncoderServing, signature.input_names)
    module = serving_cls(net.encoder, codec.encoder(), signature.input_names).eval()
    report = ExtractionReport(
        kept={"encoder": _size(net.encoder), "side_encoder": _size(module.side)},
        dropped={part: _size(getattr(net, part)) for part in DROPPED_UPSTREAM},
    )
    return ServingModel(module, signature, report)


def ranker_signature(
    ranker: Ranker, max_batch: int, opt_batch: int, max_candidates: int, opt_candidates: int
) -> ModelSignature:
    config = ranker.config
    schema = config.schema
    n = "candidates"
    inputs = [
        TensorSpec(keys.STATIC_SPARSE, "int64", (BATCH, len(schema.static_sparse))),
        TensorSpec(keys.STATIC_DENSE, "float32", (BATCH, len(schema.static_dense))),
        TensorSpec(keys.ITEM_SPARSE, "int64", (BATCH, n, len(schema.item_sparse))),
        TensorSpec(keys.ITEM_DENSE, "float32", (BATCH, n, len(schema.item_dense))),
    ]
    if config.embedding_input != "codes":
        raise ConfigError(
            "ranker.embedding_input", "'codes' (rankers fed float embeddings are not exported)", config.embedding_input
        )
    for e in config.embeddings:
        inputs.append(TensorSpec(codes_key(e.name), "int64", (BATCH, e.levels), high=e.codebook_size))
    outputs = (TensorSpec("scores", "float32", (BATCH, n, len(config.tasks))),)
    dims = {BATCH: (1, opt_batch, max_batch), n: (1, opt_candidates, max_candidates)}
    ta = config.target_attention
    if ta is not None:  # the recent raw history, ragged on L: left-padded IDs and lengths
        inputs += [
            TensorSpec(keys.HISTORY_IDS, "int64", (BATCH, keys.HISTORY_LEN, len(ta.fields))),
            TensorSpec(keys.HISTORY_LEN, "int64", (BATCH,)),
        ]
        dims[keys.HISTORY_LEN] = (1, ta.max_len, ta.max_len)
    return ModelSignature("ranker", tuple(inputs), outputs, dims, {"scores": "probability"})


def extract_ranker(
    ranker: Ranker, max_batch: int = 64, opt_batch: int = 16, max_candidates: int = 128, opt_candidates: int = 32
) -> ServingModel:
    """SIDE decode + projection + ranker as one listwise serving module returning probabilities."""
    signature = ranker_signature(ranker, max_batch, opt_batch, max_candidates, opt_candidates)
    module = with_named_forward(RankerServing, signature.input_names)(ranker, signature.input_names).eval()
    kept = {name: _size(child) for name, child in ranker.named_children() if any(True for _ in child.state_dict())}
    return ServingModel(module, signature, ExtractionReport(kept=kept, tasks=tuple(t.name for t in ranker.config.tasks),
                                                            history=history_info(ranker)))


def history_info(ranker: Ranker) -> dict | None:
    """What a client needs to build ``history_ids`` of a ranker with target attention (None without):
    the stream, the ID fields and their columns in the stream's packed event row, its width, and L."""
    ta, schema = ranker.config.target_attention, ranker.config.schema
    if ta is None:
        return None
    return {
        "stream": ta.stream,
        "fields": list(ta.fields),
        "columns": [schema.event_fields.index(f) for f in ta.fields],
        "event_fields": len(schema.event_fields),
        "max_len": ta.max_len,
    }
