"""A real ``tritonserver`` process: find it, start it on loopback, wait until ready, stop (release swaps: ``swap.py``).

The binary is ``tritonserver`` from PATH (e.g. the NGC container), else the one shipped in the
``nvidia-pytriton`` wheel. For the wheel's binary a private backend directory is assembled with the
Python backend and the stub built for this interpreter, which Triton requires beside
``libtriton_python.so``; the stub runs this interpreter's environment (its ``bin`` leads PATH).

Model control (load, unload, the repository index), shared memory, tracing and logging are restricted
to an operator key (Triton's ``--grpc-restricted-protocol`` / ``--http-restricted-api``): requests need
the header ``duet-admin-key`` (HTTP) or ``triton-grpc-protocol-duet-admin-key`` (gRPC metadata); without
it Triton answers UNAVAILABLE "This protocol is restricted". The key comes from ``admin_key``, else
``DUET_TRITON_ADMIN_KEY``, else the file named by ``DUET_TRITON_ADMIN_KEY_FILE``, else a random one made
per start, which only this process knows; ``client()`` sends it. tritonserver 2.51 takes the key only
as a flag, so it is in tritonserver's own argv (readable by local users of the host via /proc); it is
never logged or printed here.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from duet_sdk.errors import DuetError

log = logging.getLogger(__name__)
LOOPBACK = "127.0.0.1"
BENIGN = ("CudaDriverHelper", "CUDA driver version", "NVML", "DCGM")  # logged by every start without a GPU
ADMIN_HEADER = "duet-admin-key"
GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"  # Triton's gRPC endpoint expects this prefix
ADMIN_KEY_ENV, ADMIN_KEY_FILE_ENV = "DUET_TRITON_ADMIN_KEY", "DUET_TRITON_ADMIN_KEY_FILE"
RESTRICTED = "model-repository,shared-memory,trace,logging"  # operator-only APIs
_OPERATOR_CALLS = ("load_model", "unload_model", "get_model_repository_index")
# nvidia-pytriton releases whose wheel layout find_tritonserver/prepare_backends rely on:
# pytriton/tritonserver/{bin/tritonserver, backends/, python_backend_stubs/<python>/} and nvidia_pytriton.libs/.
# Checked on 0.7.0 (tritonserver 2.51); keep in step with the [serve] extra in pyproject.toml.
PYTRITON_SUPPORTED = ((0, 7), (0, 8))  # [lowest, first unsupported) as (major, minor)


class TritonServerError(DuetError):
    """tritonserver is missing, exited, or did not become ready; the message carries its log tail."""


@dataclass(frozen=True)
class Installation:
    """Where the binary is, and (for the wheel) the backend directory and libraries it needs."""

    binary: Path
    backends: Path | None = None
    libraries: Path | None = None


def find_tritonserver() -> Installation:
    """``tritonserver`` on PATH, else the nvidia-pytriton wheel's; TritonServerError if neither exists."""
    on_path = shutil.which("tritonserver")
    if on_path:
        return Installation(Path(on_path))
    try:
        import pytriton
    except ImportError as exc:
        raise TritonServerError(
            "tritonserver: not on PATH and nvidia-pytriton is not installed "
            "(pip install 'duet_sdk[serve]', or use the NGC tritonserver container)"
        ) from exc
    check_pytriton_version(importlib.metadata.version("nvidia-pytriton"))
    root = Path(pytriton.__file__).parent / "tritonserver"
    binary = root / "bin" / "tritonserver"
    if not binary.is_file():
        raise TritonServerError(f"tritonserver: expected the binary at {binary}")
    return Installation(binary, root / "backends", Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs")


def check_pytriton_version(version: str) -> None:
    """TritonServerError unless ``version`` is one whose wheel layout this module knows (PYTRITON_SUPPORTED)."""
    (lo, hi), parts = PYTRITON_SUPPORTED, version.split(".")
    try:
        found = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError):
        found = None
    if found is None or not lo <= found < hi:
        raise TritonServerError(
            f"tritonserver: nvidia-pytriton {version} is installed, but duet-serve knows the wheel layout of "
            f"{lo[0]}.{lo[1]}.x only (>={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}); pip install 'duet_sdk[serve]' "
            "installs a supported one, or put a tritonserver binary on PATH"
        )


