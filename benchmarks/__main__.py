"""assetq's benchmark harness: ``python -m benchmarks`` (``make bench``).

    .venv/bin/python -m benchmarks                 # the full harness (~9 min on a 2-core machine)
    .venv/bin/python -m benchmarks --quick         # a smaller run (~3 min)
    .venv/bin/python -m benchmarks --sections headline,batching,roofline

One run measures, side by side on the same generated photo set (see
``benchmarks/photos.py``) and the full job (faces + OCR + CLIP + zero-shot):

1. the naive baseline (``benchmarks/naive.py``),
2. assetq in-process (the ``assetq run`` path),
3. assetq distributed (real redis-server + one real worker process + the Producer API),

then the batching gain, the roofline, how cost grows (chunk size, faces per
image, enqueue rate against plain Celery, worker memory over many assets,
model unload) and a short load test. It prints markdown tables as it goes,
a summary, and ends with one machine-readable line::

    ratios: inprocess_vs_naive=X distributed_vs_inprocess=Y batch_gain_kept_pct=Z roofline_pct=W floor_pct=V

Times are wall-clock on whatever else the machine is doing: compare the
ratios of one run (the configurations are interleaved round by round, and
each keeps its best round), not absolute times across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import batching, roofline, scale  # noqa: E402
from benchmarks.agreement import compare  # noqa: E402
from benchmarks.common import Measured, average_timings, load_average, median_time, ratio, table  # noqa: E402
from benchmarks.env import BenchEnv, file_assets, prepare  # noqa: E402
from benchmarks.photos import face_count_photos, photo_set, small_photo, varied_small_photos  # noqa: E402

SECTIONS = ("headline", "variants", "batching", "roofline", "leads", "scale", "enqueue", "memory", "unload", "loadtest")
STEP_COLUMNS = (
    ("decode", "decode"),
    ("facial-recognition.detection", "face det"),
    ("facial-recognition.recognition", "face rec"),
    ("ocr.detection", "text det"),
    ("ocr.recognition", "text rec"),
    ("clip.visual", "CLIP"),
    ("zero-shot.classifier", "zero-shot"),
)
TARGETS = {
    "inprocess_vs_naive": 2.0,
    "distributed_vs_inprocess": 0.9,
    "batch_gain_kept_pct": 90.0,
    "roofline_pct": 50.0,
    "floor_pct": 50.0,
}


@dataclass(frozen=True)
class Sizes:
    """How much of everything a run does (full or --quick)."""

    photos_quick: bool
    repeat: int  # assets = photos x repeat
    rounds: int  # interleaved rounds of the headline configurations
    batching_rounds: int
    chunk_sizes: tuple[int, ...]
    chunk_assets: int
    face_counts: tuple[int, ...]
    face_images: int
    enqueue_jobs: int
    memory_warm: int  # distinct photos run once before the "after warm-up" reading
    memory_assets: int  # then this many more, all distinct and unseen
    load_jobs: int
    load_concurrency: int


FULL = Sizes(False, 2, 3, 5, (1, 4, 16, 64), 64, (0, 1, 10, 50), 8, 10_000, 100, 2_000, 32, 4)
QUICK = Sizes(True, 2, 1, 2, (1, 4, 16), 16, (0, 1, 10, 50), 2, 500, 20, 100, 8, 2)
MEMORY_MAX_SIDE = 480  # small photos: 2,000 of them fit the time budget


@dataclass
class Run:
    """Everything measured, for the summary."""

    env: BenchEnv
    sizes: Sizes
    chunk_size: int
    intra_op_threads: int
    concurrency: int  # worker pool processes (distributed)
    out: list[str] = field(default_factory=list)
    measured: dict[str, Measured] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    recorded_images: int = 0  # images the roofline's session recorder saw

    def say(self, text: str = "") -> None:
        print(text, flush=True)
        self.out.append(text)

    def settings(self, **overrides: Any) -> Any:
        from config.settings import Settings

        base = {
            "model_dir": self.env.model_dir,
            "chunk_size": self.chunk_size,
            "intra_op_threads": self.intra_op_threads,
            "concurrency": self.concurrency,
            "model_ttl_s": 0,
        }
        return Settings(**{**base, **overrides})


def progress(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


# -- headline: naive vs in-process vs distributed ---------------------------------------


def headline(run: Run, photos: list[Path], with_distributed: bool) -> tuple[Any, Any, Any]:
    from benchmarks.distributed import Deployment
    from benchmarks.inprocess import InProcess, build_recorded_runtime
    from benchmarks.naive import NaiveRunner
    from worker.local_processes import ProcessPool
    from worker.pipeline.run import plan_for

    env, sizes = run.env, run.sizes
    tasks = env.tasks()
    assets = file_assets(photos, sizes.repeat)
    paths = [p for _ in range(sizes.repeat) for p in photos]
    # With several processes, chunks of at most an equal share, so that every process has work (as
    # `assetq run` does); the producer of the distributed run is given the same chunk size.
    pooled = run.concurrency > 1
    chunk = min(run.chunk_size, -(-len(assets) // run.concurrency))
    deployment = None
    if with_distributed:
        progress("starting redis-server and one assetq worker")
        deployment = Deployment(
            env.model_dir, [photos[0].parent], chunk, run.intra_op_threads, run.concurrency, env.work / "logs"
        ).start()
    # `recorded`: one process whose sessions are recorded (shapes, time) for the roofline, and whose
    # runtime the batching section uses. With --concurrency > 1 the timed `assetq run` path is a
    # ProcessPool; the recorded process then makes one untimed pass with the same chunks afterwards.
    recorder = roofline.SessionRecorder()
    settings = run.settings()
    recorded_settings = run.settings(chunk_size=chunk)
    recorded = InProcess(recorded_settings, build_recorded_runtime(recorded_settings, recorder))
    progress(f"starting the in-process runtime ({run.concurrency} process(es), models warm)")
    inproc = InProcess(settings, ProcessPool(settings, tasks, run.concurrency)) if pooled else recorded
    for runner in {id(r): r for r in (inproc, recorded)}.values():
        runner.run(assets[: max(2, run.chunk_size)], tasks)
    naive = NaiveRunner(env.model_dir, plan_for(tasks, recorded.runtime.cache))
    naive.warm(photos[0])
    producer = None
    if deployment is not None:
        progress("warming the worker (one untimed batch)")
        producer = deployment.producer()
        deployment.run(producer, file_assets(photos, 1)[: max(2, run.concurrency)], tasks)
        deployment.run(producer, assets, tasks)  # every shape of the set seen once, as in-process above
    inproc.run(assets, tasks)
    recorder.reset()

    walls: dict[str, list[float]] = {"naive": [], "inprocess": [], "distributed": []}
    steps: dict[str, dict[str, float]] = {}
    naive_out: list[Any] = []
    fast_out: list[dict[str, Any]] = []
    for r in range(sizes.rounds):
        progress(f"round {r + 1}/{sizes.rounds}: naive")
        wall, step_ms, naive_out = naive.run(paths)
        _keep_best(walls, steps, "naive", wall, step_ms)
        progress(f"round {r + 1}/{sizes.rounds}: in-process")
        wall, fast_out = inproc.run(assets, tasks)
        _keep_best(walls, steps, "inprocess", wall, average_timings(fast_out))
        if deployment is not None and producer is not None:
            progress(f"round {r + 1}/{sizes.rounds}: distributed")
            wall, dist_out = deployment.run(producer, assets, tasks)
            _keep_best(walls, steps, "distributed", wall, average_timings(dist_out))
    labels = {
        "naive": "1. naive baseline",
        "inprocess": "2. assetq in-process (`assetq run`)",
        "distributed": "3. assetq distributed (Redis + 1 worker)",
    }
    for key, label in labels.items():
        if walls[key]:
            run.measured[key] = Measured(label, len(assets), min(walls[key]), steps[key], walls[key])
    agreement = compare(naive_out[: len(photos)], fast_out[: len(photos)])
    run.ratios["inprocess_vs_naive"] = ratio(run.measured["inprocess"].images_per_s, run.measured["naive"].images_per_s)
    if "distributed" in run.measured:
        run.ratios["distributed_vs_inprocess"] = ratio(
            run.measured["distributed"].images_per_s, run.measured["inprocess"].images_per_s
        )
    _print_headline(run, agreement.summary())
    naive.models.clear()
    if pooled:
        progress("one recorded pass in one process (roofline)")
        recorded.run(assets, tasks)
        inproc.close()
        run.recorded_images = len(assets)
    else:
        run.recorded_images = len(assets) * sizes.rounds
    return recorded, recorder, deployment


def _keep_best(
    walls: dict[str, list[float]], steps: dict[str, dict[str, float]], key: str, wall: float, step_ms: dict[str, float]
) -> None:
    if not walls[key] or wall < min(walls[key]):
        steps[key] = step_ms
    walls[key].append(wall)


def _print_headline(run: Run, agreement: str) -> None:
    run.say(f"\n## Full job: {run.env.job_name()}\n")
    headers = ["configuration", "images/s", "ms/image", *(label for _, label in STEP_COLUMNS), "ratio"]
    rows = []
    previous: Measured | None = None
    for key in ("naive", "inprocess", "distributed"):
        m = run.measured.get(key)
        if m is None:
            continue
        cells = [m.step_ms.get(step, 0.0) for step, _ in STEP_COLUMNS]
        r = (
            "1.00"
            if previous is None
            else f"{ratio(m.images_per_s, previous.images_per_s):.2f}x vs {previous.name[:2]}"
        )
        rows.append([m.name, m.images_per_s, m.ms_per_image, *cells, r])
        previous = m
    run.say(table(headers, rows))
    run.say(
        "\nPer-step columns are ms per image. naive: each step's own full-size decode is in `decode` "
        "(5 decodes per image). assetq: `decode` runs in background threads, overlapped with inference "
        "(it is not on the critical path); step times are each image's share of the chunk's batched step"
        + (
            f", timed inside each of the {run.concurrency} processes that run side by side (so they add up to "
            f"about {run.concurrency}x ms/image)."
            if run.concurrency > 1
            else "."
        )
    )
    rounds = {k: ", ".join(f"{w:.1f}" for w in m.rounds_s) for k, m in run.measured.items()}
    run.say(f"Rounds (s, best kept): {rounds}")
    run.say(f"Same results? naive vs in-process: {agreement}")


# -- two cores: one session with 2 threads vs two chunks in flight with 1 thread each -------------


def variants(run: Run, photos: list[Path]) -> None:
    """One session with 2 intra-op threads vs two chunks in flight with 1 thread each, and detection batch 1.

    "Two in flight" is two processes, in-process (``assetq run --concurrency 2``)
    and as a worker's pool (threads in one process share the GIL for the Python
    parts of every step). Every configuration gets the same chunks: the photo
    set in 4 chunks, so two processes have work to share.
    """
    from benchmarks.distributed import Deployment
    from benchmarks.inprocess import InProcess, build_recorded_runtime
    from worker.local_processes import ProcessPool

    tasks = run.env.tasks()
    assets = file_assets(photos)
    chunk = max(1, len(assets) // 4)
    configs = {
        "in-process, intra_op_threads=2": {"intra_op_threads": 2},
        "in-process, intra_op_threads=1": {"intra_op_threads": 1},
        "in-process, intra_op_threads=2, detection_batch_size=1": {"intra_op_threads": 2, "detection_batch_size": 1},
    }
    runs: dict[str, Callable[[], float]] = {}
    closers: list[Callable[[], None]] = []
    for label, overrides in configs.items():
        settings = run.settings(chunk_size=chunk, **overrides)
        runner = InProcess(settings, build_recorded_runtime(settings))
        runs[label] = partial(lambda r: r.run(assets, tasks)[0], runner)
        closers.append(runner.close)
    progress("starting 2 in-process processes x 1 thread")
    settings = run.settings(chunk_size=chunk, intra_op_threads=1, concurrency=2)
    pool = InProcess(settings, ProcessPool(settings, tasks, 2))
    label = "in-process, 2 processes x intra_op_threads=1 (assetq run --concurrency 2)"
    runs[label] = lambda: pool.run(assets, tasks)[0]
    closers.append(pool.close)
    progress("starting a worker with 2 pool processes x 1 thread")
    two = Deployment(run.env.model_dir, [photos[0].parent], chunk, 1, 2, run.env.work / "logs").start()
    try:
        producer = two.producer()
        runs["distributed, 2 worker processes x intra_op_threads=1"] = lambda: two.run(producer, assets, tasks)[0]
        for label, fn in runs.items():
            progress(f"variants: warming {label}")
            fn()  # every shape once
        walls: dict[str, list[float]] = {label: [] for label in runs}
        for r in range(run.sizes.rounds):
            for label, fn in runs.items():
                progress(f"variants round {r + 1}: {label}")
                walls[label].append(fn())
    finally:
        two.stop()
        for close in closers:
            close()
    base = min(next(iter(walls.values())))
    run.say(f"\n## CPU settings on 2 cores (full job, {len(assets)} photos in chunks of {chunk})\n")
    rows = [[label, len(assets) / min(w), f"{base / min(w):.2f}"] for label, w in walls.items()]
    run.say(table(["configuration", "images/s", "vs first row"], rows))


# -- batching gain -------------------------------------------------------------------------


def batching_section(run: Run, inproc: Any, photos: list[Path], all_photos: list[Path]) -> None:
    from worker.models.registry import model_class
    from worker.pipeline.image import decode_image
    from worker.pipeline.run import Limits, decode_min_side, plan_for
    from worker.runtime import limits, runtime_options

    env, rounds = run.env, run.sizes.batching_rounds
    settings = run.settings()
    base = limits(settings)
    opts = runtime_options(settings)
    runtime = inproc.runtime

    def decoded(paths: Sequence[Path], tasks: dict[str, Any]) -> list[Any]:
        side = decode_min_side(plan_for(tasks, runtime.cache), base)
        return [decode_image(p.read_bytes(), base.max_pixels, side) for p in paths]

    def gain(
        label: str,
        images: list[Any],
        tasks: dict[str, Any],
        model: tuple[str, str, str],
        batch_field: str,
        count: Callable[[list[dict[str, Any]]], int],
        item_shape: tuple[int, ...] | None = None,
    ) -> batching.BatchGain:
        """``model``'s step through the pipeline one item at a time vs batched, next to the bare session."""
        task, type_, name = model
        # Batched at the raw model's batch size, so both gains are for the same batch.
        one, many, n = batching.pipeline_gain(
            runtime,
            images,
            tasks,
            f"{task}.{type_}",
            count,
            Limits(**{**base.__dict__, batch_field: 1}),
            Limits(**{**base.__dict__, batch_field: batching.RAW_BATCH}),
            rounds,
        )
        path = env.model_dir / task / name / type_ / "model.onnx"
        flush = bool(model_class(task, type_, name, env.model_dir).flush_denormals)
        if item_shape is None:  # CLIP: the input size its pack declares
            height, width = json.loads((path.parent / "preprocess_cfg.json").read_text())["size"]
            item_shape = (3, height, width)
        raw_one, raw_many = batching.raw_gain(path, item_shape, opts, flush, rounds)
        return batching.BatchGain(label, n, one, many, raw_one, raw_many)

    # The photos are repeated (as distinct assets) so each timing covers several batches, not one call.
    faces_photo = next(p for p in all_photos if p.stem.startswith("players"))
    face_tasks = env.tasks(ocr=False, clip=False)
    gains = [
        gain(
            f"face recognition ({faces_photo.stem} x4)",
            decoded([faces_photo] * 4, face_tasks),
            face_tasks,
            ("facial-recognition", "recognition", "buffalo_s"),
            "face_batch_size",
            lambda results: sum(len(r["faces"]) for r in results),
            (3, 112, 112),
        )
    ]
    text_photos = [p for p in all_photos if p.stem.startswith(("page", "eurotext", "players_8"))][:2] or photos[:1]
    text_tasks = env.tasks(faces=False, clip=False)
    text_tasks["ocr"]["recognition"]["options"] = {"minScore": 0.0}  # count every line read
    gains.append(
        gain(
            "text-line recognition (" + ", ".join(p.stem for p in text_photos) + ", x2)",
            decoded(text_photos * 2, text_tasks),
            text_tasks,
            ("ocr", "recognition", "PP-OCRv6_small"),
            "text_batch_size",
            lambda results: sum(len(r["ocr"]) for r in results),
            (3, 48, 320),
        )
    )
    if env.clip:
        clip_tasks = {"clip": {"visual": {"modelName": env.clip}}}
        images = decoded([all_photos[i % len(all_photos)] for i in range(16)], clip_tasks)
        gains.append(
            gain(
                f"CLIP visual ({env.clip}, 16 images)",
                images,
                clip_tasks,
                ("clip", "visual", env.clip),
                "clip_batch_size",
                len,
            )
        )

    run.say("\n## Batching gain: through the pipeline vs the raw model (same run)\n")
    rows = [
        [
            g.step,
            g.items,
            g.pipe_one_ms,
            g.pipe_batched_ms,
            f"{g.pipe_gain:.2f}x",
            g.raw_one_ms,
            g.raw_batched_ms,
            f"{g.raw_gain:.2f}x",
            f"{g.kept_ratio_pct:.0f}%",
            "n/a" if np.isnan(g.kept_saving_pct) else f"{g.kept_saving_pct:.0f}%",
        ]
        for g in gains
    ]
    run.say(
        table(
            [
                "step",
                "items",
                "pipeline ms/item, 1 at a time",
                "batched",
                "gain",
                "raw ms/item B1",
                f"B{batching.RAW_BATCH}",
                "raw gain",
                "kept (gain ratio)",
                "kept (share of saving)",
            ],
            rows,
        )
    )
    run.say(
        f"Pipeline batch sizes: {batching.RAW_BATCH} (faces, text lines and CLIP, as the raw model's); "
        f"sessions as configured (intra_op_threads={run.intra_op_threads or 'default'})."
    )
    run.ratios["batch_gain_kept_pct"] = min(g.kept_ratio_pct for g in gains)
    run.notes.append(
        "batch_gain_kept_pct is the smallest 'kept (gain ratio)' above: "
        + ", ".join(f"{g.step.split(' (')[0]} {g.kept_ratio_pct:.0f}%" for g in gains)
    )


