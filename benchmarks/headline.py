"""Section "headline": the full job on the photo set, naive vs assetq in-process vs assetq distributed.

The three configurations run interleaved round by round, each keeping its
best round. Its in-process runtime is recorded (the shapes and time of every
session call) for the roofline, and is the runtime the batching section
measures; its worker serves the load test, enqueue and memory sections.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import roofline
from benchmarks.agreement import compare
from benchmarks.common import STEP_COLUMNS, Measured, Run, State, average_timings, progress, ratio, table
from benchmarks.env import file_assets

if TYPE_CHECKING:
    from benchmarks.distributed import Deployment
    from benchmarks.inprocess import InProcess


def section(run: Run, state: State) -> None:
    """Time the configurations, print their table; leave the recorded runtime and the worker in ``state``."""
    state.inproc, state.recorder, state.deployment = headline(run, state.photos, state.with_distributed)


def headline(
    run: Run, photos: list[Path], with_distributed: bool
) -> tuple[InProcess, roofline.SessionRecorder, Deployment | None]:
    """(the recorded in-process runner, its recorder, the started worker or None) after the timed rounds."""
    from benchmarks.distributed import start_worker
    from benchmarks.inprocess import InProcess, build_recorded_runtime
    from benchmarks.naive import NaiveRunner
    from worker.local_processes import ProcessPool
    from worker.pipeline.run import plan_for

    env, sizes = run.env, run.sizes
    tasks = env.tasks()
    assets = file_assets(photos, sizes.repeat)
    paths = [p for _ in range(sizes.repeat) for p in photos]
    # With several processes, chunks of at most an equal share (`assetq run` and the producer then cut
    # them smaller towards the end, contract.chunking); the distributed run's producer is given the same.
    pooled = run.concurrency > 1
    chunk = min(run.chunk_size, -(-len(assets) // run.concurrency))
    deployment = None
    if with_distributed:
        progress("starting redis-server and one assetq worker")
        deployment = start_worker(run, photos, chunk)
    # `recorded`: one process whose sessions are recorded (shapes, time) for the roofline, and whose
    # runtime the batching section uses. With --concurrency > 1 the timed `assetq run` path is a
    # ProcessPool; the recorded process then makes one untimed pass with the same chunks afterwards.
    recorder = roofline.SessionRecorder()
    settings = run.settings()
    recorded_settings = run.settings(chunk_size=chunk)
    recorded_runtime = build_recorded_runtime(recorded_settings, recorder)
    recorded = InProcess(recorded_settings, recorded_runtime)
    progress(f"starting the in-process runtime ({run.concurrency} process(es), models warm)")
    inproc = InProcess(settings, ProcessPool(settings, tasks, run.concurrency)) if pooled else recorded
    for runner in {id(r): r for r in (inproc, recorded)}.values():
        runner.run(assets[: max(2, run.chunk_size)], tasks)
    naive = NaiveRunner(env.model_dir, plan_for(tasks, recorded_runtime.cache))
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
