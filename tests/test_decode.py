"""decode_image: orientation, limits, draft scaling and error handling (the corpus is in test_hostile_inputs)."""

from __future__ import annotations

import io
import struct
import warnings

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests import hostile
from worker.pipeline.errors import AssetError, TransientError
from worker.pipeline.image import DECODABLE_FORMATS, MAX_IMAGE_SIDE, DecodedImage, decode_image

ORIENTATIONS = range(1, 9)
SWAPS_SIDES = {5, 6, 7, 8}


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_exif_orientation_restores_the_upright_pixels_exactly(orientation: int) -> None:
    """Lossless (PNG eXIf): every pixel of a random, non-square picture must come back in place."""
    upright = hostile.noise(6, 10, seed=orientation)
    data = hostile.exif_png(orientation, upright)
    img = decode_image(data, 1_000)
    assert (img.width, img.height) == (10, 6)
    np.testing.assert_array_equal(img.pixels, upright)
    # and Pillow's own reading of the tag agrees
    reference = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    np.testing.assert_array_equal(np.asarray(reference), upright)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_limits_give_the_same_verdict_in_every_orientation(orientation: int) -> None:
    """ "Exceeds the limit only after EXIF rotation" cannot happen, and this pins down why.

    The stored image is 30 x 10; tagged 5-8 it is 10 x 30 upright. Both limits
    are symmetric (a pixel count, a longest side), so the verdict at the exact
    boundary is the same for all eight tags, and an accepted image reports its
    upright size. A per-axis limit (max width, max height) would not have this
    property; assetq has none.
    """
    stored = hostile.noise(10, 30)  # what the camera wrote: 30 wide, 10 high
    data = hostile.png(stored, exif=hostile.exif_block(orientation))
    upright = (10, 30) if orientation in SWAPS_SIDES else (30, 10)

    img = decode_image(data, max_pixels=300, max_side=30)
    assert (img.width, img.height) == upright and img.pixels.shape[:2] == upright[::-1]
    with pytest.raises(AssetError) as over_pixels:
        decode_image(data, max_pixels=299)
    with pytest.raises(AssetError) as over_side:
        decode_image(data, max_pixels=300, max_side=29)
    assert over_pixels.value.kind == over_side.value.kind == "too_large"


def test_the_default_side_limit_takes_any_jpeg_and_refuses_longer_strips() -> None:
    assert MAX_IMAGE_SIDE == 65_535  # JPEG's largest side
    img = decode_image(hostile.raw_png(65_535, 1, 8, 0, b"\x00" + bytes(65_535)), 50_000_000)
    assert (img.width, img.height) == (65_535, 1)
    for width, height in ((65_536, 1), (1, 65_536)):
        with pytest.raises(AssetError) as err:
            decode_image(hostile.raw_png(width, height, 8, 0, b"\x00" * 16), 50_000_000)
        assert err.value.kind == "too_large" and "side" in err.value.message


def test_draft_scaling_keeps_original_oriented_coordinates() -> None:
    """A 1600 x 1200 JPEG tagged 6, asked for a short side >= 300: decoded at 1/4, reported at full size."""
    stored = np.tile(hostile.quadrants(), (38, 34, 1))[:1200, :1600]
    data = hostile.jpeg(stored, exif=hostile.exif_block(6))
    img = decode_image(data, 50_000_000, min_side=300)
    assert (img.width, img.height) == (1200, 1600)
    assert img.pixels.shape == (400, 300, 3)
    assert img.scale == 4.0
    full = decode_image(data, 50_000_000)
    assert full.pixels.shape == (1600, 1200, 3) and full.scale == 1.0
    # the small decode is the full one, shrunk (same orientation, same content)
    shrunk = np.asarray(Image.fromarray(full.pixels).resize((300, 400), Image.Resampling.BOX), np.int32)
    assert np.abs(shrunk - img.pixels).mean() < 3


