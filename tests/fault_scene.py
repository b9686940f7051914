"""The fault-injection scene shared by tests/test_faults.py and tests/test_faults_poison.py.

One test's services (``Scene``): a private redis-server, moto's S3 server with
the photos uploaded, the ``assetq worker`` processes the test starts, and the
checks of assetq's promise with the workers' logs attached on failure. The
fixtures are module-scoped where they are expensive, so each test module that
imports them (``from tests.fault_scene import ...``) gets its own instances.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
import redis

from tests.faultinject.scenario import (
    TASKS,
    PhotoSet,
    PromiseChecks,
    face_model_dir,
    make_photos,
    start_worker,
    worker_env,
)
from tools.testbed.services import RedisServer, S3Server, WorkerProcess

BUCKET = "assetq-faults"
PHOTOS_BUCKET = "assetq-photos"
PREFIX = "ml/"
CHUNK = 3


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return face_model_dir()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> PhotoSet:
    return make_photos(tmp_path_factory.mktemp("fault-photos"))


@pytest.fixture(scope="module")
def s3(s3_server: S3Server, photos: PhotoSet) -> Any:
    client = s3_server.client()
    for b in (BUCKET, PHOTOS_BUCKET):
        client.create_bucket(Bucket=b)
    for aid in photos.ids:
        client.upload_file(str(photos.path(aid)), PHOTOS_BUCKET, photos.path(aid).name)
    return client


@dataclass
class Scene(PromiseChecks):
    """One test's services: a Redis, the S3 endpoint workers use, and the workers it started."""

    bucket: ClassVar[str] = BUCKET
    prefix: ClassVar[str] = PREFIX

    redis: RedisServer
    s3_url: str
    photos: PhotoSet
    model_dir: Path
    s3: Any
    workers: list[WorkerProcess] = field(default_factory=list)

    def env(self, **settings: Any) -> dict[str, str]:
        queue = f"faults-{uuid.uuid4().hex[:8]}"
        return worker_env(self.redis.url, self.s3_url, self.photos.root, self.model_dir, queue, **settings)

    def worker(self, env: dict[str, str]) -> WorkerProcess:
        w = start_worker(env)
        self.workers.append(w)
        return w

    def spec(self, s3_inputs: bool = False) -> dict[str, Any]:
        def s3_uri(_: str, path: Path) -> str:
            return f"s3://{PHOTOS_BUCKET}/{path.name}"

        return {
            "assets": self.photos.assets(s3_uri if s3_inputs else None),
            "tasks": TASKS,
            "output": {"s3": {"bucket": BUCKET, "prefix": PREFIX}},
        }

    def logs(self, lines: int = 40) -> str:
        return "\n\n".join(f"--- worker {w.name} ---\n{w.tail(lines)}" for w in self.workers)


@contextmanager
def make_scene(server: RedisServer, s3_url: str, photos: PhotoSet, model_dir: Path, s3: Any) -> Iterator[Scene]:
    redis.Redis.from_url(server.url).flushdb()
    scene = Scene(server, s3_url, photos, model_dir, s3)
    try:
        yield scene
    finally:
        for w in scene.workers:
            w.kill()


@pytest.fixture(scope="module")
def redis_server_faults() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def scene(
    redis_server_faults: RedisServer, s3_server: S3Server, photos: PhotoSet, model_dir: Path, s3: Any
) -> Iterator[Scene]:
    with make_scene(redis_server_faults, s3_server.url, photos, model_dir, s3) as sc:
        yield sc
