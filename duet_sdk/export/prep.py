"""The gpu target's split of an encoder into a *prep* model and an *engine* with no int64 arithmetic.

``UserEncoder.forward`` is ``encode(prepare(batch))``; this module exports the two halves:

- ``<name>_prep`` (ONNX, served by ONNX Runtime on CPU instances): raw int64 inputs
  (``request_time``, ``static_sparse``, per stream ``<s>_ids``, ``<s>_ts``, ``<s>_len``) ->
  ``static_slots`` (B, S, H) int32, per stream ``<s>_slots`` (B, T, F, H) int32 table rows,
  ``<s>_time`` (B, T, K) float32 time features in [-5, 5] (fp16 holds them) and ``<s>_count`` (B,)
  int32 real events. All hashing (``remainder`` of int64 products) happens here.
- ``<name>_encoder`` (the engine, TensorRT or ONNX): ``static_slots``, ``static_dense`` and the
  prepared stream tensors -> ``<name>_codes``, ``<name>_embedding``: table lookups and float layers.

The two are the fused model by construction (the same ``prepare``/``encode`` code; the int32 casts
are exact because every table row is below 2**31 and counts are in [0, T]); ``split_encoder`` checks
``engine(prep(x)) == fused(x)`` bitwise in eager PyTorch before anything is exported.
"""

from __future__ import annotations

from dataclasses import replace

from duet_sdk._extras import missing_extra

try:
    import torch
    from torch import nn
except ModuleNotFoundError as exc:  # the [train] extra is not installed
    raise missing_extra(exc, __name__) from exc

from duet_sdk.data import schema as keys
from duet_sdk.errors import ConfigError
from duet_sdk.export.extract import BATCH, EncoderServing, ExtractionReport, ServingModel, with_named_forward
from duet_sdk.export.signature import ModelSignature, TensorSpec
from duet_sdk.models.upstream import STATIC_SLOTS, UserEncoder, count_key, slots_key, time_key

INT32_MAX = 2**31 - 1
RAW_FLOAT_INPUTS = (keys.STATIC_DENSE,)  # passed straight to the engine, never through the prep model


def prep_name(encoder_model: str) -> str:
    """``click_encoder`` -> ``click_prep``."""
    return encoder_model.removesuffix("_encoder") + "_prep"


