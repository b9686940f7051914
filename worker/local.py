"""``assetq run``: the same pipeline in-process over local files, no Redis needed."""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import islice
from typing import TYPE_CHECKING, Any

from config import Settings
from contract.chunking import chunk_sizes, cut
from contract.names import count_statuses
from contract.output import write_outputs
from contract.spec import new_batch_id
from worker.runtime import Engine, build_engine

if TYPE_CHECKING:
    # Imported where a pool is made: multiprocessing and its executor cost a one-process run
    # 20-60 ms of start-up for nothing.
    from worker.local_processes import ProcessPool

__all__ = ["run_local", "summarize", "write_outputs"]

# In one process, chunks run in groups of at least this many images, each group one pass of the
# inference threads: they wait for each other only when a group ends (the last wave of one thread,
# up to an image with 16 faces, while the others idle). At chunks of 16 the faces job on small photos
# lost ~4% to those waits (an ad-hoc A/B, median of 6 rounds of 120 images: 19.4 vs 20.2 img/s).
# The progress bar still moves wave by wave.
RUN_GROUP_IMAGES = 256


def summarize(results: list[dict[str, Any]], wall_s: float, batch_id: str) -> dict[str, Any]:
    counts = count_statuses(results)
    total = len(results)
    return {
        "batch_id": batch_id,
        "total": total,
        **counts,
        "wall_s": round(wall_s, 3),
        "images_per_s": round(total / wall_s, 3) if wall_s > 0 else None,
    }


def run_local(
    assets: list[dict[str, Any]],
    tasks: dict[str, Any],
    settings: Settings,
    progress: Callable[[int], None] | None = None,
    batch_id: str | None = None,
    runtime: Engine | ProcessPool | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Process ``assets`` chunk by chunk; results in asset order, and a summary.

    Models are loaded (and warmed, with ``settings.warmup``) before the clock
    starts, so ``images_per_s`` is the rate of the images alone. In one process,
    decoding runs ahead of inference (``Pipeline.look_ahead`` images), into the
    next chunk too. With ``settings.concurrency`` > 1 the chunks (``contract.chunking``)
    are shared among that many processes (``worker.local_processes``).

    ``runtime``: warm sessions to reuse across calls (the benchmarks do), a
    ``Engine`` for this process or a ``ProcessPool``; it is left open.
    Without it, what is needed is built here and closed.
    """
    bid = batch_id or new_batch_id()
    if runtime is not None and not isinstance(runtime, Engine):
        return _run_in_pool(runtime, assets, tasks, settings, progress, bid)
    processes = min(settings.concurrency, len(assets))
    if runtime is None and processes > 1:
        from worker.local_processes import ProcessPool

        with ProcessPool(settings, tasks, processes) as pool:
            return _run_in_pool(pool, assets, tasks, settings, progress, bid)
    return _run_here(runtime, assets, tasks, settings, progress, bid)


def _run_here(
    runtime: Engine | None,
    assets: list[dict[str, Any]],
    tasks: dict[str, Any],
    settings: Settings,
    progress: Callable[[int], None] | None,
    bid: str,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from contract.spec import SpecError
    from worker.pipeline.graph import GraphError
    from worker.pipeline.run import plan_for

    rt = runtime or build_engine(settings, local_paths_ok=True)
    pipeline = rt.pipeline
    group = max(settings.chunk_size, RUN_GROUP_IMAGES)
    chunks = [assets[i : i + group] for i in range(0, len(assets), group)]
    results: list[dict[str, Any]] = []
    try:
        try:
            plan = plan_for(tasks, rt.cache)
        except (SpecError, GraphError, LookupError):
            plan = None  # process() turns this into per-asset invalid_spec records
        for step in plan or []:
            rt.cache.get(step.task, step.type, step.model_name)
        t0 = time.perf_counter()
        # One decode stream over every chunk: it runs look_ahead images ahead of the models, across
        # chunk boundaries too, so the next chunk is decoding while this one's last wave runs.
        stream = iter(pipeline.decode_all(assets, plan, ahead=pipeline.look_ahead(plan))) if plan else None
        for chunk in chunks:
            if stream is None or plan is None:
                out = pipeline.process(bid, chunk, tasks)
                if progress:
                    progress(len(chunk))
            else:
                out = pipeline.run_models(bid, chunk, islice(stream, len(chunk)), plan, tasks, progress)
            results.extend(out)
    finally:
        if runtime is None:
            pipeline.close()
    return results, summarize(results, time.perf_counter() - t0, bid)


def _run_in_pool(
    pool: ProcessPool,
    assets: list[dict[str, Any]],
    tasks: dict[str, Any],
    settings: Settings,
    progress: Callable[[int], None] | None,
    bid: str,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    chunks = cut(assets, chunk_sizes(len(assets), settings.chunk_size, pool.processes))
    t0 = time.perf_counter()
    done: dict[int, list[dict[str, Any]]] = {}
    for index, out in pool.run(bid, chunks, tasks):
        done[index] = out
        if progress:
            progress(len(chunks[index]))
    results = [r for index in range(len(chunks)) for r in done[index]]
    return results, summarize(results, time.perf_counter() - t0, bid)
