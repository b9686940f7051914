"""Build the engine (pipeline + model cache) and sinks a worker process (or ``assetq run``) uses, from Settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from config import Settings
from contract.catalog import scan_model_dir
from contract.spec import Catalog
from worker.models.base import RuntimeOptions
from worker.models.cache import ModelCache
from worker.pipeline.fetch import Fetcher
from worker.pipeline.run import Limits, Pipeline
from worker.sinks import Sink

log = logging.getLogger(__name__)


def runtime_options(settings: Settings) -> RuntimeOptions:
    return RuntimeOptions.from_settings(settings)


def limits(settings: Settings) -> Limits:
    return Limits.from_settings(settings)


def s3_client(settings: Settings) -> Any:
    import boto3
    from botocore.config import Config

    kwargs: dict[str, Any] = {
        "endpoint_url": settings.s3_endpoint_url,
        "region_name": settings.s3_region,
        "config": Config(
            connect_timeout=settings.s3_connect_timeout_s,
            read_timeout=settings.s3_read_timeout_s,
            retries={"max_attempts": 2, "mode": "standard"},
        ),
    }
    if settings.s3_access_key_id and settings.s3_secret_access_key:
        kwargs["aws_access_key_id"] = settings.s3_access_key_id.get_secret_value()
        kwargs["aws_secret_access_key"] = settings.s3_secret_access_key.get_secret_value()
    return boto3.client("s3", **{k: v for k, v in kwargs.items() if v is not None})


@dataclass
class Engine:
    """What runs the models in one process: the pipeline, its warm model cache, and the installed catalog."""

    settings: Settings
    cache: ModelCache
    pipeline: Pipeline

    def catalog(self) -> Catalog:
        return scan_model_dir(self.cache.model_dir)

    def preload(self, tasks: dict[str, Any]) -> None:
        """Load and warm every model the given tasks block uses."""
        from worker.pipeline.run import plan_for

        for step in plan_for(tasks, self.cache):
            self.cache.get(step.task, step.type, step.model_name)


def build_engine(settings: Settings, allowed_roots: list[Path] | None = None, local_paths_ok: bool = False) -> Engine:
    """``local_paths_ok``: any local path may be read (``assetq run`` over paths the user named)."""
    cache = ModelCache(settings.model_dir, runtime_options(settings), ttl_s=settings.model_ttl_s)
    roots: list[Path] | None = None if local_paths_ok else list(allowed_roots or settings.allowed_roots)
    fetcher = Fetcher(roots, settings.max_image_bytes, s3_client=lambda: s3_client(settings))
    return Engine(settings, cache, Pipeline(cache, fetcher, limits(settings)))


def build_sinks(settings: Settings, store: Any | None, result_dir: Path | None = None) -> list[Sink]:
    """Redis (``store``, when given: the record of truth), S3, and the local directory if configured."""
    from worker.sinks import LocalDirSink, RedisSink, S3Sink

    sinks: list[Sink] = []
    if store is not None:
        sinks.append(RedisSink(store))
    sinks.append(S3Sink(partial(s3_client, settings), settings.s3_bucket, settings.s3_prefix))
    if result_dir is not None:
        sinks.append(LocalDirSink(result_dir))
    return sinks
