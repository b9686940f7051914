"""Building blocks for the hostile corpus in tests/hostile.py: encoders and test pictures.

Pillow encoders with test-friendly defaults (``encode``, ``jpeg``, ``png``), a
hand-written PNG (``raw_png``, ``png_chunk``), EXIF orientation tags and the
pixels a camera stores for each (``exif_block``, ``stored_for_orientation``,
``exif_jpeg``, ``exif_png``), and two pictures: four flat ``quadrants`` and
seeded ``noise``. tests/hostile.py re-exports the ones tests use as ``hostile.X``.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXIF_ORIENTATION = 0x0112


def encode(img: Image.Image, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def jpeg(rgb: np.ndarray, **options: Any) -> bytes:
    """A high-quality, unsubsampled JPEG, so flat colours survive within a few levels."""
    return encode(Image.fromarray(rgb), "JPEG", **{"quality": 95, "subsampling": 0, **options})


def png(rgb: np.ndarray, **options: Any) -> bytes:
    return encode(Image.fromarray(rgb), "PNG", **options)


def png_chunk(tag: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))


def raw_png(
    width: int, height: int, bit_depth: int, colour_type: int, scanlines: bytes, extra_chunks: bytes = b""
) -> bytes:
    """A PNG written by hand: ``scanlines`` are the filtered rows (a filter byte, then samples)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + extra_chunks
        + png_chunk(b"IDAT", zlib.compress(scanlines, 9))
        + png_chunk(b"IEND", b"")
    )


def exif_block(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return exif.tobytes()


def quadrants(height: int = 32, width: int = 48) -> np.ndarray:
    """An asymmetric test picture: four flat quadrants in four colours.

    The symmetries of a rectangle permute its corners differently, so every
    one of the eight EXIF orientations gives a different picture, and flat
    8-aligned blocks survive JPEG within a few levels.
    """
    img = np.empty((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    img[:h, :w] = (220, 30, 30)  # top left: red
    img[:h, w:] = (30, 200, 40)  # top right: green
    img[h:, :w] = (30, 40, 210)  # bottom left: blue
    img[h:, w:] = (240, 230, 40)  # bottom right: yellow
    return img


def noise(height: int, width: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def stored_for_orientation(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels a camera stores for ``upright`` when it tags them with ``orientation``.

    Written from the EXIF definition of where the stored 0th row and column
    belong, independently of the decoder: displaying applies the inverse.
    """
    stored = {
        1: upright,  # 0th row = top, 0th column = left
        2: upright[:, ::-1],  # 0th row = top, 0th column = right: stored mirrored
        3: upright[::-1, ::-1],  # 0th row = bottom, 0th column = right: stored upside down
        4: upright[::-1],  # 0th row = bottom, 0th column = left: stored flipped vertically
        5: upright.transpose(1, 0, 2),  # 0th row = left, 0th column = top: transposed
        6: np.rot90(upright, 1),  # 0th row = right, 0th column = top: stored turned 90° anticlockwise
        7: np.rot90(upright, -1)[::-1],  # 0th row = right, 0th column = bottom: transverse
        8: np.rot90(upright, -1),  # 0th row = left, 0th column = bottom: stored turned 90° clockwise
    }[orientation]
    return np.ascontiguousarray(stored)


def exif_jpeg(orientation: int, upright: np.ndarray | None = None) -> bytes:
    upright = quadrants() if upright is None else upright
    return jpeg(stored_for_orientation(upright, orientation), exif=exif_block(orientation))


def exif_png(orientation: int, upright: np.ndarray) -> bytes:
    """The same in a lossless container (PNG's eXIf chunk), for exact pixel checks."""
    return png(stored_for_orientation(upright, orientation), exif=exif_block(orientation))
