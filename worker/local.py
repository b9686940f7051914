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
    in_flight: int | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Process ``assets`` chunk by chunk; decoding of the next chunk overlaps inference.

    ``in_flight`` chunks (default ``settings.concurrency``) run their models at
    once in threads sharing the warm sessions; onnxruntime releases the GIL, so
    on a CPU host two chunks with one intra-op thread each keep both cores
    busy through the Python parts of a step (pre/post-processing) too.

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

        def decode(chunk: Chunk) -> list[Decoded]:
            return list(pipeline.decode_all(chunk, plan or []))

        def run(chunk: Chunk, decoded: list[Decoded]) -> list[dict[str, Any]]:
            if plan is None:
                return pipeline.process(bid, chunk, tasks)
            return pipeline.run_models(bid, chunk, decoded, plan, tasks)

        t0 = time.perf_counter()
        for chunk, out in _pipelined(chunks, decode, run, max(1, in_flight or settings.concurrency)):
            results.extend(out)
            if progress:
                progress(len(chunk))
    finally:
        if runtime is None:
            pipeline.close()
    return results, summarize(results, time.perf_counter() - t0, bid)


Chunk = list[dict[str, Any]]


def _pipelined(
    chunks: list[Chunk],
    decode: Callable[[Chunk], list[Decoded]],
    run: Callable[[Chunk, list[Decoded]], list[dict[str, Any]]],
    in_flight: int,
) -> Iterator[tuple[Chunk, list[dict[str, Any]]]]:
    """Yield (chunk, results) in order, with up to ``in_flight`` chunks running their models at once.

    One thread decodes chunks in order (the pipeline's decode pool is not shared
    between callers), one chunk ahead of the models, so at most
    ``in_flight + 1`` decoded chunks are held in memory.
    """
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    if not chunks:
        return
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="assetq-prefetch") as decoder,
        ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="assetq-chunk") as runner,
    ):
        decoding = decoder.submit(decode, chunks[0])
        running: deque[tuple[Chunk, Future[list[dict[str, Any]]]]] = deque()
        for i, chunk in enumerate(chunks):
            decoded = decoding.result()
            if i + 1 < len(chunks):
                decoding = decoder.submit(decode, chunks[i + 1])
            running.append((chunk, runner.submit(run, chunk, decoded)))
            if len(running) >= in_flight:
                done, future = running.popleft()
                yield done, future.result()
        while running:
            done, future = running.popleft()
            yield done, future.result()
