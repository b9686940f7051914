"""assetq in-process: the ``assetq run`` path (``worker.local.run_local``) with warm sessions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks.replay import CallRecorder
from benchmarks.roofline import SessionRecorder
from config.settings import Settings
from worker.local_processes import ProcessPool
from worker.models.cache import ModelCache
from worker.pipeline.fetch import Fetcher
from worker.pipeline.run import Pipeline
from worker.runtime import Engine, limits, runtime_options


def build_recorded_runtime(settings: Settings, recorder: SessionRecorder | CallRecorder | None = None) -> Engine:
    """``worker.runtime.build_engine(settings, local_paths_ok=True)``, with sessions wrapped by ``recorder``.

    The recorder adds one dictionary update per session call (microseconds);
    it is how the roofline knows the shapes and time of every call made.
    """
    factory = recorder.factory if recorder else None
    cache = ModelCache(settings.model_dir, runtime_options(settings), settings.model_ttl_s, session_factory=factory)
    fetcher = Fetcher(None, settings.max_image_bytes)
    return Engine(settings, cache, Pipeline(cache, fetcher, limits(settings)))


@dataclass
class InProcess:
    """``assetq run`` on warm sessions: an ``Engine`` in this process, or a ``ProcessPool`` (``--concurrency``)."""

    settings: Settings
    runtime: Engine | ProcessPool

    def run(self, assets: list[dict[str, Any]], tasks: dict[str, Any]) -> tuple[float, list[dict[str, Any]]]:
        from worker.local import run_local

        results, summary = run_local(assets, tasks, self.settings, runtime=self.runtime)
        bad = [r for r in results if r["status"] != "ok"]
        if bad:
            raise RuntimeError(f"in-process run: {len(bad)} assets not ok, e.g. {bad[0]}")
        return float(summary["wall_s"]), results

    def close(self) -> None:
        if isinstance(self.runtime, ProcessPool):
            self.runtime.close()
        else:
            self.runtime.pipeline.close()
            self.runtime.cache.clear()