# -- roofline ---------------------------------------------------------------------------------


def roofline_section(run: Run, recorder: roofline.SessionRecorder) -> None:
    from worker.runtime import runtime_options

    progress("measuring the GEMM peak")
    peak = roofline.gemm_peak()
    measured = run.measured["inprocess"]
    images = run.recorded_images
    flop_table = roofline.FlopTable()
    progress("counting FLOPs (symbolic shape inference per input shape)")
    flops = recorder.flops(flop_table)
    rows = []
    total = 0.0
    for path, log in sorted(recorder.logs.items(), key=lambda kv: -kv[1].seconds):
        if not log.calls:
            continue
        per_image = flops[path] / images
        total += per_image
        rows.append(
            [
                _model_label(path, run.env.model_dir),
                per_image / 1e9,
                log.seconds * 1000 / images,
                flops[path] / log.seconds / 1e9 if log.seconds else 0.0,
                sum(log.items.values()) / images,
            ]
        )
    dominant_path, dominant = max(recorder.logs.items(), key=lambda kv: kv[1].seconds)
    shape, batch = dominant.commonest()
    cls_flush = _flush_of(dominant_path, run.env.model_dir)
    progress(f"sustained rate of {_model_label(dominant_path, run.env.model_dir)}")
    # As many call streams as the pipeline runs (its processes), each with the configured threads.
    rate = roofline.sustained_rate(
        dominant_path, shape, batch, runtime_options(run.settings()), cls_flush, run.concurrency, flop_table
    )
    floor_ms = total / (peak.peak * 1e9) * 1000
    run.say("\n## Roofline\n")
    run.say(
        f"float32 GEMM {roofline.GEMM_SIZE}³: numpy {peak.numpy_gflops:.0f} GFLOP/s, onnxruntime MatMul "
        f"{peak.onnxruntime_gflops:.0f} GFLOP/s -> peak {peak.peak:.0f} GFLOP/s (best of 5, all cores)\n"
    )
    run.say(
        table(
            ["model (session)", "GFLOPs/image", "ms/image in 1 process", "GFLOP/s per call stream", "items/image"],
            rows,
        )
    )
    run.say(
        f"\nDominant model: {_model_label(dominant_path, run.env.model_dir)}, input {shape} at batch {batch}, "
        f"one session as in the pipeline: {rate:.0f} GFLOP/s = {100 * rate / peak.peak:.0f}% of peak."
    )
    run.say(
        f"Whole job: {total / 1e9:.1f} GFLOPs per image -> compute floor {floor_ms:.0f} ms/image at peak; "
        f"measured in-process {measured.ms_per_image:.0f} ms/image = {100 * floor_ms / measured.ms_per_image:.0f}% "
        "of the floor's speed."
    )
    run.say(
        "FLOPs count Conv/ConvTranspose/MatMul/Gemm (multiply-add = 2) at the shapes actually run, padding "
        "included; the CLIP text tower is not per image (class texts are embedded once per class set)."
    )
    # Session time of one process, shared by the processes that run side by side.
    session_ms = sum(log.seconds for log in recorder.logs.values()) * 1000 / images / run.concurrency
    ceiling = ratio(run.measured["naive"].ms_per_image, session_ms)
    run.say(
        f"Inside onnxruntime (session.run) in-process: {session_ms:.0f} of {measured.ms_per_image:.0f} ms/image"
        + (f" (one process's session time / {run.concurrency} processes)" if run.concurrency > 1 else "")
        + f"; the rest is decode waits, pre- and post-processing. Ceiling for in-process vs naive with the "
        f"models' arithmetic unchanged (everything outside session.run free): naive ms/image / {session_ms:.0f} "
        f"= {ceiling:.2f}x."
    )
    run.notes.append(f"ceiling for inprocess_vs_naive, everything outside session.run free: {ceiling:.2f}")
    run.ratios["roofline_pct"] = 100 * rate / peak.peak
    run.ratios["floor_pct"] = 100 * floor_ms / measured.ms_per_image


