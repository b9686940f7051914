"""Process one chunk of assets: fetch + decode once, run the model graph batched, build results."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, fields
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

from config.settings import Settings, batch_size_for, from_settings, mirrored, process_threads, threads_of
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
from worker.pipeline.lanes import Lanes

log = logging.getLogger(__name__)

# What fetch+decode gives per asset: the image and its decode time, or why not.
Decoded = tuple[DecodedImage, float] | AssetError | TransientError

# Fetch+decode threads per pipeline: I/O and Pillow release the GIL, and two keep a step fed on the CPU.
DECODE_THREADS = 2
# Decoded pixels a wave of a lone inference thread gathers before its steps run (beyond its minimum,
# the batch of images a step takes): a chunk of small photos runs as one wave, 1440 px previews in
# waves of ~6, 12 MP originals decoded at full size in waves of 2. 8 Mpx waves were ~7% slower on
# previews; 16 Mpx ones as fast as a whole chunk, with 30-70 MiB less held per process (and
# 876 -> 487 MiB at ASSETQ_DETAIL_SIDE=0).
WAVE_PIXELS = 16_000_000


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
    inference_threads: int = mirrored("inference_threads")  # 0: by device, see ``lanes``
    intra_op_threads: int = mirrored("intra_op_threads")  # of each session call (0: onnxruntime's); sizes auto batches

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The settings' values, both thread counts resolved for this process (its pool's share of the cores)."""
        lanes, intra_op = threads_of(settings)
        return from_settings(cls, settings, inference_threads=lanes, intra_op_threads=intra_op)

    @property
    def lanes(self) -> int:
        """Inference threads: ``inference_threads``, or for 0 what a lone process on ``device`` gets."""
        return self.inference_threads or process_threads(0, 0, 1, self.device)[0]

    def batch_size(self, setting: str) -> int:
        """The value of the batch setting a model declares (``InferenceModel.batch_setting``)."""
        if setting not in {f.name for f in fields(self)}:
            raise LookupError(f"a model's batch_setting {setting!r} is not a field of Limits: add it there")
        return batch_size_for(setting, int(getattr(self, setting)), self.device, self.intra_op_threads)  # 0: auto


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


