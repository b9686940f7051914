"""``assetq run``: the same pipeline in-process over local files, no Redis needed."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from config import Settings
from producer.output import write_outputs
from producer.spec import new_batch_id
from worker.pipeline.run import Decoded
from worker.runtime import Runtime, build_runtime

__all__ = ["run_local", "summarize", "write_outputs"]


def summarize(results: list[dict[str, Any]], wall_s: float, batch_id: str) -> dict[str, Any]:
    counts = {"ok": 0, "skipped": 0, "failed": 0}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
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
    runtime: Runtime | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Process ``assets`` chunk by chunk; decoding of the next chunk overlaps inference of this one.

    Models are loaded and warmed before the clock starts, so ``images_per_s``
    is the steady rate. ``runtime``: reuse warm sessions across calls (the
    benchmarks do); it is left open. Without it one is built and closed here.
    """
    from producer.spec import SpecError
    from worker.pipeline.graph import GraphError
    from worker.pipeline.run import plan_for

    bid = batch_id or new_batch_id()
    rt = runtime or build_runtime(settings, local_paths_ok=True)
    pipeline = rt.pipeline
    size = max(1, settings.chunk_size)
    chunks = [assets[i : i + size] for i in range(0, len(assets), size)]
    results: list[dict[str, Any]] = []
    try:
        try:
            plan = plan_for(tasks, rt.cache)
        except (SpecError, GraphError, LookupError):
            plan = None  # process() turns this into per-asset invalid_spec records
        for step in plan or []:
            rt.cache.get(step.task, step.type, step.model_name)
        t0 = time.perf_counter()
        for chunk, decoded in _prefetched(chunks, lambda c: list(pipeline.decode_all(c, plan or []))):
            if plan is None:
                out = pipeline.process(bid, chunk, tasks)
            else:
                out = pipeline.run_models(bid, chunk, decoded, plan, tasks)
            results.extend(out)
            if progress:
                progress(len(chunk))
    finally:
        if runtime is None:
            pipeline.close()
    return results, summarize(results, time.perf_counter() - t0, bid)


def _prefetched(
    chunks: list[list[dict[str, Any]]], decode: Callable[[list[dict[str, Any]]], list[Decoded]]
) -> Iterator[tuple[list[dict[str, Any]], list[Decoded]]]:
    """Yield (chunk, decoded) with the next chunk's decode already running in the background."""
    from concurrent.futures import ThreadPoolExecutor

    if not chunks:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="assetq-prefetch") as pool:
        pending = pool.submit(decode, chunks[0])
        for i, chunk in enumerate(chunks):
            decoded = pending.result()
            if i + 1 < len(chunks):
                pending = pool.submit(decode, chunks[i + 1])
            yield chunk, decoded
