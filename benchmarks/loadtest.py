"""Load test against a running assetq deployment, through the Producer API.

    python -m benchmarks.loadtest --redis-url redis://HOST:6379/0 --images DIR_OR_FILES... \\
        [--concurrency 8] [--jobs 200] [--assets-per-job 1] [--spec tasks.json] [--duration-s 60]

``--concurrency`` clients each loop: submit one job (``--assets-per-job``
images from the list, round robin) and wait for its batch to complete, then
submit the next. Latency is from ``submit`` to the batch being complete, as
the client sees it (status polled every ``--poll-s``). The image paths must be
readable by the workers (``file://`` URIs inside their ``ASSETQ_ALLOWED_ROOTS``,
or ``s3://`` URIs given with ``--uris``). It prints throughput and latency
percentiles, and one machine-readable line ``loadtest: ...``. ``section`` is the
harness's "loadtest" section: a short run against the headline's worker.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Run, State, progress, table

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".avif"}


@dataclass
class LoadResult:
    jobs: int
    assets: int
    failed_jobs: int
    wall_s: float
    latencies_s: list[float]

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def assets_per_s(self) -> float:
        return self.assets / self.wall_s if self.wall_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1000) if self.latencies_s else float("nan")

    def line(self) -> str:
        return (
            f"loadtest: jobs={self.jobs} failed={self.failed_jobs} jobs_per_s={self.jobs_per_s:.2f} "
            f"assets_per_s={self.assets_per_s:.2f} p50_ms={self.percentile_ms(50):.0f} "
            f"p95_ms={self.percentile_ms(95):.0f} p99_ms={self.percentile_ms(99):.0f}"
        )

    def report(self, concurrency: int) -> str:
        return "\n".join(
            [
                f"concurrency {concurrency}: {self.jobs} jobs ({self.assets} assets) in {self.wall_s:.1f} s,"
                f" {self.failed_jobs} with failed/skipped assets",
                f"throughput {self.jobs_per_s:.2f} jobs/s, {self.assets_per_s:.2f} assets/s",
                f"latency submit -> complete: p50 {self.percentile_ms(50):.0f} ms, "
                f"p95 {self.percentile_ms(95):.0f} ms, p99 {self.percentile_ms(99):.0f} ms, "
                f"max {max(self.latencies_s, default=0) * 1000:.0f} ms",
            ]
        )


def run_load(
    producer: Any,
    uris: Sequence[str],
    tasks: dict[str, Any],
    concurrency: int,
    jobs: int,
    assets_per_job: int = 1,
    duration_s: float | None = None,
    poll_s: float = 0.02,
    timeout_s: float = 600.0,
) -> LoadResult:
    """Drive ``producer`` (a ``producer.Producer``) with ``concurrency`` closed-loop clients."""
    if not uris:
        raise ValueError("no images to submit")
    lock = threading.Lock()
    latencies: list[float] = []
    counters = {"next": 0, "jobs": 0, "failed": 0}
    deadline = None if duration_s is None else time.monotonic() + duration_s

    def take() -> int | None:
        with lock:
            if counters["next"] >= jobs or (deadline is not None and time.monotonic() > deadline):
                return None
            counters["next"] += 1
            return counters["next"] - 1

    def client() -> None:
        while (n := take()) is not None:
            assets = [
                {"id": f"j{n}-{i}", "uri": uris[(n * assets_per_job + i) % len(uris)]} for i in range(assets_per_job)
            ]
            t0 = time.perf_counter()
            batch = producer.submit({"assets": assets, "tasks": tasks, "output": {"redis": True}})
            status = producer.wait(batch, timeout_s=timeout_s, poll_s=poll_s)
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
                counters["jobs"] += 1
                counters["failed"] += int(status["ok"] != status["total"])

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, name=f"loadtest-{i}") for i in range(max(1, concurrency))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return LoadResult(counters["jobs"], counters["jobs"] * assets_per_job, counters["failed"], wall, latencies)


def image_uris(paths: Sequence[str]) -> list[str]:
    out: list[str] = []
    for p in paths:
        if "://" in p:
            out.append(p)
            continue
        path = Path(p).expanduser().resolve()
        files = sorted(f for f in path.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
        out.extend(f.as_uri() for f in files)
    return out


def section(run: Run, state: State) -> None:
    """The harness's short load test: one-image jobs from concurrent clients, on the headline's worker."""
    from benchmarks.photos import varied_small_photos

    assert state.deployment is not None, "the load test drives the headline's worker"
    photos = varied_small_photos(run.env.work, max(run.sizes.load_jobs, 8))
    uris = [p.as_uri() for p in photos]
    producer = state.deployment.producer()
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", default=None, help="the deployment's Redis (default: ASSETQ_REDIS_URL)")
    parser.add_argument("--images", nargs="+", required=True, help="image files, directories, or s3:// URIs")
    parser.add_argument("--concurrency", type=int, default=4, help="clients submitting and waiting at once")
    parser.add_argument("--jobs", type=int, default=100, help="jobs in all (each a batch of --assets-per-job)")
    parser.add_argument("--assets-per-job", type=int, default=1)
    parser.add_argument("--duration-s", type=float, default=None, help="stop starting jobs after this long")
    parser.add_argument("--spec", type=Path, default=None, help="a JSON file with a 'tasks' block (or a whole spec)")
    parser.add_argument("--poll-s", type=float, default=0.02, help="status poll interval while waiting")
    args = parser.parse_args(argv)

    from contract.catalog import default_tasks
    from producer import Producer

    producer = Producer(redis_url=args.redis_url)
    if args.spec:
        loaded = json.loads(args.spec.read_text())
        tasks = loaded.get("tasks", loaded)
    else:
        tasks = default_tasks(producer.catalog())
    if not tasks:
        print("no tasks: no worker advertises models and --spec was not given", file=sys.stderr)
        return 2
    uris = image_uris(args.images)
    result = run_load(
        producer, uris, tasks, args.concurrency, args.jobs, args.assets_per_job, args.duration_s, args.poll_s
    )
    print(result.report(args.concurrency))
    print(result.line())
    return 0 if result.failed_jobs == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
