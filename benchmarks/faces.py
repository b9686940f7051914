"""Section "faces": the faces job (detection minScore 0.7 -> recognition, buffalo_s) against the peer-style baseline.

Three image sets (``benchmarks/face_sets.py``): previews with a short side of 1440 px, small
photos and 12 MP originals. On each, in the same run and interleaved round by round:

* the peer-style baseline (``benchmarks/peer.py``: Immich ML's design, in a process of its own);
* the naive baseline (``benchmarks/naive.py``), a second reference;
* ``assetq run``'s path, warm (steady state), at the README's CPU recommendation for this job
  (one process, an inference thread per core, each session call on one core), and
  beside it one session call at a time over every core (the default) and a process per core;
* assetq distributed: a real redis-server and one ``assetq worker`` at that recommendation
  (``--concurrency 1``), Producer API;
* the whole commands: ``assetq run <folder> --concurrency 1`` and ``assetq submit <folder> --wait``
  (the latter against the already running worker), start-up, model loading and enqueueing included.

Then the session-time ceiling (what assetq would reach if everything outside ``session.run``
were free, and what decoding leaves of it), the peak memory of each configuration, and whether
the outputs agree.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Run, State, progress
from benchmarks.face_sets import FACE_SETS, cycled, distinct_photos, folder
from benchmarks.faces_report import MIN_SCORE, SCALED_SIDE, SetResult, faces_shape, report
from benchmarks.peer import PeerProcess, peak_rss_mb

STEADY_IMAGES = 120
QUICK_IMAGES = 24


def faces_tasks() -> dict[str, Any]:
    from benchmarks.env import FACE_PACK

    return {
        "facial-recognition": {
            "detection": {"modelName": FACE_PACK, "options": {"minScore": MIN_SCORE}},
            "recognition": {"modelName": FACE_PACK},
        }
    }


def _assets(paths: list[Path], tag: str) -> list[dict[str, Any]]:
    return [{"id": f"{tag}-{i}", "uri": p.resolve().as_uri()} for i, p in enumerate(paths)]


def _whole(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, float]:
    """(wall seconds, the command's peak RSS in MiB) of one whole command.

    The peak is the process's own VmHWM, read every 50 ms while it runs (it only grows): the
    rusage of a child forked from this big harness would count the harness's pages too.
    """
    peak = 0.0
    ended = threading.Event()
    with log.open("w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
        end = [t0]

        def wait() -> None:
            proc.wait()
            end[0] = time.perf_counter()
            ended.set()

        threading.Thread(target=wait, daemon=True).start()
        try:
            while not ended.wait(0.05):  # returns at once when the command ends: the wall time is exact
                with contextlib.suppress(OSError, RuntimeError):  # it may end between the wait and the read
                    peak = max(peak, peak_rss_mb(proc.pid))
        finally:
            if not ended.is_set():
                proc.kill()
    wall = end[0] - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed ({proc.returncode}): {log.read_text()[-2000:]}")
    return wall, peak


def section(run: Run, state: State) -> None:
    from benchmarks.distributed import Deployment
    from benchmarks.inprocess import InProcess, build_recorded_runtime
    from benchmarks.naive import NaiveRunner
    from config.settings import Settings
    from worker.local_processes import ProcessPool
    from worker.models.base import RuntimeOptions
    from worker.models.cache import ModelCache
    from worker.pipeline.run import plan_for

    env, quick = run.env, run.sizes.photos_quick
    tasks = faces_tasks()
    images = QUICK_IMAGES if quick else STEADY_IMAGES
    rounds = 1 if quick else 3  # best of 3: the shared machine moves single rounds by 10-20%
    work = env.work / "faces"
    spec = work / "faces-spec.json"
    work.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps({"tasks": tasks}))
    sets = {s.name: distinct_photos(env.work, env.wheel_cache, s) for s in FACE_SETS}
    roots = sorted({p.parent for ps in sets.values() for p in ps} | {work})
    assetq = str(Path(sys.executable).with_name("assetq"))
    shape = faces_shape(run)
    # What users run: every installed pack in the model directory (the worker loads only what jobs need),
    # with the recommendation's threads.
    threads_env = {"ASSETQ_INFERENCE_THREADS": str(shape.threads), "ASSETQ_INTRA_OP_THREADS": "1"}
    user_env = {"ASSETQ_MODEL_DIR": str(env.source_model_dir), **threads_env}

    progress("faces: starting the peer-style service, the naive runner, assetq's runtimes and a worker")
    peer = PeerProcess(env.model_dir, tasks)
    settings = run.settings(model_dir=env.source_model_dir, chunk_size=16)
    # The recommendation for this job: one process, a session call on each core at once (inference threads).
    one_settings = settings.model_copy(
        update={"concurrency": 1, "inference_threads": shape.threads, "intra_op_threads": 1}
    )
    one = InProcess(one_settings, build_recorded_runtime(one_settings))
    # The default: one process, one session call at a time spread over every core.
    call_settings = settings.model_copy(
        update={"concurrency": 1, "inference_threads": 1, "intra_op_threads": shape.threads}
    )
    one_call = InProcess(call_settings, build_recorded_runtime(call_settings))
    # The alternative: a process per core, one thread each.
    pool_settings = settings.model_copy(update={"concurrency": shape.processes, "intra_op_threads": 1})
    pool = InProcess(pool_settings, ProcessPool(pool_settings, tasks, shape.processes))
    # The recommendation with ASSETQ_DETAIL_SIDE=1440 on the 12 MP set: JPEGs DCT-scaled, faces aligned from those.
    scaled_settings = one_settings.model_copy(update={"detail_side": SCALED_SIDE})
    scaled = InProcess(scaled_settings, ProcessPool(scaled_settings, tasks, 1))
    deployment = Deployment(
        env.source_model_dir,
        roots,
        16,
        1,
        1,
        env.work / "logs",
        # The worker's own default model TTL, not the harness's "keep everything" (it is at its defaults).
        extra_env={"ASSETQ_MODEL_TTL_S": str(Settings.model_fields["model_ttl_s"].default), **threads_env},
    ).start()
    results: list[SetResult] = []
    whole_run_rss = 0.0
    try:
        producer = deployment.producer()
        naive = NaiveRunner(env.model_dir, plan_for(tasks, ModelCache(env.model_dir, RuntimeOptions())))
        for face_set in FACE_SETS:
            distinct = sets[face_set.name]
            paths = cycled(distinct, images)
            assets = _assets(paths, face_set.name)
            result = SetResult(face_set, len(paths))
            progress(f"faces {face_set.name}: warming every configuration on the set's {len(distinct)} photos")
            peer.warm(distinct)
            naive.warm(distinct[0])
            warm = _assets(distinct, f"warm-{face_set.name}")
            one.run(warm, tasks)
            one_call.run(warm, tasks)
            pool.run(warm, tasks)
            deployment.run(producer, warm, tasks)
            fidelity = face_set.name == "12mp"
            if fidelity:
                scaled.run(warm, tasks)
            peer_out: list[Any] = []
            scaled_out: list[dict[str, Any]] = []
            fast_out: list[dict[str, Any]] = []
            for r in range(rounds):
                progress(f"faces {face_set.name}: round {r + 1}/{rounds}")
                wall, peer_out, _ = peer.run(paths)
                result.keep("peer", wall)
                result.keep("naive", naive.run(paths)[0])
                wall, fast_out = one.run(assets, tasks)
                result.keep("inprocess", wall)
                result.keep("one_call", one_call.run(assets, tasks)[0])
                result.keep("processes", pool.run(assets, tasks)[0])
                if fidelity:
                    wall, scaled_out = scaled.run(assets, tasks)
                    result.keep("scaled", wall)
                result.keep("distributed", deployment.run(producer, _assets(paths, f"d{r}-{face_set.name}"), tasks)[0])
            whole = folder(distinct, face_set.whole_command_images, work / f"whole-{face_set.name}")
            result.whole_images = face_set.whole_command_images
            for r in range(rounds):
                progress(f"faces {face_set.name}: whole commands, round {r + 1}/{rounds}")
                out = work / f"out-{face_set.name}-{r}"
                cmd = [assetq, "run", str(whole), "--spec", str(spec), "--out", str(out), "--concurrency", "1"]
                wall, rss = _whole(cmd, user_env, work / "whole-run.log")
                result.keep("whole_run", wall)
                whole_run_rss = max(whole_run_rss, rss)
                cmd = [assetq, "submit", str(whole), "--spec", str(spec), "--wait"]
                result.keep("whole_submit", _whole(cmd, deployment.env(), work / "whole-submit.log")[0])
            result.agreement, result.min_cosine = _agreement(peer_out, fast_out)
            if fidelity:
                result.scaled_agreement, result.scaled_min_cosine = _agreement(peer_out, scaled_out)
            result.decode_ms = decode_cpu_ms(distinct, tasks, env.source_model_dir)
            # The session work at one core per call, uncontended, spread over the cores the recommendation uses.
            alone = settings.model_copy(update={"concurrency": 1, "inference_threads": 1, "intra_op_threads": 1})
            result.session_ms = _session_ms(alone, build_recorded_runtime, InProcess, assets, tasks) / shape.threads
            result.side_by_side_ms = _side_by_side_ms(one_settings, distinct, tasks, shape.threads, images)
            if fidelity:
                result.scaled_decode_ms = decode_cpu_ms(distinct, tasks, env.source_model_dir, detail_side=SCALED_SIDE)
            results.append(result)
        assert deployment.worker is not None and deployment.worker.proc is not None
        assert isinstance(pool.runtime, ProcessPool) and isinstance(scaled.runtime, ProcessPool)
        memory = {
            "peer-style baseline (1 process, 2 request threads)": peer.run(sets["previews"][:1])[2],
            f"assetq worker (1 pool process, {shape.threads} inference threads + main)": _peak(
                [deployment.worker.proc.pid, *deployment.worker_pids()]
            ),
            f"`assetq run --concurrency 1`, whole command ({shape.threads} inference threads)": whole_run_rss,
            f"assetq run pool ({shape.processes} processes x 1 thread)": _peak(pool.runtime.pids),
            f"assetq run pool (1 process, {shape.threads} inference threads, ASSETQ_DETAIL_SIDE={SCALED_SIDE})": _peak(
                scaled.runtime.pids
            ),
        }
    finally:
        peer.close()
        one.close()
        one_call.close()
        pool.close()
        scaled.close()
        deployment.stop()
    report(run, shape, results, memory, startup_floors(env.model_dir))


# What a whole command cannot avoid before its first image: the interpreter and the imports its work
# needs, and for ``run`` the faces job's two sessions. No code of assetq's runs in these.
_RUN_FLOOR = """
import sys, numpy, PIL.Image, onnxruntime as ort
for path in sys.argv[1:]:
    ort.InferenceSession(path, providers=["CPUExecutionProvider"])
"""
_SUBMIT_FLOOR = "import redis, pydantic"


def startup_floors(model_dir: Path, tries: int = 3) -> dict[str, float]:
    """Seconds, best of ``tries``, of a bare Python process doing only what ``run`` / ``submit`` cannot skip."""
    from benchmarks.env import FACE_PACK

    models = sorted(str(p) for p in (model_dir / "facial-recognition" / FACE_PACK).glob("*/model.onnx"))

    def best(args: list[str]) -> float:
        times = []
        for _ in range(tries):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, *args], check=True)
            times.append(time.perf_counter() - t0)
        return min(times)

    return {"run": best(["-c", _RUN_FLOOR, *models]), "submit": best(["-c", _SUBMIT_FLOOR])}


def _peak(pids: list[int]) -> float:
    """Peak RSS of a configuration: its processes' peaks, summed (MiB)."""
    return float(sum(peak_rss_mb(pid) for pid in pids))


def _agreement(peer_out: list[Any], fast_out: list[dict[str, Any]]) -> tuple[str, float]:
    from benchmarks.agreement import compare

    agreement = compare(peer_out, fast_out)
    return agreement.summary(), agreement.face_cosine_min


def _session_ms(
    settings: Any, build: Any, inprocess_cls: Any, assets: list[dict[str, Any]], tasks: dict[str, Any]
) -> float:
    """The session.run time per image over the set of a process at ``settings`` (wall time inside onnxruntime)."""
    from benchmarks.roofline import SessionRecorder

    recorder = SessionRecorder()
    single = inprocess_cls(settings, build(settings, recorder))
    try:
        single.run(assets[:16], tasks)
        recorder.reset()
        single.run(assets, tasks)
        seconds = sum(log.seconds for log in recorder.logs.values())
    finally:
        single.close()
    return 1000 * seconds / len(assets)


def _side_by_side_ms(settings: Any, photos: list[Path], tasks: dict[str, Any], threads: int, images: int) -> float:
    """Per image: the recommendation's own session calls over ``photos``, replayed on ``threads`` threads at once."""
    from benchmarks.inprocess import InProcess, build_recorded_runtime
    from benchmarks.replay import CallRecorder, replay

    recorder = CallRecorder()
    runtime = InProcess(settings, build_recorded_runtime(settings, recorder))
    try:
        runtime.run(_assets(photos, "side-warm"), tasks)
        recorder.keeping = True
        runtime.run(_assets(photos, "side"), tasks)
        recorder.keeping = False
        repeats = max(1, images // len(photos))
        return 1000 * replay(recorder.calls, threads, repeats) / (repeats * len(photos))
    finally:
        runtime.close()


def decode_cpu_ms(paths: list[Path], tasks: dict[str, Any], model_dir: Path, detail_side: int | None = None) -> float:
    """CPU ms per image of the pipeline's decode of ``paths`` (at the side the job keeps), one thread, alone.

    ``detail_side`` overrides ``ASSETQ_DETAIL_SIDE`` (0, the default: full size, what a whole-image decode costs).
    """
    from worker.models.base import RuntimeOptions
    from worker.models.cache import ModelCache
    from worker.pipeline.image import decode_image
    from worker.pipeline.run import Limits, decode_min_side, plan_for

    limits = Limits() if detail_side is None else Limits(detail_side=detail_side)
    min_side = decode_min_side(plan_for(tasks, ModelCache(model_dir, RuntimeOptions())), limits, model_dir)
    datas = [p.read_bytes() for p in paths]
    decode_image(datas[0], limits.max_pixels, min_side)  # warm
    t0 = time.thread_time()
    for data in datas * 2:
        decode_image(data, limits.max_pixels, min_side)
    return 1000 * (time.thread_time() - t0) / (2 * len(datas))
