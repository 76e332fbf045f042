"""TorchScript via ``torch.jit.trace`` of the positional serving module (Triton ``pytorch_libtorch``).

The artifact is checked in a fresh Python process that never imports duet_sdk: it must load with
``torch.jit.load`` and reproduce eager outputs on a batch size and sequence width unlike the trace example.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

from duet_sdk._extras import missing_extra

try:
    import torch
    from safetensors.torch import load_file, save_file
except ModuleNotFoundError as exc:  # the [train] extra is not installed
    raise missing_extra(exc, __name__) from exc

from duet_sdk.errors import DuetError
from duet_sdk.export.extract import ServingModel
from duet_sdk.export.signature import ModelSignature
from duet_sdk.export.verify import Runner

_CHECK = r"""
import sys
import torch
from safetensors.torch import load_file, save_file
model = torch.jit.load(sys.argv[1])
inputs = load_file(sys.argv[2])
names = sys.argv[4].split(",")
with torch.no_grad():
    outputs = model(*(inputs[n] for n in names))
save_file({f"out{i}": o.contiguous() for i, o in enumerate(outputs)}, sys.argv[3])
leaked = sorted(m for m in sys.modules if m.startswith("duet_sdk"))
if leaked:
    raise SystemExit(f"duet_sdk was imported: {leaked}")
"""


class StandaloneLoadError(DuetError):
    """A TorchScript artifact does not load or run in a process without duet_sdk."""


def export_torchscript(serving: ServingModel, example: dict[str, torch.Tensor], path: Path) -> Path:
    """Trace ``serving`` on ``example`` and save to ``path`` (``model.pt``)."""
    args = tuple(example[n] for n in serving.signature.input_names)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about Python values; shapes are checked by verify
        traced = torch.jit.trace(serving.module, args, check_trace=False)
    traced.save(str(path))
    return path


def torchscript_runner(path: Path, signature: ModelSignature) -> Runner:
    """Run the artifact in this process: inputs in the signature's order, outputs named by it."""
    model = torch.jit.load(str(path))

    def run(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            outputs = model(*(inputs[n] for n in signature.input_names))
        return dict(zip(signature.output_names, outputs))

    return run


def check_standalone(path: Path, serving: ServingModel, inputs: dict[str, torch.Tensor], atol: float = 1e-4) -> float:
    """Load and run ``path`` in a subprocess free of duet_sdk; return max abs diff to eager."""
    names = serving.signature.input_names
    with tempfile.TemporaryDirectory() as tmp:
        save_file({n: inputs[n].contiguous() for n in names}, f"{tmp}/in.safetensors")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        proc = subprocess.run([sys.executable, "-I", "-c", _CHECK, str(Path(path).resolve()), f"{tmp}/in.safetensors",
                               f"{tmp}/out.safetensors", ",".join(names)],
                              capture_output=True, text=True, env=env, cwd=tmp, timeout=300)
        if proc.returncode != 0:
            raise StandaloneLoadError(
                f"{path}: torch.jit.load in a clean process failed: {proc.stderr.strip()[-2000:]}"
            )
        got = load_file(f"{tmp}/out.safetensors")
    want = serving.eager(inputs)
    worst = 0.0
    for i, (name, w) in enumerate(want.items()):
        g = got[f"out{i}"]
        if g.shape != w.shape:
            raise StandaloneLoadError(f"{path}: output {name} shape {tuple(g.shape)} != eager {tuple(w.shape)}")
        worst = max(worst, float((g.double() - w.double()).abs().max()) if g.numel() else 0.0)
    if worst > atol:
        raise StandaloneLoadError(f"{path}: standalone outputs differ from eager by {worst:.3g} > {atol:g}")
    return worst
