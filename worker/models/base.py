"""The session protocol and the ``InferenceModel`` base every model builds on.

One subclass per model, one module each. A subclass declares:

* ``task`` and ``type`` -- where it sits in the job spec's ``tasks`` block and in
  the model directory (``<model_dir>/<task>/<modelName>/<type>/model.onnx``),
* ``depends_on`` -- the ``(task, type)`` steps whose outputs it needs,
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

from worker.pipeline.image import DecodedImage

log = logging.getLogger(__name__)

StepKey = tuple[str, str]  # (task, type), e.g. ("facial-recognition", "detection")


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
    """How sessions are built on this worker process (derived from Settings)."""

    device: str = "cpu"  # "cpu" or a CUDA ordinal as seen by this process
    intra_op_threads: int = 0
    inter_op_threads: int = 1
    denormal_as_zero: bool = True
    gpu_mem_limit_mb: int = 0
    cuda_arena_extend_strategy: str = "kSameAsRequested"
    warmup: bool = True
    text_cache_entries: int = 16  # zero-shot: class configs whose text embeddings are kept


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
    if opts.denormal_as_zero and flush_denormals:
        so.add_session_config_entry("session.set_denormal_as_zero", "1")
    providers = choose_providers(opts.device, ort.get_available_providers(), opts)
    session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
    log.info("loaded %s on %s", path, session.get_providers()[0])
    return session


class ModelNotInstalled(FileNotFoundError):
    """A requested model's files are not in the model directory."""


class InferenceModel(ABC):
    """One ONNX session, loaded once, kept warm, run in batches."""

    task: ClassVar[str]
    type: ClassVar[str]
    depends_on: ClassVar[tuple[StepKey, ...]] = ()
    # Optional dependencies: run after these steps when they are requested too.
    runs_after: ClassVar[tuple[StepKey, ...]] = ()
    # Set per model once outputs were checked identical with subnormals flushed.
    flush_denormals: ClassVar[bool] = False

    def __init__(
        self,
        model_name: str,
        model_dir: Path,
        runtime: RuntimeOptions | None = None,
        session_factory: SessionFactory | None = None,
    ) -> None:
        self.model_name = model_name
        self.model_dir = Path(model_dir)
        self.runtime = runtime or RuntimeOptions()
        self._session_factory = session_factory or onnxruntime_session
        self._session: Session | None = None

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
    ) -> list[Any]:
        """Process every image of a chunk; returns one output per image, in order.

        ``upstream`` holds the per-image outputs of the steps named in
        ``depends_on``. ``options`` are this request's per-model options
        (e.g. ``minScore``); never store them on ``self``.
        """
