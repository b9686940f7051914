"""OpenCLIP's image preprocessing, reproduced with Pillow and numpy.

An OpenCLIP pack describes its preprocessing in ``visual/preprocess_cfg.json``
(``size``, ``mean``, ``std``, ``interpolation``, ``resize_mode``, ``fill_color``)
and, for older packs, only in the pack's ``config.json``
(``model_cfg.vision_cfg.image_size``) -- then OpenAI's CLIP values apply.

The three resize modes follow OpenCLIP's ``image_transform`` (torchvision on
PIL images) step for step, because embeddings move measurably when a crop is
one pixel off or the resampling filter differs:

* ``shortest`` (default): short side to ``size`` with the long side
  ``int(size * long / short)`` (truncated), then a centre crop whose offset is
  ``round((side - size) / 2)`` (Python's round half to even);
* ``longest``: long side to ``size`` (each side ``round(side / ratio)``), then
  centre padding with ``fill_color``;
* ``squash``: straight to ``size`` x ``size``.

Resampling is Pillow's (bicubic by default), which is what torchvision calls
for PIL images. Pixels become float32 ``/ 255``, then ``(x - mean) / std``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from contract.names import ModelType

# OpenAI CLIP's normalisation, OpenCLIP's default when a pack does not say.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

PREPROCESS_CFG_JSON = "preprocess_cfg.json"
CONFIG_JSON = "config.json"

_RESAMPLING = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "random": Image.Resampling.BICUBIC,  # OpenCLIP trains with random filters and infers with bicubic
}
RESIZE_MODES = ("shortest", "longest", "squash")


@dataclass(frozen=True)
class PreprocessConfig:
    size: tuple[int, int]  # (height, width) of the model input
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0

    def __post_init__(self) -> None:
        if self.interpolation not in _RESAMPLING:
            raise ValueError(f"unsupported interpolation {self.interpolation!r}; known: {', '.join(_RESAMPLING)}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"unsupported resize_mode {self.resize_mode!r}; known: {', '.join(RESIZE_MODES)}")
        if min(self.size) <= 0:
            raise ValueError(f"image size must be positive, got {self.size}")

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> PreprocessConfig:
        return cls(
            size=_size_pair(cfg["size"]),
            mean=_triple(cfg.get("mean", OPENAI_CLIP_MEAN)),
            std=_triple(cfg.get("std", OPENAI_CLIP_STD)),
            interpolation=str(cfg.get("interpolation") or "bicubic").lower(),
            resize_mode=str(cfg.get("resize_mode") or "shortest").lower(),
            fill_color=int(cfg.get("fill_color") or 0),
        )

    @classmethod
    def from_pack(cls, pack_dir: Path) -> PreprocessConfig:
        """Read ``visual/preprocess_cfg.json``, else fall back to the image size in ``config.json``."""
        cfg_path = pack_dir / ModelType.VISUAL / PREPROCESS_CFG_JSON
        if cfg_path.is_file():
            return cls.from_dict(json.loads(cfg_path.read_text(encoding="utf-8")))
        model_cfg = read_model_config(pack_dir)
        vision = model_cfg.get("vision_cfg") or {}
        if "image_size" not in vision:
            raise FileNotFoundError(f"{cfg_path} not found and {pack_dir / CONFIG_JSON} has no vision_cfg.image_size")
        return cls(size=_size_pair(vision["image_size"]))


def read_model_config(pack_dir: Path) -> dict[str, Any]:
    """The pack's OpenCLIP model config (``embed_dim``, ``vision_cfg``, ``text_cfg``).

    Immich writes it at the pack root; some exports nest it under ``model_cfg``.
    """
    path = pack_dir / CONFIG_JSON
    if not path.is_file():
        return {}
    cfg: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    nested = cfg.get("model_cfg")
    return nested if isinstance(nested, dict) else cfg


def _size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    values = [int(s) for s in size]
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def _triple(values: float | Sequence[float]) -> tuple[float, float, float]:
    if isinstance(values, int | float):
        return (float(values), float(values), float(values))
    a, b, c = (float(v) for v in values)
    return (a, b, c)


def resize_and_crop(pixels: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (size_h, size_w, 3) uint8, resized and centre-cropped (or padded)."""
    image = Image.fromarray(pixels, "RGB")
    target_h, target_w = cfg.size
    resample = _RESAMPLING[cfg.interpolation]
    if cfg.resize_mode == "squash":
        return np.asarray(image.resize((target_w, target_h), resample))
    if cfg.resize_mode == "longest":
        ratio = max(image.height / target_h, image.width / target_w)
        new_w, new_h = round(image.width / ratio), round(image.height / ratio)
        return _centre_crop_or_pad(np.asarray(_resize(image, new_w, new_h, resample)), cfg.size, cfg.fill_color)
    if target_h == target_w:
        short, long = sorted((image.width, image.height))
        new_short, new_long = target_h, int(target_h * long / short)
        new_w, new_h = (new_short, new_long) if image.width <= image.height else (new_long, new_short)
    else:
        # Non-square inputs: OpenCLIP scales the shorter relative side, rounding, with bicubic.
        ratio = min(image.height / target_h, image.width / target_w)
        new_w, new_h = round(image.width / ratio), round(image.height / ratio)
        resample = Image.Resampling.BICUBIC
    return _centre_crop_or_pad(np.asarray(_resize(image, new_w, new_h, resample)), cfg.size, cfg.fill_color)


def _resize(image: Image.Image, width: int, height: int, resample: Image.Resampling) -> Image.Image:
    if image.size == (width, height):
        return image  # torchvision leaves an image of the requested size untouched
    return image.resize((width, height), resample)


def _centre_crop_or_pad(pixels: np.ndarray, size: tuple[int, int], fill: int) -> np.ndarray:
    target_h, target_w = size
    height, width = pixels.shape[:2]
    if target_h > height or target_w > width:
        pad_top = (target_h - height) // 2 if target_h > height else 0
        pad_left = (target_w - width) // 2 if target_w > width else 0
        padded_h, padded_w = max(height, target_h), max(width, target_w)
        canvas = np.full((padded_h, padded_w, 3), fill, dtype=np.uint8)
        canvas[pad_top : pad_top + height, pad_left : pad_left + width] = pixels
        pixels, height, width = canvas, padded_h, padded_w
    top = round((height - target_h) / 2.0)  # Python rounds half to even, as torchvision does
    left = round((width - target_w) / 2.0)
    return pixels[top : top + target_h, left : left + target_w]


def normalise(crop: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) float32, the way ToTensor + Normalize compute it."""
    unit = crop.astype(np.float32) / np.float32(255.0)
    normalised = (unit - np.asarray(cfg.mean, dtype=np.float32)) / np.asarray(cfg.std, dtype=np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))


def preprocess(pixels: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """One RGB image -> the (3, H, W) float32 model input."""
    return normalise(resize_and_crop(pixels, cfg), cfg)


def preprocess_batch(images: Sequence[np.ndarray], cfg: PreprocessConfig) -> np.ndarray:
    """RGB images of any sizes -> one (N, 3, H, W) float32 batch."""
    return normalise_batch([resize_and_crop(pixels, cfg) for pixels in images], cfg)


def normalise_batch(crops: Sequence[np.ndarray], cfg: PreprocessConfig) -> np.ndarray:
    """Crops from ``resize_and_crop`` -> one (N, 3, H, W) float32 batch."""
    batch = np.empty((len(crops), 3, *cfg.size), dtype=np.float32)
    for i, crop in enumerate(crops):
        batch[i] = normalise(crop, cfg)
    return batch