def prepare_backends(installation: Installation, directory: Path) -> Path:
    """Copy the wheel's backends into ``directory`` with the Python stub of this interpreter beside
    ``libtriton_python.so``; returns the backend directory."""
    assert installation.backends is not None
    target = Path(directory) / "backends"
    shutil.copytree(installation.backends, target, ignore=shutil.ignore_patterns("__pycache__"))
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = installation.backends.parent / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonServerError(f"tritonserver: no Python backend stub for Python {version} at {stub}")
    shutil.copy2(stub, target / "python" / "triton_python_backend_stub")
    return target


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def operator_key(environ: dict[str, str] | None = None, key_file: Path | None = None) -> str:
    """The operator key: the first line of ``key_file``, else ``DUET_TRITON_ADMIN_KEY``, else the first
    line of ``DUET_TRITON_ADMIN_KEY_FILE``, else a fresh random one. TritonServerError for an empty key or
    an unreadable file (never its text)."""
    environ = os.environ if environ is None else environ
    key = None if key_file else environ.get(ADMIN_KEY_ENV)
    if key is None and (key_file or environ.get(ADMIN_KEY_FILE_ENV)):
        path = Path(key_file or environ[ADMIN_KEY_FILE_ENV])
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise TritonServerError(
                f"{'--admin-key-file' if key_file else ADMIN_KEY_FILE_ENV}: expected a readable file, "
                f"got {path} ({exc.strerror})"
            ) from exc
    if key is None:
        return secrets.token_urlsafe(32)
    if not key.strip() or any(c in key for c in ",:=\n"):
        raise TritonServerError(f"{ADMIN_KEY_ENV}: expected a non-empty key without ',', ':', '=' or newlines")
    return key.strip()


class OperatorClient:
    """A tritonclient gRPC client that sends the operator key with model-control calls; anything else
    is passed through unchanged."""

    def __init__(self, client, key: str) -> None:
        self._client, self._headers = client, {GRPC_ADMIN_HEADER: key}

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if name not in _OPERATOR_CALLS:
            return attr

        def call(*args, headers=None, **kwargs):
            return attr(*args, headers={**(headers or {}), **self._headers}, **kwargs)

        return call

    def __enter__(self) -> OperatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()


@dataclass(frozen=True)
class Endpoints:
    host: str
    grpc: int
    http: int
    metrics: int

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc}"

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http}"

    def describe(self) -> str:
        return f"gRPC {self.grpc_url}  HTTP http://{self.http_url}  metrics http://{self.host}:{self.metrics}/metrics"


