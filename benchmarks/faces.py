"""Section "faces": the faces job (detection minScore 0.7 -> recognition, buffalo_s) against the peer-style baseline.

Three image sets (``benchmarks/face_sets.py``): previews with a short side of 1440 px, small
photos and 12 MP originals. On each, in the same run and interleaved round by round:

* the peer-style baseline (``benchmarks/peer.py``: Immich ML's design, in a process of its own);
* the naive baseline (``benchmarks/naive.py``), a second reference;
* ``assetq run``'s path, warm (steady state), and one process with 2 threads beside it;
* assetq distributed: a real redis-server and one ``assetq worker`` at its defaults, Producer API;
* the whole commands: ``assetq run <folder>`` and ``assetq submit <folder> --wait`` (the latter
  against the already running worker), start-up, model loading and enqueueing included.

Then the session-time ceiling (what assetq would reach if everything outside ``session.run``
were free), the peak memory of each configuration, and whether the outputs agree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import Run, State, average_timings, progress, ratio, table
from benchmarks.face_sets import FACE_SETS, FaceSet, cycled, distinct_photos, folder
from benchmarks.peer import PeerProcess, peak_rss_mb

MIN_SCORE = 0.7  # the job: Immich's default face detection threshold
STEADY_IMAGES = 120
QUICK_IMAGES = 24


@dataclass
class SetResult:
    """Best-of-rounds seconds per configuration for one image set, and what else was read off it."""

    face_set: FaceSet
    images: int
    best_s: dict[str, float] = field(default_factory=dict)
    whole_images: int = 0
    agreement: str = ""
    min_cosine: float = float("nan")
    session_ms: float = float("nan")  # per image, one process's session.run time / processes
    decode_ms: float = float("nan")  # per image, fetch + decode (+ the detector's letterbox) / processes

    def keep(self, name: str, seconds: float) -> None:
        self.best_s[name] = min(seconds, self.best_s.get(name, float("inf")))

    def per_s(self, name: str) -> float:
        images = self.whole_images if name.startswith("whole") else self.images
        return images / self.best_s[name] if name in self.best_s else float("nan")


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


def _whole(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed ({done.returncode}): {done.stderr[-2000:]}")
    return wall


def section(run: Run, state: State) -> None:
    from benchmarks.distributed import Deployment
    from benchmarks.inprocess import InProcess, build_recorded_runtime
    from benchmarks.naive import NaiveRunner
    from benchmarks.roofline import SessionRecorder
    from config.settings import Settings
    from worker.local_processes import ProcessPool
    from worker.models.base import RuntimeOptions
    from worker.models.cache import ModelCache
    from worker.pipeline.run import plan_for

    env, quick = run.env, run.sizes.photos_quick
    tasks = faces_tasks()
    images = QUICK_IMAGES if quick else STEADY_IMAGES
    rounds = 1 if quick else 2
    work = env.work / "faces"
    spec = work / "faces-spec.json"
    work.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps({"tasks": tasks}))
    sets = {s.name: distinct_photos(env.work, env.wheel_cache, s) for s in FACE_SETS}
    roots = sorted({p.parent for ps in sets.values() for p in ps} | {work})
    assetq = str(Path(sys.executable).with_name("assetq"))
    # What users run: every installed pack in the model directory (the worker loads only what jobs need).
    user_env = {"ASSETQ_MODEL_DIR": str(env.source_model_dir), "ASSETQ_INTRA_OP_THREADS": str(run.intra_op_threads)}

    progress("faces: starting the peer-style service, the naive runner, assetq's pools and a worker")
    peer = PeerProcess(env.model_dir, tasks)
    settings = run.settings(model_dir=env.source_model_dir, chunk_size=16)
    pool = InProcess(settings, ProcessPool(settings, tasks, run.concurrency))
    threads_settings = settings.model_copy(update={"concurrency": 1, "intra_op_threads": run.concurrency})
    threaded = InProcess(threads_settings, ProcessPool(threads_settings, tasks, 1))
    deployment = Deployment(
        env.source_model_dir,
        roots,
        16,
        run.intra_op_threads,
        run.concurrency,
        env.work / "logs",
        # The worker's own default model TTL, not the harness's "keep everything" (it is at its defaults).
        extra_env={"ASSETQ_MODEL_TTL_S": str(Settings.model_fields["model_ttl_s"].default)},
    ).start()
    results: list[SetResult] = []
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
            pool.run(warm, tasks)
            threaded.run(warm, tasks)
            deployment.run(producer, warm, tasks)
            peer_out: list[Any] = []
            fast_out: list[dict[str, Any]] = []
            for r in range(rounds):
                progress(f"faces {face_set.name}: round {r + 1}/{rounds}")
                wall, peer_out, _ = peer.run(paths)
                result.keep("peer", wall)
                result.keep("naive", naive.run(paths)[0])
                wall, fast_out = pool.run(assets, tasks)
                result.keep("inprocess", wall)
                result.keep("threads", threaded.run(assets, tasks)[0])
                result.keep("distributed", deployment.run(producer, _assets(paths, f"d{r}-{face_set.name}"), tasks)[0])
            whole = folder(distinct, face_set.whole_command_images, work / f"whole-{face_set.name}")
            result.whole_images = face_set.whole_command_images
            for r in range(rounds):
                progress(f"faces {face_set.name}: whole commands, round {r + 1}/{rounds}")
                out = work / f"out-{face_set.name}-{r}"
                result.keep(
                    "whole_run",
                    _whole(
                        [
                            assetq,
                            "run",
                            str(whole),
                            "--spec",
                            str(spec),
                            "--out",
                            str(out),
                            "--concurrency",
                            str(run.concurrency),
                        ],
                        user_env,
                    ),
                )
                result.keep(
                    "whole_submit",
                    _whole([assetq, "submit", str(whole), "--spec", str(spec), "--wait"], deployment.env()),
                )
            result.agreement, result.min_cosine = _agreement(peer_out, fast_out)
            result.decode_ms = average_timings(fast_out).get("decode", float("nan")) / run.concurrency
            result.session_ms = _session_ms(run, build_recorded_runtime, SessionRecorder, InProcess, assets, tasks)
            results.append(result)
        assert deployment.worker is not None and deployment.worker.proc is not None
        assert isinstance(pool.runtime, ProcessPool) and isinstance(threaded.runtime, ProcessPool)
        memory = {
            "peer-style baseline (1 process, 2 request threads)": peer.run(sets["previews"][:1])[2],
            f"assetq worker ({run.concurrency} pool processes + main)": _peak(
                [deployment.worker.proc.pid, *deployment.worker_pids()]
            ),
            f"assetq run pool ({run.concurrency} processes x 1 thread)": _peak(pool.runtime.pids),
            f"assetq run pool (1 process x {run.concurrency} threads)": _peak(threaded.runtime.pids),
        }
    finally:
        peer.close()
        pool.close()
        threaded.close()
        deployment.stop()
    _report(run, results, memory)


def _peak(pids: list[int]) -> float:
    """Peak RSS of a configuration: its processes' peaks, summed (MiB)."""
    return float(sum(peak_rss_mb(pid) for pid in pids))


