"""The decoded image every model reads, and the one place images are decoded.

Decoding is the first thing that touches untrusted bytes, so it is defensive:

* the format is found from the content (never the file name) and only the
  photo formats in :data:`DECODABLE_FORMATS` are opened -- never Pillow's
  other plugins (EPS would run Ghostscript, and most of the rest are attack
  surface no photo library needs);
* the size declared in the header is checked against ``max_pixels`` and
  ``max_side`` *before* any pixel is allocated, so a decompression bomb costs
  nothing;
* only the first frame of an animation or multi-page file is read, without
  scanning the others;
* every failure becomes an :class:`AssetError` with a specific ``kind``
  (see ``worker.pipeline.errors.ERROR_KINDS``); no Pillow warning or
  exception leaves this module.

Peak memory is about 2.7x the returned N x 3 byte RGB array (Pillow holds RGB
at 4 bytes a pixel; two full-size images are alive at most), so
``max_pixels`` bounds it: about 400 MB for the default 50 MP.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import warnings
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from worker.pipeline import jpeg
from worker.pipeline.errors import AssetError, TransientError

T = TypeVar("T")

# Never let Pillow fill a truncated file with grey: a truncated image is skipped.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# Pillow's names of the JPEG family (MPO: a multi-picture JPEG, its first picture first).
_JPEG_FORMATS = ("JPEG", "MPO")

# Photo formats worth decoding, and the Pillow plugin of each; MPO (multi-picture JPEG) and APNG
# come in through JPEG and PNG.
_PHOTO_PLUGINS = {
    "JPEG": "JpegImagePlugin",
    "PNG": "PngImagePlugin",
    "GIF": "GifImagePlugin",
    "WEBP": "WebPImagePlugin",
    "TIFF": "TiffImagePlugin",
    "BMP": "BmpImagePlugin",
    "AVIF": "AvifImagePlugin",
}
_PHOTO_FORMATS = tuple(_PHOTO_PLUGINS)
# These plugins only, not Image.init()'s 47 in Pillow 13 (PDF, ICNS, DDS ...), never opened here:
# 25-35 ms of every command's start-up. Image.open(formats=DECODABLE_FORMATS) then finds them all
# registered and imports no other plugin but PPM (its own preinit()); a Pillow without one of them
# (an older one without AVIF) leaves that format out.
for _plugin in _PHOTO_PLUGINS.values():
    with contextlib.suppress(ImportError):
        importlib.import_module(f"PIL.{_plugin}")
DECODABLE_FORMATS: tuple[str, ...] = tuple(f for f in _PHOTO_FORMATS if f in Image.OPEN)

# Default cap on either side. The pixel limit alone lets a 1 x 50,000,000 strip
# through, and resizing its short side to a model's input size (CLIP: 224)
# would then ask for billions of pixels. 65,535 is the largest side JPEG can
# express; with 50 MP the worst aspect ratio left is about 86:1.
MAX_IMAGE_SIDE = 65_535

# Signatures of the formats above, to tell "a broken PNG" from "not an image at all".
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image, EXIF orientation applied.

    ``pixels`` may be smaller than the original (decoded with JPEG draft
    scaling); ``width``/``height`` are always the original, oriented size, and
    ``scale`` maps pixel coordinates back to it. Models report coordinates in
    original-image pixels by multiplying by ``scale``. ``pixels`` from
    :func:`decode_image` is read-only: every model of a chunk shares it.
    """

    pixels: np.ndarray  # (H, W, 3) uint8, RGB, C-contiguous
    width: int
    height: int
    # Model inputs derived from ``pixels`` (a resize, a crop), by key; see ``derive``.
    derived: dict[Hashable, Any] = field(default_factory=dict, repr=False, compare=False)

    def derive(self, key: Hashable, make: Callable[[np.ndarray], T]) -> T:
        """``make(pixels)``, computed once per ``key`` and kept with the image.

        A model's resize for its own input (CLIP's crop, a detector's canvas)
        goes through here with a key naming everything it depends on. The
        pipeline asks for them in the decode threads (``InferenceModel.prepare``),
        ahead of and in parallel with inference; the model's own call then finds
        them made. Values must not be modified by their users.
        """
        if key not in self.derived:
            self.derived[key] = make(self.pixels)
        return cast(T, self.derived[key])

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


