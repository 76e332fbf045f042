"""The typed error for a missing optional dependency names the pip extra that installs it; light programs
load no heavy extra."""

import subprocess
import sys
from pathlib import Path

import pytest

from duet_sdk._extras import EXTRA_OF, MissingDependencyError, missing_extra, require, require_modules


def test_require_names_the_extra_of_a_missing_module(monkeypatch):
    monkeypatch.setitem(EXTRA_OF, "duet_no_such_module", "online")
    with pytest.raises(MissingDependencyError, match=r"pip install 'duet_sdk\[online\]'") as info:
        require("duet_no_such_module", "a test backend")
    assert isinstance(info.value, ModuleNotFoundError) and info.value.name == "duet_no_such_module"


def test_require_modules_lists_every_missing_module_and_its_extras(monkeypatch):
    monkeypatch.setitem(EXTRA_OF, "duet_missing_a", "train")
    monkeypatch.setitem(EXTRA_OF, "duet_missing_b", "export")
    with pytest.raises(MissingDependencyError, match=r"duet_missing_a, duet_missing_b.*duet_sdk\[export,train\]"):
        require_modules("a part", "json", "duet_missing_a", "duet_missing_b")
    require_modules("a part", "json")  # present: no error


def test_missing_extra_keeps_the_message_of_a_module_that_is_not_optional():
    err = missing_extra(ModuleNotFoundError("No module named 'duet_sdk.nope'", name="duet_sdk.nope"), "x")
    assert not isinstance(err, MissingDependencyError) and "duet_sdk.nope" in str(err)
    err = missing_extra(ModuleNotFoundError("No module named 'torch'", name="torch"), "duet_sdk.models")
    assert isinstance(err, MissingDependencyError) and "duet_sdk[train]" in str(err)


@pytest.mark.parametrize("program", ["eti_worker", "score", "backfill"])
def test_online_client_programs_import_no_training_stack(program):
    """An ETI worker or scorer pod installs the [online] extra only: its program must not load torch
    (it did through a module-level import of the synthetic generator; the soak test saw its RSS grow)."""
    clients = Path(__file__).resolve().parents[1] / "clients"
    code = (f"import sys; sys.path.insert(0, {str(clients)!r}); import {program}; "
            "print(sorted(m for m in ('torch', 'onnx', 'sklearn', 'pyarrow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
