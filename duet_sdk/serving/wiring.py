"""How the published models fit together: the interface clients read, the ensembles' wiring, and the
padding side of every dynamic dim the cpu runner pads.

Records are export-manifest artifact entries: ``{"model", "inputs", "outputs", "dims", ...}`` with
tensor specs ``{"name", "dtype", "shape"}`` (batch first, symbolic dims named).
"""

from __future__ import annotations

from duet_sdk import interface as api
from duet_sdk.errors import ConfigError
from duet_sdk.serving.config import Step, ensemble_config
from duet_sdk.serving.guard import OUTPUT as CHECKED
from duet_sdk.serving.guard import guard_name, guard_record

RANKER = "ranker"
HISTORY_IDS, HISTORY_LEN = "history_ids", "history_len"  # a ranker's target-attention history (its dim: HISTORY_LEN)
# Histories are left-padded (most recent event last); candidates are padded at the end.
SEQUENCE_SIDE, CANDIDATE_SIDE = "left", "right"


def pad_sides(record: dict) -> dict[str, str]:
    """Padding side of every non-batch symbolic dim of ``record``."""
    dims = {d for spec in (*record["inputs"], *record["outputs"]) for d in spec["shape"][1:] if isinstance(d, str)}
    return {d: CANDIDATE_SIDE if d == "candidates" else SEQUENCE_SIDE for d in sorted(dims)}


def trim_dims(record: dict) -> dict[str, str]:
    """Symbolic dims of ``record`` whose over-long requests the runner trims to their most recent ``max``
    entries instead of refusing them, each with its length input: the target-attention history (the
    model reads only its last L events anyway)."""
    return {HISTORY_LEN: HISTORY_LEN} if HISTORY_LEN in record["dims"] else {}


def _tasks(manifest: dict, ranker: dict) -> tuple[str, ...]:
    """Task names of the ranker, from the export manifest (nothing outside the export is read)."""
    tasks = tuple(manifest.get("extraction", {}).get(RANKER, {}).get("tasks", ()))
    if len(tasks) != ranker["outputs"][0]["shape"][-1]:
        raise ConfigError("manifest.extraction.ranker.tasks", f"{ranker['outputs'][0]['shape'][-1]} task names "
                          "(re-export with this duet-export)", tasks)
    return tasks


def _history(manifest: dict, ranker: dict) -> api.HistoryInfo | None:
    """The ranker's history (target attention), from the export manifest; None if it takes none."""
    spec = next((s for s in ranker["inputs"] if s["name"] == HISTORY_IDS), None)
    if spec is None:
        return None
    info = manifest.get("extraction", {}).get(RANKER, {}).get("history")
    expected = "the ranker's history stream, fields, columns and max_len (re-export with this duet-export)"
    if (
        not info
        or len(info.get("fields", ())) != spec["shape"][2]
        or info.get("max_len") != ranker["dims"][spec["shape"][1]]["max"]
    ):
        raise ConfigError("manifest.extraction.ranker.history", expected, info)
    return api.HistoryInfo(
        info["stream"], tuple(info["fields"]), tuple(info["columns"]), info["event_fields"], info["max_len"]
    )


def build_interface(manifest: dict, records: dict[str, dict], version: int) -> api.ServingInterface:
    """The ``ServingInterface`` of the published models, read off their tensor specs."""
    ranker = records[RANKER]
    specs = {s["name"]: s for r in records.values() for s in (*r["inputs"], *r["outputs"])}
    encoders = [r for m, r in records.items() if m.endswith("_encoder")]
    streams = {}
    for record in encoders:
        for spec in record["inputs"]:
            if spec["name"].endswith("_ids"):
                length_dim = spec["shape"][1]
                streams[spec["name"].removesuffix("_ids")] = api.StreamInfo(
                    record["dims"][length_dim]["max"], spec["shape"][2]
                )
    embeddings = {}
    for record in encoders:
        name = record["model"].removesuffix("_encoder")
        codes = specs[f"{name}_codes"]
        high = next((s.get("range", [0, 0])[1] for s in ranker["inputs"] if s["name"] == codes["name"]), 0)
        embeddings[name] = api.EmbeddingInfo(codes["shape"][1], high, specs[f"{name}_embedding"]["shape"][1])
    return api.ServingInterface(
        streams=streams,
        embeddings=embeddings,
        static_sparse=specs["static_sparse"]["shape"][1],
        static_dense=specs["static_dense"]["shape"][1],
        item_sparse=specs["item_sparse"]["shape"][2],
        item_dense=specs["item_dense"]["shape"][2],
        tasks=_tasks(manifest, ranker),
        max_batch=min(r["dims"]["batch"]["max"] for r in records.values()),
        max_candidates=ranker["dims"]["candidates"]["max"],
        version=str(version),
        history=_history(manifest, ranker),
    )


