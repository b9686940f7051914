"""Process one chunk of assets: fetch + decode once, run the model graph batched, build results."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from contract.spec import SpecError, parse_tasks
from worker.models.base import InferenceModel
from worker.models.cache import ModelCache
from worker.models.registry import model_class
from worker.pipeline import results
from worker.pipeline.deadline_pool import DeadlinePool
from worker.pipeline.errors import AssetError, TransientError
from worker.pipeline.fetch import Fetcher
from worker.pipeline.graph import GraphError, Step, order_steps
from worker.pipeline.image import DecodedImage, decode_image

log = logging.getLogger(__name__)

# What fetch+decode gives per asset: the image and its decode time, or why not.
Decoded = tuple[DecodedImage, float] | AssetError | TransientError


@dataclass(frozen=True)
class Limits:
    max_pixels: int = 50_000_000
    max_side: int = 65_535
    asset_time_limit_s: float = 60.0
    face_batch_size: int = 32
    text_batch_size: int = 32
    clip_batch_size: int = 16
    detection_batch_size: int = 8
    decode_threads: int = 2
    # Short side kept when decoding for steps that read fine detail (face and text-line
    # recognition): Immich runs its models on 1440 px previews, so this matches its quality.
    detail_side: int = 1440


# Short side (decoded pixels) the steps that only look at a downscaled whole image need.
# Face detectors letterbox to 640 and CLIP crops 224 (448 leaves room for 336/384 px exports).
FACE_DETECTION_SIDE = 640
CLIP_SIDE = 448
TEXT_DETECTION_SIDE = 736  # PP-OCR's default maxResolution


def decode_min_side(plan: Sequence[Step], limits: Limits) -> int:
    """The short side a chunk's images must keep for every step in ``plan``; 0 = full size.

    JPEGs are then decoded with DCT scaling (Pillow's draft mode: 1/2, 1/4 or 1/8)
    to the smallest size still at least this large, which halves the decode
    time of a 12 MP photo for the full job and cuts it ~4x for detection or
    CLIP alone. A step this table does not know gets the full image.
    """
    needs = []
    for step in plan:
        if step.type in ("recognition", "classification") and step.task in ("facial-recognition", "ocr"):
            needs.append(limits.detail_side)
        elif step.key == ("facial-recognition", "detection"):
            needs.append(int(step.options.get("inputSize", FACE_DETECTION_SIDE)))
        elif step.key == ("ocr", "detection"):
            needs.append(int(step.options.get("maxResolution", TEXT_DETECTION_SIDE)))
        elif step.task in ("clip", "zero-shot"):
            needs.append(CLIP_SIDE)
        else:
            return 0
    return max(needs, default=0)


def plan_for(tasks: dict[str, Any], cache: ModelCache) -> list[Step]:
    """Validate a ``tasks`` block and return its steps in dependency order."""
    parsed = parse_tasks(tasks)
    steps = [Step(t, ty, name, opts) for t, ty, name, opts in parsed.steps()]

    def needs(step: Step) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
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
        min_side = decode_min_side(plan, self.limits)
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
        outputs: dict[tuple[str, str], list[Any]] = {}
        step_ms: dict[str, float] = {}
        if images:
            for step in plan:
                model = self.cache.get(step.task, step.type, step.model_name)
                upstream = {k: outputs[k] for k in (*model.depends_on, *model.runs_after) if k in outputs}
                options = {**step.options, "_maxBatch": self._batch_size(model)}
                t0 = time.perf_counter()
                outputs[step.key] = self._run_step(model, images, upstream, options)
                # Steps run over the whole chunk; each asset is charged its share.
                step_ms[step.label] = (time.perf_counter() - t0) * 1000 / len(images)
        emit_clip = "clip" in tasks
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
            out.append(results.build(batch_id, aid, image.width, image.height, plan, per_asset, timings, emit_clip))
        return out

    def _run_step(
        self, model: InferenceModel, images: list[DecodedImage], upstream: dict[Any, Any], options: dict[str, Any]
    ) -> list[Any]:
        try:
            out = model.run_chunk(images, upstream, options)
        except MemoryError as e:
            raise TransientError(f"out of memory in {model.task}/{model.type}") from e
        except Exception as e:
            if _is_device_oom(e):
                raise TransientError(f"device out of memory in {model.task}/{model.type}: {e}") from e
            raise
        if len(out) != len(images):
            raise RuntimeError(f"{type(model).__name__} returned {len(out)} outputs for {len(images)} images")
        return out

    def _batch_size(self, model: InferenceModel) -> int:
        lim = self.limits
        if model.type == "detection":
            return lim.detection_batch_size
        if model.task == "facial-recognition":
            return lim.face_batch_size
        if model.task == "ocr":
            return lim.text_batch_size
        return lim.clip_batch_size


def _is_device_oom(e: Exception) -> bool:
    text = str(e).lower()
    return "out of memory" in text or "failed to allocate memory" in text or "cudaerrormemoryallocation" in text
