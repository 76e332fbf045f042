"""A throwaway local ``redis-server`` for tests, demos and single-machine deployments.

Example::

    with RedisServer() as server:
        store = RedisStore(server.url)
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from duet_sdk.errors import ConfigError, StoreError

INSTALL_HINT = "install it with `apt-get install redis-server` (Debian/Ubuntu)"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ping(port: int, timeout_s: float = 0.5) -> bool:
    """True when a Redis server on 127.0.0.1:``port`` answers PING with PONG."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RoundTrips:
    """How many requests a client has sent to Redis, i.e. its round trips: one per command, one per
    pipeline ``execute`` (redis-py sends a pipeline's commands in one write; a pipeline of registered
    scripts first sends SCRIPT EXISTS). ``client`` is a ``redis.Redis`` on ``url`` (decoding replies
    to str) that counts.

    Example::

        trips = RoundTrips(server.url)
        store = RedisStore(trips.client)
        trips.reset(); store.put_many(records); trips.count  # 1: one pipeline
    """

    def __init__(self, url: str) -> None:
        import redis

        counter = self

        class _Counting(redis.Connection):
            def send_packed_command(self, command, check_health=True):
                counter.count += 1
                return super().send_packed_command(command, check_health)

        self.count = 0
        pool = redis.ConnectionPool.from_url(url, connection_class=_Counting, decode_responses=True)
        self.client = redis.Redis(connection_pool=pool)
        self.client.ping()  # the connection's handshake is not a round trip of what is measured
        self.count = 0

    def reset(self) -> int:
        """The count so far; starts a new one."""
        count, self.count = self.count, 0
        return count

    def close(self) -> None:
        self.client.close()


def server_pid(port: int, timeout_s: float = 0.5, password: str | None = None) -> int | None:
    """The process id the Redis server on 127.0.0.1:``port`` reports (INFO server); None where none answers."""
    data = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
            if password:
                secret = password.encode()
                s.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(secret), secret))
            s.sendall(b"INFO server\r\n")
            while not re.search(rb"process_id:\d+\r\n", data):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    match = re.search(rb"process_id:(\d+)\r\n", data)
    return int(match.group(1)) if match else None


class RedisServer:
    """A ``redis-server`` on 127.0.0.1 in a temp dir, without persistence (``--save '' --appendonly no``)
    unless ``appendonly``: then with an append-only file fsynced every second (``--appendonly yes
    --appendfsync everysec``), which is what an ETI deployment needs to survive a restart.

    Args:
        port: the port to listen on; None picks a free one.
        binary: the executable; None looks ``redis-server`` up on PATH.
        start_timeout_s: how long to wait for the server to answer.
        appendonly: persist every write to the AOF (a restart keeps streams, groups, histories, codes).
        password: require AUTH with this password (``requirepass``); it is passed in a config file
            in the private temp dir, never on the command line, and ``url`` does not contain it.

    ``restart()`` stops the server and starts it again on the same port and directory (what survives
    depends on ``appendonly``).

    ``url`` (``redis://127.0.0.1:PORT/0``) and ``port`` are valid between ``start()`` and ``stop()``.
    StoreError where the binary is missing or the server does not answer in time.
    """

    def __init__(self, port: int | None = None, binary: str | None = None, start_timeout_s: float = 10.0,
                 appendonly: bool = False, password: str | None = None) -> None:
        if port is not None and not (isinstance(port, int) and 0 < port < 65536):
            raise ConfigError("port", "an int in 1..65535 or None", port)
        if start_timeout_s <= 0:
            raise ConfigError("start_timeout_s", "a positive number of seconds", start_timeout_s)
        self._requested_port, self._binary, self._timeout_s = port, binary, start_timeout_s
        self.appendonly, self._password = appendonly, password
        self._process: subprocess.Popen | None = None
        self._dir: tempfile.TemporaryDirectory | None = None
        self.port = 0

    @property
    def url(self) -> str:
        if self._process is None:
            raise StoreError("RedisServer.url: the server is not running (call start() or use `with`)")
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start the server and wait until it answers (as itself, by pid); returns ``self``."""
        if self._process is not None:
            return self
        binary = self._binary or shutil.which("redis-server")
        if binary is None or not Path(binary).exists():
            raise StoreError(f"redis-server not found ({self._binary or 'not on PATH'}); {INSTALL_HINT}")
        self._dir = tempfile.TemporaryDirectory(prefix="duet-redis-")
        attempts = 1 if self._requested_port else 3  # a picked port can be taken before redis binds it
        for _ in range(attempts):
            self.port = self._requested_port or free_port()
            if self._launch(binary):
                return self
        log = self._log_tail()
        self._cleanup()
        raise StoreError(f"redis-server did not answer on 127.0.0.1:{self.port} within "
                         f"{self._timeout_s}s; its log ends with:\n{log}")

    def _launch(self, binary: str) -> bool:
        """Spawn one server on ``self.port``; True once it answers, False (process stopped) otherwise."""
        workdir = self._dir.name
        config = Path(workdir) / "redis.conf"  # the password, if any, stays off the command line
        config.write_text(f"requirepass {self._password}\n" if self._password else "", encoding="utf-8")
        config.chmod(0o600)
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"]
        if not self.appendonly:
            persistence = ["--appendonly", "no"]
        args = [
            binary,
            str(config),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            *persistence,
            "--dir",
            workdir,
            "--daemonize",
            "no",
            "--logfile",
            str(Path(workdir) / "redis.log"),
        ]
        self._process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + self._timeout_s
        while time.monotonic() < deadline:
            if (
                server_pid(self.port, password=self._password) == self._process.pid
            ):  # not another server already on the port
                return True
            if self._process.poll() is not None:
                break
            time.sleep(0.02)
        self._terminate()
        return False

    def _log_tail(self, lines: int = 20) -> str:
        log = Path(self._dir.name) / "redis.log" if self._dir else None
        if log is None or not log.exists():
            return "(no log)"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def _terminate(self, timeout_s: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _cleanup(self) -> None:
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def restart(self) -> RedisServer:
        """Stop the server (SIGTERM: Redis flushes its AOF) and start it again on the same port and dir."""
        binary = self._binary or shutil.which("redis-server")
        self._terminate()
        if not self._launch(binary):
            raise StoreError(f"redis-server did not come back on 127.0.0.1:{self.port}:\n{self._log_tail()}")
        return self

    def stop(self) -> None:
        """SIGTERM, wait up to 5 s, then SIGKILL; removes the temp dir. Safe to call twice."""
        self._terminate()
        self._cleanup()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
