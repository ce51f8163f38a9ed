"""Redis servers owned by the tests: one-off nodes (fault tests) and a 3-master Redis Cluster.

Every process runs on its own free port and temp dir, dies with the test process (PDEATHSIG)
and is always stopped by the code that started it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from ..support import services_required

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
INSTALL_HINT = "install it with: apt-get install redis-server"


def require_redis_binaries() -> None:
    """Skip (or fail under AGENT_SESSIONS_REQUIRE_SERVICES=1) when redis-server/redis-cli are missing."""
    if REDIS_SERVER and REDIS_CLI:
        return
    message = f"redis-server and redis-cli are needed to start test-owned Redis servers; {INSTALL_HINT}"
    if services_required():
        pytest.fail(message + " (AGENT_SESSIONS_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, with_bus: bool = False) -> int:
    """A free TCP port (and, for cluster nodes, a free bus port = port + 10000)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not with_bus or (port + 10000 <= 65535 and _port_free(port + 10000)):
            return port
    raise RuntimeError("no free port found")


def _wait_ping(process: subprocess.Popen[bytes], port: int, timeout: float = 10.0) -> None:
    """Wait until the redis-server `process` answers PING on `port` (not some other process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server on port {port} exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"redis-server on port {port} did not answer PING within {timeout} s")


class RedisServer:
    """One redis-server process on its own port and directory (data survives `stop`/`start`)."""

    def __init__(self, *args: str, port: int | None = None, directory: Path | None = None) -> None:
        require_redis_binaries()
        self._cluster_node = "--cluster-enabled" in args
        self._pick_port = port is None  # until the first start succeeds, a taken port is replaced
        self.port = port if port is not None else free_port(with_bus=self._cluster_node)
        self._own_dir = directory is None
        self.directory = directory if directory is not None else Path(tempfile.mkdtemp(prefix="agent-sessions-redis-"))
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        for attempt in range(3):
            try:
                self._start_once()
            except RuntimeError:
                if not self._pick_port or attempt == 2:
                    raise
                self.port = free_port(with_bus=self._cluster_node)  # lost a race for the port
            else:
                self._pick_port = False
                return

    def _start_once(self) -> None:
        assert REDIS_SERVER is not None
        if self.process is not None and self.process.poll() is None:
            return
        command = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.directory / "redis.log"),
            "--daemonize",
            "no",
            "--save",
            "",
            *self.args,
        ]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )
        try:
            _wait_ping(self.process, self.port)
        except RuntimeError:
            self.kill()
            raise

    def kill(self) -> None:
        """Stop abruptly (SIGKILL): what is not on disk is lost."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        """Stop gracefully (SIGTERM)."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=10)
            self.process = None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but nothing answers."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def cleanup(self) -> None:
        """Stop the process (resuming it first if frozen) and remove its directory."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)


class RedisClusterProcesses:
    """Three cluster-enabled masters on free ports, joined with ``redis-cli --cluster create``."""

    def __init__(self, masters: int = 3) -> None:
        self.nodes = [
            RedisServer("--cluster-enabled", "yes", "--cluster-node-timeout", "5000", "--appendonly", "no")
            for _ in range(masters)
        ]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> None:
        assert REDIS_CLI is not None
        try:
            for node in self.nodes:
                node.start()
            subprocess.run(
                [
                    REDIS_CLI,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{node.port}" for node in self.nodes),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            self._wait_ok()
        except BaseException:
            self.stop()
            raise

    def _wait_ok(self, timeout: float = 30.0) -> None:
        assert REDIS_CLI is not None
        deadline = time.monotonic() + timeout
        pending = list(self.nodes)
        while pending and time.monotonic() < deadline:
            node = pending[0]
            info = subprocess.run(
                [REDIS_CLI, "-p", str(node.port), "cluster", "info"], capture_output=True, text=True, timeout=10
            ).stdout
            if "cluster_state:ok" in info:
                pending.pop(0)
            else:
                time.sleep(0.05)
        if pending:
            raise RuntimeError(f"Redis Cluster did not reach cluster_state:ok within {timeout} s")

    def stop(self) -> None:
        for node in self.nodes:
            node.cleanup()


_cluster: RedisClusterProcesses | None = None


def shared_cluster() -> RedisClusterProcesses:
    """The test session's cluster, started on first use; `stop_shared_cluster` ends it."""
    global _cluster
    require_redis_binaries()
    if _cluster is None:
        cluster = RedisClusterProcesses()
        cluster.start()
        _cluster = cluster
        atexit.register(stop_shared_cluster)  # also when the session ends without the fixture
    return _cluster


def stop_shared_cluster() -> None:
    global _cluster
    if _cluster is not None:
        cluster, _cluster = _cluster, None
        cluster.stop()
