"""ONNX fp32 -> ONNX int8: ONNX Runtime dynamic quantization of the weight MatMuls only.

``quantize_dynamic`` with ``op_types_to_quantize=["MatMul"]`` and, explicitly, only the MatMul nodes
whose second input is a weight (an initializer): weights become per-output-channel int8, activations
are quantized to uint8 per call (no calibration data). Everything else stays fp32: attention's
activation-by-activation products (Q·K, P·V) and, above all, ``Gather`` — by default
``quantize_dynamic`` quantizes Gather too, which would round the hashed embedding tables.

``reduce_range`` (7-bit weights) is on: without AVX-512 VNNI, ONNX Runtime's u8s8 kernels sum pairs of
products in int16 (``vpmaddubsw``), which full 8-bit weights can saturate; 7-bit weights cannot
(measured on an AVX2 EPYC: 8-bit weights put the demo encoders' embeddings off by ~0.2 and flipped
~45 % of SIDE codes; 7-bit weights, ~1e-2 and near ties only).

Activation ranges are taken per call over the whole tensor (``DynamicQuantizeLinear``), so a user's
int8 outputs move, within the int8 tolerance, with the other users (and padding) in the same batch;
fp32 artifacts do not have this property.

Example::

    quantize_int8(Path("fp32/model.onnx"), Path("int8/model.onnx"))  # writes model.onnx + model.onnx.data
"""

from __future__ import annotations

import logging
from pathlib import Path

from duet_sdk.export import _compat

log = logging.getLogger(__name__)
SETTINGS = {
    "method": "onnxruntime.quantization.quantize_dynamic",
    "op_types": ["MatMul"],
    "weights": "int8 per channel",
    "activations": "uint8 per call",
    "reduce_range": True,
}


def weight_matmuls(onnx_path: Path) -> list[str]:
    """Names of the MatMul nodes whose second input is an initializer (a weight), in graph order."""
    onnx = _compat.require_onnx()
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "MatMul" and len(n.input) == 2 and n.input[1] in weights]


def quantize_int8(onnx_path: Path, out: Path) -> Path:
    """Quantize the weight MatMuls of ``onnx_path`` into ``out`` (weights in ``<out>.data``); returns ``out``.

    A graph with no weight MatMul is refused (``ValueError``): its "int8" artifact would be fp32.
    """
    _compat.require_onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes = weight_matmuls(onnx_path)
    if not nodes:
        raise ValueError(f"{onnx_path}: no MatMul with a weight operand; nothing to quantize to int8")
    quiet = logging.getLogger()  # the quantizer logs a pre-processing hint on the root logger
    level = quiet.level
    quiet.setLevel(max(level, logging.ERROR))
    try:
        quantize_dynamic(
            str(onnx_path),
            str(out),
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=nodes,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=SETTINGS["reduce_range"],
            use_external_data_format=True,
        )
    finally:
        quiet.setLevel(level)
    log.info("%s: quantized %d weight MatMuls to int8", onnx_path, len(nodes))
    return out


def graph_summary(onnx_path: Path) -> dict:
    """What the quantized graph holds: node counts by op type, and the element types of the tables
    every ``Gather`` reads (``{"float32": n}`` when the embedding tables stayed fp32)."""
    onnx = _compat.require_onnx()
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    types = {t.name: onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name for t in graph.initializer}
    ops: dict[str, int] = {}
    for node in graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    tables: dict[str, int] = {}
    for node in graph.node:
        if node.op_type == "Gather" and node.input[0] in types:
            tables[types[node.input[0]]] = tables.get(types[node.input[0]], 0) + 1
    return {"ops": dict(sorted(ops.items())), "gather_tables": tables}