@dataclass
class _ChunkState:
    """What a chunk's waves leave behind, filled by every inference thread (distinct keys each)."""

    kept: dict[int, tuple[int, int, float, dict[StepKey, Any]]] = field(default_factory=dict)  # w, h, decode ms
    errors: dict[int, AssetError] = field(default_factory=dict)
    step_s: dict[str, float] = field(default_factory=dict)
    models: dict[StepKey, InferenceModel] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Pipeline:
    """The in-process pipeline; the Celery task and ``assetq run`` both call ``process``."""

    def __init__(self, cache: ModelCache, fetcher: Fetcher, limits: Limits | None = None) -> None:
        self.cache = cache
        self.fetcher = fetcher
        self.limits = limits or Limits()
        self._pool: DeadlinePool[dict[str, Any], tuple[DecodedImage, float]] = DeadlinePool(
            self.limits.decode_threads, "assetq-decode"
        )
        self._lanes = Lanes(self.limits.lanes)

    def close(self) -> None:
        self._pool.shutdown()
        self._lanes.shutdown()

    # -- public --------------------------------------------------------------------------
    def process(self, batch_id: str, assets: Sequence[dict[str, Any]], tasks: dict[str, Any]) -> list[dict[str, Any]]:
        """One result per asset, in order. Raises :class:`TransientError` when the whole chunk should retry."""
        try:
            plan = plan_for(tasks, self.cache)
        except (SpecError, GraphError, LookupError) as e:
            # An invalid spec that got past the producer is permanent: skip, never retry.
            return [results.skipped(batch_id, a.get("id", "?"), "invalid_spec", str(e)) for a in assets]
        decoded = self.decode_all(assets, plan, ahead=self.look_ahead(plan))
        return self.run_models(batch_id, assets, decoded, plan, tasks)

    def wave_size(self, plan: Sequence[Step]) -> int:
        """The fewest images whose steps run together: the largest batch of images a step of ``plan`` takes.

        A chunk runs wave by wave and drops each wave's pixels when its steps are done, so a step
        that batches images (a detector, CLIP) still gets full batches while a chunk holds no more
        decoded images than a wave (this many, or more up to ``WAVE_PIXELS``) and the decode
        threads' look-ahead. On the CPU the faces job's minimum is one image (detection batches
        1), so big images stream through decode, detection and alignment instead of a whole
        chunk's pixels waiting for its models.
        """
        sizes = [
            self._batch_size(model) or 1
            for model in (self.cache.get(s.task, s.type, s.model_name) for s in plan)
            if model.batches_images
        ]
        return max(sizes, default=1)

    def look_ahead(self, plan: Sequence[Step]) -> int:
        """Images decoded ahead of the one a wave starts on: a wave per inference thread.

        A lone inference thread grows its wave past the least size (up to ``WAVE_PIXELS``), so the
        decode threads run one image each further ahead. Several take waves of the least size, and
        an image decodes in a fraction of the time its wave's steps take: a wave ready for each
        thread keeps them fed (the faces job on 12 MP originals, decoded at full size: the same
        speed, 30 MiB less per process than with the decode threads' image more each).
        """
        lanes = self._lanes.count
        return self.wave_size(plan) * lanes + (self.limits.decode_threads if lanes == 1 else 0)

    def decode_all(
        self, assets: Sequence[dict[str, Any]], plan: Sequence[Step], ahead: int | None = None
    ) -> Iterator[Decoded]:
        """Fetch and decode in a small thread pool (I/O and Pillow release the GIL).

        Each asset gets ``asset_time_limit_s`` from when its own fetch starts;
        a stuck one becomes a ``timeout`` record without holding up the rest.
        ``ahead``: at most this many images are decoded past the last one taken (None: all at once).
        """
        limit = self.limits.asset_time_limit_s
        min_side = decode_min_side(plan, self.limits, self.cache.model_dir)
        preparers = self._preparers(plan)
        fetch_decode = partial(self._fetch_decode, min_side=min_side, preparers=preparers)
        for outcome in self._pool.map(fetch_decode, list(assets), limit, ahead):
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
        decoded: Iterable[Decoded],
        plan: Sequence[Step],
        tasks: dict[str, Any],
        progress: Callable[[int], None] | None = None,
    ) -> list[dict[str, Any]]:
        """One result per asset of ``assets``, from ``decoded`` (one per asset, in order; taken lazily).

        The steps run over waves: at least ``wave_size`` images; with one inference thread, more while
        their decoded pixels stay under ``WAVE_PIXELS``. Each wave's pixels are let go before the next
        wave is taken. The process's inference threads (``Limits.lanes``) each take the next wave when
        done with theirs, on the same sessions. A ``TransientError`` among them retries the whole chunk.
        ``progress``: called with each wave's number of assets when its steps are done (one call at a time).
        """
        wave_size = self.wave_size(plan) if plan else 1
        # Several inference threads take waves of the least size: images differ in work (0 to 16
        # faces), and small waves even it out between threads until the chunk's last. Waves grown
        # to the pixel budget left one thread idle at a chunk's end: the faces job ran 10-40% slower.
        most = wave_size if self._lanes.count > 1 else None
        stream = enumerate(decoded)
        chunk = _ChunkState()
        # Every model of the plan stays leased until this chunk's results are built:
        # the cache's idle timer never unloads one under a running task.
        with ExitStack() as leases:

            def lane(stop: threading.Event) -> None:
                while not stop.is_set():
                    with chunk.lock:  # one taker at a time: the decode stream is a generator
                        wave = self._next_wave(stream, wave_size, most)
                        if wave and not chunk.models:
                            for step in plan:
                                lease = self.cache.lease(step.task, step.type, step.model_name)
                                chunk.models[step.key] = leases.enter_context(lease)
                    if not wave:
                        return
                    finished = len(wave)
                    self._run_wave(wave, plan, chunk)
                    del wave  # its pixels go before this thread takes the next wave
                    if progress is not None:
                        with chunk.lock:
                            progress(finished)

            self._lanes.run(lane)
            if len(chunk.kept) + len(chunk.errors) != len(assets):
                raise RuntimeError(f"{len(chunk.kept) + len(chunk.errors)} decode outcomes for {len(assets)} assets")
            # Steps run over whole waves; each asset is charged its share of the chunk's time.
            step_ms = {label: 1000 * s / max(1, len(chunk.kept)) for label, s in chunk.step_s.items()}
            requested = frozenset(tasks)
            out: list[dict[str, Any]] = []
            for i, asset in enumerate(assets):
                aid = asset.get("id", "?")
                if i in chunk.errors:
                    out.append(results.skipped(batch_id, aid, chunk.errors[i].kind, chunk.errors[i].message))
                    continue
                width, height, decode_ms, per_asset = chunk.kept[i]
                timings = {"decode": decode_ms, **step_ms}
                built = results.build(batch_id, aid, width, height, plan, chunk.models, per_asset, timings, requested)
                out.append(built)
        return out

    def _run_wave(self, wave: list[tuple[int, Decoded]], plan: Sequence[Step], chunk: _ChunkState) -> None:
        """Every step of ``plan`` over one wave's images; what it found goes into ``chunk``."""
        images: list[DecodedImage] = []
        positions: list[int] = []
        for i, d in wave:
            if isinstance(d, TransientError):
                raise d
            if isinstance(d, AssetError):
                chunk.errors[i] = d
                continue
            images.append(d[0])
            positions.append(i)
            chunk.kept[i] = (d[0].width, d[0].height, d[1], {})
        del wave
        if not images:
            return
        outputs: dict[StepKey, list[Any]] = {}
        for step in plan:
            model = chunk.models[step.key]
            upstream = {k: outputs[k] for k in (*model.depends_on, *model.runs_after) if k in outputs}
            t0 = time.perf_counter()
            outputs[step.key] = self._run_step(model, images, upstream, step.options, self._batch_size(model))
            with chunk.lock:
                chunk.step_s[step.label] = chunk.step_s.get(step.label, 0.0) + time.perf_counter() - t0
        for n, i in enumerate(positions):
            chunk.kept[i][3].update({k: v[n] for k, v in outputs.items()})
        del images  # this wave's pixels (and the inputs derived from them) go now

    @staticmethod
    def _next_wave(
        stream: Iterator[tuple[int, Decoded]], least: int, most: int | None = None
    ) -> list[tuple[int, Decoded]]:
        """At least ``least`` outcomes (fewer at the end), then more while their pixels stay under
        ``WAVE_PIXELS`` and they are fewer than ``most``."""
        wave = list(islice(stream, least))
        pixels = sum(d[0].pixels.shape[0] * d[0].pixels.shape[1] for _, d in wave if isinstance(d, tuple))
        while wave and pixels < WAVE_PIXELS and (most is None or len(wave) < most):
            more = next(stream, None)
            if more is None:
                break
            wave.append(more)
            if isinstance(more[1], tuple):
                pixels += more[1][0].pixels.shape[0] * more[1][0].pixels.shape[1]
        return wave

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