def _agreement(peer_out: list[Any], fast_out: list[dict[str, Any]]) -> tuple[str, float]:
    from benchmarks.agreement import compare

    agreement = compare(peer_out, fast_out)
    return agreement.summary(), agreement.face_cosine_min


def _session_ms(
    run: Run, build: Any, recorder_cls: Any, inprocess_cls: Any, assets: list[dict[str, Any]], tasks: dict[str, Any]
) -> float:
    """One process's session.run time per image over the set, shared by ``run.concurrency`` processes."""
    recorder = recorder_cls()
    settings = run.settings(model_dir=run.env.source_model_dir)
    single = inprocess_cls(settings, build(settings, recorder))
    try:
        single.run(assets[:16], tasks)
        recorder.reset()
        single.run(assets, tasks)
        seconds = sum(log.seconds for log in recorder.logs.values())
    finally:
        single.close()
    return 1000 * seconds / len(assets) / run.concurrency


def _report(run: Run, results: list[SetResult], memory: dict[str, float]) -> None:
    run.say("\n## Faces job against the peer-style baseline\n")
    run.say(
        f"Job: facial-recognition, buffalo_s, detection minScore {MIN_SCORE}. Peer-style baseline: Immich ML's "
        "design (1 process, 2 request threads sharing one session per model at 2 intra-op threads, whole-image "
        f"decode, per image detection then that image's faces as one batch). assetq: {run.concurrency} processes x "
        f"{run.intra_op_threads} thread(s), default chunk size 16 cut to keep every process busy. Images/s, best "
        "of the interleaved rounds; ratios against the peer-style baseline of the same run."
    )
    rows = []
    for r in results:
        peer = r.per_s("peer")
        rows.append(
            [
                r.face_set.label,
                r.images,
                peer,
                f"{r.per_s('naive'):.1f} ({ratio(r.per_s('naive'), peer):.2f}x)",
                f"{r.per_s('inprocess'):.1f} ({ratio(r.per_s('inprocess'), peer):.2f}x)",
                f"{r.per_s('threads'):.1f} ({ratio(r.per_s('threads'), peer):.2f}x)",
                f"{r.per_s('distributed'):.1f} ({ratio(r.per_s('distributed'), peer):.2f}x)",
            ]
        )
    run.say("\nSteady state (warm; the clock runs from the first image to the last result):\n")
    run.say(
        table(
            [
                "image set",
                "images",
                "peer-style",
                "naive",
                "assetq run path",
                "1 process x 2 threads",
                "distributed (submit -> results)",
            ],
            rows,
        )
    )
    rows = []
    for r in results:
        peer = r.per_s("peer")
        rows.append(
            [
                r.face_set.label,
                r.whole_images,
                f"{r.per_s('whole_run'):.1f} ({ratio(r.per_s('whole_run'), peer):.2f}x)",
                f"{r.per_s('whole_submit'):.1f} ({ratio(r.per_s('whole_submit'), peer):.2f}x)",
            ]
        )
    run.say("\nWhole commands (start-up, model loading, enqueueing and waiting included), against the warm peer:\n")
    run.say(table(["image set", "images", "`assetq run --concurrency N`", "`assetq submit --wait` (worker up)"], rows))
    rows = []
    for r in results:
        measured_ms = 1000 / r.per_s("inprocess")
        peer_ms = 1000 / r.per_s("peer")
        rows.append(
            [
                r.face_set.label,
                r.session_ms,
                measured_ms,
                f"{100 * r.session_ms / measured_ms:.0f}%",
                r.decode_ms,
                f"{100 * (r.session_ms + r.decode_ms) / measured_ms:.0f}%",
                peer_ms,
                f"{ratio(peer_ms, r.session_ms):.2f}x",
            ]
        )
    run.say(
        "\nSession-time ceiling: one process's session.run time per image / processes (what assetq would reach "
        "if everything outside session.run were free). Decoding is work no scheduler removes: the next columns "
        "add it (its time in the decode threads, / processes) to show what is left of the ceiling once it is "
        "paid.\n"
    )
    run.say(
        table(
            [
                "image set",
                "ceiling ms/image",
                "assetq run ms/image",
                "of the ceiling",
                "decode ms/image",
                "of ceiling + decode",
                "peer ms/image",
                "most any ratio vs peer can be",
            ],
            rows,
        )
    )
    run.say("\nPeak resident memory (VmHWM, summed over the configuration's processes), after all three sets:\n")
    run.say(table(["configuration", "peak RSS MiB"], [[k, v] for k, v in memory.items()]))
    for r in results:
        run.say(f"- outputs, {r.face_set.label}: assetq vs peer-style: {r.agreement}, min cosine {r.min_cosine:.4f}")
    for r in results:
        figures = [r.per_s(k) for k in ("inprocess", "distributed", "whole_run", "whole_submit")]
        run.ratios[f"faces_vs_peer_{r.face_set.name}"] = min(ratio(f, r.per_s("peer")) for f in figures)
        run.ratios.setdefault("faces_ceiling_pct", 100.0)
        run.ratios["faces_ceiling_pct"] = min(
            run.ratios["faces_ceiling_pct"], 100 * r.session_ms * r.per_s("inprocess") / 1000
        )
    worker = next(v for k, v in memory.items() if k.startswith("assetq worker"))
    run.ratios["faces_memory_headroom"] = ratio(next(iter(memory.values())), worker)
