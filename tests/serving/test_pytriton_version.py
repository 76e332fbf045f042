"""duet-serve uses the nvidia-pytriton wheel's private layout, so it refuses versions it does not know."""

import importlib.metadata

import pytest

from duet_sdk.serving import server
from duet_sdk.serving.cli import serve_main
from duet_sdk.serving.server import TritonServerError, check_pytriton_version


def test_supported_pytriton_version_passes():
    check_pytriton_version(importlib.metadata.version("nvidia-pytriton"))  # the one installed here
    check_pytriton_version("0.7.3")


@pytest.mark.parametrize("version", ["0.5.2", "0.8.0", "1.0", "dev"])
def test_unsupported_pytriton_version_is_refused_naming_it(version):
    with pytest.raises(TritonServerError, match=rf"nvidia-pytriton {version} is installed.*>=0\.7,<0\.8"):
        check_pytriton_version(version)


def test_find_tritonserver_refuses_an_unsupported_pytriton(monkeypatch):
    monkeypatch.setattr(server.shutil, "which", lambda name: None)  # no tritonserver on PATH: use the wheel's
    monkeypatch.setattr(server.importlib.metadata, "version", lambda name: "0.5.2")
    with pytest.raises(TritonServerError, match="nvidia-pytriton 0.5.2 is installed"):
        server.find_tritonserver()


def test_duet_serve_exits_2_with_the_reason_on_an_unsupported_pytriton(cpu_repository, monkeypatch, capsys):
    monkeypatch.setattr(server.shutil, "which", lambda name: None)
    monkeypatch.setattr(server.importlib.metadata, "version", lambda name: "0.5.2")
    assert serve_main(["--model-repository", str(cpu_repository)]) == 2
    assert "nvidia-pytriton 0.5.2 is installed" in capsys.readouterr().err