class EncoderPrep(nn.Module):
    """Positional ``UserEncoder.prepare`` with int32 slots and counts (see the module docstring)."""

    def __init__(self, encoder: UserEncoder, input_names, output_names) -> None:
        super().__init__()
        self.encoder = encoder
        self.input_names, self.output_names = tuple(input_names), tuple(output_names)

    def run(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        prepared = self.encoder.prepare(dict(zip(self.input_names, inputs)))
        return tuple(
            prepared[n] if prepared[n].is_floating_point() else prepared[n].to(torch.int32) for n in self.output_names
        )


class EncoderEngine(EncoderServing):
    """Positional ``UserEncoder.encode`` + SIDE encode: prepared inputs -> (codes (B, L), embedding (B, E))."""

    def run(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.encoder.encode(dict(zip(self.input_names, inputs)))  # (B, E)
        return self.side(embedding), embedding


def _prep_outputs(encoder: UserEncoder, fused: ModelSignature) -> list[TensorSpec]:
    specs = {s.name: s for s in fused.inputs}
    hashes = encoder.event_embedding.mult.shape[1]
    rows = max(encoder.event_embedding.num_rows, encoder.static.embedding.num_rows)
    if rows > INT32_MAX:
        raise ConfigError("hashing", f"tables below 2**31 rows for int32 indices, got {rows}", rows)
    s = specs[keys.STATIC_SPARSE].shape[1]
    out = [
        TensorSpec(
            STATIC_SLOTS,
            "int32",
            (BATCH, s, encoder.static.embedding.mult.shape[1]),
            high=encoder.static.embedding.num_rows,
        )
    ]
    for stream, tower in encoder.towers.items():
        _, t, f = specs[keys.ids_key(stream)].shape
        out += [
            TensorSpec(slots_key(stream), "int32", (BATCH, t, f, hashes), high=encoder.event_embedding.num_rows),
            TensorSpec(time_key(stream), "float32", (BATCH, t, tower.time.num_features)),
            TensorSpec(count_key(stream), "int32", (BATCH,)),
        ]
    return out


def split_encoder(fused: ServingModel) -> tuple[ServingModel, ServingModel]:
    """(prep, engine) serving models of a fused encoder ``ServingModel`` (``extract_encoder``'s).

    The engine keeps the fused model's name (``<name>_encoder``) and outputs; the prep model is
    ``<name>_prep``. Raises ``ConfigError`` if the composition is not bitwise equal to ``fused``.
    """
    module: EncoderServing = fused.module
    encoder, signature = module.encoder, fused.signature
    prep_outputs = _prep_outputs(encoder, signature)
    prep_inputs = tuple(s for s in signature.inputs if s.name not in RAW_FLOAT_INPUTS)
    prep_signature = ModelSignature(
        prep_name(signature.model),
        prep_inputs,
        tuple(prep_outputs),
        dict(signature.dims),
        {s.name: "feature" if s.dtype == "float32" else "index" for s in prep_outputs},
    )
    prep_module = with_named_forward(EncoderPrep, prep_signature.input_names)(
        encoder, prep_signature.input_names, prep_signature.output_names
    ).eval()
    engine_inputs = (prep_outputs[0], *(s for s in signature.inputs if s.name in RAW_FLOAT_INPUTS), *prep_outputs[1:])
    engine_signature = replace(signature, inputs=tuple(engine_inputs))
    engine_module = with_named_forward(EncoderEngine, engine_signature.input_names)(
        encoder, module.side, engine_signature.input_names
    ).eval()
    hashes = (encoder.static.embedding, encoder.event_embedding)
    hash_bytes = sum(t.numel() * t.element_size() for m in hashes for t in (m.mult, m.add, m.offsets))
    prep_report = ExtractionReport(kept={"hash_parameters": (0, hash_bytes)})
    prep = ServingModel(prep_module, prep_signature, prep_report, role="prep")
    engine = ServingModel(engine_module, engine_signature, fused.report, role="engine", reference=fused, prep=prep)
    check_split(engine)
    return prep, engine


def compose(prep_run, engine_run, engine_signature: ModelSignature):
    """A runner of raw inputs through ``prep_run`` then ``engine_run`` (float raw inputs go straight on)."""

    def run(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        prepared = prep_run({k: v for k, v in inputs.items() if k not in RAW_FLOAT_INPUTS})
        merged = prepared | {k: inputs[k] for k in RAW_FLOAT_INPUTS}
        return engine_run({n: merged[n] for n in engine_signature.input_names})

    return run


@torch.no_grad()
def check_split(engine: ServingModel, seed: int = 4321) -> None:
    """``engine(prep(x))`` equals the fused model bitwise in eager PyTorch on one case of extreme IDs."""
    from duet_sdk.export.verify import Case, sample_inputs

    fused = engine.reference
    inputs = sample_inputs(fused.signature, Case(fused.signature.dims[BATCH][1], "max", "mixed"), seed=seed)
    got = compose(engine.prep.eager, engine.eager, engine.signature)(inputs)
    want = fused.eager(inputs)
    for name in fused.signature.output_names:
        if not torch.equal(got[name], want[name]):
            raise ConfigError(f"{engine.name} split", "prep -> engine equal to the fused encoder", name)


def engine_inputs(engine: ServingModel, raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The engine's inputs for raw inputs ``raw``, computed by its eager prep model."""
    with torch.no_grad():
        return compose(engine.prep.eager, lambda prepared: prepared, engine.signature)(raw)


def split_for_target(models: dict[str, ServingModel], target: str) -> dict[str, ServingModel]:
    """For the gpu target, each fused encoder becomes ``<name>_prep`` then ``<name>_encoder`` (the
    engine); other models and the cpu target's are returned as they are."""
    if target != "gpu":
        return models
    out: dict[str, ServingModel] = {}
    for name, serving in models.items():
        if isinstance(serving.module, EncoderServing):
            prep, engine = split_encoder(serving)
            out[prep.name] = prep
            out[name] = engine
        else:
            out[name] = serving
    return out