def _unique(specs: list[dict]) -> list[dict]:
    seen: dict[str, dict] = {}
    for spec in specs:
        seen.setdefault(spec["name"], spec)
    return list(seen.values())


def identity(specs: list[dict]) -> dict[str, str]:
    """Step map of tensors that keep their names inside the ensemble."""
    return {s["name"]: s["name"] for s in specs}


def _inputs(records: dict[str, dict]) -> tuple[list[dict], list[dict]]:
    """(duet_upstream's inputs, duet_fresh's inputs)."""
    encoders = [r for m, r in records.items() if m.endswith("_encoder")]
    up_inputs = _unique([s for r in encoders for s in r["inputs"]])
    produced = {s["name"] for r in encoders for s in r["outputs"]}
    return up_inputs, _unique(up_inputs + [s for s in records[RANKER]["inputs"] if s["name"] not in produced])


def guards(records: dict[str, dict]) -> dict[str, dict]:
    """The guard records of the ensembles that fan out (``guard.py``): name -> record."""
    up_inputs, fresh_inputs = _inputs(records)
    return {
        guard_name(e): guard_record(e, inputs, records)
        for e, inputs in ((api.UPSTREAM, up_inputs), (api.FRESH, fresh_inputs))
    }


def _guarded(inputs: list[dict]) -> dict[str, str]:
    """Step map of a first-stage step: ``request_time`` comes from the guard, the rest as given."""
    return {s["name"]: CHECKED if s["name"] == "request_time" else s["name"] for s in inputs}


def ensembles(records: dict[str, dict], interface: api.ServingInterface, version: int) -> list:
    """The configs of release ``version``'s duet_upstream, duet_fresh (each behind its guard) and duet_downstream
    (release names, e.g. ``duet_fresh_v3``), whose steps call that release's guards and components
    (``duet_fresh_guard_v3``, ``ranker_v3``, version 3)."""
    name = lambda model: api.release_model(model, version)  # noqa: E731
    encoders = {m: r for m, r in records.items() if m.endswith("_encoder")}
    ranker = records[RANKER]
    up_inputs, fresh_inputs = _inputs(records)
    up_outputs = [s for r in encoders.values() for s in r["outputs"]]
    codes = [s for s in up_outputs if s["name"] in {i["name"] for i in ranker["inputs"]}]

    def guard(ensemble: str, inputs: list[dict]) -> Step:
        return Step(name(guard_name(ensemble)), identity(inputs), {CHECKED: CHECKED})

    encoder_steps = [Step(name(m), _guarded(r["inputs"]), identity(r["outputs"])) for m, r in encoders.items()]
    ranker_step = Step(name(RANKER), identity(ranker["inputs"]), identity(ranker["outputs"]))
    fresh_encoder_steps = [
        Step(name(m), _guarded(r["inputs"]), identity([s for s in r["outputs"] if s["name"].endswith("_codes")]))
        for m, r in encoders.items()
    ]
    max_batch = interface.max_batch
    params = {api.PARAMETER: interface.to_json()}
    return [
        ensemble_config(
            name(api.UPSTREAM),
            up_inputs,
            up_outputs,
            [guard(api.UPSTREAM, up_inputs), *encoder_steps],
            max_batch,
            version,
            params,
        ),
        ensemble_config(
            name(api.DOWNSTREAM), ranker["inputs"], ranker["outputs"], [ranker_step], max_batch, version, params
        ),
        ensemble_config(
            name(api.FRESH),
            fresh_inputs,
            [*ranker["outputs"], *codes],
            [guard(api.FRESH, fresh_inputs), *fresh_encoder_steps, ranker_step],
            max_batch,
            version,
            params,
        ),
    ]


