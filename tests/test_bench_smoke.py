"""The benchmark harness runs end to end on a few small photos (correctness only, no timing asserted).

The full harness is ``python -m benchmarks`` (``make bench``); this runs its
in-process parts -- naive baseline, ``assetq run`` path, agreement check,
FLOP counting, batching gain, load-test driver -- on three small generated
photos with faces + OCR, so a broken harness shows up in the test suite. It
also keeps the harness's shape: a runner for every section, no module over
400 lines, and no benchmark importing anything from tests/.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from benchmarks import __main__ as harness
from benchmarks import batching, headline, report, roofline, tail
from benchmarks.common import Run, Sizes, State
from benchmarks.env import BenchEnv, file_assets, prepare
from benchmarks.loadtest import run_load
from benchmarks.photos import face_grid, varied_small_photos, write_jpeg

TINY = Sizes(True, 1, 1, 1, (1, 2), 2, (0, 2), 1, 10, 3, 3, 2, 1)
REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
MAX_MODULE_LINES = 400


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
    run = Run(env, TINY, chunk_size=2, intra_op_threads=1, concurrency=1)
    state = State(photos, photos, with_distributed=False)
    headline.section(run, state)
    inproc, recorder = state.inproc, state.recorder
    assert inproc is not None and recorder is not None
    try:
        assert state.deployment is None
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


def test_the_tail_section_runs_both_cuts_and_its_baseline_is_the_old_rule(
    bench: tuple[BenchEnv, list[Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    # The baseline is 0.5.0-0.6.2's cut: rounds of one equal chunk per process.
    assert tail.equal_shares(24, 16, 2) == [12, 12]
    assert tail.equal_shares(72, 16, 2) == [12] * 6
    assert tail.equal_shares(5, 16, 2) == [3, 2]
    env, photos = bench
    run = Run(env, TINY, chunk_size=4, intra_op_threads=1, concurrency=2)
    tail.section(run, State(photos, photos, with_distributed=False))
    printed = capsys.readouterr().out
    assert f"{len(photos) * tail.REPEAT} assets on 2 processes" in printed
    rows = [line for line in printed.splitlines() if line.startswith(("| equal shares", "| factoring"))]
    assert len(rows) == 2
    assert "| 4 4 3 3 1 1 1 1 " in rows[1]  # 18 assets at 4: full chunks, then halving


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


def test_replay_runs_the_kept_calls_again_from_several_threads(model_dir: Path) -> None:
    """The side-by-side ceiling's recorder keeps copies of the calls it passes, and replays them all."""
    from benchmarks.replay import CallRecorder, replay
    from worker.models.base import RuntimeOptions, Session

    recorder = CallRecorder()
    path = model_dir / "facial-recognition" / "buffalo_s" / "recognition" / "model.onnx"
    session = recorder.factory(path, RuntimeOptions(intra_op_threads=1), True)
    name = session.get_inputs()[0].name
    x = np.zeros((2, 3, 112, 112), np.float32)
    session.run(None, {name: x})  # not kept: the recorder is not keeping yet
    recorder.keeping = True
    session.run(None, {name: x})
    x[:] = 1.0  # the caller reuses its buffer: the kept call has its own copy
    session.run(None, {name: x})
    recorder.keeping = False
    assert len(recorder.calls) == 2
    assert float(recorder.calls[0].feed[name].max()) == 0.0 and float(recorder.calls[1].feed[name].min()) == 1.0
    counted: list[int] = []

    class Counting:  # counts the calls the replay makes, passing them through
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def run(self, names: Any, feed: Any) -> Any:
            counted.append(1)
            return self.inner.run(names, feed)

    for call in recorder.calls:
        call.session = cast(Session, Counting(call.session))
    assert replay(recorder.calls, threads=2, repeats=3) > 0
    assert len(counted) == 2 + 2 * 3  # one warm pass, then every call of every repeat


def test_batching_gain_runs_through_the_pipeline(bench: tuple[BenchEnv, list[Path]]) -> None:
    from benchmarks.inprocess import build_recorded_runtime
    from worker.pipeline.image import decode_image
    from worker.pipeline.run import Limits

    env, photos = bench
    run = Run(env, TINY, chunk_size=2, intra_op_threads=1, concurrency=1)
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
    settings = Run(env, TINY, chunk_size=1, intra_op_threads=1, concurrency=1).settings()
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


def test_full_job_decodes_jpegs_draft_scaled_and_unknown_steps_at_full_size(model_dir: Path) -> None:
    from worker.pipeline.graph import Step
    from worker.pipeline.run import Limits, decode_min_side

    full = [
        Step("facial-recognition", "detection", "buffalo_s"),
        Step("facial-recognition", "recognition", "buffalo_s"),
        Step("ocr", "detection", "PP-OCRv6_small", {"maxResolution": 736}),
        Step("clip", "visual", "x"),
    ]
    assert decode_min_side(full, Limits(), model_dir) == Limits().detail_side
    assert decode_min_side([full[0], full[3]], Limits(), model_dir) == 640
    # ASSETQ_DETAIL_SIDE=0: faces aligned from full-size pixels, as a whole-image decode would.
    assert decode_min_side(full[:2], Limits(detail_side=0), model_dir) == 0
    assert decode_min_side(full[:2], Limits(detail_side=2000), model_dir) == 2000
    ocr_alone = [Step("ocr", "detection", "PP-OCRv6_small", {"maxResolution": 1024})]
    assert decode_min_side(ocr_alone, Limits(), model_dir) == 1024
    assert decode_min_side([*full, Step("mystery", "step", "m")], Limits(), model_dir) == 0


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
    run = Run(env, TINY, chunk_size=2, intra_op_threads=1, concurrency=1)
    run.ratios.update(inprocess_vs_naive=2.5, distributed_vs_inprocess=0.95, batch_gain_kept_pct=93.0)
    line = report.summary(run)
    assert line == (
        "ratios: inprocess_vs_naive=2.50 distributed_vs_inprocess=0.95 batch_gain_kept_pct=93 "
        "roofline_pct=nan floor_pct=nan faces_vs_peer_previews=nan faces_vs_peer_small=nan faces_vs_peer_12mp=nan "
        "faces_ceiling_pct=nan faces_memory_headroom=nan enqueue_vs_celery=nan"
    )


