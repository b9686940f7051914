"""Inference threads (``ASSETQ_INFERENCE_THREADS``): a chunk's waves run at once on shared sessions.

The fake models are the pipeline tests'; a barrier in the detector proves that the threads' calls
are in flight together (it breaks, failing the test, unless every lane is inside it at once).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from config.settings import Settings, process_threads
from tests.test_pipeline import TASKS, FakeDetector, FakeRecognizer, fake_factory, png
from worker.models.base import RuntimeOptions
from worker.models.cache import ModelCache
from worker.models.registry import register
from worker.pipeline.errors import TransientError
from worker.pipeline.fetch import Fetcher
from worker.pipeline.image import DecodedImage
from worker.pipeline.lanes import Lanes, spread
from worker.pipeline.run import Limits, Pipeline

BARRIER: list[threading.Barrier] = []  # each thread's first detector call waits here for the others
THREADS: set[str] = set()
FAIL_ON: list[str] = []  # a detector call whose image is this wide raises


class TogetherDetector(FakeDetector):
    batch_setting: ClassVar[str | None] = "detection_batch_size"  # images per call, like the real detectors

    def run_chunk(self, images: Sequence[DecodedImage], *args: Any, **kwargs: Any) -> list[Any]:
        name = threading.current_thread().name
        first = name not in THREADS
        THREADS.add(name)
        if BARRIER and first:  # each thread's first call waits until every lane is inside one
            with contextlib.suppress(threading.BrokenBarrierError):  # the assertions see the lanes never met
                BARRIER[0].wait(timeout=10)
        if FAIL_ON and any(str(img.width) in FAIL_ON for img in images):
            raise TransientError("the store went away")
        return super().run_chunk(images, *args, **kwargs)


class FacesRecognizer(FakeRecognizer):
    batches_images: ClassVar[bool] = False  # faces per call: a wave is one image


register("fake-lanes")(TogetherDetector)
register("fake-lanes")(FacesRecognizer)


@pytest.fixture
def photos(tmp_path: Path) -> list[dict[str, Any]]:
    pack = tmp_path / "models" / "facial-recognition" / "fake"
    for t in ("detection", "recognition"):
        (pack / t).mkdir(parents=True)
        (pack / t / "model.onnx").write_bytes(b"not used")
    (pack / "assetq.json").write_text(json.dumps({"family": "fake-lanes"}))
    assets = []
    for i in range(12):
        (tmp_path / f"{i}.png").write_bytes(png(100 + 100 * (i % 4), 40))
        assets.append({"id": str(i), "uri": (tmp_path / f"{i}.png").as_uri()})
    return assets


def _pipeline(tmp_path: Path, lanes: int) -> Pipeline:
    cache = ModelCache(tmp_path / "models", RuntimeOptions(warmup=False), session_factory=fake_factory)
    limits = Limits(face_batch_size=7, detection_batch_size=1, inference_threads=lanes)
    return Pipeline(cache, Fetcher([tmp_path], 10_000_000), limits)


def test_three_inference_threads_run_waves_at_once_with_the_results_of_one(
    photos: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import worker.pipeline.run as run_module

    monkeypatch.setattr(run_module, "WAVE_PIXELS", 1)  # a wave per image, so there are waves to share
    outcomes = {}
    for lanes in (1, 3):
        BARRIER[:] = [threading.Barrier(lanes)] if lanes > 1 else []
        THREADS.clear()
        pipe = _pipeline(tmp_path, lanes)
        results = pipe.process("B", photos, TASKS)
        assert not (BARRIER and BARRIER[0].broken), f"the inference threads never ran together: {THREADS}"
        outcomes[lanes] = [{k: v for k, v in r.items() if k != "timings_ms"} for r in results]
        assert len(THREADS) == lanes, THREADS
        pipe.close()
    assert outcomes[1] == outcomes[3]
    assert [r["asset_id"] for r in outcomes[3]] == [a["id"] for a in photos]  # in asset order


def test_a_failing_wave_stops_every_inference_thread_and_the_next_chunk_runs(
    photos: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import worker.pipeline.run as run_module

    monkeypatch.setattr(run_module, "WAVE_PIXELS", 1)
    BARRIER.clear()
    pipe = _pipeline(tmp_path, 2)
    FAIL_ON[:] = ["300"]
    try:
        with pytest.raises(TransientError, match="the store went away"):
            pipe.process("B", photos, TASKS)  # the whole chunk retries
    finally:
        FAIL_ON.clear()
    results = pipe.process("B", photos, TASKS)  # the same threads take the next chunk
    assert [r["status"] for r in results] == ["ok"] * len(photos)
    pipe.close()


def test_lanes_raise_the_first_error_once_every_lane_has_ended_and_the_callers_own_first() -> None:
    lanes = Lanes(3)
    ended: list[str] = []
    taken = threading.Semaphore(0)

    def work(stop: threading.Event) -> None:
        name = threading.current_thread().name
        if name.startswith("assetq-lane"):
            taken.release()
            assert stop.wait(10), "the others were never told to stop"
            ended.append(name)
            return
        for _ in range(2):
            assert taken.acquire(timeout=10)  # both pool lanes are running
        raise KeyError("the caller's")

    with pytest.raises(KeyError, match="the caller's"):
        lanes.run(work)
    assert len(ended) == 2  # raised only after both lanes had stopped

    def pool_fails(stop: threading.Event) -> None:
        if threading.current_thread().name.startswith("assetq-lane"):
            raise ValueError("a lane's")
        assert stop.wait(10)

    with pytest.raises(ValueError, match="a lane's"):
        lanes.run(pool_fails)
    lanes.shutdown()


def test_a_process_share_of_the_cores_runs_as_inference_threads_of_one_intra_op_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import config.settings as settings_module

    monkeypatch.setattr(settings_module, "cpu_cores", lambda: 8)
    assert process_threads(0, 0) == (8, 1)  # the default: every core, a session call on each
    assert process_threads(0, 0, concurrency=2) == (4, 1)  # a pool of 2 processes: half each
    assert process_threads(0, 2) == (4, 2)  # a set intra-op count divides the share
    assert process_threads(2, 0) == (2, 4)  # a set inference count shares it out
    assert process_threads(1, 0) == (1, 0)  # one thread at a time on every core: onnxruntime's default
    assert process_threads(0, 0, concurrency=8) == (1, 1)  # a process per core
    assert process_threads(0, 0, device="0") == (1, 0)  # a GPU runs one call at a time
    assert Settings(_env_file=None).inference_threads == 1  # the default: one call at a time
    s = Settings(_env_file=None, concurrency=2, inference_threads=0)
    assert Limits.from_settings(s).inference_threads == 4
    assert RuntimeOptions.from_settings(s).intra_op_threads == 1
    assert Limits(device="0").lanes == 1 and Limits(inference_threads=3).lanes == 3


def test_a_workers_pool_size_reaches_its_children_so_each_gets_its_share(monkeypatch: pytest.MonkeyPatch) -> None:
    """``assetq worker --concurrency N`` tells Celery and the settings its pool children read."""
    import os

    import config.settings as settings_module
    from config.settings import get_settings
    from worker.app import app
    from worker.launch import launch

    monkeypatch.setattr(os, "environ", dict(os.environ))  # launch pins the process: keep that in the test
    os.environ["ASSETQ_INFERENCE_THREADS"] = "0"
    monkeypatch.setattr(settings_module, "cpu_cores", lambda: 8)
    argv: list[list[str]] = []
    monkeypatch.setattr(app, "worker_main", argv.append)
    try:
        launch("cpu", None, 4, "prefork", "info", None, [])
        child = get_settings()  # what a forked pool child builds its pipeline from
        assert argv and argv[0][argv[0].index("--concurrency") + 1] == "4"
        assert child.concurrency == 4
        assert Limits.from_settings(child).inference_threads == 2  # 8 cores over 4 processes
        assert RuntimeOptions.from_settings(child).intra_op_threads == 1
    finally:
        get_settings.cache_clear()


def test_spread_outside_lanes_is_a_plain_loop_in_the_calling_thread() -> None:
    names: list[str] = []
    assert spread(lambda x: names.append(threading.current_thread().name) or x * 2, [1, 2, 3]) == [2, 4, 6]
    assert set(names) == {threading.current_thread().name}


def test_a_lane_out_of_waves_takes_calls_another_lane_spreads() -> None:
    lanes = Lanes(2)
    both = threading.Barrier(2)  # passes only if two threads are inside calls of the spread at once
    results: list[list[tuple[int, str]]] = []

    def call(x: int) -> tuple[int, str]:
        both.wait(timeout=10)
        return x, threading.current_thread().name

    def work(stop: threading.Event) -> None:
        if threading.current_thread().name.startswith("assetq-lane"):
            return  # no waves for this lane: it helps
        results.append(spread(call, [0, 1]))

    lanes.run(work)
    assert not both.broken
    assert [x for x, _ in results[0]] == [0, 1]  # in order
    assert len({name for _, name in results[0]}) == 2  # the idle lane ran one

    # An error in a call another lane took is raised in the lane that spread it, once all have ended.
    ended: list[int] = []
    both.reset()

    def failing(x: int) -> int:
        both.wait(timeout=10)
        ended.append(x)
        if x == 1:
            raise ValueError("call 1")
        return x

    def spreads_failing(stop: threading.Event) -> None:
        if not threading.current_thread().name.startswith("assetq-lane"):
            spread(failing, [0, 1])

    with pytest.raises(ValueError, match="call 1"):
        lanes.run(spreads_failing)
    assert sorted(ended) == [0, 1]
    lanes.shutdown()
