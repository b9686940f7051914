"""JPEG pixels straight into the array the models read, by libjpeg-turbo (simplejpeg).

Pillow decodes a JPEG into its own 4-byte-a-pixel image, allocated in blocks it returns to the
system after each image, and the pixels are then copied into an ``(H, W, 3)`` array: on a 12 MP
original 2.5x the CPU time of decoding straight into the array (``python -m benchmarks --sections
decode``; 1.6-1.8x on previews and small photos), much of it page faults of the fresh blocks.
simplejpeg drives the same libjpeg-turbo with the same settings (accurate DCT, smooth upsampling),
so the pixels are the same, bit for bit (``tests/test_jpeg_fast_path.py`` checks every orientation,
scale and colour layout; the decode section checks the benchmark's photos).

Pillow still reads the header first (format by content, the size limits, EXIF orientation), so
this only ever sees JPEGs that passed those checks; anything it does not handle exactly like
Pillow -- CMYK, a stream libjpeg-turbo warns about, an image too small to scale unambiguously --
is left to Pillow (``None``), whose verdict (``truncated``, ``corrupt``) then stands.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import simplejpeg

# Pillow modes of a JPEG whose RGB decode libjpeg-turbo makes exactly as Pillow does.
FAST_MODES = frozenset({"RGB", "L"})
# Below this side, a scale factor of libjpeg-turbo other than Pillow's could give the same size.
_MIN_SCALED_SIDE = 16


def draft_request(width: int, height: int, min_side: int) -> tuple[int, int] | None:
    """The size ``decode_image`` asks Pillow's draft mode for, to keep the short side >= ``min_side``;
    ``None``: no scaling (the short side is under twice ``min_side``, or ``min_side`` is 0)."""
    short = min(width, height)
    if min_side <= 0 or short < 2 * min_side:
        return None
    return max(1, width * min_side // short), max(1, height * min_side // short)


def draft_scale(width: int, height: int, min_side: int) -> int:
    """The DCT scale (1, 2, 4 or 8) Pillow's draft mode picks for ``draft_request``: the largest
    power of two the requested size fits into both ways."""
    request = draft_request(width, height, min_side)
    if request is None:
        return 1
    fits = min(width // request[0], height // request[1])
    return next(a for a in (8, 4, 2, 1) if fits >= a)


def decode_rgb(data: bytes, width: int, height: int, scale: int) -> np.ndarray | None:
    """``data`` decoded at 1/``scale`` as a C-contiguous ``(H, W, 3)`` RGB array, stored orientation;
    ``None`` when Pillow should decode it instead."""
    if scale > 1 and min(width, height) < _MIN_SCALED_SIDE * scale:
        return None
    out_w, out_h = -(-width // scale), -(-height // scale)
    try:
        # strict: a warning of libjpeg-turbo (corrupt or truncated data) raises instead of filling with grey.
        pixels = simplejpeg.decode_jpeg(data, "RGB", min_height=out_h, min_width=out_w, strict=True)
    except ValueError:
        return None
    if pixels.shape != (out_h, out_w, 3):  # not the scale Pillow would have used
        return None
    return pixels


# EXIF orientation -> the view of the stored pixels that turns them upright (as Pillow's transpose does).
_UPRIGHT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],  # mirrored
    3: lambda a: a[::-1, ::-1],  # upside down
    4: lambda a: a[::-1],  # mirrored and upside down
    5: lambda a: a.transpose(1, 0, 2),  # mirrored along the main diagonal
    6: lambda a: np.rot90(a, -1),  # stored turned anticlockwise: turn it clockwise
    7: lambda a: np.rot90(a[::-1], 1),  # mirrored along the anti-diagonal
    8: lambda a: np.rot90(a, 1),  # stored turned clockwise: turn it anticlockwise
}


def orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """``pixels`` turned upright for EXIF ``orientation`` (1-8), as a C-contiguous array."""
    turned = _UPRIGHT.get(orientation)
    return pixels if turned is None else np.ascontiguousarray(turned(pixels))


__all__ = ["FAST_MODES", "decode_rgb", "draft_request", "draft_scale", "orient"]
