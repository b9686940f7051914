"""Batching gain: a batchable step run through the pipeline batched vs one item at a time,
next to the raw model's own gain (onnxruntime alone, batch 16 vs batch 1) measured in the same run.

"Kept" compares the two speed-ups. Two readings are printed: the ratio of
the speed-ups (``pipeline / raw``) and the share of the raw model's saving
that survives (``(pipeline - 1) / (raw - 1)``), the stricter one when the raw
gain is small. The pipeline is timed on the step itself (the step's own
``timings_ms`` entry), so detection and decode do not dilute it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worker.models.base import RuntimeOptions, onnxruntime_session
from worker.pipeline.image import DecodedImage
from worker.pipeline.run import Limits, Pipeline, plan_for
from worker.runtime import Runtime

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
    runtime: Runtime,
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
