"""An idle worker unloads its models by itself: the model cache's timer, no task needed.

Two quick tests on stand-in models show the timer unloading an idle model and
leaving a leased one (a step running it) alone. The integration test runs a
real ``assetq worker`` with a TTL of a few seconds (the feature under test):
one small batch, then the pool process's RSS must fall while it sits idle,
and the same batch run again must give the same results.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from producer import Producer
from tests.conftest import SAMPLES
from tools.testbed.services import RedisServer, WorkerProcess, wait_for
from worker.models.base import InferenceModel, RuntimeOptions, StepKey
from worker.models.cache import ModelCache
from worker.models.registry import register
from worker.pipeline.image import DecodedImage

TTL_S = 4  # the worker's ASSETQ_MODEL_TTL_S (an int setting): short, since unloading is what is tested
TASKS = {
    "facial-recognition": {"detection": {"modelName": "buffalo_s"}, "recognition": {"modelName": "buffalo_s"}},
    "ocr": {"detection": {"modelName": "PP-OCRv6_small"}, "recognition": {"modelName": "PP-OCRv6_small"}},
}
PHOTOS = ("astronaut.jpg", "chelsea.jpg", "sign.png")
# Well under what faces + OCR hold after the batch (weights and onnxruntime's arenas: measured
# 367 MB after it, 163 MB once unloaded), well over the drift of an idle process.
MIN_RSS_DROP_MB = 80.0


# --- the timer, on stand-in models ----------------------------------------------------------


class IdleModel(InferenceModel):
    task = "facial-recognition"
    type = "detection"

    def warmup(self) -> None:
        pass

    def run_chunk(
        self,
        images: Sequence[DecodedImage],
        upstream: Mapping[StepKey, Sequence[Any]],
        options: Mapping[str, Any],
        *,
        max_batch: int | None = None,
    ) -> list[Any]:
        return [[] for _ in images]


register("fake-ttl")(IdleModel)


class CountingCache(ModelCache):
    """Sets ``swept`` once the timer has called ``evict_idle`` ``sweeps`` times."""

    def __init__(self, *args: Any, sweeps: int = 3, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sweeps = sweeps
        self.calls = 0
        self.swept = threading.Event()

    def evict_idle(self) -> list[tuple[str, str, str]]:
        unloaded = super().evict_idle()
        if threading.current_thread().name == "assetq-model-ttl":
            self.calls += 1
            if self.calls >= self.sweeps:
                self.swept.set()
        return unloaded


@pytest.fixture
def fake_pack(tmp_path: Path) -> Path:
    pack = tmp_path / "facial-recognition" / "idle"
    (pack / "detection").mkdir(parents=True)
    (pack / "detection" / "model.onnx").write_bytes(b"not used")
    (pack / "assetq.json").write_text(json.dumps({"family": "fake-ttl"}))
    return tmp_path


def cache_for(model_dir: Path, ttl_s: float) -> CountingCache:
    return CountingCache(model_dir, RuntimeOptions(warmup=False), ttl_s=ttl_s, session_factory=lambda *_: object())


def test_the_timer_unloads_an_idle_model_without_a_task(fake_pack: Path) -> None:
    cache = cache_for(fake_pack, ttl_s=0.3)
    try:
        model = cache.get("facial-recognition", "detection", "idle")
        assert model.loaded
        wait_for(lambda: not cache.loaded(), 10, "the timer to unload the idle model", interval=0.05)
        assert not model.loaded
    finally:
        cache.close()


def test_a_leased_model_stays_loaded_until_its_step_ends(fake_pack: Path) -> None:
    cache = cache_for(fake_pack, ttl_s=0.2)
    try:
        with cache.lease("facial-recognition", "detection", "idle") as model:
            # Three sweeps, the TTL long past: a step still running this model keeps it.
            assert cache.swept.wait(10), "the timer never swept"
            assert model.loaded and cache.loaded() == [("facial-recognition", "detection", "idle")]
        wait_for(lambda: not cache.loaded(), 10, "the timer to unload the model once released", interval=0.05)
    finally:
        cache.close()


# --- a real worker ----------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        shutil.copy(SAMPLES / name, root / name)
    return root


@pytest.fixture(scope="module")
def worker_env(redis_server: RedisServer, model_dir: Path, photos: Path) -> dict[str, str]:
    return {
        "ASSETQ_REDIS_URL": redis_server.url,
        "ASSETQ_MODEL_DIR": str(model_dir),
        "ASSETQ_ALLOWED_ROOTS": json.dumps([str(photos)]),
        "ASSETQ_MODEL_TTL_S": str(TTL_S),
        # Nothing loaded before the batch: what the RSS falls from is what the batch loaded.
        "ASSETQ_PRELOAD": "false",
        "ASSETQ_INTRA_OP_THREADS": "1",
    }


@pytest.fixture(scope="module")
def worker(worker_env: dict[str, str]) -> Iterator[WorkerProcess]:
    w = WorkerProcess(env=worker_env).start()
    yield w
    w.stop()


@pytest.fixture
def producer(worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Producer:
    for k, v in worker_env.items():
        monkeypatch.setenv(k, v)
    from config.settings import Settings

    return Producer(settings=Settings())


def run_batch(producer: Producer, photos: Path, worker: WorkerProcess) -> list[dict[str, Any]]:
    spec = {"assets": [{"id": p.stem, "uri": p.as_uri()} for p in sorted(photos.iterdir())], "tasks": TASKS}
    batch = producer.submit(spec)
    producer.wait(batch, timeout_s=180, poll_s=0.2)
    results = producer.results(batch)
    assert [r["status"] for r in results] == ["ok"] * len(PHOTOS), worker.tail()
    # Everything but what differs between two runs by design: the batch id and the timings.
    return [{k: v for k, v in r.items() if k not in ("batch_id", "timings_ms")} for r in results]


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_an_idle_worker_unloads_its_models_and_reloads_them_alike(
    worker: WorkerProcess, producer: Producer, photos: Path
) -> None:
    [pool_process] = worker.children()  # prefork, concurrency 1
    first = run_batch(producer, photos, worker)
    assert sum(len(r["faces"]) for r in first) >= 1 and sum(len(r["ocr"]) for r in first) >= 1
    after_batch = rss_mb(pool_process)

    # No task arrives: only the cache's timer can unload the four models, TTL_S after the batch.
    try:
        wait_for(lambda: rss_mb(pool_process) < after_batch - MIN_RSS_DROP_MB, TTL_S * 10, "RSS to fall", 0.25)
    except TimeoutError:
        pytest.fail(f"RSS stayed at {rss_mb(pool_process):.0f} MB, {after_batch:.0f} after the batch\n{worker.tail()}")
    # The cache logs the unload just after it has given the memory back.
    wait_for(lambda: "unloaded idle models" in worker.tail(200), 10, "the worker to log the unload")

    second = run_batch(producer, photos, worker)
    assert worker.children() == [pool_process]  # the same process, its models loaded again
    assert second == first  # faces, embeddings, text: the same
