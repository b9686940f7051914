"""A generated corpus of hostile and odd image inputs (nothing big is committed).

Every function returns the bytes of one kind of input, deterministically, in
milliseconds. Some are written by hand, byte by byte (a PNG declaring
100,000 x 100,000 pixels, a GIF with 65,535 x 65,535 and a few bytes of data),
because no encoder would produce them; the rest go through Pillow's encoders.

``CORPUS`` names each kind; tests/test_hostile_inputs.py holds what each must
decode to, or the ``AssetError.kind`` it must be skipped with. The encoders and
test pictures the generators are built from are in tests/hostile_blocks.py,
re-exported here (``hostile.jpeg``, ``hostile.noise``, ...).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image

from tests.hostile_blocks import (
    encode,
    exif_block,
    exif_jpeg,
    jpeg,
    noise,
    png,
    png_chunk,
    quadrants,
    raw_png,
)
from tests.hostile_blocks import exif_png as exif_png  # re-exported for the tests

# -- building blocks (the rest are in tests/hostile_blocks.py) ---------------------------------


def _insert_after_soi(jpeg_bytes: bytes, segment: bytes) -> bytes:
    assert jpeg_bytes[:2] == b"\xff\xd8"
    return jpeg_bytes[:2] + segment + jpeg_bytes[2:]


def _app1(payload: bytes) -> bytes:
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


# -- not images at all -------------------------------------------------------------------------


def zero_bytes() -> bytes:
    return b""


def random_bytes() -> bytes:
    data = np.random.default_rng(20260101).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    assert not data.startswith((b"\xff\xd8", b"\x89PNG", b"GIF", b"II*", b"MM\x00*", b"BM", b"RIFF"))
    return data


def html_page() -> bytes:
    """What a web server answers with instead of the photo (then saved as photo.jpg)."""
    return b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n"


def svg_text() -> bytes:
    return b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'


def eps_file() -> bytes:
    """PostScript: Pillow can open it only by running Ghostscript on it, which must never happen."""
    return b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\nshowpage\n"


def ppm_image() -> bytes:
    """A valid image in a format outside the decodable photo formats."""
    return b"P6\n2 2\n255\n" + bytes(range(12))


# -- broken images -----------------------------------------------------------------------------


def truncated_jpeg() -> bytes:
    data = jpeg(noise(64, 96))
    return data[: len(data) // 2]


def jpeg_without_end_marker() -> bytes:
    return jpeg(noise(64, 96))[:-2]


def truncated_png() -> bytes:
    data = png(noise(64, 96))
    return data[: len(data) // 2]


def png_cut_in_header() -> bytes:
    return png(noise(8, 8))[:20]  # the signature and half of IHDR


def png_zero_width() -> bytes:
    return raw_png(0, 1, 8, 0, b"\x00")


# -- bombs -------------------------------------------------------------------------------------


def png_bomb() -> bytes:
    """IHDR says 100,000 x 100,000 RGB (30 GB decoded); the file is a few dozen bytes."""
    return raw_png(100_000, 100_000, 8, 2, b"\x00" * 16)


def gif_bomb() -> bytes:
    """A GIF whose screen and only frame are 65,535 x 65,535, with a 1-pixel LZW stream."""
    screen = struct.pack("<HHBBB", 65535, 65535, 0, 0, 0)
    frame = b"," + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0) + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + screen + frame + b";"


def jpeg_bomb() -> bytes:
    """A real 16 x 16 JPEG whose frame header (SOF0) is rewritten to 65,500 x 65,500."""
    data = bytearray(jpeg(noise(16, 16)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65_500, 65_500)  # height, width after length and precision
    return bytes(data)


def png_over_pixel_limit() -> bytes:
    """IHDR says 8,000 x 8,000 (64 MP): over assetq's 50 MP default, under Pillow's own bomb limit.

    The pixel data is a stub: the size must be refused from the header, before any is read.
    """
    return raw_png(8000, 8000, 8, 0, b"\x00" * 16)


def png_text_bomb() -> bytes:
    """A 1 x 1 PNG with a zTXt chunk that inflates to 8 MB of metadata (4 kB on disk)."""
    ztxt = png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"a" * (8 << 20), 9))
    return raw_png(1, 1, 8, 0, b"\x00\x80", extra_chunks=ztxt)


def strip_over_side_limit() -> bytes:
    """70,000 x 2 gray: only 140,000 pixels, but longer than any side a model resize can take."""
    return raw_png(70_000, 2, 8, 0, (b"\x00" + bytes(70_000)) * 2)


# -- odd but valid -----------------------------------------------------------------------------


def one_by_one() -> bytes:
    return png(np.array([[[12, 34, 56]]], np.uint8))


def strip(width: int = 20_000, height: int = 20) -> bytes:
    """A 20,000 x 20 panorama strip with a horizontal gradient (so position is checkable)."""
    ramp = (np.arange(width) * 255 // (width - 1)).astype(np.uint8)
    rgb = np.stack([np.broadcast_to(ramp, (height, width))] * 3, axis=-1)
    return png(np.ascontiguousarray(rgb))


CMYK_SWATCHES = {  # CMYK ink -> the RGB it should read as
    (0, 255, 255, 0): (255, 0, 0),
    (255, 0, 255, 0): (0, 255, 0),
    (255, 255, 0, 0): (0, 0, 255),
    (0, 0, 0, 0): (255, 255, 255),
    (0, 0, 0, 255): (0, 0, 0),
}


def cmyk_jpeg() -> bytes:
    """Five 16 x 16 CMYK swatches side by side (Pillow writes Adobe's inverted CMYK, as Photoshop does)."""
    img = Image.new("CMYK", (16 * len(CMYK_SWATCHES), 16))
    for i, ink in enumerate(CMYK_SWATCHES):
        img.paste(ink, (16 * i, 0, 16 * (i + 1), 16))
    return encode(img, "JPEG", quality=95)


# Samples across the whole 16-bit range: clipping would turn everything from 256 up into 255.
SIXTEEN_BIT_LEVELS = np.array([0, 255, 256, 1000, 20_000, 32_768, 50_000, 65_535], dtype=np.uint16)


def png16_gray() -> bytes:
    rows = b"\x00" + SIXTEEN_BIT_LEVELS.astype(">u2").tobytes()
    return raw_png(len(SIXTEEN_BIT_LEVELS), 1, 16, 0, rows)


def png16_rgb() -> bytes:
    """16-bit RGB: (level, 65535 - level, level) per pixel."""
    levels = SIXTEEN_BIT_LEVELS.astype(np.int64)
    rgb = np.stack([levels, 65535 - levels, levels], axis=-1).astype(">u2")
    return raw_png(len(levels), 1, 16, 2, b"\x00" + rgb.tobytes())


def tiff16_gray() -> bytes:
    return encode(Image.fromarray(SIXTEEN_BIT_LEVELS.reshape(1, -1)), "TIFF")


def tiff_float() -> bytes:
    """32-bit float samples in 0..1, as scientific and HDR tools write them."""
    return encode(Image.fromarray(np.linspace(0, 1, 8, dtype=np.float32).reshape(1, -1)), "TIFF")


PALETTE = [(255, 0, 0), (0, 128, 0), (0, 0, 255), (250, 250, 250)]


def palette_png(transparent_index: int | None = None) -> bytes:
    """A 4 x 2 palette image using each entry twice; optionally one entry transparent (tRNS)."""
    img = Image.new("P", (4, 2))
    img.putpalette([c for rgb in PALETTE for c in rgb])
    img.putdata([0, 1, 2, 3, 3, 2, 1, 0])
    options = {} if transparent_index is None else {"transparency": transparent_index}
    return encode(img, "PNG", **options)


def rgba_png() -> bytes:
    """Pure red at alpha 255, 128 and 0."""
    rgba = np.array([[[255, 0, 0, 255], [255, 0, 0, 128], [255, 0, 0, 0]]], np.uint8)
    return encode(Image.fromarray(rgba), "PNG")


def gray_alpha_png() -> bytes:
    """Black at alpha 255, 128 and 0 (PNG colour type 4, gray + alpha)."""
    return encode(Image.fromarray(np.array([[[0, 255], [0, 128], [0, 0]]], np.uint8)), "PNG")


def grayscale_jpeg() -> bytes:
    ramp = np.repeat(np.arange(0, 256, 16, dtype=np.uint8)[None, :], 16, axis=0)
    return encode(Image.fromarray(np.repeat(ramp, 8, axis=1)), "JPEG", quality=95)


def progressive_jpeg() -> bytes:
    return jpeg(quadrants(), progressive=True)


def bmp_image() -> bytes:
    return encode(Image.fromarray(quadrants()), "BMP")


FRAME_COLOURS = [(200, 20, 20), (20, 200, 20), (20, 20, 200)]


def _frames(size: tuple[int, int] = (24, 16)) -> list[Image.Image]:
    return [Image.new("RGB", size, c) for c in FRAME_COLOURS]


def animated_gif() -> bytes:
    first, *rest = _frames()
    return encode(first, "GIF", save_all=True, append_images=rest, duration=80, loop=0)


def animated_webp() -> bytes:
    first, *rest = _frames()
    return encode(first, "WEBP", save_all=True, append_images=rest, duration=80, loop=0, lossless=True)


def animated_png() -> bytes:
    first, *rest = _frames()
    return encode(first, "PNG", save_all=True, append_images=rest, duration=80, loop=0)


def multipage_tiff() -> bytes:
    first, *rest = _frames()
    return encode(first, "TIFF", save_all=True, append_images=rest)


def gif_many_frames(frames: int = 100_000) -> bytes:
    """A 1 x 1 GIF with 100,000 frames (~1.5 MB): counting its frames is slow, reading the first is not."""
    frame = b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    screen = struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"  # 2-colour global palette
    return b"GIF89a" + screen + frame * frames + b";"


def corrupt_exif_jpeg() -> bytes:
    """An upright JPEG with an APP1 Exif segment whose IFD offset points far past its end."""
    bad_tiff = b"II*\x00" + struct.pack("<I", 0x7FFF_FFF0) + b"\x01\x00\x12\x01\x03\x00" + b"\xff" * 6
    return _insert_after_soi(jpeg(quadrants()), _app1(b"Exif\x00\x00" + bad_tiff))


def out_of_range_orientation_jpeg() -> bytes:
    """Orientation 9 (undefined; 1-8 are valid): read as upright."""
    return jpeg(quadrants(), exif=exif_block(9))


CORPUS: dict[str, Callable[[], bytes]] = {
    "zero_bytes": zero_bytes,
    "random_bytes": random_bytes,
    "html_page": html_page,
    "svg_text": svg_text,
    "eps_file": eps_file,
    "ppm_image": ppm_image,
    "truncated_jpeg": truncated_jpeg,
    "jpeg_without_end_marker": jpeg_without_end_marker,
    "truncated_png": truncated_png,
    "png_cut_in_header": png_cut_in_header,
    "png_zero_width": png_zero_width,
    "png_bomb": png_bomb,
    "gif_bomb": gif_bomb,
    "jpeg_bomb": jpeg_bomb,
    "png_over_pixel_limit": png_over_pixel_limit,
    "png_text_bomb": png_text_bomb,
    "strip_over_side_limit": strip_over_side_limit,
    "one_by_one": one_by_one,
    "strip_20000x20": strip,
    "cmyk_jpeg": cmyk_jpeg,
    "png16_gray": png16_gray,
    "png16_rgb": png16_rgb,
    "tiff16_gray": tiff16_gray,
    "tiff_float": tiff_float,
    "palette_png": palette_png,
    "palette_png_transparent": lambda: palette_png(transparent_index=1),
    "rgba_png": rgba_png,
    "gray_alpha_png": gray_alpha_png,
    "grayscale_jpeg": grayscale_jpeg,
    "progressive_jpeg": progressive_jpeg,
    "bmp_image": bmp_image,
    "animated_gif": animated_gif,
    "animated_webp": animated_webp,
    "animated_png": animated_png,
    "multipage_tiff": multipage_tiff,
    "gif_many_frames": gif_many_frames,
    "corrupt_exif_jpeg": corrupt_exif_jpeg,
    "out_of_range_orientation_jpeg": out_of_range_orientation_jpeg,
    **{f"exif_orientation_{o}": (lambda o=o: exif_jpeg(o)) for o in range(1, 9)},  # type: ignore[misc]
}
