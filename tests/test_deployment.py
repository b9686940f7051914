"""The deployment files: the Procfile runs under honcho, docker-compose.yml parses."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

from tools.testbed.services import RedisServer, free_port, wait_for

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_procfile_runs_worker_and_flower_under_honcho(redis_server: RedisServer, model_dir: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "ASSETQ_REDIS_URL": redis_server.url,
        "ASSETQ_MODEL_DIR": str(model_dir),
        "ASSETQ_FLOWER_BASIC_AUTH": "ops:secret",
        "ASSETQ_FLOWER_PORT": str(port),
        "ASSETQ_PRELOAD": "false",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "honcho"), "start"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        client = redis.Redis.from_url(redis_server.url)
        wait_for(lambda: any(client.scan_iter("assetq:worker:*")), 90, "the Procfile's worker to register")

        def flower_status(auth: bool) -> int:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/api/workers")
            if auth:
                req.add_header("Authorization", "Basic b3BzOnNlY3JldA==")  # ops:secret
            try:
                return int(urllib.request.urlopen(req, timeout=2).status)
            except urllib.error.HTTPError as e:
                return int(e.code)

        wait_for(lambda: flower_status(auth=True) == 200, 60, "Flower to answer")
        assert flower_status(auth=False) == 401  # basic auth is enforced
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="Debian's docker-compose is not installed")
def test_compose_file_parses_with_gpu_reservations() -> None:
    env = {**os.environ, "ASSETQ_FLOWER_BASIC_AUTH": "ops:secret"}
    out = subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "config"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    for service in ("redis", "minio", "worker-gpu0", "worker-gpu1", "flower"):
        assert f"  {service}:" in out.stdout
    assert out.stdout.count("driver: nvidia") == 2
    assert "appendonly" in out.stdout and "noeviction" in out.stdout