class TritonServer:
    """``with TritonServer(repo) as server:`` starts tritonserver, waits until every model is ready.

    Args:
        repository: the model repository.
        models: models to load at start (explicit model control); default all (``*``).
        host: address to bind; loopback unless told otherwise.
        grpc_port, http_port, metrics_port: 0 picks a free port.
        log: file receiving the server's output (default: a file in the private work directory).
        admin_key: the operator key for model control (default: ``operator_key()``).
        environment: variables added to tritonserver's environment, which its Python stubs inherit (e.g.
            the runner's ``DUET_RUNNER_PROFILE``).
    """

    def __init__(
        self,
        repository: Path,
        models: Sequence[str] = ("*",),
        host: str = LOOPBACK,
        grpc_port: int = 0,
        http_port: int = 0,
        metrics_port: int = 0,
        log: Path | None = None,
        startup_timeout_s: float = 120.0,
        exit_timeout_s: int = 30,
        admin_key: str | None = None,
        environment: dict[str, str] | None = None,
    ) -> None:
        self.repository = Path(repository).resolve()
        self.models = tuple(models)
        self.endpoints = Endpoints(
            host, grpc_port or free_port(host), http_port or free_port(host), metrics_port or free_port(host)
        )
        self.startup_timeout_s = startup_timeout_s
        self.exit_timeout_s = exit_timeout_s
        self._workdir = Path(tempfile.mkdtemp(prefix="duet-triton-"))
        self.log = Path(log) if log else self._workdir / "tritonserver.log"
        self._process: subprocess.Popen | None = None
        self._admin_key = admin_key or operator_key()
        self._extra_environment = dict(environment or {})

    def command(self, installation: Installation) -> list[str]:
        e = self.endpoints
        cmd = [
            str(installation.binary),
            f"--model-repository={self.repository}",
            "--model-control-mode=explicit",
            f"--grpc-address={e.host}",
            f"--grpc-port={e.grpc}",
            f"--http-address={e.host}",
            f"--http-port={e.http}",
            f"--metrics-address={e.host}",
            f"--metrics-port={e.metrics}",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            "--strict-readiness=true",
            "--log-verbose=0",
            f"--grpc-restricted-protocol={RESTRICTED}:{ADMIN_HEADER}={self._admin_key}",
            f"--http-restricted-api={RESTRICTED}:{ADMIN_HEADER}={self._admin_key}",
            # a unique shared-memory prefix lets several servers share one machine
            f"--backend-config=python,shm-region-prefix-name=duet{os.getpid()}x{e.grpc}",
        ]
        cmd += [f"--load-model={m}" for m in self.models]
        if installation.backends is not None:
            cmd.append(f"--backend-directory={prepare_backends(installation, self._workdir)}")
        return cmd

    def _environment(self, installation: Installation) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != ADMIN_KEY_ENV} | self._extra_environment  # stubs: no key
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        if installation.libraries is not None:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(
                p for p in (env.get("LD_LIBRARY_PATH"), str(installation.libraries)) if p
            )
        return env

    def start(self) -> TritonServer:
        installation = find_tritonserver()
        with open(self.log, "ab") as log:
            self._process = subprocess.Popen(
                self.command(installation),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._environment(installation),
                start_new_session=True,
            )
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def client(self) -> OperatorClient:
        """A gRPC client of this server that may load and unload models (it sends the operator key)."""
        import tritonclient.grpc as grpcclient

        return OperatorClient(grpcclient.InferenceServerClient(self.endpoints.grpc_url), self._admin_key)

    def log_tail(self, lines: int = 30) -> str:
        """The server's error lines (without the GPU-less machine's CUDA noise) and the last lines of its log."""
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        errors = [line for line in text.splitlines() if line.startswith("E") and not any(n in line for n in BENIGN)]
        return "\n".join([*errors[-lines:], *text.splitlines()[-5:]])

    def wait_ready(self) -> None:
        """Until the server and every loaded model answer ready; TritonServerError on exit or timeout."""
        from tritonclient.utils import InferenceServerException

        deadline = time.monotonic() + self.startup_timeout_s
        with self.client() as client:
            while time.monotonic() < deadline:
                if self._process is None or self._process.poll() is not None:
                    code = None if self._process is None else self._process.returncode
                    raise TritonServerError(
                        f"tritonserver exited with status {code} before it was ready:\n{self.log_tail()}"
                    )
                with contextlib.suppress(InferenceServerException):  # not listening yet
                    if client.is_server_ready():
                        return
                time.sleep(0.2)
        raise TritonServerError(f"tritonserver not ready after {self.startup_timeout_s:.0f}s:\n{self.log_tail()}")

    @property
    def pid(self) -> int | None:
        """tritonserver's process id while it runs (its Python-backend stubs are its children), else None."""
        return self._process.pid if self.running else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def drain(self, timeout_s: float = 30.0) -> None:
        """Unload the ensembles, then every other model (model control, operator key), waiting for each
        group's in-flight requests to finish. New requests meanwhile get NOT_FOUND "... has no available
        versions", which the client treats as ``Unavailable`` (retried).

        Why: tritonserver 2.51 stopped by a signal under load unloads ensembles and their components
        together, and an ensemble request arriving in between crashes it (SIGSEGV in
        ``TRITONSERVER_ServerInferAsync``; seen in every stop under load here). Draining first leaves
        it nothing to unload. Errors are logged, not raised: the signal still follows.
        """
        from tritonclient.utils import InferenceServerException

        call = {"client_timeout": 5.0}  # a hung server must not hang its stop
        try:
            with self.client() as client:
                loaded = [m.name for m in client.get_model_repository_index(**call).models if m.state == "READY"]
                ensembles = [m for m in loaded if client.get_model_config(m, **call).config.platform == "ensemble"]
                deadline = time.monotonic() + timeout_s
                for group in (ensembles, [m for m in loaded if m not in ensembles]):
                    for model in group:
                        client.unload_model(model, client_timeout=max(1.0, deadline - time.monotonic()))
                    while time.monotonic() < deadline and any(
                        m.name in group and m.state == "READY" for m in client.get_model_repository_index(**call).models
                    ):
                        time.sleep(0.05)
        except InferenceServerException as exc:
            log.warning("draining tritonserver before its stop failed: %s", exc.message())

    def stop(self) -> int | None:
        """Drain (``drain``), SIGINT, then SIGKILL after the exit timeout; returns tritonserver's status."""
        if self.running:
            self.drain(self.exit_timeout_s)
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(self.exit_timeout_s + 10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        shutil.rmtree(self._workdir / "backends", ignore_errors=True)
        return None if process is None else process.returncode

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