def _model_label(path: Path, model_dir: Path) -> str:
    try:
        rel = path.relative_to(model_dir)
    except ValueError:
        return str(path)
    return "/".join(rel.parts[1:3])  # modelName/type


def _flush_of(path: Path, model_dir: Path) -> bool:
    from worker.models.registry import model_class

    task, name, type_ = path.relative_to(model_dir).parts[:3]
    return bool(model_class(task, type_, name, model_dir).flush_denormals)


# -- leads: decode sizes, subnormals ----------------------------------------------------------


def leads_section(run: Run, all_photos: list[Path]) -> None:
    import onnxruntime as ort

    from worker.models.text_detection import detection_input, network_size
    from worker.pipeline.image import decode_image

    big = next(p for p in all_photos if p.stem.endswith("12mp"))
    data = big.read_bytes()
    rows = []
    for side, label in ((0, "full size"), (1440, "draft, short side >= 1440 (full job)"), (736, "draft, >= 736")):
        t = median_time(partial(decode_image, data, 50_000_000, side), repeats=3, warmup=0)
        img = decode_image(data, 50_000_000, side)
        rows.append([f"decode {big.name}: {label}", f"{img.pixels.shape[1]}x{img.pixels.shape[0]}", t * 1000])
    run.say("\n## Known leads, verified\n")
    run.say(table(["what", "size", "ms"], rows))

    rows = []
    for pack in ("PP-OCRv6_small", "PP-OCRv5_mobile"):
        path = run.env.source_model_dir / "ocr" / pack / "detection" / "model.onnx"
        if not path.is_file():
            continue
        sessions = {}
        for flush in (False, True):
            so = ort.SessionOptions()
            so.log_severity_level = 3  # shape-merge warnings of this graph are harmless
            if run.intra_op_threads:
                so.intra_op_num_threads = run.intra_op_threads
            if flush:
                so.add_session_config_entry("session.set_denormal_as_zero", "1")
            sessions[flush] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        for photo in all_photos[:3]:
            pixels = decode_image(photo.read_bytes(), 50_000_000, 736).pixels
            height, width = pixels.shape[:2]
            x = detection_input(pixels, network_size(height, width, 736))[None]
            feed = {sessions[False].get_inputs()[0].name: x}
            outs = {f: s.run(None, feed)[0] for f, s in sessions.items()}
            times = {f: median_time(partial(s.run, None, feed), repeats=3) for f, s in sessions.items()}
            diff = float(np.abs(outs[True] - outs[False]).max())
            rows.append(
                [
                    f"{pack} det, {photo.stem} {x.shape[2]}x{x.shape[3]}",
                    times[False] * 1000,
                    times[True] * 1000,
                    f"{times[False] / times[True]:.2f}x",
                    f"{diff:.1e}",
                ]
            )
    run.say(
        "\n" + table(["text detection on a real photo", "ms", "ms, subnormals flushed", "speed-up", "max |diff|"], rows)
    )


