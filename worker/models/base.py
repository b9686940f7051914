"""The session protocol and the ``InferenceModel`` base every model builds on.

One subclass per model, one module each, made available by one entry in
``worker.models.registry.MODELS``. A subclass declares, on the class, all the
pipeline needs to know about it:

* ``task`` and ``type`` -- where it sits in the job spec's ``tasks`` block and in
  the model directory (``<model_dir>/<task>/<modelName>/<type>/model.onnx``),
* ``depends_on`` / ``runs_after`` -- the ``(task, type)`` steps whose outputs it
  needs / reads when they were requested too,
* ``batch_setting`` -- the Settings field capping the items of one session call,
  and ``batches_images`` -- whether those items are images (or faces, lines found in them),
* ``decode_side`` -- the short side it needs of each decoded image,
* ``result_fields`` -- how its output becomes the asset's result JSON,
* ``run_chunk`` -- the batched work over a whole chunk of decoded images.

Runtimes are swappable: anything that satisfies :class:`Session` can stand in
for an onnxruntime ``InferenceSession`` (tests inject fakes this way).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from config.settings import Settings, batch_size_for, default_of, from_settings, mirrored, threads_of
from contract.names import ModelType, Task
from worker.pipeline.graph import Step, StepKey
from worker.pipeline.image import DecodedImage

log = logging.getLogger(__name__)

__all__ = ["FULL_SIZE", "AssetOutputs", "InferenceModel", "RuntimeOptions", "Session", "StepKey"]

# A decode side meaning "keep the whole image".
FULL_SIZE = 0


class NodeArg(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def shape(self) -> Sequence[int | str | None]: ...


class Session(Protocol):
    """The subset of ``onnxruntime.InferenceSession`` assetq relies on."""

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, np.ndarray]) -> list[Any]: ...
    def get_inputs(self) -> Sequence[NodeArg]: ...
    def get_outputs(self) -> Sequence[NodeArg]: ...
    def get_providers(self) -> list[str]: ...


@dataclass(frozen=True)
class RuntimeOptions:
    """How sessions are built on this worker process: the Settings of the same names, defaults included."""

    device: str = mirrored("device")  # "cpu" or a CUDA ordinal as seen by this process
    intra_op_threads: int = mirrored("intra_op_threads")
    inter_op_threads: int = mirrored("inter_op_threads")
    intra_op_spinning: bool = mirrored("intra_op_spinning")
    denormal_as_zero: bool = mirrored("denormal_as_zero")
    gpu_mem_limit_mb: int = mirrored("gpu_mem_limit_mb")
    cuda_arena_extend_strategy: str = mirrored("cuda_arena_extend_strategy")
    warmup: bool = mirrored("warmup")
    text_cache_entries: int = mirrored("zero_shot_cache_entries")  # zero-shot: class configs whose texts are kept

    @classmethod
    def from_settings(cls, settings: Settings) -> RuntimeOptions:
        """The settings' values, with ``intra_op_threads`` resolved beside the process's inference threads."""
        return from_settings(cls, settings, intra_op_threads=threads_of(settings)[1])


SessionFactory = Callable[[Path, RuntimeOptions, bool], Session]
"""(model path, runtime options, model allows denormal flush) -> session."""


def choose_providers(device: str, available: Sequence[str], opts: RuntimeOptions) -> list[Any]:
    """Execution providers for ``device``, best first, always ending in CPU.

    A worker pinned with ``--device N`` sees only GPU N through
    ``CUDA_VISIBLE_DEVICES``, so inside the process the device is always 0.
    """
    providers: list[Any] = []
    if device != "cpu":
        if "CUDAExecutionProvider" in available:
            cuda: dict[str, Any] = {"device_id": 0, "arena_extend_strategy": opts.cuda_arena_extend_strategy}
            if opts.gpu_mem_limit_mb > 0:
                cuda["gpu_mem_limit"] = opts.gpu_mem_limit_mb * 1024 * 1024
            providers.append(("CUDAExecutionProvider", cuda))
        else:
            log.warning(
                "device %s requested but CUDAExecutionProvider is not available (have %s); using CPU",
                device,
                ", ".join(available),
            )
    providers.append("CPUExecutionProvider")
    return providers


def onnxruntime_session(path: Path, opts: RuntimeOptions, flush_denormals: bool) -> Session:
    """Build a real onnxruntime session for ``path`` (imported lazily: the producer never loads it)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # A memory pattern is planned and kept per distinct input shape, and text lines, text-detector
    # canvases and face batches come in endless shapes: with it on, a worker grew 19% over 2,000
    # unseen photos, with it off 4%, at the same speed (benchmarks: memory section; per-session
    # timings equal within 1%).
    so.enable_mem_pattern = False
    if opts.intra_op_threads > 0:
        so.intra_op_num_threads = opts.intra_op_threads
    if opts.inter_op_threads > 0:
        so.inter_op_num_threads = opts.inter_op_threads
    if not opts.intra_op_spinning:
        # Decode threads run beside inference: spinning intra-op threads would take their cores.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if opts.denormal_as_zero and flush_denormals:
        so.add_session_config_entry("session.set_denormal_as_zero", "1")
    providers = choose_providers(opts.device, ort.get_available_providers(), opts)
    session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
    log.info("loaded %s on %s", path, session.get_providers()[0])
    return session


class ModelNotInstalled(FileNotFoundError):
    """A requested model's files are not in the model directory."""


@dataclass(frozen=True)
class AssetOutputs:
    """What one asset's result document is built from: the chunk's steps and this asset's output of each."""

    steps: Mapping[StepKey, Step]
    outputs: Mapping[StepKey, Any]
    # The tasks the request named: a step can also run because another needs it (clip.visual for zero-shot).
    requested: frozenset[str]


