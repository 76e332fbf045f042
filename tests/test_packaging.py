"""The client and online roles install and import in a fresh virtual environment holding only their extras.

Builds a venv under tmp, installs a copy of the project with no extra (the client), then adds
``[online]``; pip's cache is reused between runs. Slow: it installs numpy, grpcio, tritonclient, redis.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "onnx", "onnxruntime", "onnxscript", "sklearn", "matplotlib", "pyarrow", "pytriton", "tensorrt")

# argv: the modules to import; prints the heavy packages that got imported with them
IMPORTS = (
    "import importlib, json, sys\n"
    "for name in sys.argv[1:]:\n"
    "    importlib.import_module(name)\n"
    f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))\n"
)

MISSING = """
import importlib, sys
from duet_sdk._extras import MissingDependencyError
try:
    importlib.import_module(sys.argv[1])
except MissingDependencyError as exc:
    print(exc)
else:
    raise SystemExit(sys.argv[1] + " imported")
"""


def _clean_env() -> dict[str, str]:
    """The environment without this checkout on PYTHONPATH (it would shadow the installed package)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def _python(venv: Path, code: str, *args: str) -> str:
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code, *args], capture_output=True, text=True,
                         cwd=venv, env=_clean_env(), timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def _pip_install(venv: Path, requirement: str) -> None:
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", requirement],
        capture_output=True, text=True, env=_clean_env(), timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A copy of what the wheel is built from (building in this checkout would leave build/ behind)."""
    dst = tmp_path_factory.mktemp("src") / "duet_sdk_src"
    shutil.copytree(ROOT / "duet_sdk", dst / "duet_sdk", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dst / name)
    return dst


@pytest.mark.slow
def test_client_then_online_roles_import_in_a_fresh_venv_with_only_their_extras(source, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=_clean_env(), timeout=120)

    _pip_install(venv, str(source))  # the base install: the client
    heavy = json.loads(_python(venv, IMPORTS, "duet_sdk.client", "duet_sdk.client.client", "duet_sdk.interface"))
    assert heavy == []
    for module in ("duet_sdk.training.cli", "duet_sdk.models", "duet_sdk.export.extract", "duet_sdk.checkpoint"):
        message = _python(venv, MISSING, module)
        assert "torch" in message and "duet_sdk[train]" in message, message
    message = _python(venv, "from duet_sdk.online import open_store\nfrom duet_sdk._extras import "
                            "MissingDependencyError\ntry:\n    open_store('redis://127.0.0.1:9')\n"
                            "except MissingDependencyError as exc:\n    print(exc)")
    assert "duet_sdk[online]" in message, message

    _pip_install(venv, f"{source}[online]")  # the ETI worker / scorer role
    heavy = json.loads(_python(venv, IMPORTS, "duet_sdk.online", "redis", "prometheus_client",
                               "duet_sdk.online.eti_metrics", "duet_sdk.online.scorer_metrics"))
    assert heavy == []
    message = _python(venv, MISSING, "duet_sdk.side")
    assert "duet_sdk[train]" in message, message