# -- scale -------------------------------------------------------------------------------------


def scale_section(run: Run) -> None:
    from benchmarks.inprocess import InProcess, build_recorded_runtime

    env, sizes = run.env, run.sizes
    tasks = env.tasks()
    small = small_photo(env.work)
    assets = file_assets([small], sizes.chunk_assets)

    def make(size: int) -> InProcess:
        settings = run.settings(chunk_size=size)
        return InProcess(settings, build_recorded_runtime(settings))

    progress("chunk-size sweep")
    sweep = scale.chunk_size_sweep(make, assets, tasks, sizes.chunk_sizes)
    run.say(f"\n## Images/s vs chunk size (in-process, full job, {len(assets)} x {small.name})\n")
    base = sweep[0][1]
    run.say(
        table(
            ["chunk size", "images/s", "vs chunk 1", *(label for _, label in STEP_COLUMNS[1:])],
            [[s, ips, f"{ips / base:.2f}x", *(st.get(k, 0.0) for k, _ in STEP_COLUMNS[1:])] for s, ips, st in sweep],
        )
    )

    progress("faces-per-image sweep")
    photos = face_count_photos(env.work, sizes.face_counts)
    face_tasks = env.tasks(ocr=False, clip=False)
    runner = make(run.chunk_size)
    try:
        rows = scale.faces_sweep(
            runner, {n: file_assets([p], sizes.face_images) for n, p in photos.items()}, face_tasks
        )
    finally:
        runner.close()
    run.say(f"\n## Images/s vs faces per image (in-process, faces only, {sizes.face_images} images each)\n")
    run.say(table(["faces in the photo", "faces found", "images/s", "recognition ms/face"], rows))


