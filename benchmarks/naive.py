"""The naive baseline: what a straightforward implementation of the same job does.

Same model files, same pre- and post-processing code (assetq's model classes),
so the outputs are the same and only the execution strategy differs:

* every model step decodes the file itself, at full size (no draft scaling), with Pillow
  (``decode_image(..., pillow_only=True)``, not assetq's libjpeg-turbo fast path);
* one image at a time, batch size 1: faces and text lines one at a time too;
* onnxruntime sessions with default options (no thread settings, no
  subnormal flush), created once before the clock starts (no cold starts);
* nothing overlaps: read, decode, infer, next.

Zero-shot reuses the CLIP embedding of its image (it reads no pixels), and
the class texts are embedded once before timing, as any implementation would.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from worker.models.base import InferenceModel, RuntimeOptions, Session
from worker.models.registry import model_class
from worker.pipeline.graph import Step
from worker.pipeline.image import DecodedImage, decode_image
from worker.pipeline.run import Limits

# Steps that do not read pixels (they work on another step's output).
NO_PIXELS = {("zero-shot", "classifier")}


def default_session(path: Path, opts: RuntimeOptions, flush_denormals: bool) -> Session:
    """``onnxruntime.InferenceSession(path)`` with its default options, on the CPU."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


class NaiveRunner:
    def __init__(self, model_dir: Path, plan: Sequence[Step]) -> None:
        self.plan = list(plan)
        self.models: dict[tuple[str, str], InferenceModel] = {}
        for step in self.plan:
            cls = model_class(step.task, step.type, step.model_name, model_dir)
            model = cls(step.model_name, model_dir, RuntimeOptions(warmup=True), default_session)
            model.load()
            self.models[step.key] = model

    def warm(self, path: Path) -> None:
        """One untimed image: sessions warm, zero-shot's class texts embedded."""
        self.process(path, {})

    def process(self, path: Path, step_ms: dict[str, float]) -> dict[tuple[str, str], Any]:
        """One image through every step; adds each step's time (decode included) to ``step_ms``."""
        outputs: dict[tuple[str, str], Any] = {}
        image: DecodedImage | None = None
        for step in self.plan:
            model = self.models[step.key]
            t0 = time.perf_counter()
            if step.key not in NO_PIXELS or image is None:
                image = decode_image(path.read_bytes(), Limits().max_pixels, pillow_only=True)
                t_decoded = time.perf_counter()
                step_ms["decode"] = step_ms.get("decode", 0.0) + (t_decoded - t0) * 1000
                t0 = t_decoded
            upstream: Mapping[tuple[str, str], Any] = {
                k: [outputs[k]] for k in (*model.depends_on, *model.runs_after) if k in outputs
            }
            outputs[step.key] = model.run_chunk([image], upstream, step.options, max_batch=1)[0]
            step_ms[step.label] = step_ms.get(step.label, 0.0) + (time.perf_counter() - t0) * 1000
        return outputs

    def run(self, paths: Sequence[Path]) -> tuple[float, dict[str, float], list[dict[tuple[str, str], Any]]]:
        """(wall seconds, per-image step ms, outputs per image) for the photos in order."""
        step_ms: dict[str, float] = {}
        outputs = []
        t0 = time.perf_counter()
        for p in paths:
            outputs.append(self.process(p, step_ms))
        wall = time.perf_counter() - t0
        return wall, {k: v / max(1, len(paths)) for k, v in step_ms.items()}, outputs
