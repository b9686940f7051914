"""Hostile and odd inputs: every kind in tests/hostile.py decodes correctly or is skipped with a specific kind.

Also: the whole corpus through the pipeline's fetch+decode stage (files with
misleading names inside an allowed root, plus paths outside it), a seeded
mutation fuzz of valid files, and the per-asset time limit. Peak memory of
decompression bombs and of real decodes is in tests/test_hostile_memory.py.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests import hostile
from worker.models.base import RuntimeOptions
from worker.models.cache import ModelCache
from worker.pipeline.errors import ERROR_KINDS, AssetError, TransientError
from worker.pipeline.fetch import Fetcher
from worker.pipeline.image import DecodedImage, decode_image
from worker.pipeline.run import Limits, Pipeline

MAX_PIXELS = Limits().max_pixels  # the pipeline's default, 50 MP

# -- what each kind must become ----------------------------------------------------------------

SKIPPED: dict[str, str] = {
    "zero_bytes": "empty",
    "random_bytes": "unsupported_format",
    "html_page": "unsupported_format",
    "svg_text": "unsupported_format",
    "eps_file": "unsupported_format",  # never handed to Ghostscript
    "ppm_image": "unsupported_format",  # a valid image, but not a decodable photo format
    "truncated_jpeg": "truncated",
    "jpeg_without_end_marker": "truncated",
    "truncated_png": "truncated",
    "png_cut_in_header": "truncated",
    "png_zero_width": "corrupt",
    "png_bomb": "too_large",
    "gif_bomb": "too_large",
    "jpeg_bomb": "too_large",
    "png_over_pixel_limit": "too_large",
    "png_text_bomb": "too_large",
    "strip_over_side_limit": "too_large",
}


def near(actual: Any, expected: Any, tol: float) -> bool:
    diff = np.abs(np.asarray(actual, np.int32) - np.asarray(expected, np.int32))
    return bool(diff.max() <= tol)


def check_upright_quadrants(img: DecodedImage) -> None:
    """The 48 x 32 four-colour picture, upright, within JPEG's error."""
    expected = hostile.quadrants()
    assert (img.width, img.height) == (48, 32)
    assert img.pixels.shape == expected.shape
    assert near(img.pixels, expected, 24)  # worst pixel sits on a colour edge
    assert np.abs(img.pixels.astype(np.int32) - expected).mean() < 2.0


def check_one_by_one(img: DecodedImage) -> None:
    assert (img.width, img.height) == (1, 1)
    assert img.pixels.tolist() == [[[12, 34, 56]]]


