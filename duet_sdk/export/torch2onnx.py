"""ONNX via the dynamo exporter (``torch.onnx.export(..., dynamo=True, dynamic_shapes=...)``).

Weights go to an external data file beside ``model.onnx`` (``model.onnx.data``); the graph is then
checked to carry every declared dim as a named symbolic dim (nothing specialised to the example).
"""

from __future__ import annotations

import logging
import warnings
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

from duet_sdk._extras import missing_extra

try:
    import torch
except ModuleNotFoundError as exc:  # the [train] extra is not installed
    raise missing_extra(exc, __name__) from exc

from duet_sdk.errors import DuetError
from duet_sdk.export import _compat
from duet_sdk.export.extract import ServingModel
from duet_sdk.export.signature import ModelSignature
from duet_sdk.export.verify import Runner

ONNX_TYPES = {1: "float32", 6: "int32", 7: "int64", 10: "float16", 16: "bfloat16", 9: "bool"}


class OnnxExportError(DuetError):
    """The exporter failed or produced a graph that does not match the declared signature."""


def export_onnx(serving: ServingModel, example: dict[str, torch.Tensor], path: Path, opset: int | None = None) -> Path:
    """Export ``serving`` to ``path`` with the signature's dynamic dims; returns ``path``."""
    _compat.require_onnx()
    signature = serving.signature
    args = tuple(example[n] for n in signature.input_names)
    log = StringIO()
    try:
        with torch.no_grad(), warnings.catch_warnings(), redirect_stdout(log):
            warnings.simplefilter("ignore")
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)
            program = torch.onnx.export(
                serving.module, args, dynamo=True, dynamic_shapes=signature.dynamic_shapes(),
                input_names=list(signature.input_names), output_names=list(signature.output_names),
                opset_version=opset, external_data=True, report=False,
            )
    except Exception as exc:
        raise OnnxExportError(f"{signature.model}: dynamo ONNX export failed: {exc}\n{log.getvalue()[-2000:]}") from exc
    program.save(str(path), external_data=True)
    check_graph(path, signature)
    return path


def graph_io(path: Path) -> dict[str, list[tuple[str, str, list]]]:
    """``{"inputs": [(name, dtype, dims)], "outputs": [...]}`` of the graph; dims are ints or dim names."""
    onnx = _compat.require_onnx()
    model = onnx.load(str(path), load_external_data=False)

    def describe(values) -> list[tuple[str, str, list]]:
        out = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param if d.HasField("dim_param") else d.dim_value for d in t.shape.dim]
            out.append((v.name, ONNX_TYPES.get(t.elem_type, str(t.elem_type)), dims))
        return out

    return {"inputs": describe(model.graph.input), "outputs": describe(model.graph.output)}


def check_graph(path: Path, signature: ModelSignature) -> None:
    """Names, dtypes and shapes of the graph's inputs/outputs equal the signature's, symbolic dims by name."""
    io = graph_io(path)
    for what, specs in (("inputs", signature.inputs), ("outputs", signature.outputs)):
        want = [(s.name, s.dtype, list(s.shape)) for s in specs]
        if io[what] != want:
            raise OnnxExportError(f"{path}: graph {what} {io[what]} != declared {want} "
                                  "(a dim that is an int here was specialised by the exporter)")


def onnxruntime_runner(path: Path, threads: int = 0) -> Runner:
    """Run the artifact with ONNX Runtime on CPU; tensors in and out."""
    ort = _compat.require_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return session_runner(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]))


def session_runner(session) -> Runner:
    """A Runner over an ONNX Runtime session: tensors in (by the graph's input names), tensors out."""
    names = [o.name for o in session.get_outputs()]
    input_names = [i.name for i in session.get_inputs()]

    def run(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        outputs = session.run(names, {n: inputs[n].numpy() for n in input_names})
        return {n: torch.from_numpy(o) for n, o in zip(names, outputs)}

    return run
