"""SIDE encode (greedy and beam) and decode throughput, in eager PyTorch and ONNX Runtime.

Encode is the step fused after each upstream encoder; decode is the first step of the ranker. Rows of
embeddings per second for a 4 x 256 codec at the paper's ClickAUE width (256).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.encoders import time_call
from duet_sdk.side.codec import SideCodec
from duet_sdk.side.config import SideConfig


def _onnx_session(module: torch.nn.Module, example: torch.Tensor, threads: int, directory: Path):
    import onnxruntime as ort

    path = directory / f"{type(module).__name__}.onnx"
    torch.onnx.export(module, (example,), str(path), dynamo=True, input_names=["x"], output_names=["y"],
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},), report=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def measure_side(dim: int = 256, batch: int = 4096, threads: int = 2, min_seconds: float = 1.0) -> list[dict]:
    """Rows ``{op, runtime, rows_per_s}`` for encode (beam 1 and 4) and decode."""
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    books = torch.randn(4, 256, dim)
    x = torch.randn(batch, dim)
    directory = Path(tempfile.mkdtemp(prefix="side-"))
    rows = []
    for beam in (1, 4):
        encoder = SideCodec(SideConfig(beam_width=beam), books).encoder()
        seconds = time_call(lambda enc=encoder: enc(x), min_seconds)
        rows.append({"op": f"encode (beam {beam})", "runtime": "eager", "rows_per_s": batch / seconds})
        session = _onnx_session(encoder, x[:8], threads, directory)
        feed = {"x": x.numpy()}
        seconds = time_call(lambda s=session: s.run(None, feed), min_seconds)
        rows.append({"op": f"encode (beam {beam})", "runtime": "ort", "rows_per_s": batch / seconds})
    codes = SideCodec(SideConfig(), books).encode(x)
    decoder = SideCodec(SideConfig(), books).decoder()
    seconds = time_call(lambda: decoder(codes), min_seconds)
    rows.append({"op": "decode", "runtime": "eager", "rows_per_s": batch / seconds})
    session = _onnx_session(decoder, codes[:8], threads, directory)
    feed = {"x": np.ascontiguousarray(codes.numpy())}
    seconds = time_call(lambda: session.run(None, feed), min_seconds)
    rows.append({"op": "decode", "runtime": "ort", "rows_per_s": batch / seconds})
    return rows
