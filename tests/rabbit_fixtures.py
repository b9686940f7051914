"""A RabbitMQ scene for the tests: a fresh vhost on the local broker, a private Redis for results and
batch state, the session's S3 server, real photos and real ``assetq worker`` processes.

Each test gets work queues of its own names (``ASSETQ_QUEUE``), so its queues start empty and
are declared with that test's ``max_deliveries``; the vhost is deleted after the module.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
import redis
from kombu import Connection

from tests.faultinject.scenario import (
    TASKS,
    PhotoSet,
    PromiseChecks,
    face_model_dir,
    make_photos,
    worker_env,
)
from tools.testbed.rabbit import RabbitVhost
from tools.testbed.services import RedisServer, S3Server, WorkerProcess

BUCKET = "assetq-rabbit"
PREFIX = "ml/"


@dataclass
class RabbitScene(PromiseChecks):
    bucket: ClassVar[str] = BUCKET
    prefix: ClassVar[str] = PREFIX

    vhost: RabbitVhost
    redis: RedisServer
    s3_url: str
    s3: Any
    photos: PhotoSet
    workers: list[WorkerProcess] = field(default_factory=list)

    def env(self, broker_url: str | None = None, **settings: Any) -> dict[str, str]:
        queue = f"rq-{uuid.uuid4().hex[:8]}"
        # All three work queues of a test are its own: their arguments (delivery limit, dead-letter
        # queue) follow that test's settings.
        own = {"interactive_queue": f"{queue}.interactive", "gpu_queue": f"{queue}.gpu"}
        settings = {"broker_url": broker_url or self.vhost.url, **own, **settings}
        return worker_env(self.redis.url, self.s3_url, self.photos.root, face_model_dir(), queue, **settings)

    def worker(self, env: dict[str, str], wait_ready: bool = True) -> WorkerProcess:
        w = WorkerProcess(env=env)
        self.workers.append(w)
        return w.start(wait_ready=wait_ready)

    def spec(self, assets: list[dict[str, str]] | None = None) -> dict[str, Any]:
        output = {"s3": {"bucket": BUCKET, "prefix": PREFIX}}
        return {"assets": assets if assets is not None else self.photos.assets(), "tasks": TASKS, "output": output}

    def logs(self, lines: int = 40) -> str:
        return "\n\n".join(f"--- worker {w.name} ---\n{w.tail(lines)}" for w in self.workers[-3:])


@pytest.fixture(scope="module")
def vhost() -> Iterator[RabbitVhost]:
    with RabbitVhost() as v:
        yield v


@pytest.fixture(scope="module")
def rabbit_redis() -> Iterator[RedisServer]:
    server = RedisServer(aof=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rabbit_photos(tmp_path_factory: pytest.TempPathFactory) -> PhotoSet:
    return make_photos(tmp_path_factory.mktemp("rabbit-photos"), count=20)


@pytest.fixture
def rabbit_scene(
    vhost: RabbitVhost, rabbit_redis: RedisServer, s3_server: S3Server, rabbit_photos: PhotoSet
) -> Iterator[RabbitScene]:
    redis.Redis.from_url(rabbit_redis.url).flushdb()
    client = s3_server.client()
    if BUCKET not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=BUCKET)
    scene = RabbitScene(vhost, rabbit_redis, s3_server.url, client, rabbit_photos)
    try:
        yield scene
    finally:
        for w in scene.workers:
            w.kill()


class QueueSampler:
    """Samples a queue's ready messages and consumers (a passive declare: the queue's own live numbers)
    50 times a second, with the time of each."""

    def __init__(self, url: str, queue: str) -> None:
        self.url, self.queue = url, queue
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="queue-sampler")

    def __enter__(self) -> QueueSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with Connection(self.url) as conn:
                    channel = conn.default_channel
                    while not self._stop.is_set():
                        _, ready, consumers = channel.queue_declare(self.queue, passive=True)
                        self.samples.append((time.time(), int(ready), int(consumers)))
                        time.sleep(0.02)
            except Exception:  # the queue not declared yet, the broker restarting: look again
                time.sleep(0.1)

    def consumer_gone_after(self, t_kill: float, within_s: float = 10.0) -> float | None:
        """Seconds from ``t_kill`` to the first sample with no consumer left (None: not seen)."""
        for t, _ready, consumers in self.samples:
            if t_kill < t <= t_kill + within_s and consumers == 0:
                return t - t_kill
        return None

    def ready_rose_after(self, t_kill: float, within_s: float = 10.0) -> float | None:
        """Seconds from ``t_kill`` until the ready count rose above its last value before it (None: not seen)."""
        before = [n for t, n, _ in self.samples if t <= t_kill]
        if not before:
            return None
        for t, n, _ in self.samples:
            if t_kill < t <= t_kill + within_s and n > before[-1]:
                return t - t_kill
        return None


def log_has(w: WorkerProcess, text: str) -> bool:
    return text in Path(w.log).read_text(errors="replace")