def test_draft_scaling_is_skipped_when_the_image_is_already_small() -> None:
    img = decode_image(hostile.jpeg(hostile.noise(500, 700)), 50_000_000, min_side=300)
    assert img.pixels.shape == (500, 700, 3) and img.scale == 1.0


def test_pixels_are_a_shared_read_only_rgb_array() -> None:
    img = decode_image(hostile.exif_jpeg(8), 1_000_000)
    assert img.pixels.dtype == np.uint8 and img.pixels.flags.c_contiguous and not img.pixels.flags.writeable
    with pytest.raises(ValueError):
        img.pixels[0, 0, 0] = 1
    assert img.bgr.flags.c_contiguous and (img.bgr[..., 0] == img.pixels[..., 2]).all()


def test_from_array_wraps_pixels_without_decoding() -> None:
    img = DecodedImage.from_array(np.zeros((5, 7, 3), np.uint8))
    assert (img.width, img.height, img.scale) == (7, 5, 1.0)


def test_decodable_formats_are_the_photo_formats_only() -> None:
    assert {"JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP"} <= set(DECODABLE_FORMATS)
    assert not {"EPS", "PSD", "PPM", "ICO", "PDF", "FITS"} & set(DECODABLE_FORMATS)


def test_pillow_bomb_warning_does_not_escape_even_when_warnings_are_errors() -> None:
    """10,000 x 9,000 is past Pillow's warning threshold (89 MP): our too_large, not a DecompressionBombWarning."""
    data = hostile.raw_png(10_000, 9_000, 8, 0, b"\x00" * 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AssetError) as err:
            decode_image(data, 50_000_000)
    assert err.value.kind == "too_large" and "90000000 pixels" in err.value.message


def test_corrupt_exif_warning_does_not_escape_and_the_image_is_kept() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img = decode_image(hostile.corrupt_exif_jpeg(), 1_000_000)
    assert (img.width, img.height) == (48, 32)


def test_a_limit_above_pillows_own_cap_still_refuses_with_too_large() -> None:
    """Pillow refuses past 2 x Image.MAX_IMAGE_PIXELS (~179 MP) by itself; that is too_large as well."""
    with pytest.raises(AssetError) as err:
        decode_image(hostile.raw_png(20_000, 10_000, 8, 0, b"\x00" * 16), 10**9, max_side=10**6)
    assert err.value.kind == "too_large"


def test_gif_with_zero_size_is_refused_as_corrupt() -> None:
    """Pillow refuses a 0 x 0 header itself; the GIF signature makes it corrupt, not an unknown format."""
    screen = struct.pack("<HHBBB", 0, 0, 0, 0, 0)
    frame = b"," + struct.pack("<HHHHB", 0, 0, 0, 0, 0) + b"\x02\x02\x44\x01\x00"
    with pytest.raises(AssetError) as err:
        decode_image(b"GIF89a" + screen + frame + b";", 1_000_000)
    assert err.value.kind == "corrupt"


def test_running_out_of_memory_within_the_limits_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    """The image is allowed; the worker is short of memory right now: retry, do not skip."""

    def no_memory(self: Image.Image) -> None:
        raise MemoryError

    monkeypatch.setattr("PIL.PngImagePlugin.PngImageFile.load", no_memory)
    with pytest.raises(TransientError):
        decode_image(hostile.one_by_one(), 1_000_000)


@pytest.mark.parametrize("error", [struct.error("unpack requires a buffer"), IndexError("list index"), KeyError(7)])
def test_any_decoder_exception_becomes_corrupt(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    def broken(self: Image.Image) -> None:
        raise error

    monkeypatch.setattr("PIL.PngImagePlugin.PngImageFile.load", broken)
    with pytest.raises(AssetError) as err:
        decode_image(hostile.one_by_one(), 1_000_000)
    assert err.value.kind == "corrupt" and type(error).__name__ in err.value.message
