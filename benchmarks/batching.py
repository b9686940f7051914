"""Section "batching": a batchable step run through the pipeline batched vs one item at a time,
next to the raw model's own gain (onnxruntime alone, batch 16 vs batch 1) measured in the same run.

"Kept" compares the two speed-ups. Two readings are printed: the ratio of
the speed-ups (``pipeline / raw``) and the share of the raw model's saving
that survives (``(pipeline - 1) / (raw - 1)``), the stricter one when the raw
gain is small. The pipeline is timed on the step itself (the step's own
``timings_ms`` entry), so detection and decode do not dilute it.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Run, State, table
from worker.models.base import RuntimeOptions, onnxruntime_session
from worker.models.registry import model_class
from worker.pipeline.image import DecodedImage, decode_image
from worker.pipeline.run import Limits, Pipeline, decode_min_side, plan_for
from worker.runtime import Engine, limits, runtime_options

RAW_BATCH = 16


@dataclass
class BatchGain:
    step: str
    items: int  # faces / lines / images in the measured chunk
    pipe_one_ms: float  # per item, one at a time through the pipeline
    pipe_batched_ms: float  # per item, batched through the pipeline
    raw_one_ms: float  # per item, the session alone at batch 1
    raw_batched_ms: float  # per item, the session alone at batch RAW_BATCH

    @property
    def pipe_gain(self) -> float:
        return self.pipe_one_ms / self.pipe_batched_ms

    @property
    def raw_gain(self) -> float:
        return self.raw_one_ms / self.raw_batched_ms

    @property
    def kept_ratio_pct(self) -> float:
        return 100 * self.pipe_gain / self.raw_gain

    @property
    def kept_saving_pct(self) -> float:
        if self.raw_gain <= 1.0:
            return float("nan")  # nothing to keep
        return 100 * (self.pipe_gain - 1) / (self.raw_gain - 1)


def _alternate(fns: Sequence[Callable[[], float]], rounds: int) -> list[float]:
    """Median of each function's returned value over ``rounds``, the functions interleaved round by round."""
    for fn in fns:
        fn()  # warm: first use of a shape allocates
    values: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            values[i].append(fn())
    return [statistics.median(v) for v in values]


def raw_gain(
    model_path: Path, item_shape: tuple[int, ...], opts: RuntimeOptions, flush: bool, rounds: int
) -> tuple[float, float]:
    """(ms per item at batch 1, ms per item at batch RAW_BATCH) for the bare session, on random input."""
    session = onnxruntime_session(model_path, opts, flush)
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(0)
    one = rng.random((1, *item_shape), dtype=np.float32)
    many = rng.random((RAW_BATCH, *item_shape), dtype=np.float32)

    def per_item(batch: np.ndarray, calls: int) -> Callable[[], float]:
        def run() -> float:
            t0 = time.perf_counter()
            for _ in range(calls):
                session.run(None, {name: batch})
            return (time.perf_counter() - t0) * 1000 / (calls * len(batch))

        return run

    # Same number of items either way: RAW_BATCH calls of one vs one call of RAW_BATCH.
    return tuple(_alternate([per_item(one, RAW_BATCH), per_item(many, 1)], rounds))  # type: ignore[return-value]


def pipeline_gain(
    runtime: Engine,
    images: list[DecodedImage],
    tasks: dict[str, Any],
    step_label: str,
    count_items: Callable[[list[dict[str, Any]]], int],
    one_limits: Limits,
    batched_limits: Limits,
    rounds: int,
) -> tuple[float, float, int]:
    """(ms per item one at a time, ms per item batched, items) for ``step_label`` of ``tasks`` on ``images``."""
    plan = plan_for(tasks, runtime.cache)
    assets = [{"id": f"img{i}"} for i in range(len(images))]
    decoded = [(img, 0.0) for img in images]
    pipes = [Pipeline(runtime.cache, runtime.pipeline.fetcher, lim) for lim in (one_limits, batched_limits)]
    items = [0]

    def run(pipe: Pipeline) -> Callable[[], float]:
        def go() -> float:
            results = pipe.run_models("bench", assets, decoded, plan, tasks)
            items[0] = count_items(results)
            step_ms = sum(r["timings_ms"][step_label] for r in results)  # shares of the chunk's step time
            return step_ms / max(1, items[0])

        return go

    try:
        one, batched = _alternate([run(pipes[0]), run(pipes[1])], rounds)
    finally:
        for p in pipes:
            p.close()
    return one, batched, items[0]


def section(run: Run, state: State) -> None:
    """The gain of face recognition, text-line recognition and CLIP, on the headline's recorded runtime."""
    assert state.inproc is not None, "the batching section measures the headline's runtime"
    runtime = state.inproc.runtime
    assert isinstance(runtime, Engine)  # the recorded runner is one process, never a pool
    photos, all_photos = state.photos, state.all_photos
    env, rounds = run.env, run.sizes.batching_rounds
    settings = run.settings()
    base = limits(settings)
    opts = runtime_options(settings)

    def decoded(paths: Sequence[Path], tasks: dict[str, Any]) -> list[Any]:
        side = decode_min_side(plan_for(tasks, runtime.cache), base, runtime.cache.model_dir)
        return [decode_image(p.read_bytes(), base.max_pixels, side) for p in paths]

    def gain(
        label: str,
        images: list[Any],
        tasks: dict[str, Any],
        model: tuple[str, str, str],
        batch_field: str,
        count: Callable[[list[dict[str, Any]]], int],
        item_shape: tuple[int, ...] | None = None,
    ) -> BatchGain:
        """``model``'s step through the pipeline one item at a time vs batched, next to the bare session."""
        task, type_, name = model
        # Batched at the raw model's batch size, so both gains are for the same batch.
        one, many, n = pipeline_gain(
            runtime,
            images,
            tasks,
            f"{task}.{type_}",
            count,
            Limits(**{**base.__dict__, batch_field: 1}),
            Limits(**{**base.__dict__, batch_field: RAW_BATCH}),
            rounds,
        )
        path = env.model_dir / task / name / type_ / "model.onnx"
        flush = bool(model_class(task, type_, name, env.model_dir).flush_denormals)
        if item_shape is None:  # CLIP: the input size its pack declares
            height, width = json.loads((path.parent / "preprocess_cfg.json").read_text())["size"]
            item_shape = (3, height, width)
        raw_one, raw_many = raw_gain(path, item_shape, opts, flush, rounds)
        return BatchGain(label, n, one, many, raw_one, raw_many)

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
    _print_gains(run, gains)


def _print_gains(run: Run, gains: list[BatchGain]) -> None:
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
                f"B{RAW_BATCH}",
                "raw gain",
                "kept (gain ratio)",
                "kept (share of saving)",
            ],
            rows,
        )
    )
    run.say(
        f"Pipeline batch sizes: {RAW_BATCH} (faces, text lines and CLIP, as the raw model's); "
        f"sessions as configured (intra_op_threads={run.intra_op_threads or 'default'})."
    )
    run.ratios["batch_gain_kept_pct"] = min(g.kept_ratio_pct for g in gains)
    run.notes.append(
        "batch_gain_kept_pct is the smallest 'kept (gain ratio)' above: "
        + ", ".join(f"{g.step.split(' (')[0]} {g.kept_ratio_pct:.0f}%" for g in gains)
    )