def test_every_section_has_a_runner_and_a_place_in_the_order() -> None:
    ordered = ["headline", *harness.ON_HEADLINE_RUNTIME, *harness.ON_HEADLINE_WORKER, *harness.ON_THEIR_OWN]
    assert sorted(ordered) == sorted(harness.SECTIONS) == sorted(harness.RUNNERS)


def test_benchmarks_import_no_tests_module() -> None:
    """Code the tests and the benchmarks share lives in tools/testbed: the benchmarks must not depend on tests/.

    A fresh interpreter, so that the modules this test session has imported already do not hide an import.
    """
    modules = sorted(f"benchmarks.{p.stem}" for p in BENCHMARKS.glob("*.py"))
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'tests' or m.startswith('tests.'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_no_benchmark_module_is_over_the_line_limit() -> None:
    lines = {p.name: len(p.read_text().splitlines()) for p in BENCHMARKS.glob("*.py")}
    assert "__main__.py" in lines
    assert {name: n for name, n in lines.items() if n > MAX_MODULE_LINES} == {}


def test_the_peer_style_baseline_finds_the_same_faces_as_assetq(bench: tuple[BenchEnv, list[Path]]) -> None:
    """The faces section's baseline (its own process, 2 request threads) against ``assetq run``'s path."""
    from benchmarks.agreement import compare
    from benchmarks.faces import faces_tasks
    from benchmarks.peer import PeerProcess
    from config.settings import Settings
    from worker.local import run_local

    env, photos = bench
    tasks = faces_tasks()
    peer = PeerProcess(env.model_dir, tasks)
    try:
        peer.warm(photos[:1])
        wall, outputs, peak_mb = peer.run(photos)
    finally:
        peer.close()
    assert not peer.process.is_alive()
    assert wall > 0 and peak_mb > 50
    settings = Settings(_env_file=None, model_dir=env.model_dir, concurrency=1, intra_op_threads=1)
    results, _ = run_local(file_assets(photos), tasks, settings)
    agreement = compare(outputs, results)
    assert agreement.faces_naive >= 3
    assert agreement.faces_fast == agreement.faces_naive
    assert agreement.face_cosine_min >= 0.999


def test_the_decode_section_times_both_decoders_and_checks_their_pixels() -> None:
    from benchmarks.decode import cpu_ms, same_pixels
    from tests import hostile
    from worker.pipeline.image import decode_image

    datas = [hostile.jpeg(hostile.noise(300, 400, seed=s), quality=85) for s in range(3)]
    assert same_pixels(datas, 0) and same_pixels(datas, 100)
    assert cpu_ms(datas, lambda d: decode_image(d, 10_000_000, pillow_only=True)) > 0


def test_the_faces_report_bounds_with_the_session_time_and_calls_the_replay_an_estimate(
    bench: tuple[BenchEnv, list[Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    """The faces tables from figures made up here (the section itself takes ~12 min): every table prints,
    and the ratios and notes are what the figures give."""
    from benchmarks.face_sets import FACE_SETS
    from benchmarks.faces_report import FacesShape, SetResult, report

    env, _ = bench
    run = Run(env, TINY, chunk_size=16, intra_op_threads=1, concurrency=2)
    results = []
    for face_set in FACE_SETS:
        r = SetResult(face_set, 120, whole_images=face_set.whole_command_images, agreement="faces 10/10")
        r.min_cosine, r.session_ms, r.decode_ms, r.side_by_side_ms = 1.0, 40.0, 10.0, 45.0
        for name, seconds in (("peer", 12.0), ("naive", 13.0), ("inprocess", 6.0), ("one_call", 7.0)):
            r.keep(name, seconds)
        for name, seconds in (("processes", 6.5), ("distributed", 6.2)):
            r.keep(name, seconds)
        r.keep("whole_run", face_set.whole_command_images / 20 * 1.1)
        r.keep("whole_submit", face_set.whole_command_images / 20 * 1.2)
        results.append(r)
    memory = {"peer-style baseline": 500.0, "assetq worker (1 pool process)": 400.0}
    report(run, FacesShape(threads=2, processes=2), results, memory, {"run": 0.2, "submit": 0.2})
    printed = capsys.readouterr().out
    assert "It is an estimate, not a bound" in printed
    assert "nan" not in printed.split("Session-time ceiling")[1].split("Peak")[0]
    # 120 images in 6 s = 50 ms/image against a 40 ms ceiling: 80%; the peer's 100 ms/image over 40: 2.50x.
    assert run.ratios["faces_ceiling_pct"] == pytest.approx(80.0)
    assert "2.50x / 2.22x; 2.00x" in printed  # session / + decode (40 + 10/2); side by side + decode (45 + 5)
    assert run.ratios["faces_memory_headroom"] == pytest.approx(1.25)
    assert any("side-by-side session estimate with decode, least of the sets: 100%" in n for n in run.notes)