def enqueue_section(run: Run, deployment: Any) -> None:
    progress(f"enqueue rates ({run.sizes.enqueue_jobs} jobs each)")
    uri = small_photo(run.env.work).as_uri()
    celery = scale.celery_noop_rate(deployment, run.sizes.enqueue_jobs)
    producer = scale.producer_enqueue_rate(deployment, run.sizes.enqueue_jobs, uri, run.env.tasks())
    run.say(f"\n## Enqueue rate, same Redis, {run.sizes.enqueue_jobs} jobs each\n")
    run.say(
        table(
            ["client", "jobs", "jobs/s", "vs plain Celery"],
            [[r.what, r.count, r.per_s, f"{r.per_s / celery.per_s:.2f}x"] for r in (celery, producer)],
        )
    )


def memory_section(run: Run, deployment: Any) -> None:
    sizes = run.sizes
    photos = varied_small_photos(run.env.work, sizes.memory_warm + sizes.memory_assets, max_side=MEMORY_MAX_SIDE)
    warm, rest = file_assets(photos[: sizes.memory_warm]), file_assets(photos[sizes.memory_warm :])
    tasks = run.env.tasks(clip=False)
    progress(f"worker memory: {len(warm)} warm-up assets, then {len(rest)} unseen ones")
    scale.memory_growth(deployment, warm, tasks, len(warm))
    before, after, seconds = scale.memory_growth(deployment, rest, tasks, len(rest))
    growth = 100 * (after - before) / before
    run.say(f"\n## Worker memory (RSS of its pool processes) over {len(rest)} assets\n")
    run.say(
        table(
            ["after warm-up (MiB)", f"after {len(rest)} more assets (MiB)", "growth", "assets/s"],
            [[before, after, f"{growth:+.1f}%", len(rest) / seconds]],
        )
    )
    run.say(
        f"Warm-up: the headline runs (full job on the photo set), then {len(warm)} small photos. The "
        f"{len(rest)} assets after it are all distinct and unseen: random sizes (256-{MEMORY_MAX_SIDE} px), "
        "0-3 faces, 0-4 text lines; faces + OCR (the variable-shape steps; CLIP's input shape is fixed)."
    )
    run.ratios["memory_growth_pct"] = growth


