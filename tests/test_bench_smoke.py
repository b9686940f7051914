"""The benchmark harness runs end to end on a few small photos (correctness only, no timing asserted).

The full harness is ``python -m benchmarks`` (``make bench``); this runs its
in-process parts -- naive baseline, ``assetq run`` path, agreement check,
FLOP counting, batching gain, load-test driver -- on three small generated
photos with faces + OCR, so a broken harness shows up in the test suite.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import __main__ as harness
from benchmarks import batching, roofline
from benchmarks.env import BenchEnv, file_assets, prepare
from benchmarks.loadtest import run_load
from benchmarks.photos import face_grid, varied_small_photos, write_jpeg

TINY = harness.Sizes(True, 1, 1, 1, (1, 2), 2, (0, 2), 1, 10, 3, 3, 2, 1)


@pytest.fixture(scope="module")
def bench(model_dir: Path, wheel_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[BenchEnv, list[Path]]:
    work = tmp_path_factory.mktemp("bench")
    env = prepare(work, model_dir, wheel_cache, clip="none", log=lambda _: None)
    photos = varied_small_photos(work, 2)
    faces = write_jpeg(face_grid(3, (640, 480)), work / "faces3.jpg")
    return env, [faces, *photos]


def test_naive_and_inprocess_agree_and_the_table_prints(
    bench: tuple[BenchEnv, list[Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    env, photos = bench
    run = harness.Run(env, TINY, chunk_size=2, intra_op_threads=1, concurrency=1)
    inproc, recorder, deployment = harness.headline(run, photos, with_distributed=False)
    try:
        assert deployment is None
        assert run.measured["naive"].images == len(photos)
        assert run.measured["inprocess"].wall_s > 0
        assert run.ratios["inprocess_vs_naive"] > 0
        printed = capsys.readouterr().out
        assert "1. naive baseline" in printed and "2. assetq in-process" in printed
        agreement = re.search(r"faces (\d+)/(\d+)", printed)
        # Every face found by the naive path is found by assetq: at least the three tiled heads.
        assert agreement and agreement.group(1) == agreement.group(2) and int(agreement.group(1)) >= 3
        # The recorder saw every model of the job, with the shapes it ran.
        ran = {path.parent.name for path, log in recorder.logs.items() if log.calls}
        assert ran == {"detection", "recognition"}
        assert sum(len(log.items) for log in recorder.logs.values()) >= 4
    finally:
        inproc.close()


def test_flop_count_of_arcface_matches_its_published_size(model_dir: Path) -> None:
    path = model_dir / "facial-recognition" / "buffalo_s" / "recognition" / "model.onnx"
    count = roofline.count_flops(path, (3, 112, 112))
    # MobileFaceNet (w600k_mbf): ~0.45 G multiply-adds per 112x112 face.
    assert 0.8e9 < count.flops < 1.0e9
    assert count.nodes > 40 and count.unresolved == 0


def test_recorder_counts_calls_and_items(model_dir: Path) -> None:
    recorder = roofline.SessionRecorder()
    path = model_dir / "facial-recognition" / "buffalo_s" / "recognition" / "model.onnx"
    from worker.models.base import RuntimeOptions

    session = recorder.factory(path, RuntimeOptions(intra_op_threads=1), True)
    x = np.zeros((3, 3, 112, 112), np.float32)
    out = session.run(None, {session.get_inputs()[0].name: x})
    assert out[0].shape == (3, 512)
    log = recorder.logs[path]
    assert log.calls == 1 and dict(log.items) == {(3, 112, 112): 3}
    assert log.commonest() == ((3, 112, 112), 3)
    recorder.reset()
    assert log.calls == 0 and not log.items  # cleared in place: the session keeps writing here


def test_batching_gain_runs_through_the_pipeline(bench: tuple[BenchEnv, list[Path]]) -> None:
    from benchmarks.inprocess import build_recorded_runtime
    from worker.pipeline.image import decode_image
    from worker.pipeline.run import Limits

    env, photos = bench
    run = harness.Run(env, TINY, chunk_size=2, intra_op_threads=1, concurrency=1)
    runtime = build_recorded_runtime(run.settings())
    tasks = env.tasks(ocr=False)
    image = decode_image(photos[0].read_bytes(), 50_000_000)
    one, many, faces = batching.pipeline_gain(
        runtime,
        [image],
        tasks,
        "facial-recognition.recognition",
        lambda results: sum(len(r["faces"]) for r in results),
        Limits(face_batch_size=1),
        Limits(face_batch_size=16),
        rounds=1,
    )
    runtime.pipeline.close()
    assert faces == 3 and one > 0 and many > 0
    gain = batching.BatchGain("faces", faces, one, many, 2.0, 1.0)
    assert gain.raw_gain == 2.0 and gain.kept_ratio_pct == pytest.approx(100 * gain.pipe_gain / 2.0)


def test_run_local_reuses_a_warm_runtime_and_keeps_order(bench: tuple[BenchEnv, list[Path]]) -> None:
    from benchmarks.inprocess import InProcess, build_recorded_runtime

    env, photos = bench
    tasks = env.tasks(ocr=False)
    assets = file_assets(photos, 2)
    settings = harness.Run(env, TINY, chunk_size=1, intra_op_threads=1, concurrency=1).settings()
    recorder = roofline.SessionRecorder()
    runner = InProcess(settings, build_recorded_runtime(settings, recorder))
    try:
        first = runner.run(assets, tasks)[1]
        second = runner.run(assets, tasks)[1]  # the same sessions: none created again
    finally:
        runner.close()
    assert [r["asset_id"] for r in second] == [a["id"] for a in assets]
    assert [len(r["faces"]) for r in first] == [len(r["faces"]) for r in second]
    assert len(recorder.logs) == 2  # one session per model, made once


def test_full_job_decodes_jpegs_draft_scaled_and_unknown_steps_at_full_size() -> None:
    from worker.pipeline.graph import Step
    from worker.pipeline.run import Limits, decode_min_side

    full = [
        Step("facial-recognition", "detection", "buffalo_s"),
        Step("facial-recognition", "recognition", "buffalo_s"),
        Step("ocr", "detection", "PP-OCRv6_small", {"maxResolution": 736}),
        Step("clip", "visual", "x"),
    ]
    assert decode_min_side(full, Limits()) == Limits().detail_side
    assert decode_min_side([full[0], full[3]], Limits()) == 640
    assert decode_min_side([Step("ocr", "detection", "p", {"maxResolution": 1024})], Limits()) == 1024
    assert decode_min_side([*full, Step("mystery", "step", "m")], Limits()) == 0


class InstantProducer:
    """A stand-in Producer whose batches complete as soon as they are submitted."""

    def __init__(self) -> None:
        self.specs: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def submit(self, spec: dict[str, Any]) -> str:
        with self.lock:
            self.specs.append(spec)
            return f"b{len(self.specs)}"

    def wait(self, batch: str, timeout_s: float, poll_s: float) -> dict[str, Any]:
        n = len(self.specs[int(batch[1:]) - 1]["assets"])
        return {"ok": n, "total": n, "complete": True}


def test_loadtest_drives_concurrent_clients_and_reports_percentiles() -> None:
    producer = InstantProducer()
    result = run_load(
        producer, ["file:///a.jpg", "file:///b.jpg"], {"ocr": {}}, concurrency=3, jobs=10, assets_per_job=2
    )
    assert result.jobs == 10 and result.assets == 20 and result.failed_jobs == 0
    assert len(producer.specs) == 10
    assert sorted(a["id"] for s in producer.specs for a in s["assets"])[:2] == ["j0-0", "j0-1"]
    line = result.line()
    assert re.fullmatch(
        r"loadtest: jobs=10 failed=0 jobs_per_s=\S+ assets_per_s=\S+ p50_ms=\d+ p95_ms=\d+ p99_ms=\d+", line
    )


def test_summary_ends_with_the_machine_readable_ratios_line(bench: tuple[BenchEnv, list[Path]]) -> None:
    env, _ = bench
    run = harness.Run(env, TINY, chunk_size=2, intra_op_threads=1, concurrency=1)
    run.ratios.update(inprocess_vs_naive=2.5, distributed_vs_inprocess=0.95, batch_gain_kept_pct=93.0)
    line = harness.summary(run)
    assert line == (
        "ratios: inprocess_vs_naive=2.50 distributed_vs_inprocess=0.95 batch_gain_kept_pct=93 "
        "roofline_pct=nan floor_pct=nan"
    )
