"""Flower against a real worker: it sees the worker and finished tasks, with short readable arguments.

Starts ``assetq flower`` (Celery's ``flower`` command on assetq's app, behind
basic auth) and a real worker on either broker (a private redis-server, or a
vhost of its own on the local RabbitMQ with Redis for results), submits a small
batch, and reads Flower's HTTP API and its Prometheus ``/metrics``; then checks
assetq's own counters (``assetq metrics``) for what Flower cannot see.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contract.metrics import render
from contract.payload import PROCESS_CHUNK
from tests.faultinject.scenario import TASKS, face_model_dir, make_photos, producer_for, wait_until, worker_env
from tools.testbed.rabbit import RabbitVhost
from tools.testbed.sentinel import SentinelCluster
from tools.testbed.services import REPO, S3_ENV, RedisServer, S3Server, WorkerProcess, free_port

pytestmark = pytest.mark.integration

AUTH = "flower:not-a-real-secret"


@pytest.fixture(scope="module", params=["redis", "sentinel", "rabbitmq"])
def env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server
) -> Iterator[dict[str, str]]:
    """Each broker: Redis (also the result store), Redis behind Sentinel (both too), or RabbitMQ (a vhost of its
    own) with Redis for results."""
    server = RedisServer().start()
    photos = make_photos(tmp_path_factory.mktemp("flower-photos"), count=5)
    e = worker_env(server.url, s3_server.url, photos.root, face_model_dir(), "flower", flower_basic_auth=AUTH)
    e.pop("PYTHONPATH")  # no fault hooks here
    e["PHOTOS"] = str(photos.root)
    with contextlib.ExitStack() as stack:
        if request.param == "rabbitmq":
            e["ASSETQ_BROKER_URL"] = stack.enter_context(RabbitVhost()).url
        if request.param == "sentinel":
            cluster = SentinelCluster().start()
            stack.callback(cluster.stop)
            e["ASSETQ_REDIS_URL"] = cluster.url
        yield e
    server.stop()


@pytest.fixture(scope="module")
def flower(env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    log = Path(env["PHOTOS"]).parent / "flower.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "flower", "--port", str(port), "--address", "127.0.0.1"],
        cwd=REPO,
        env={**os.environ, **S3_ENV, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: get(url, "/healthcheck") == "OK", 60, f"flower (log: {log})", interval=0.3)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)


def get(base: str, path: str) -> Any:
    req = urllib.request.Request(
        base + path, headers={"Authorization": "Basic " + base64.b64encode(AUTH.encode()).decode()}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read().decode()
    except OSError:
        return None
    return json.loads(body) if body[:1] in "{[" else body


def test_flower_sees_the_worker_and_finished_tasks(env: dict[str, str], flower: str) -> None:
    worker = WorkerProcess(env=env).start()
    try:
        p = producer_for(env)
        photos = sorted(Path(env["PHOTOS"]).iterdir())
        spec = {"assets": [{"id": f.stem, "uri": f.as_uri()} for f in photos], "tasks": TASKS}
        batch = p.submit(spec)
        status = p.wait(batch, timeout_s=90)

        def finished() -> dict[str, Any]:
            tasks = get(flower, "/api/tasks") or {}
            return {k: t for k, t in tasks.items() if t.get("state") == "SUCCESS" and batch in (t.get("args") or "")}

        wait_until(lambda: len(finished()) == -(-len(photos) // 3), 30, "the batch's tasks in flower")
        for task in finished().values():
            assert task["name"] == PROCESS_CHUNK
            assert task["args"].startswith(f"batch={batch} chunk={batch}-") and len(task["args"]) < 120
            assert task["kwargs"] in ("{assets: 3}", "{assets: 2}", "{assets: 1}")
            assert worker.name in task["worker"]
        workers = get(flower, "/api/workers?refresh=1")
        assert worker.name in workers, workers
        metrics = get(flower, "/metrics")
        line = f'flower_events_total{{task="{PROCESS_CHUNK}",type="task-succeeded",worker="{worker.name}"}}'
        assert line in metrics, metrics[:2000]
        assert f'flower_worker_online{{worker="{worker.name}"}} 1.0' in metrics
        # assetq's own counters: assets by outcome and per-step latency, which Flower cannot see
        ours = render(p.redis)
        assert f'assetq_assets_total{{status="ok"}} {status["ok"]}' in ours
        assert f'assetq_assets_total{{status="skipped"}} {status["skipped"]}' in ours
        assert 'assetq_step_seconds_count{step="' in ours
    finally:
        worker.stop()