def unload_section(run: Run, photos: list[Path]) -> None:
    from benchmarks.unload import measure_in_subprocess

    progress("model unload: RSS in a fresh process")
    r = measure_in_subprocess(run.env.model_dir, run.env.tasks(), photos[:3])
    run.say("\n## Idle model unload (ModelCache TTL eviction, fresh process)\n")
    run.say(
        table(
            ["process start", "models loaded", "after 3 photos", "after TTL unload", "models unloaded"],
            [[r["start_mb"], r["loaded_mb"], r["after_run_mb"], r["unloaded_mb"], len(r["unloaded"])]],
        )
    )
    run.say("RSS in MiB. Unloading drops the sessions, collects garbage and calls glibc's malloc_trim.")


def loadtest_section(run: Run, deployment: Any) -> None:
    from benchmarks.loadtest import run_load

    photos = varied_small_photos(run.env.work, max(run.sizes.load_jobs, 8))
    uris = [p.as_uri() for p in photos]
    producer = deployment.producer()
    progress(f"load test: {run.sizes.load_jobs} one-image jobs, {run.sizes.load_concurrency} clients")
    result = run_load(producer, uris, run.env.tasks(), run.sizes.load_concurrency, run.sizes.load_jobs)
    run.say("\n## Load test (benchmarks/loadtest.py against the same deployment, full job)\n")
    run.say(
        table(
            ["clients", "jobs", "jobs/s", "p50 ms", "p95 ms", "p99 ms", "failed"],
            [
                [
                    run.sizes.load_concurrency,
                    result.jobs,
                    result.jobs_per_s,
                    result.percentile_ms(50),
                    result.percentile_ms(95),
                    result.percentile_ms(99),
                    result.failed_jobs,
                ]
            ],
        )
    )