class InferenceModel(ABC):
    """One ONNX session, loaded once, kept warm, run in batches."""

    task: ClassVar[Task]
    type: ClassVar[ModelType]
    depends_on: ClassVar[tuple[StepKey, ...]] = ()
    # Optional dependencies: run after these steps when they are requested too.
    runs_after: ClassVar[tuple[StepKey, ...]] = ()
    # The Settings field (e.g. "face_batch_size") that caps the items of one session call; the
    # pipeline passes its value as ``run_chunk``'s ``max_batch``. None: the step does not batch.
    batch_setting: ClassVar[str | None] = None
    # True: ``batch_setting`` counts images (a detector, CLIP); False: items found in them (faces, lines).
    batches_images: ClassVar[bool] = True
    # Set per model once outputs were checked identical with subnormals flushed.
    flush_denormals: ClassVar[bool] = False

    def __init__(
        self,
        model_name: str,
        model_dir: Path,
        runtime: RuntimeOptions | None = None,
        session_factory: SessionFactory | None = None,
        *,
        max_batch: int | None = None,
    ) -> None:
        self.model_name = model_name
        self.model_dir = Path(model_dir)
        self.runtime = runtime or RuntimeOptions()
        self._session_factory = session_factory or onnxruntime_session
        self._session: Session | None = None
        # Items per session call when ``run_chunk`` is not given ``max_batch`` (the pipeline always gives it).
        self.max_batch = self.default_max_batch() if max_batch is None else max_batch

    # -- declarations the pipeline reads --------------------------------------
    @classmethod
    def default_max_batch(cls) -> int:
        """The default of this model's ``batch_setting`` (1 for a step that does not batch)."""
        # A default of 0 is "auto", by device: a model built outside a pipeline gets the CPU's value.
        return batch_size_for(cls.batch_setting, int(default_of(cls.batch_setting))) if cls.batch_setting else 1

    @classmethod
    def decode_side(cls, options: Mapping[str, Any], detail_side: int) -> int:
        """The short side (decoded pixels) this step needs each image to keep; ``FULL_SIZE``: the whole image.

        A chunk is decoded at the largest side its steps need (JPEGs DCT-scaled down to it).
        ``detail_side`` is the side the pipeline keeps for steps that crop fine detail (faces,
        text lines) out of the image; ``options`` are the step's request options.
        """
        return FULL_SIZE

    def result_fields(self, output: Any, step: Step, asset: AssetOutputs) -> dict[str, Any]:
        """This step's top-level keys of the asset's result document, JSON-ready; {} when it adds none.

        Called for the steps in plan order, later keys replacing earlier ones: a step that
        refines another's output (recognition after detection) rewrites that step's key.
        ``output`` is this step's output for the asset. Must not touch the session.
        """
        return {}

    def batch_limit(self, max_batch: int | None) -> int:
        """Items per session call: this call's ``max_batch``, else the model's own; at least one."""
        return max(1, self.max_batch if max_batch is None else max_batch)

    # -- files ---------------------------------------------------------------
    @property
    def pack_dir(self) -> Path:
        return self.model_dir / self.task / self.model_name

    @property
    def type_dir(self) -> Path:
        return self.pack_dir / self.type

    @property
    def model_path(self) -> Path:
        return self.type_dir / "model.onnx"

    # -- session -------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._session is not None

    @property
    def session(self) -> Session:
        if self._session is None:
            self.load()
        assert self._session is not None
        return self._session

    def load(self) -> None:
        if self._session is not None:
            return
        if not self.model_path.is_file():
            raise ModelNotInstalled(f"{self.task}/{self.model_name}/{self.type}: {self.model_path} not found")
        self._session = self._session_factory(self.model_path, self.runtime, self.flush_denormals)
        self._after_load()
        if self.runtime.warmup:
            self.warmup()

    def unload(self) -> None:
        self._session = None

    def _after_load(self) -> None:  # noqa: B027 -- an optional hook, not an abstract method
        """Hook for subclasses: read input shapes, metadata, side files."""

    @property
    def input_name(self) -> str:
        return self.session.get_inputs()[0].name

    def predict(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run the session on one input batch; returns all outputs."""
        return [np.asarray(o) for o in self.session.run(None, {self.input_name: batch})]

    @abstractmethod
    def warmup(self) -> None:
        """Run one dummy batch so the first real request pays no setup cost."""

    # Set by models whose ``prepare`` does something, so the pipeline skips the rest.
    prepares: ClassVar[bool] = False

    def prepare(self, image: DecodedImage, options: Mapping[str, Any]) -> None:
        """Per-image input work that can run ahead of ``run_chunk``, in a decode thread.

        A model that resizes or crops each image for its input does it here
        through ``image.derive``, so that ``run_chunk`` (which makes the same
        call) finds it done. Must not touch the session: the model may be
        unloaded meanwhile. The default does nothing.
        """
        return None

    @abstractmethod
    def run_chunk(
        self,
        images: Sequence[DecodedImage],
        upstream: Mapping[StepKey, Sequence[Any]],
        options: Mapping[str, Any],
        *,
        max_batch: int | None = None,
    ) -> list[Any]:
        """Process every image of a chunk; returns one output per image, in order.

        ``upstream`` holds the per-image outputs of the steps named in
        ``depends_on``. ``options`` are this request's per-model options
        (e.g. ``minScore``); never store them on ``self``. ``max_batch`` caps
        the items of one session call (see ``batch_limit``).
        """
