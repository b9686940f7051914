"""Process one chunk of assets: fetch + decode once, run the model graph batched, build results."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any

from config.settings import Settings, batch_size_for, from_settings, mirrored
from contract.spec import SpecError, parse_tasks
from worker.models.base import FULL_SIZE, InferenceModel
from worker.models.cache import ModelCache
from worker.models.registry import model_class
from worker.pipeline import results
from worker.pipeline.deadline_pool import DeadlinePool
from worker.pipeline.errors import AssetError, TransientError
from worker.pipeline.fetch import Fetcher
from worker.pipeline.graph import GraphError, Step, StepKey, order_steps
from worker.pipeline.image import DecodedImage, decode_image

log = logging.getLogger(__name__)

# What fetch+decode gives per asset: the image and its decode time, or why not.
Decoded = tuple[DecodedImage, float] | AssetError | TransientError

# Fetch+decode threads per pipeline: I/O and Pillow release the GIL, and two keep a step fed on the CPU.
DECODE_THREADS = 2


@dataclass(frozen=True)
class Limits:
    """The pipeline's bounds. Mirrored fields are the Settings of those names, defaults included.

    The ``*_batch_size`` fields are what models name as their ``batch_setting``.
    """

    max_pixels: int = mirrored("max_image_pixels")
    max_side: int = mirrored("max_image_side")
    asset_time_limit_s: float = mirrored("asset_time_limit_s")
    face_batch_size: int = mirrored("face_batch_size")
    text_batch_size: int = mirrored("text_batch_size")
    clip_batch_size: int = mirrored("clip_batch_size")
    detection_batch_size: int = mirrored("detection_batch_size")
    device: str = mirrored("device")
    decode_threads: int = DECODE_THREADS
    detail_side: int = mirrored("detail_side")

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return from_settings(cls, settings)

    def batch_size(self, setting: str) -> int:
        """The value of the batch setting a model declares (``InferenceModel.batch_setting``)."""
        if setting not in {f.name for f in fields(self)}:
            raise LookupError(f"a model's batch_setting {setting!r} is not a field of Limits: add it there")
        return batch_size_for(setting, int(getattr(self, setting)), self.device)  # 0: by device


def decode_min_side(plan: Sequence[Step], limits: Limits, model_dir: Path) -> int:
    """The short side a chunk's images must keep for every step in ``plan``; 0 = full size.

    JPEGs are then decoded with DCT scaling (Pillow's draft mode: 1/2, 1/4 or 1/8)
    to the smallest size still at least this large, which halves the decode
    time of a 12 MP photo for the full job and cuts it ~4x for detection or
    CLIP alone. Each step's model class declares its side (``decode_side``);
    a step no class serves gets the full image.
    """
    needs = []
    for step in plan:
        try:
            cls = model_class(step.task, step.type, step.model_name, model_dir)
        except LookupError:
            return FULL_SIZE
        side = cls.decode_side(step.options, limits.detail_side)
        if side == FULL_SIZE:
            return FULL_SIZE
        needs.append(side)
    return max(needs, default=FULL_SIZE)


def plan_for(tasks: dict[str, Any], cache: ModelCache) -> list[Step]:
    """Validate a ``tasks`` block and return its steps in dependency order."""
    parsed = parse_tasks(tasks)
    steps = [Step(t, ty, name, opts) for t, ty, name, opts in parsed.steps()]

    def needs(step: Step) -> tuple[tuple[StepKey, ...], tuple[StepKey, ...]]:
        cls = model_class(step.task, step.type, step.model_name, cache.model_dir)
        return cls.depends_on, cls.runs_after

    return order_steps(steps, needs)


class Pipeline:
    """The in-process pipeline; the Celery task and ``assetq run`` both call ``process``."""

    def __init__(self, cache: ModelCache, fetcher: Fetcher, limits: Limits | None = None) -> None:
        self.cache = cache
        self.fetcher = fetcher
        self.limits = limits or Limits()
        self._pool: DeadlinePool[dict[str, Any], tuple[DecodedImage, float]] = DeadlinePool(
            self.limits.decode_threads, "assetq-decode"
        )

    def close(self) -> None:
        self._pool.shutdown()

    # -- public --------------------------------------------------------------------------
    def process(self, batch_id: str, assets: Sequence[dict[str, Any]], tasks: dict[str, Any]) -> list[dict[str, Any]]:
        """One result per asset, in order. Raises :class:`TransientError` when the whole chunk should retry."""
        try:
            plan = plan_for(tasks, self.cache)
        except (SpecError, GraphError, LookupError) as e:
            # An invalid spec that got past the producer is permanent: skip, never retry.
            return [results.skipped(batch_id, a.get("id", "?"), "invalid_spec", str(e)) for a in assets]
        decoded = list(self.decode_all(assets, plan))
        return self.run_models(batch_id, assets, decoded, plan, tasks)

    def decode_all(self, assets: Sequence[dict[str, Any]], plan: Sequence[Step]) -> Iterator[Decoded]:
        """Fetch and decode in a small thread pool (I/O and Pillow release the GIL).

        Each asset gets ``asset_time_limit_s`` from when its own fetch starts;
        a stuck one becomes a ``timeout`` record without holding up the rest.
        """
        limit = self.limits.asset_time_limit_s
        min_side = decode_min_side(plan, self.limits, self.cache.model_dir)
        preparers = self._preparers(plan)
        fetch_decode = partial(self._fetch_decode, min_side=min_side, preparers=preparers)
        for outcome in self._pool.map(fetch_decode, list(assets), limit):
            if isinstance(outcome, TimeoutError):
                yield AssetError("timeout", f"fetch+decode took longer than {limit}s")
            elif isinstance(outcome, AssetError | TransientError):
                yield outcome
            elif isinstance(outcome, BaseException):
                yield AssetError("corrupt", f"{type(outcome).__name__}: {outcome}")
            else:
                yield outcome

    def _preparers(self, plan: Sequence[Step]) -> list[Callable[[DecodedImage], None]]:
        """``model.prepare`` of each step that has one, with the step's options bound."""
        out: list[Callable[[DecodedImage], None]] = []
        for step in plan:
            model = self.cache.get(step.task, step.type, step.model_name)
            if model.prepares:
                out.append(partial(model.prepare, options=step.options))
        return out

    def _fetch_decode(
        self, asset: dict[str, Any], min_side: int = 0, preparers: Sequence[Callable[[DecodedImage], None]] = ()
    ) -> tuple[DecodedImage, float]:
        t0 = time.perf_counter()
        data = self.fetcher.fetch(asset)
        img = decode_image(data, self.limits.max_pixels, min_side, max_side=self.limits.max_side)
        decode_ms = (time.perf_counter() - t0) * 1000
        for prepare in preparers:
            # Only a head start: whatever fails here is done again, and reported, by the step itself.
            try:
                prepare(img)
            except Exception:
                log.debug("prepare failed; the step will do it", exc_info=True)
        return img, decode_ms

    def run_models(
        self,
        batch_id: str,
        assets: Sequence[dict[str, Any]],
        decoded: Sequence[Decoded],
        plan: Sequence[Step],
        tasks: dict[str, Any],
    ) -> list[dict[str, Any]]:
        transient = [d for d in decoded if isinstance(d, TransientError)]
        if transient:
            raise transient[0]
        good = [i for i, d in enumerate(decoded) if isinstance(d, tuple)]
        images = [d[0] for d in decoded if isinstance(d, tuple)]
        outputs: dict[StepKey, list[Any]] = {}
        step_ms: dict[str, float] = {}
        models: dict[StepKey, InferenceModel] = {}
        # Every model of the plan stays leased until this chunk's results are built:
        # the cache's idle timer never unloads one under a running task.
        with ExitStack() as leases:
            if images:
                for step in plan:
                    models[step.key] = leases.enter_context(self.cache.lease(step.task, step.type, step.model_name))
                for step in plan:
                    model = models[step.key]
                    upstream = {k: outputs[k] for k in (*model.depends_on, *model.runs_after) if k in outputs}
                    t0 = time.perf_counter()
                    outputs[step.key] = self._run_step(model, images, upstream, step.options, self._batch_size(model))
                    # Steps run over the whole chunk; each asset is charged its share.
                    step_ms[step.label] = (time.perf_counter() - t0) * 1000 / len(images)
            requested = frozenset(tasks)
            out: list[dict[str, Any]] = []
            position = {i: n for n, i in enumerate(good)}
            for i, (asset, d) in enumerate(zip(assets, decoded, strict=True)):
                aid = asset.get("id", "?")
                if isinstance(d, AssetError):
                    out.append(results.skipped(batch_id, aid, d.kind, d.message))
                    continue
                assert isinstance(d, tuple)
                image, decode_ms = d
                n = position[i]
                per_asset = {k: v[n] for k, v in outputs.items()}
                timings = {"decode": decode_ms, **step_ms}
                out.append(
                    results.build(batch_id, aid, image.width, image.height, plan, models, per_asset, timings, requested)
                )
        return out

    def _run_step(
        self,
        model: InferenceModel,
        images: list[DecodedImage],
        upstream: dict[Any, Any],
        options: dict[str, Any],
        max_batch: int | None,
    ) -> list[Any]:
        try:
            out = model.run_chunk(images, upstream, options, max_batch=max_batch)
        except MemoryError as e:
            raise TransientError(f"out of memory in {model.task}/{model.type}") from e
        except Exception as e:
            if _is_device_oom(e):
                raise TransientError(f"device out of memory in {model.task}/{model.type}: {e}") from e
            raise
        if len(out) != len(images):
            raise RuntimeError(f"{type(model).__name__} returned {len(out)} outputs for {len(images)} images")
        return out

    def _batch_size(self, model: InferenceModel) -> int | None:
        return None if model.batch_setting is None else self.limits.batch_size(model.batch_setting)


def _is_device_oom(e: Exception) -> bool:
    text = str(e).lower()
    return "out of memory" in text or "failed to allocate memory" in text or "cudaerrormemoryallocation" in text