# -- summary -------------------------------------------------------------------------------


def summary(run: Run) -> str:
    run.say("\n## Summary against the targets\n")
    rows = []
    for key, target in TARGETS.items():
        value = run.ratios.get(key)
        if value is None:
            rows.append([key, "not measured", f">= {target:g}", ""])
            continue
        rows.append(
            [
                key,
                f"{value:.2f}" if target < 10 else f"{value:.0f}",
                f">= {target:g}",
                "met" if value >= target else "NOT met",
            ]
        )
    growth = run.ratios.get("memory_growth_pct")
    if growth is not None:
        rows.append(["memory_growth_pct", f"{growth:+.1f}", "< 5", "met" if growth < 5 else "NOT met"])
    run.say(table(["measure", "value", "target", ""], rows))
    for note in run.notes:
        run.say(f"- {note}")
    digits = {k: 2 if t < 10 else 0 for k, t in TARGETS.items()}
    values = " ".join(f"{k}={run.ratios[k]:.{digits[k]}f}" if k in run.ratios else f"{k}=nan" for k in TARGETS)
    return f"ratios: {values}"


def machine_line() -> str:
    import onnxruntime as ort

    cpu = platform.processor() or platform.machine()
    flags = ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        for line in info.splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = line
                break
    except OSError:
        pass
    avx512 = "yes" if " avx512f" in flags else "no"
    return f"{cpu}, {os.cpu_count()} CPUs, AVX-512 {avx512}; onnxruntime {ort.__version__}, numpy {np.__version__}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from config.settings import Settings

    defaults = Settings()
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a smaller run (3 photos x 2, fewer rounds and assets)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {', '.join(SECTIONS)}")
    p.add_argument("--work", type=Path, default=Path(os.environ.get("ASSETQ_BENCH_DIR", "/tmp/assetq-bench")))
    p.add_argument("--model-dir", type=Path, default=defaults.model_dir, help="where assetq's packs are installed")
    p.add_argument("--wheel-cache", type=Path, default=None)
    p.add_argument("--clip", choices=("auto", "vit-b-32", "tiny", "none"), default="auto")
    p.add_argument("--chunk-size", type=int, default=defaults.chunk_size)
    # The CPU settings the harness's own "CPU settings" table measured best on 2 cores: one process
    # per core with one onnxruntime thread each (up to 4 processes; more cores go to threads).
    cpus = os.cpu_count() or 1
    processes = min(cpus, 4)
    p.add_argument("--concurrency", type=int, default=processes, help="processes (assetq run and worker pool)")
    p.add_argument("--intra-op-threads", type=int, default=max(1, cpus // processes))
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--report", type=Path, default=None, help="also write the tables here (markdown)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sections = set(args.sections.split(","))
    unknown = sections - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections: {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    sizes = QUICK if args.quick else FULL
    if args.rounds:
        sizes = Sizes(**{**sizes.__dict__, "rounds": args.rounds})
    wheel_cache = args.wheel_cache or args.model_dir.parent / "wheels"
    started = time.perf_counter()
    env = prepare(args.work, args.model_dir, wheel_cache, args.clip, log=progress)
    run = Run(env, sizes, args.chunk_size, args.intra_op_threads, args.concurrency)
    listed = photo_set(env.work, wheel_cache, quick=sizes.photos_quick)
    photos = [p for p, _ in listed]
    all_photos = photos if not sizes.photos_quick else [p for p, _ in photo_set(env.work, wheel_cache, quick=False)]
    mp = [s.size[0] * s.size[1] / 1e6 for _, s in listed]
    run.say("# assetq benchmark" + (" (--quick)" if args.quick else ""))
    run.say(f"\nMachine: {machine_line()}. At start: {load_average()}.")
    run.say(
        f"Photos: {len(photos)} JPEGs, {min(mp):.1f}-{max(mp):.0f} MP (mean {np.mean(mp):.1f} MP), x{sizes.repeat} = "
        f"{len(photos) * sizes.repeat} assets; faces and text in most (benchmarks/photos.py)."
    )
    run.say(
        f"assetq settings: concurrency={run.concurrency} processes (assetq run's, and the worker's pool) x "
        f"intra_op_threads={run.intra_op_threads or 'default'}, chunk_size={run.chunk_size} (at most an equal "
        f"share per process); {sizes.rounds} interleaved round(s), best kept."
    )
    need_worker = bool(sections & {"headline", "enqueue", "memory", "loadtest"})
    inproc = recorder = deployment = None
    elapsed: dict[str, float] = {}

    def timed_section(name: str, fn: Callable[..., Any], *args: Any) -> Any:
        t0 = time.perf_counter()
        out = fn(*args)
        elapsed[name] = time.perf_counter() - t0
        progress(f"{name}: {elapsed[name]:.0f} s")
        return out

    try:
        if sections & {"headline", "batching", "roofline"}:
            inproc, recorder, deployment = timed_section(
                "headline", headline, run, photos, need_worker and "headline" in sections
            )
        if deployment is None and need_worker:
            from benchmarks.distributed import Deployment

            deployment = Deployment(
                env.model_dir,
                [photos[0].parent],
                run.chunk_size,
                run.intra_op_threads,
                run.concurrency,
                env.work / "logs",
            ).start()
        if "roofline" in sections and recorder is not None:
            timed_section("roofline", roofline_section, run, recorder)
        if "batching" in sections and inproc is not None:
            timed_section("batching", batching_section, run, inproc, photos, all_photos)
        if inproc is not None:
            inproc.close()
        # The sections on the headline's worker, then it stops before the variants start their own.
        if deployment is not None and "loadtest" in sections:
            timed_section("loadtest", loadtest_section, run, deployment)
        if deployment is not None and "enqueue" in sections:
            timed_section("enqueue", enqueue_section, run, deployment)
        if deployment is not None and "memory" in sections:
            timed_section("memory", memory_section, run, deployment)
    finally:
        if deployment is not None:
            deployment.stop()
    if "variants" in sections:
        timed_section("variants", variants, run, photos)
    if "leads" in sections:
        timed_section("leads", leads_section, run, all_photos)
    if "scale" in sections:
        timed_section("scale", scale_section, run)
    if "unload" in sections:
        timed_section("unload", unload_section, run, photos)
    run.say("\nSection times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in elapsed.items()))
    run.say(f"\nAt end: {load_average()}. Harness wall time {time.perf_counter() - started:.0f} s.")
    line = summary(run)
    if args.report:
        args.report.write_text("\n".join(run.out) + "\n\n" + line + "\n")
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
