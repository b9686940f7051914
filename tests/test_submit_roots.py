"""``Producer.submit`` refuses ``file://`` assets outside every live worker's ASSETQ_ALLOWED_ROOTS.

Against a real redis-server; the "workers" are entries advertised through ``WorkerRegistry``
as a worker's heartbeat writes them (one real heartbeat is checked at the end).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from config.settings import Settings
from contract.errors import SpecError
from contract.fleet import ALLOWED_ROOTS, WorkerRegistry, root_forms
from producer import Producer
from tests.conftest import REPO, SAMPLES
from tools.testbed.services import RedisServer, wait_for

TASKS = {"facial-recognition": {"detection": {"modelName": "buffalo_s"}}}
CATALOG = {"facial-recognition": {"detection": {"buffalo_s"}}}


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    out = {name: tmp_path / name for name in ("photos", "nas", "elsewhere")}
    for p in out.values():
        p.mkdir()
    return out


def make_producer(redis_server: RedisServer, tmp_path: Path, **settings: Any) -> Producer:
    conf = Settings(
        _env_file=None,
        redis_url=redis_server.url,
        model_dir=tmp_path / "no-models",  # the models known are what the fake workers advertise
        queue=f"roots-{uuid.uuid4().hex[:8]}",
        **settings,
    )
    return Producer(settings=conf)


def advertise(client: redis.Redis, node: str, allowed: list[Path] | None) -> None:
    info: dict[str, Any] = {"device": "cpu", "catalog": CATALOG}
    if allowed is not None:  # None: a worker from before roots were advertised
        info[ALLOWED_ROOTS] = root_forms(allowed)
    WorkerRegistry(client).advertise(node, info)


def spec(*files: Path) -> dict[str, Any]:
    return {"assets": [{"id": f"a{n}", "uri": f.as_uri()} for n, f in enumerate(files)], "tasks": TASKS}


def nothing_enqueued(p: Producer) -> bool:
    return not list(p.redis.scan_iter(match=f"{p.settings.queue}*")) and p.store.recent_batches(1000) == []


def test_a_path_outside_the_workers_roots_fails_naming_the_setting_and_the_path(
    redis_client: redis.Redis, redis_server: RedisServer, roots: dict[str, Path], tmp_path: Path
) -> None:
    advertise(redis_client, "w1@test", [roots["photos"]])
    p = make_producer(redis_server, tmp_path)
    inside, outside = roots["photos"] / "a.jpg", roots["elsewhere"] / "b.jpg"
    with pytest.raises(SpecError) as e:
        p.submit(spec(inside, outside))
    errors = dict(e.value.errors)
    assert list(errors) == ["assets.1.uri"]
    assert "ASSETQ_ALLOWED_ROOTS" in errors["assets.1.uri"] and str(outside) in errors["assets.1.uri"]
    assert str(roots["photos"]) in errors["assets.1.uri"]  # what the workers do allow
    assert nothing_enqueued(p)
    batch = p.submit(spec(inside))
    assert p.status(batch)["total"] == 1


def test_the_secure_default_empty_roots_refuses_a_first_submit(
    redis_client: redis.Redis, redis_server: RedisServer, roots: dict[str, Path], tmp_path: Path
) -> None:
    advertise(redis_client, "w1@test", [])
    p = make_producer(redis_server, tmp_path, allowed_roots=[roots["photos"]])  # the workers' setting decides
    with pytest.raises(SpecError) as e:
        p.submit(spec(roots["photos"] / "a.jpg"))
    assert "all empty" in dict(e.value.errors)["assets.0.uri"]
    assert nothing_enqueued(p)


def test_a_path_needs_one_live_worker_whose_roots_cover_it(
    redis_client: redis.Redis, redis_server: RedisServer, roots: dict[str, Path], tmp_path: Path
) -> None:
    advertise(redis_client, "w1@test", [roots["photos"]])
    advertise(redis_client, "w2@test", [roots["nas"]])
    p = make_producer(redis_server, tmp_path)
    p.submit(spec(roots["photos"] / "a.jpg", roots["nas"] / "deep" / "b.jpg"))
    escape = Path(f"{roots['photos']}/../elsewhere/c.jpg")  # ".." is collapsed before the check
    with pytest.raises(SpecError) as e:
        p.submit(spec(escape))
    assert str(roots["elsewhere"] / "c.jpg") in dict(e.value.errors)["assets.0.uri"]


def test_without_advertised_roots_the_local_setting_decides(
    redis_client: redis.Redis, redis_server: RedisServer, roots: dict[str, Path], tmp_path: Path
) -> None:
    advertise(redis_client, "old@test", None)
    with pytest.raises(SpecError) as e:
        make_producer(redis_server, tmp_path).submit(spec(roots["photos"] / "a.jpg"))
    msg = dict(e.value.errors)["assets.0.uri"]
    assert "ASSETQ_ALLOWED_ROOTS (empty; the setting here, as no live worker advertises its own)" in msg
    make_producer(redis_server, tmp_path, allowed_roots=[roots["photos"]]).submit(spec(roots["photos"] / "a.jpg"))


def test_s3_and_inline_assets_are_not_checked(
    redis_client: redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    advertise(redis_client, "w1@test", [])
    p = make_producer(redis_server, tmp_path)
    assets = [{"id": "s", "uri": "s3://photos/a.jpg"}, {"id": "i", "data": "aGVsbG8="}]
    assert p.status(p.submit({"assets": assets, "tasks": TASKS}))["total"] == 2


def test_a_worker_started_after_a_refusal_is_seen_at_once(
    redis_client: redis.Redis, redis_server: RedisServer, roots: dict[str, Path], tmp_path: Path
) -> None:
    advertise(redis_client, "w1@test", [])
    p = make_producer(redis_server, tmp_path)
    with pytest.raises(SpecError):
        p.submit(spec(roots["photos"] / "a.jpg"))
    advertise(redis_client, "w2@test", [roots["photos"]])  # within the producer's cache time
    p.submit(spec(roots["photos"] / "a.jpg"))


def test_a_root_behind_a_symlink_covers_both_spellings(
    redis_client: redis.Redis, redis_server: RedisServer, roots: dict[str, Path], tmp_path: Path
) -> None:
    link = tmp_path / "link-to-photos"
    link.symlink_to(roots["photos"])
    advertise(redis_client, "w1@test", [link])
    p = make_producer(redis_server, tmp_path)
    p.submit(spec(link / "a.jpg", roots["photos"] / "b.jpg"))


def test_many_outside_paths_are_summed_up(
    redis_client: redis.Redis, redis_server: RedisServer, roots: dict[str, Path], tmp_path: Path
) -> None:
    advertise(redis_client, "w1@test", [roots["photos"]])
    p = make_producer(redis_server, tmp_path)
    with pytest.raises(SpecError) as e:
        p.submit(spec(*(roots["elsewhere"] / f"{n}.jpg" for n in range(25))))
    fields = [field for field, _ in e.value.errors]
    assert fields == [f"assets.{n}.uri" for n in range(10)] + ["assets"]
    assert e.value.errors[-1][1].startswith("15 more file:// assets are outside ASSETQ_ALLOWED_ROOTS")


def test_model_and_roots_problems_are_reported_together(
    redis_client: redis.Redis, redis_server: RedisServer, roots: dict[str, Path], tmp_path: Path
) -> None:
    advertise(redis_client, "w1@test", [roots["photos"]])
    p = make_producer(redis_server, tmp_path)
    bad = {**spec(roots["elsewhere"] / "a.jpg"), "tasks": {"facial-recognition": {"detection": {"modelName": "x"}}}}
    with pytest.raises(SpecError) as e:
        p.submit(bad)
    assert [f for f, _ in e.value.errors] == ["tasks.facial-recognition.detection.modelName", "assets.0.uri"]


def test_the_worker_heartbeat_advertises_its_roots(redis_server: RedisServer, roots: dict[str, Path]) -> None:
    from worker.bootstrap import start_heartbeat

    # A database of its own: the heartbeat thread lives on until this test process ends.
    url = redis_server.url.rsplit("/", 1)[0] + "/15"
    client = redis.Redis.from_url(url)
    client.flushdb()
    node = f"heartbeat-{uuid.uuid4().hex[:8]}@test"
    start_heartbeat(Settings(_env_file=None, redis_url=url, allowed_roots=[roots["photos"]]), node, 1)
    registry = WorkerRegistry(client)
    wait_for(lambda: node in registry.live(), 10, "the heartbeat")
    assert registry.live()[node][ALLOWED_ROOTS] == root_forms([roots["photos"]])
    assert registry.advertised_roots() == [root_forms([roots["photos"]])]


def test_assetq_submit_of_a_folder_fails_before_enqueueing(
    redis_client: redis.Redis, redis_server: RedisServer, model_dir: Path, tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(SAMPLES / "astronaut.jpg", photos / "astronaut.jpg")
    (photos / "astronaut.jpg.json").write_text("{}")
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"tasks": {"clip": {"visual": {"modelName": "tiny-vit-shapes"}}}}))
    env = {k: v for k, v in os.environ.items() if k != "ASSETQ_ALLOWED_ROOTS"}
    flags = ["--redis-url", redis_server.url, "--model-dir", str(model_dir)]
    proc = subprocess.run(
        [sys.executable, "-m", "cli", *flags, "submit", str(photos), "--spec", str(spec_file)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert "assetq submit: 1 file left out (not images by extension: .json 1)" in proc.stderr
    assert f"error: assets.0.uri: {photos.resolve() / 'astronaut.jpg'} is outside ASSETQ_ALLOWED_ROOTS" in proc.stderr
    assert WorkerRegistry(redis_client).live() == {} and redis_client.dbsize() == 0
