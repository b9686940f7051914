"""Section "variants": the CPU settings on 2 cores: one session call at a time on 2 threads, two calls at
once on shared sessions (inference threads), and two chunks in flight.

"Two in flight" is two processes, in-process (``assetq run --concurrency 2``)
and as a worker's pool. Every configuration gets the same chunks: the photo
set in 4 chunks, so two processes have work to share.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from benchmarks.common import Run, State, progress, table
from benchmarks.env import file_assets


def section(run: Run, state: State) -> None:
    """One session with 2 intra-op threads vs two chunks in flight with 1 thread each, and the GPU's batches."""
    from benchmarks.distributed import Deployment
    from benchmarks.inprocess import InProcess, build_recorded_runtime
    from worker.local_processes import ProcessPool

    photos = state.photos
    tasks = run.env.tasks()
    assets = file_assets(photos)
    chunk = max(1, len(assets) // 4)
    configs: dict[str, dict[str, int]] = {
        "in-process, one call at a time, intra_op_threads=2": {"inference_threads": 1, "intra_op_threads": 2},
        "in-process, one call at a time, intra_op_threads=1": {"inference_threads": 1, "intra_op_threads": 1},
        # The defaults on 2 cores: two calls at once on the shared sessions.
        "in-process, 2 inference threads x intra_op_threads=1": {"inference_threads": 2, "intra_op_threads": 1},
        # The GPU's batches on the CPU: what the CPU's auto batches (1 canvas, 8 faces) are measured against.
        "in-process, one call at a time, intra_op_threads=2, detection / face batches 8 / 32": {
            "inference_threads": 1,
            "intra_op_threads": 2,
            "detection_batch_size": 8,
            "face_batch_size": 32,
        },
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
