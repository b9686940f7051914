"""assetq distributed: a real redis-server, one real ``assetq worker`` process, the Producer API.

The worker is the Celery worker ``assetq worker`` starts (prefork pool), with
the same settings as the in-process run. Its models are preloaded at start
and one untimed warm-up batch runs before any timing, so no cold start is
counted. A run is timed from ``Producer.submit`` to the batch being complete
(its status polled every ``POLL_S``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import Run, rss_mb
from config.settings import Settings
from producer import Producer
from tools.testbed.services import RedisServer, WorkerProcess

POLL_S = 0.02  # status poll while waiting for a batch: small next to a chunk's time
BATCH_TIMEOUT_S = 1800.0


@dataclass
class Deployment:
    model_dir: Path
    photo_roots: list[Path]
    chunk_size: int
    intra_op_threads: int
    concurrency: int
    log_dir: Path
    redis: RedisServer | None = None
    worker: WorkerProcess | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        assert self.redis is not None
        return {
            "ASSETQ_REDIS_URL": self.redis.url,
            "ASSETQ_MODEL_DIR": str(self.model_dir),
            "ASSETQ_ALLOWED_ROOTS": json.dumps([str(r.resolve()) for r in self.photo_roots]),
            "ASSETQ_CHUNK_SIZE": str(self.chunk_size),
            "ASSETQ_INTRA_OP_THREADS": str(self.intra_op_threads),
            "ASSETQ_CONCURRENCY": str(self.concurrency),
            "ASSETQ_MODEL_TTL_S": "0",  # keep every model for the whole run
            **self.extra_env,
        }

    def start(self) -> Deployment:
        self.redis = RedisServer().start()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"worker-{self.redis.port}.log"
        self.worker = WorkerProcess(env=self.env(), concurrency=self.concurrency, log=log).start()
        return self

    def stop(self) -> None:
        if self.worker:
            self.worker.stop()
        if self.redis:
            self.redis.stop()

    def settings(self, **overrides: Any) -> Settings:
        assert self.redis is not None
        return Settings(redis_url=self.redis.url, model_dir=self.model_dir, chunk_size=self.chunk_size, **overrides)

    def producer(self) -> Producer:
        return Producer(settings=self.settings())

    def run(self, producer: Producer, assets: list[dict[str, Any]], tasks: dict[str, Any]) -> tuple[float, list[dict]]:
        """(seconds from submit to complete, results) for one batch."""
        t0 = time.perf_counter()
        batch = producer.submit({"assets": assets, "tasks": tasks, "output": {"redis": True}})
        status = producer.wait(batch, timeout_s=BATCH_TIMEOUT_S, poll_s=POLL_S)
        wall = time.perf_counter() - t0
        if status["ok"] != len(assets):
            raise RuntimeError(f"distributed batch {batch}: {status}; worker log tail:\n{self.worker_log()}")
        return wall, producer.results(batch)

    def worker_pids(self) -> list[int]:
        """The pool processes (where the models run); the main process only consumes and dispatches."""
        assert self.worker is not None
        return self.worker.children()

    def worker_rss_mb(self) -> float:
        return sum(rss_mb(pid) for pid in self.worker_pids())

    def worker_log(self, lines: int = 40) -> str:
        return self.worker.tail(lines) if self.worker else ""


def start_worker(run: Run, photos: list[Path], chunk_size: int) -> Deployment:
    """A redis-server and one worker with the run's settings, allowed to read the photo set's folder."""
    return Deployment(
        run.env.model_dir, [photos[0].parent], chunk_size, run.intra_op_threads, run.concurrency, run.env.work / "logs"
    ).start()
