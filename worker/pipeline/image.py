"""The decoded image every model reads, and the one place images are decoded."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from worker.pipeline.errors import AssetError

# Never let Pillow fill a truncated file with grey: a truncated image is skipped.
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image, EXIF orientation applied.

    ``pixels`` may be smaller than the original (decoded with JPEG draft
    scaling); ``width``/``height`` are always the original, oriented size, and
    ``scale`` maps pixel coordinates back to it. Models report coordinates in
    original-image pixels by multiplying by ``scale``.
    """

    pixels: np.ndarray  # (H, W, 3) uint8, RGB, C-contiguous
    width: int
    height: int

    @property
    def scale(self) -> float:
        return self.width / self.pixels.shape[1]

    @property
    def bgr(self) -> np.ndarray:
        return np.ascontiguousarray(self.pixels[:, :, ::-1])

    @classmethod
    def from_array(cls, rgb: np.ndarray) -> DecodedImage:
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        return cls(pixels=rgb, width=rgb.shape[1], height=rgb.shape[0])


def decode_image(data: bytes, max_pixels: int, min_side: int = 0) -> DecodedImage:
    """Decode ``data`` by content (never by file name) into an RGB ``DecodedImage``.

    ``min_side``: when > 0, a JPEG may be decoded with DCT scaling (draft mode)
    as long as its shorter side stays >= ``min_side``; coordinates still refer
    to the original size through ``DecodedImage.scale``.

    Raises :class:`AssetError` with a specific ``kind`` for anything that is
    not a decodable image within the limits.
    """
    if not data:
        raise AssetError("empty", "the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow warns, then errors, past MAX_IMAGE_PIXELS; we check ourselves.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width <= 0 or height <= 0:
                raise AssetError("invalid_dimensions", f"image declares {width}x{height} pixels")
            if width * height > max_pixels:
                raise AssetError(
                    "too_large", f"image has {width}x{height} = {width * height} pixels, limit is {max_pixels}"
                )
            orientation = _exif_orientation(img)
            if min_side > 0 and img.format == "JPEG":
                short = min(width, height)
                if short >= 2 * min_side:
                    img.draft("RGB", (max(1, width * min_side // short), max(1, height * min_side // short)))
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)  # animated GIF/WebP, multi-page TIFF: the first frame
            img.load()
            img = _apply_orientation(img, orientation)
            rgb = _to_rgb(img)
    except AssetError:
        raise
    except Image.DecompressionBombError as e:
        raise AssetError("too_large", str(e)) from e
    except UnidentifiedImageError as e:
        raise AssetError("unsupported_format", "not a recognised image format") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e) or type(e).__name__
        kind = "truncated" if "truncated" in msg.lower() or isinstance(e, EOFError) else "corrupt"
        raise AssetError(kind, f"cannot decode image: {msg}") from e
    except MemoryError as e:
        raise AssetError("too_large", "out of memory while decoding") from e
    arr = np.asarray(rgb, dtype=np.uint8)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return DecodedImage(pixels=np.ascontiguousarray(arr), width=width, height=height)


def _exif_orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(0x0112, 1)
        value = int(value)
    except Exception:  # corrupt EXIF must not cost the image; treat as upright
        return 1
    return value if 1 <= value <= 8 else 1


_TRANSPOSE = {
    2: [Image.Transpose.FLIP_LEFT_RIGHT],
    3: [Image.Transpose.ROTATE_180],
    4: [Image.Transpose.FLIP_TOP_BOTTOM],
    5: [Image.Transpose.TRANSPOSE],
    6: [Image.Transpose.ROTATE_270],
    7: [Image.Transpose.TRANSVERSE],
    8: [Image.Transpose.ROTATE_90],
}


def _apply_orientation(img: Image.Image, orientation: int) -> Image.Image:
    # Same mapping as PIL.ImageOps.exif_transpose, without re-reading (possibly corrupt) EXIF.
    for op in _TRANSPOSE.get(orientation, []):
        img = img.transpose(op)
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on white: transparent regions of logos/screenshots read as paper, not black.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode.startswith("I;16"):
        # 16-bit samples span 0..65535: scale to 8 bits instead of clipping.
        arr16 = np.asarray(img, dtype=np.uint32)
        return Image.fromarray((arr16 // 257).astype(np.uint8)).convert("RGB")
    if img.mode in ("I", "F"):
        arr32 = np.asarray(img, dtype=np.float64)
        top = float(arr32.max()) if arr32.size else 0.0
        factor = 255.0 / top if top > 255.0 else 1.0
        return Image.fromarray((arr32 * factor).clip(0, 255).astype(np.uint8)).convert("RGB")
    return img.convert("RGB")


__all__ = ["DecodedImage", "decode_image"]
