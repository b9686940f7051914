"""End to end with real parts: a private redis-server, moto's S3 server, a real Celery worker process.

Submit a batch of real images (one of them truncated) through the Producer API
and the CLI; every asset must have exactly one result, in Redis and in S3, and
the batch counters must be exact.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from contract.spec import SpecError
from producer import Producer
from tests.conftest import SAMPLES
from tools.testbed.services import S3_ENV, RedisServer, S3Server, WorkerProcess

pytestmark = pytest.mark.integration

BUCKET = "assetq-results"
TASKS = {
    "facial-recognition": {"detection": {"modelName": "buffalo_s"}, "recognition": {"modelName": "buffalo_s"}},
    "ocr": {"detection": {"modelName": "PP-OCRv6_small"}, "recognition": {"modelName": "PP-OCRv6_small"}},
}


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for f in SAMPLES.iterdir():
        shutil.copy(f, root / f.name)
    return root


@pytest.fixture(scope="module")
def worker_env(redis_server: RedisServer, s3_server: S3Server, model_dir: Path, photos: Path) -> dict[str, str]:
    s3_server.client().create_bucket(Bucket=BUCKET)
    return {
        "ASSETQ_REDIS_URL": redis_server.url,
        "ASSETQ_MODEL_DIR": str(model_dir),
        "ASSETQ_S3_ENDPOINT_URL": s3_server.url,
        "ASSETQ_ALLOWED_ROOTS": json.dumps([str(photos)]),
        "ASSETQ_CHUNK_SIZE": "3",
        "ASSETQ_INTRA_OP_THREADS": "1",
    }


@pytest.fixture(scope="module")
def worker(worker_env: dict[str, str]) -> Iterator[WorkerProcess]:
    w = WorkerProcess(env=worker_env).start()
    yield w
    w.stop()


@pytest.fixture
def producer(worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Producer:
    for k, v in {**worker_env, **S3_ENV}.items():
        monkeypatch.setenv(k, v)
    from config.settings import Settings

    return Producer(settings=Settings())


def test_batch_through_a_real_worker(
    worker: WorkerProcess, producer: Producer, photos: Path, s3_server: S3Server
) -> None:
    files = sorted(photos.iterdir())
    spec = {
        "assets": [{"id": f.stem, "uri": f.as_uri()} for f in files],
        "tasks": TASKS,
        "output": {"s3": {"bucket": BUCKET, "prefix": "ml/"}},
    }
    batch = producer.submit(spec)
    status = producer.wait(batch, timeout_s=240)
    results = producer.results(batch)
    assert [r["asset_id"] for r in results] == sorted(f.stem for f in files), worker.tail()
    by_id = {r["asset_id"]: r for r in results}
    assert by_id["truncated"]["status"] == "skipped"
    assert by_id["truncated"]["error"]["kind"] == "truncated"
    ok = [r for r in results if r["status"] == "ok"]
    assert len(ok) == len(files) - 1
    assert status == {**status, "total": len(files), "ok": len(ok), "skipped": 1, "failed": 0, "complete": True}
    astronaut = by_id["astronaut"]
    assert len(astronaut["faces"]) == 1 and len(astronaut["faces"][0]["embedding"]) == 512
    rotated = by_id["astronaut-exif-rotated"]
    assert (rotated["image"]["width"], rotated["image"]["height"]) == (512, 512)
    assert len(rotated["faces"]) == 1
    assert "sample sign" in " ".join(line["text"] for line in by_id["sign"]["ocr"]).lower()
    # S3 holds the same documents, one object per asset
    s3 = s3_server.client()
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"ml/{batch}/")["Contents"])
    assert keys == sorted(f"ml/{batch}/{aid}.json" for aid in by_id)
    body = json.loads(s3.get_object(Bucket=BUCKET, Key=f"ml/{batch}/astronaut.json")["Body"].read())
    assert body == astronaut


def test_invalid_spec_fails_at_the_producer_and_enqueues_nothing(worker: WorkerProcess, producer: Producer) -> None:
    before = producer.store.recent_batches(1000)
    bad = {
        "assets": [{"id": "a", "uri": "file:///x.jpg"}],
        "tasks": {"facial-recognition": {"detection": {"modelName": "buffalo_l"}}},
    }
    with pytest.raises(SpecError) as e:
        producer.submit(bad)
    msg = dict(e.value.errors)["tasks.facial-recognition.detection.modelName"]
    assert "buffalo_l" in msg and "buffalo_s" in msg
    assert producer.store.recent_batches(1000) == before


def test_cli_submit_wait_status_results(
    worker: WorkerProcess, worker_env: dict[str, str], photos: Path, tmp_path: Path
) -> None:
    env = {**os.environ, **S3_ENV, **worker_env}
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"tasks": {"facial-recognition": TASKS["facial-recognition"]}}))
    cli = [sys.executable, "-m", "cli"]
    out = tmp_path / "out"
    sub = subprocess.run(
        [
            *cli,
            "submit",
            str(photos / "astronaut.jpg"),
            str(photos / "truncated.jpg"),
            "--spec",
            str(spec),
            "--wait",
            "--out",
            str(out),
            "--timeout",
            "120",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert sub.returncode == 0, sub.stderr + worker.tail()
    batch = sub.stdout.splitlines()[0].strip()
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["status"] for r in lines) == ["ok", "skipped"]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["total"], summary["ok"], summary["skipped"], summary["failed"]) == (2, 1, 1, 0)
    st = subprocess.run([*cli, "status", batch], env=env, capture_output=True, text=True)
    assert json.loads(st.stdout)["complete"] is True
    res = subprocess.run([*cli, "results", batch], env=env, capture_output=True, text=True)
    assert len(res.stdout.splitlines()) == 2
