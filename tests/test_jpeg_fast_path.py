"""The JPEG fast path (``worker.pipeline.jpeg``): the same pixels as Pillow's decode, or Pillow's verdict."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import simplejpeg

from tests import hostile
from worker.pipeline import jpeg
from worker.pipeline.errors import AssetError
from worker.pipeline.image import decode_image


def _by_pillow(monkeypatch: pytest.MonkeyPatch, data: bytes, min_side: int) -> np.ndarray:
    with monkeypatch.context() as m:
        m.setattr(jpeg, "decode_rgb", lambda *_: None)  # every JPEG to Pillow
        return decode_image(data, 50_000_000, min_side).pixels


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = simplejpeg.decode_jpeg

    def decode(*args: Any, **kwargs: Any) -> np.ndarray:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(simplejpeg, "decode_jpeg", decode)
    return calls


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("min_side", [0, 150, 80, 40])  # full size, 1/2, 1/4, 1/8 of a 330 x 500 picture
def test_every_orientation_and_scale_gives_pillows_pixels(
    monkeypatch: pytest.MonkeyPatch, orientation: int, min_side: int
) -> None:
    data = hostile.exif_jpeg(orientation, hostile.noise(330, 500, seed=orientation))
    calls = _counting(monkeypatch)
    fast = decode_image(data, 50_000_000, min_side).pixels
    assert calls, "the fast path was not taken"
    assert fast.flags.c_contiguous and not fast.flags.writeable
    assert np.array_equal(fast, _by_pillow(monkeypatch, data, min_side))


@pytest.mark.parametrize(
    "options",
    [{"subsampling": 0}, {"subsampling": 1}, {"subsampling": 2}, {"subsampling": 2, "progressive": True}],
    ids=["4:4:4", "4:2:2", "4:2:0", "progressive"],
)
@pytest.mark.parametrize("min_side", [0, 100])
def test_colour_layouts_give_pillows_pixels(
    monkeypatch: pytest.MonkeyPatch, options: dict[str, Any], min_side: int
) -> None:
    data = hostile.jpeg(hostile.noise(301, 517, seed=3), quality=85, **options)  # odd sides: partial blocks
    calls = _counting(monkeypatch)
    assert np.array_equal(decode_image(data, 50_000_000, min_side).pixels, _by_pillow(monkeypatch, data, min_side))
    assert calls


def test_grayscale_gives_pillows_rgb(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    gray = Image.fromarray(hostile.noise(120, 90)[:, :, 0])
    data = hostile.encode(gray, "JPEG", quality=90)
    calls = _counting(monkeypatch)
    fast = decode_image(data, 50_000_000).pixels
    assert calls and fast.shape == (120, 90, 3)
    assert np.array_equal(fast, _by_pillow(monkeypatch, data, 0))


def test_cmyk_is_left_to_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    cmyk = Image.fromarray(hostile.noise(40, 60)).convert("CMYK")
    calls = _counting(monkeypatch)
    img = decode_image(hostile.encode(cmyk, "JPEG"), 50_000_000)
    assert img.pixels.shape == (40, 60, 3) and not calls


@pytest.mark.parametrize("make", [hostile.truncated_jpeg, hostile.jpeg_without_end_marker])
def test_a_stream_libjpeg_warns_about_gets_pillows_verdict(make: Any) -> None:
    """libjpeg-turbo's warnings raise (strict) and Pillow decides: a cut JPEG is refused as before."""
    data = make()
    assert jpeg.decode_rgb(data, 96, 64, 1) is None
    with pytest.raises(AssetError) as err:
        decode_image(data, 50_000_000)
    assert err.value.kind == "truncated"


@pytest.mark.parametrize(
    ("size", "min_side", "scale"),
    [
        ((4000, 3000), 1440, 2),
        ((4000, 3000), 640, 4),
        ((4000, 3000), 0, 1),
        ((1920, 1440), 1440, 1),
        ((500, 330), 40, 8),
    ],
)
def test_draft_scale_is_pillows(size: tuple[int, int], min_side: int, scale: int) -> None:
    from PIL import Image

    assert jpeg.draft_scale(*size, min_side) == scale
    img = Image.open(__import__("io").BytesIO(hostile.jpeg(hostile.noise(size[1], size[0]))))
    request = jpeg.draft_request(*size, min_side)
    if request:
        img.draft("RGB", request)
    assert img.size == (-(-size[0] // scale), -(-size[1] // scale))


def test_pillow_only_decodes_without_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmarks' baselines decode as Immich ML does: by Pillow, to the same pixels."""
    data = hostile.exif_jpeg(6, hostile.noise(120, 160))
    calls = _counting(monkeypatch)
    slow = decode_image(data, 50_000_000, pillow_only=True).pixels
    assert not calls
    assert np.array_equal(slow, decode_image(data, 50_000_000).pixels) and calls