def check_strip(img: DecodedImage) -> None:
    assert (img.width, img.height) == (20_000, 20) and img.pixels.shape == (20, 20_000, 3)
    ramp = (np.arange(20_000) * 255 // 19_999).astype(np.uint8)
    assert (img.pixels == ramp[None, :, None]).all()  # lossless: exact, and left stays left


def check_cmyk(img: DecodedImage) -> None:
    assert (img.width, img.height) == (16 * len(hostile.CMYK_SWATCHES), 16)
    for i, rgb in enumerate(hostile.CMYK_SWATCHES.values()):
        assert near(img.pixels[8, 16 * i + 8], rgb, 12), (i, img.pixels[8, 16 * i + 8], rgb)


def check_sixteen_bit_gray(img: DecodedImage) -> None:
    expected = hostile.SIXTEEN_BIT_LEVELS.astype(np.float64) * 255 / 65535
    row = img.pixels[0]
    assert (row[:, 0] == row[:, 1]).all() and (row[:, 1] == row[:, 2]).all()
    assert near(row[:, 0], np.round(expected), 1)  # 20000 -> 78, 50000 -> 195: scaled, not clipped to 255


def check_sixteen_bit_rgb(img: DecodedImage) -> None:
    levels = hostile.SIXTEEN_BIT_LEVELS.astype(np.float64)
    expected = np.stack([levels, 65535 - levels, levels], axis=-1) * 255 / 65535
    assert near(img.pixels[0], np.round(expected), 1)


def check_float_tiff(img: DecodedImage) -> None:
    assert near(img.pixels[0, :, 0], np.linspace(0, 255, 8), 1)


def check_palette(img: DecodedImage, transparent_index: int | None = None) -> None:
    indices = [[0, 1, 2, 3], [3, 2, 1, 0]]
    white = (255, 255, 255)
    expected = [[white if i == transparent_index else hostile.PALETTE[i] for i in row] for row in indices]
    assert img.pixels.tolist() == [[list(c) for c in row] for row in expected]


def check_alpha_on_white(img: DecodedImage, colour: tuple[int, int, int]) -> None:
    """Opaque, half and fully transparent pixels of ``colour``, composited on white."""
    half = [(c + 255) / 2 for c in colour]
    assert img.pixels[0, 0].tolist() == list(colour)
    assert near(img.pixels[0, 1], half, 1)
    assert img.pixels[0, 2].tolist() == [255, 255, 255]


def check_grayscale(img: DecodedImage) -> None:
    px = img.pixels.astype(np.int32)
    assert (px[..., 0] == px[..., 1]).all() and (px[..., 1] == px[..., 2]).all()
    assert near(px[8, 4::8, 0], np.arange(0, 256, 16), 3)


def check_first_frame(img: DecodedImage) -> None:
    assert (img.width, img.height) == (24, 16)
    assert near(img.pixels, np.broadcast_to(hostile.FRAME_COLOURS[0], (16, 24, 3)), 3)


def check_many_frames(img: DecodedImage) -> None:
    assert (img.width, img.height) == (1, 1) and img.pixels.tolist() == [[[0, 0, 0]]]


DECODED: dict[str, Callable[[DecodedImage], None]] = {
    "one_by_one": check_one_by_one,
    "strip_20000x20": check_strip,
    "cmyk_jpeg": check_cmyk,
    "png16_gray": check_sixteen_bit_gray,
    "png16_rgb": check_sixteen_bit_rgb,
    "tiff16_gray": check_sixteen_bit_gray,
    "tiff_float": check_float_tiff,
    "palette_png": check_palette,
    "palette_png_transparent": lambda img: check_palette(img, transparent_index=1),
    "rgba_png": lambda img: check_alpha_on_white(img, (255, 0, 0)),
    "gray_alpha_png": lambda img: check_alpha_on_white(img, (0, 0, 0)),
    "grayscale_jpeg": check_grayscale,
    "progressive_jpeg": check_upright_quadrants,
    "bmp_image": check_upright_quadrants,
    "animated_gif": check_first_frame,
    "animated_webp": check_first_frame,
    "animated_png": check_first_frame,
    "multipage_tiff": check_first_frame,
    "gif_many_frames": check_many_frames,
    "corrupt_exif_jpeg": check_upright_quadrants,  # the bad EXIF is ignored, the image kept
    "out_of_range_orientation_jpeg": check_upright_quadrants,
    # stored transformed, tagged 1-8: each must come out as the upright original
    **{f"exif_orientation_{o}": check_upright_quadrants for o in range(1, 9)},
}


def test_every_corpus_kind_has_an_expectation() -> None:
    assert set(SKIPPED) | set(DECODED) == set(hostile.CORPUS)
    assert not set(SKIPPED) & set(DECODED)
    assert len(hostile.CORPUS) >= 25
    assert set(SKIPPED.values()) <= set(ERROR_KINDS)


@pytest.mark.parametrize("name", sorted(SKIPPED))
def test_bad_input_is_skipped_with_its_kind(name: str) -> None:
    with pytest.raises(AssetError) as err:
        decode_image(hostile.CORPUS[name](), MAX_PIXELS)
    assert err.value.kind == SKIPPED[name], err.value.message


@pytest.mark.parametrize("name", sorted(DECODED))
def test_odd_but_valid_input_decodes_correctly(name: str) -> None:
    img = decode_image(hostile.CORPUS[name](), MAX_PIXELS)
    assert img.pixels.dtype == np.uint8 and img.pixels.ndim == 3 and img.pixels.shape[2] == 3
    assert img.pixels.flags.c_contiguous
    DECODED[name](img)


# -- the whole corpus through the pipeline's fetch + decode stage -------------------------------


@pytest.fixture
def pipeline_factory(tmp_path: Path) -> Iterator[Callable[..., Pipeline]]:
    made: list[Pipeline] = []

    def make(fetcher: Any, **limits: Any) -> Pipeline:
        cache = ModelCache(tmp_path / "no-models", RuntimeOptions(warmup=False))
        made.append(Pipeline(cache, fetcher, Limits(**limits)))
        return made[-1]

    yield make
    for p in made:
        p.close()


def test_whole_corpus_through_the_pipeline(tmp_path: Path, pipeline_factory: Callable[..., Pipeline]) -> None:
    """Every kind, written as a file named ``.jpg`` whatever it holds, plus URIs that must not be read."""
    root = tmp_path / "photos"
    root.mkdir()
    (tmp_path / "secret.jpg").write_bytes(hostile.one_by_one())
    assets: list[dict[str, Any]] = []
    expected: list[str] = []  # "ok" or the skip kind
    for name, make in hostile.CORPUS.items():
        (root / f"{name}.jpg").write_bytes(make())
        assets.append({"id": name, "uri": (root / f"{name}.jpg").as_uri()})
        expected.append(SKIPPED.get(name, "ok"))
    # a valid image under wrong names: decoded by content
    (root / "really_a_png.gif").write_bytes(hostile.one_by_one())
    (root / "no_extension").write_bytes(hostile.exif_jpeg(6))
    assets += [
        {"id": "png_named_gif", "uri": (root / "really_a_png.gif").as_uri()},
        {"id": "jpeg_without_extension", "uri": (root / "no_extension").as_uri()},
        {"id": "dotdot", "uri": f"file://{root}/../secret.jpg"},
        {"id": "absolute_outside", "uri": (tmp_path / "secret.jpg").as_uri()},
        {"id": "missing", "uri": (root / "missing.jpg").as_uri()},
        {"id": "inline_garbage", "data": "not base64!!"},
    ]
    expected += ["ok", "ok", "outside_roots", "outside_roots", "not_found", "invalid_data"]

    pipe = pipeline_factory(Fetcher([root], 50_000_000), max_pixels=MAX_PIXELS)
    outcomes = list(pipe.decode_all(assets, []))

    got = [o.kind if isinstance(o, AssetError) else "ok" for o in outcomes]
    assert dict(zip([a["id"] for a in assets], got, strict=True)) == dict(
        zip([a["id"] for a in assets], expected, strict=True)
    )
    assert not any(isinstance(o, TransientError) for o in outcomes)
    by_id = {a["id"]: o for a, o in zip(assets, outcomes, strict=True)}
    png_named_gif = by_id["png_named_gif"]
    assert isinstance(png_named_gif, tuple)
    check_one_by_one(png_named_gif[0])
    rotated = by_id["jpeg_without_extension"]
    assert isinstance(rotated, tuple)
    check_upright_quadrants(rotated[0])


# -- mutation fuzz ------------------------------------------------------------------------------


def _seeds() -> list[bytes]:
    return [
        hostile.exif_jpeg(6),
        hostile.progressive_jpeg(),
        hostile.png(hostile.noise(24, 32)),
        hostile.palette_png(transparent_index=2),
        hostile.png16_rgb(),
        hostile.animated_gif(),
        hostile.animated_webp(),
        hostile.multipage_tiff(),
        hostile.cmyk_jpeg(),
        hostile.bmp_image(),
    ]


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    how = int(rng.integers(5))
    if how == 0:  # flip a few bits
        for pos in rng.integers(0, len(buf), int(rng.integers(1, 9))):
            buf[pos] ^= 1 << int(rng.integers(8))
    elif how == 1:  # overwrite a run with random bytes
        start = int(rng.integers(len(buf)))
        run = rng.integers(0, 256, int(rng.integers(1, 33)), dtype=np.uint8).tobytes()
        buf[start : start + len(run)] = run
    elif how == 2:  # truncate
        del buf[int(rng.integers(1, len(buf))) :]
    elif how == 3:  # duplicate a slice (repeated chunks, segments, frames)
        a, b = sorted(int(x) for x in rng.integers(0, len(buf), 2))
        buf[b:b] = buf[a:b]
    else:  # set a header-ish byte to an extreme (sizes, counts, offsets)
        pos = int(rng.integers(0, min(len(buf), 64)))
        buf[pos] = int(rng.choice([0x00, 0x7F, 0x80, 0xFF]))
    return bytes(buf)


def test_mutated_images_never_raise_anything_but_asset_error() -> None:
    """200 seeded mutations; warnings are errors here, so a leaked Pillow warning would fail too."""
    rng = np.random.default_rng(1234)
    seeds = _seeds()
    decoded = skipped = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for case in range(200):
            data = _mutate(seeds[case % len(seeds)], rng)
            try:
                img = decode_image(data, 1_000_000)
            except AssetError as e:
                assert e.kind in ERROR_KINDS, (case, e.kind)
                skipped += 1
                continue
            assert img.pixels.dtype == np.uint8 and img.pixels.shape[2] == 3, case
            assert img.pixels.shape[0] * img.pixels.shape[1] <= 1_000_000
            decoded += 1
    assert decoded > 20 and skipped > 20  # the mutations exercise both paths


# -- no hang: the per-asset time limit -------------------------------------------------------


class SlowFetcher(Fetcher):
    """Reads files normally, but assets whose id starts with ``slow`` block until released."""

    def __init__(self, root: Path) -> None:
        super().__init__([root], 10_000_000)
        self.release = threading.Event()

    def fetch(self, asset: dict[str, Any]) -> bytes:
        if str(asset.get("id", "")).startswith("slow"):
            self.release.wait(10)
        return super().fetch(asset)


@pytest.fixture
def slow_fetcher(tmp_path: Path) -> Iterator[SlowFetcher]:
    (tmp_path / "ok.png").write_bytes(hostile.one_by_one())
    fetcher = SlowFetcher(tmp_path)
    yield fetcher
    fetcher.release.set()  # let the stuck pool threads finish so the process can exit


@pytest.mark.timeout(20)
def test_an_asset_over_the_time_limit_is_skipped_as_timeout(
    tmp_path: Path, slow_fetcher: SlowFetcher, pipeline_factory: Callable[..., Pipeline]
) -> None:
    uri = (tmp_path / "ok.png").as_uri()
    assets = [{"id": "before", "uri": uri}, {"id": "slow", "uri": uri}, {"id": "after", "uri": uri}]
    pipe = pipeline_factory(slow_fetcher, asset_time_limit_s=0.2, decode_threads=2)
    t0 = time.monotonic()
    outcomes = list(pipe.decode_all(assets, []))
    elapsed = time.monotonic() - t0
    assert isinstance(outcomes[0], tuple) and isinstance(outcomes[2], tuple)
    assert isinstance(outcomes[1], AssetError) and outcomes[1].kind == "timeout"
    assert elapsed < 5  # bounded by the limit, not by the stuck fetch (10 s)


@pytest.mark.timeout(20)
def test_stuck_assets_do_not_starve_the_rest_of_the_chunk(
    tmp_path: Path, slow_fetcher: SlowFetcher, pipeline_factory: Callable[..., Pipeline]
) -> None:
    uri = (tmp_path / "ok.png").as_uri()
    assets = [{"id": "slow1", "uri": uri}, {"id": "slow2", "uri": uri}, {"id": "fine", "uri": uri}]
    pipe = pipeline_factory(slow_fetcher, asset_time_limit_s=0.3, decode_threads=2)
    outcomes = list(pipe.decode_all(assets, []))
    assert [o.kind for o in outcomes[:2] if isinstance(o, AssetError)] == ["timeout", "timeout"]
    assert isinstance(outcomes[2], tuple), outcomes[2]
