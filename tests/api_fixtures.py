"""One real stack for the API tests: a private redis-server, a real worker, a real ``assetq serve``.

Session-scoped and shared by the ``test_api_*`` modules (they import the fixture), so the
worker loads its models once. The stack has a Redis of its own: no other test's worker
can take its chunks, and no other test's flush can drop its state.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from config.settings import Settings
from producer import Producer
from tests.conftest import SAMPLES
from tools.testbed.api_server import ApiServer
from tools.testbed.services import RedisServer, WorkerProcess

TOKEN = "test-token-7f3a"
FACES = {
    "facial-recognition": {
        "detection": {"modelName": "buffalo_s", "options": {"minScore": 0.7}},
        "recognition": {"modelName": "buffalo_s"},
    }
}
OCR = {
    "ocr": {
        "detection": {"modelName": "PP-OCRv6_small", "options": {"minScore": 0.5, "maxResolution": 736}},
        "recognition": {"modelName": "PP-OCRv6_small", "options": {"minScore": 0.8}},
    }
}
CLIP_MODEL = "tiny-vit-shapes"
BULK_COPIES = 12  # of every sample: a bulk batch of 12 x 11 readable images
CHUNK_SIZE = 4


@dataclass
class ApiStack:
    redis: RedisServer
    env: dict[str, str]
    worker: WorkerProcess
    server: ApiServer
    photos: Path

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, token: str | None = TOKEN, url: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=url or self.url, headers=headers, timeout=120)

    def producer(self) -> Producer:
        return Producer(settings=Settings(_env_file=None, **settings_from_env(self.env)))

    def wait_complete(self, batch_id: str, timeout_s: float = 240) -> dict[str, Any]:
        with self.client() as c:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                st: dict[str, Any] = c.get(f"/v1/batches/{batch_id}").json()
                if st["complete"]:
                    return st
                time.sleep(0.2)
        raise TimeoutError(f"batch {batch_id} not complete after {timeout_s}s:\n{self.worker.tail()}")


def settings_from_env(env: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in env.items():
        if k.startswith("ASSETQ_"):
            name = k.removeprefix("ASSETQ_").lower()
            out[name] = json.loads(v) if v.startswith("[") else v
    return out


def photo_dir(root: Path) -> Path:
    """The samples, and a ``bulk/`` folder of many copies of the readable ones."""
    for f in SAMPLES.iterdir():
        shutil.copy(f, root / f.name)
    bulk = root / "bulk"
    bulk.mkdir()
    for f in sorted(SAMPLES.iterdir()):
        if f.name == "truncated.jpg":
            continue
        for n in range(BULK_COPIES):
            shutil.copy(f, bulk / f"{f.stem}-{n:02d}{f.suffix}")
    return root


@pytest.fixture(scope="session")
def api_stack(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiStack]:
    photos = photo_dir(tmp_path_factory.mktemp("api-photos"))
    redis_server = RedisServer().start()
    env = {
        "ASSETQ_REDIS_URL": redis_server.url,
        "ASSETQ_MODEL_DIR": str(model_dir),
        "ASSETQ_ALLOWED_ROOTS": json.dumps([str(photos)]),
        "ASSETQ_CHUNK_SIZE": str(CHUNK_SIZE),
        "ASSETQ_INTRA_OP_THREADS": "1",
        "ASSETQ_API_TOKENS": json.dumps([TOKEN]),
        "ASSETQ_API_BODY_TIMEOUT_S": "3",
    }
    worker = WorkerProcess(env=env).start()
    server = ApiServer(env=env)
    try:
        server.start()
        yield ApiStack(redis_server, env, worker, server, photos)
    finally:
        server.stop()
        worker.stop()
        redis_server.stop()
