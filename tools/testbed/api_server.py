"""A real ``assetq serve`` process (uvicorn) on a free loopback port, for the API tests and the benchmark."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tools.testbed.services import REPO, S3_ENV, free_port, wait_for


def serve_command() -> list[str]:
    """``assetq serve`` as a module run: the ``cli`` package's command."""
    return [sys.executable, "-m", "cli", "serve"]


@dataclass
class ApiServer:
    env: dict[str, str]
    args: list[str] = field(default_factory=list)  # e.g. ["--no-auth"], ["--workers", "2"]
    port: int = field(default_factory=free_port)
    log: Path = field(default_factory=lambda: Path(tempfile.mkstemp(prefix="assetq-serve-", suffix=".log")[1]))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True, timeout_s: float = 60) -> ApiServer:
        env = {**os.environ, **S3_ENV, **self.env, "PYTHONUNBUFFERED": "1"}
        cmd = [*serve_command(), "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
        )
        if wait_ready:
            wait_for(self._pong, timeout_s, f"assetq serve on {self.url} (log: {self.log})", interval=0.2)
            if self.proc.poll() is not None:
                raise RuntimeError(f"assetq serve exited with {self.proc.returncode}:\n{self.tail()}")
        return self

    def _pong(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            return True  # exited: stop waiting; start() reports it
        with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as r:
            return bool(r.read() == b"pong")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
