"""Real services for the integration tests and the benchmarks: redis-server, an S3 API (moto server),
assetq workers.

Each helper starts a real process on a free loopback port and stops it after.
CI must not skip these: when a binary is missing the fixture fails loudly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parents[2]  # tools/testbed/services.py -> the repository root
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def client_for(env: dict[str, str]) -> redis.Redis:
    """A client for the Redis of an assetq environment: its ASSETQ_REDIS_URL, plain or sentinel://."""
    from config import Settings
    from contract.connection import redis_client

    master = env.get("ASSETQ_REDIS_SENTINEL_MASTER", Settings.model_fields["redis_sentinel_master"].default)
    return redis_client(Settings(_env_file=None, redis_url=env["ASSETQ_REDIS_URL"], redis_sentinel_master=master))


@dataclass
class RedisServer:
    """A private redis-server; ``aof=True`` persists with appendonly so restarts keep data."""

    aof: bool = False
    port: int = field(default_factory=free_port)
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="assetq-redis-")))
    proc: subprocess.Popen[bytes] | None = None
    # More redis-server options, e.g. ``["--replicaof", "127.0.0.1", "6380"]``.
    extra_args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server not found: install Debian's redis-server (CI's .ci/run does)")
        args = [
            exe,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.aof else "no",
            "--appendfsync",
            "always",
            "--maxmemory-policy",
            "noeviction",
            "--protected-mode",
            "no",
            "--logfile",
            str(self.log_path),
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        wait_for(lambda: bool(client.ping()), 10, "redis-server")
        return self

    @property
    def log_path(self) -> Path:
        return self.dir / f"redis-{self.port}.log"

    def log(self, tail: int = 3000) -> str:
        """The end of this server's log (a restart on the same dir and port appends to it)."""
        return self.log_path.read_text(errors="replace")[-tail:] if self.log_path.exists() else ""

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()


@dataclass
class S3Server:
    """moto's S3-compatible server, a real HTTP S3 API."""

    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        exe = VENV_BIN / "moto_server"
        if not exe.exists():
            raise RuntimeError("moto_server not found: pip install 'moto[server]'")
        self.proc = subprocess.Popen(
            [str(exe), "-H", "127.0.0.1", "-p", str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

        def listening() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), 0.2):
                return True

        wait_for(listening, 20, "moto_server")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def client(self):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
        )


S3_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class WorkerProcess:
    """A real ``assetq worker`` process (Celery, prefork pool by default)."""

    env: dict[str, str]
    name: str = field(default_factory=lambda: f"test{free_port()}@localhost")
    pool: str = "prefork"
    concurrency: int = 1
    log: Path = field(default_factory=lambda: Path(tempfile.mkstemp(prefix="assetq-worker-", suffix=".log")[1]))
    proc: subprocess.Popen[bytes] | None = None
    # Run under this command (e.g. ``unshare --pid --fork``: a process namespace of its own, as on another machine).
    wrapper: list[str] = field(default_factory=list)

    def start(self, wait_ready: bool = True) -> WorkerProcess:
        env = {**os.environ, **S3_ENV, **self.env, "PYTHONUNBUFFERED": "1"}
        cmd = [
            *self.wrapper,
            sys.executable,
            "-m",
            "cli",
            "worker",
            "--pool",
            self.pool,
            "--concurrency",
            str(self.concurrency),
            "--name",
            self.name,
            "--loglevel",
            "INFO",
        ]
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
        )
        if wait_ready:
            client = client_for(self.env)
            wait_for(
                lambda: bool(client.exists(f"assetq:worker:{self.name}")),
                90,
                f"worker {self.name} to come up (log: {self.log})",
                interval=0.3,
            )
        return self

    def children(self) -> list[int]:
        if not self.proc:
            return []
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


@dataclass
class TcpProxy:
    """A TCP forwarder to a local port that a test can cut off, e.g. S3 "going away" without losing
    moto's in-memory buckets. ``pause()`` closes the listening socket and every open connection, so
    clients get "connection refused" until ``resume()`` listens on the same port again."""

    target_port: int
    port: int = field(default_factory=free_port)
    _listener: socket.socket | None = None
    _open: set[socket.socket] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name="proxy-accept").start()
        return self

    resume = start

    def pause(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._open = self._open, set()
        for s in ([listener] if listener else []) + list(conns):
            _close(s)

    stop = pause

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # paused
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._listener is not listener:  # paused while connecting
                    _close(client)
                    _close(upstream)
                    return
                self._open |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True, name="proxy-pump").start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open -= {src, dst}
            _close(src)
            _close(dst)


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)  # also wakes a thread blocked in accept()/recv()
    s.close()