# gpu target: each encoder is a prep model (ONNX Runtime, CPU) chained into an engine (TensorRT/ONNX).
PREP_TENSOR = "{prep}__{tensor}"  # ensemble-internal names of prep outputs (both encoders read every stream)


def require_roles(records: dict[str, dict], target: str) -> None:
    """cpu publishes fused models only; gpu needs every encoder split into prep + engine (and the prep)."""
    if target == "cpu":
        split = sorted(m for m, r in records.items() if r.get("role", "fused") != "fused")
        if split:
            raise ConfigError(
                "manifest.artifacts", "fused models for the cpu target (export with export/cpu.toml)", split
            )
        return
    fused = sorted(m for m, r in records.items() if m.endswith("_encoder") and r.get("role") != "engine")
    if fused:
        raise ConfigError(
            "manifest.artifacts",
            "encoders split into prep + engine for the gpu target (export with export/gpu.toml)",
            fused,
        )
    missing = sorted(r["prep"] for r in records.values() if r.get("role") == "engine" and r["prep"] not in records)
    if missing:
        raise ConfigError("manifest.artifacts", "the prep model of every engine", missing)


def client_records(records: dict[str, dict]) -> dict[str, dict]:
    """gpu target: the models as clients see them; an engine takes its chain's ``raw_inputs`` and
    prep models are left out (they run inside the ensembles)."""
    return {
        m: r | {"inputs": r["raw_inputs"]} if r.get("role") == "engine" else r
        for m, r in records.items()
        if r.get("role") != "prep"
    }


def _chain(records: dict[str, dict], step, model_name, chained: set[str]) -> list:
    """An ensemble step of an engine (on raw inputs) as prep step + engine step; other steps as they are."""
    engine = next((r for m, r in records.items() if model_name(m) == step.model_name), {})
    if engine.get("role") != "engine":
        return [step]
    chained.add(engine["model"])
    prep = records[engine["prep"]]
    produced = {s["name"]: PREP_TENSOR.format(prep=prep["model"], tensor=s["name"]) for s in prep["outputs"]}
    step_type = type(step)
    prep_step = step_type(
        model_name=model_name(prep["model"]),
        model_version=step.model_version,
        input_map={s["name"]: step.input_map[s["name"]] for s in prep["inputs"]},
        output_map=produced,
    )
    engine_step = step_type(
        model_name=step.model_name,
        model_version=step.model_version,
        input_map={s["name"]: produced.get(s["name"]) or step.input_map[s["name"]] for s in engine["inputs"]},
        output_map=dict(step.output_map),
    )
    return [prep_step, engine_step]


def gpu_ensembles(
    records: dict[str, dict], interface: api.ServingInterface, *args, model_name=lambda model: model
) -> list:
    """The gpu target's duet_upstream, duet_downstream and duet_fresh: ``ensembles`` (``args`` passed on)
    with each engine step preceded by its prep step. ``model_name`` maps a model to the name the
    ensemble steps call it by. ConfigError if an engine is left without its prep step."""
    configs = ensembles(client_records(records), interface, *args)
    chained: set[str] = set()
    for config in configs:
        steps = []
        for step in config.ensemble_scheduling.step:
            copy = type(step)()
            copy.CopyFrom(step)
            steps += _chain(records, copy, model_name, chained)
        del config.ensemble_scheduling.step[:]
        config.ensemble_scheduling.step.extend(steps)
    engines = {m for m, r in records.items() if r.get("role") == "engine"}
    if chained != engines:
        raise ConfigError("gpu ensembles", f"a prep step before every engine step {sorted(engines)}", sorted(chained))
    return configs