def decode_image(
    data: bytes, max_pixels: int, min_side: int = 0, *, max_side: int = MAX_IMAGE_SIDE, pillow_only: bool = False
) -> DecodedImage:
    """Decode ``data`` by content (never by file name) into an RGB ``DecodedImage``.

    ``max_pixels`` / ``max_side``: refuse (``too_large``) an image whose header
    declares more pixels, or a longer side, before decoding it. Both are
    symmetric, so an EXIF rotation never changes the verdict.

    ``min_side``: when > 0, a JPEG may be decoded with DCT scaling (draft mode)
    as long as its shorter side stays >= ``min_side``; coordinates still refer
    to the original size through ``DecodedImage.scale``.

    ``pillow_only``: decode JPEGs with Pillow too, not by the fast path (``worker.pipeline.jpeg``):
    the same pixels, in Pillow's time; the benchmarks' baselines decode as Immich ML does.

    Transparent pixels are composited on white; 16-bit samples are scaled to
    8 bits (not clipped); CMYK uses Pillow's conversion (no ICC colour
    management); animations and multi-page files give their first frame.

    Raises :class:`AssetError` with a specific ``kind`` for anything that is
    not a decodable image within the limits, and :class:`TransientError` when
    the process runs out of memory on an image within them (another try, or
    another worker, may have the memory).
    """
    if not data:
        raise AssetError("empty", "the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            _silence_pillow_warnings()
            img = Image.open(io.BytesIO(data), formats=DECODABLE_FORMATS)
            width, height = img.size
            _check_size(width, height, max_pixels, max_side)
            orientation = _exif_orientation(img)
            is_jpeg = img.format in _JPEG_FORMATS
            arr = _decode_jpeg(img, data, min_side, orientation) if is_jpeg and not pillow_only else None
            if arr is None:  # any other format, or a JPEG the fast path leaves to Pillow
                request = jpeg.draft_request(width, height, min_side) if is_jpeg else None
                if request is not None:
                    img.draft("RGB", request)
                img.load()  # the frame Image.open positioned on: the first one
                # Convert, then orient, then copy out, dropping each stage as the next is made:
                # at most two full-size images are alive at once.
                rgb = _to_rgb(img)
                del img
                if orientation in _TRANSPOSE:
                    rgb = rgb.transpose(_TRANSPOSE[orientation])
                arr = _to_array(rgb)
                del rgb
    except AssetError:
        raise
    except Image.DecompressionBombError as e:  # Pillow's own cap, 2 x Image.MAX_IMAGE_PIXELS
        raise AssetError("too_large", str(e)) from e
    except UnidentifiedImageError as e:
        raise _unidentified(data) from e
    except MemoryError as e:
        raise TransientError("out of memory while decoding an image within the size limits") from e
    except Exception as e:
        # Pillow's plugins raise OSError, SyntaxError, ValueError, EOFError, struct.error,
        # IndexError ... on hostile input; none of them may reach the pipeline.
        raise _decode_failure(e) from e
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    arr.setflags(write=False)
    return DecodedImage(pixels=arr, width=width, height=height)


def _decode_jpeg(img: Image.Image, data: bytes, min_side: int, orientation: int) -> np.ndarray | None:
    """A JPEG's upright pixels by libjpeg-turbo straight into the array (``worker.pipeline.jpeg``), or
    ``None`` for Pillow to decode. The same DCT scale as Pillow's draft, the same pixels."""
    if img.mode not in jpeg.FAST_MODES:
        return None
    width, height = img.size
    stored = jpeg.decode_rgb(data, width, height, jpeg.draft_scale(width, height, min_side))
    return None if stored is None else jpeg.orient(stored, orientation)


def _silence_pillow_warnings() -> None:
    # Pillow warns about big images (we check sizes ourselves) and about bad
    # metadata (EXIF, MPO) it then ignores. Only these are silenced, and only
    # for Pillow and this module: catch_warnings is not thread-safe before
    # Python 3.14, and if decode threads race, what can leak into the global
    # filters is just these narrow entries.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
    warnings.filterwarnings("ignore", category=UserWarning, module=__name__)


def _check_size(width: int, height: int, max_pixels: int, max_side: int) -> None:
    if width <= 0 or height <= 0:
        raise AssetError("invalid_dimensions", f"image declares {width}x{height} pixels")
    if width * height > max_pixels:
        raise AssetError("too_large", f"image has {width}x{height} = {width * height} pixels, limit is {max_pixels}")
    if max(width, height) > max_side:
        raise AssetError("too_large", f"image is {width}x{height}, longest side limit is {max_side}")


def _unidentified(data: bytes) -> AssetError:
    fmt = next((name for sig, name in _SIGNATURES if data.startswith(sig)), None)
    if fmt is None:
        return AssetError("unsupported_format", f"not a decodable image (formats: {', '.join(DECODABLE_FORMATS)})")
    # The signature says JPEG/PNG/..., but its header cannot be parsed.
    return AssetError("corrupt", f"starts like a {fmt} file but its header cannot be read (truncated or damaged)")


def _decode_failure(e: Exception) -> AssetError:
    msg = str(e) or type(e).__name__
    if isinstance(e, EOFError) or "truncated" in msg.lower():
        return AssetError("truncated", f"image data ends early: {msg}")
    if "decompressed data too large" in msg.lower():  # e.g. a zTXt metadata bomb in a PNG
        return AssetError("too_large", f"image metadata too large: {msg}")
    return AssetError("corrupt", f"cannot decode image ({type(e).__name__}): {msg}")


def _exif_orientation(img: Image.Image) -> int:
    try:
        value = int(img.getexif().get(0x0112, 1))
    except Exception:  # corrupt EXIF must not cost the image; treat as upright
        return 1
    return value if 1 <= value <= 8 else 1


# Copy-out strip size: bounds the temporary bytes Pillow makes when handing pixels to numpy.
_STRIP_BYTES = 4 << 20


def _to_array(rgb: Image.Image) -> np.ndarray:
    """Copy an RGB image into a new (H, W, 3) array a strip at a time.

    ``np.asarray(image)`` goes through ``Image.tobytes()``, which holds the
    encoded chunks and their joined copy at once: two extra full-size buffers
    at the moment memory peaks.
    """
    width, height = rgb.size
    arr = np.empty((height, width, 3), np.uint8)
    rows = max(1, _STRIP_BYTES // (3 * width))
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        arr[top:bottom] = np.asarray(rgb.crop((0, top, width, bottom)))
    return arr


_TRANSPOSE = {  # EXIF orientation -> the transposition that turns the stored pixels upright
    2: Image.Transpose.FLIP_LEFT_RIGHT,  # mirrored
    3: Image.Transpose.ROTATE_180,  # upside down
    4: Image.Transpose.FLIP_TOP_BOTTOM,  # mirrored and upside down
    5: Image.Transpose.TRANSPOSE,  # mirrored along the main diagonal
    6: Image.Transpose.ROTATE_270,  # stored turned 90° anticlockwise: turn it clockwise
    7: Image.Transpose.TRANSVERSE,  # mirrored along the anti-diagonal
    8: Image.Transpose.ROTATE_90,  # stored turned 90° clockwise: turn it anticlockwise
}


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    wide = img.mode.startswith("I") or img.mode == "F"  # 16/32-bit samples: scaled below, alpha or not
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or ("transparency" in img.info and not wide):
        # Composite on white: transparent regions of logos/screenshots read as paper, not black.
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")
        white = Image.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, mask=rgba)  # blends by the alpha band, in place
        return white
    if img.mode.startswith("I;16"):
        # 16-bit samples span 0..65535: scale to 8 bits instead of clipping.
        return _gray_to_rgb(np.asarray(img, dtype=np.uint32) // 257)
    if img.mode in ("I", "F"):
        return _gray_to_rgb(_wide_to_8bit(np.asarray(img, dtype=np.float64), img.mode))
    return img.convert("RGB")


def _wide_to_8bit(values: np.ndarray, mode: str) -> np.ndarray:
    """32-bit integer or float samples to 0..255, by the range they evidently use."""
    top = float(values.max()) if values.size else 0.0
    if mode == "F" and top <= 1.0:
        factor = 255.0  # normalised floats
    elif top <= 255.0:
        factor = 1.0  # already 8-bit values
    elif mode == "I" and top <= 65535.0:
        factor = 1.0 / 257.0  # 16-bit values in a 32-bit container
    else:
        factor = 255.0 / top
    return np.clip(values * factor, 0, 255)


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(gray.astype(np.uint8)).convert("RGB")


__all__ = ["DECODABLE_FORMATS", "MAX_IMAGE_SIDE", "DecodedImage", "decode_image"]
