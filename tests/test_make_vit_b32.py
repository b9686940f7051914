"""tools/make_vit_b32.py: the torch-free ViT-B-32 stand-in has OpenAI's parameter count and FLOPs, and behaves
like a CLIP (batch-independent, unit-length, causal text pooled at end-of-text) through assetq's own loader.

The full-size graphs are built in memory for the parameter count (~2 s); everything that runs uses the same
builder at a tiny size, so the test writes kilobytes, not the 580 MB pack.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from benchmarks.roofline import count_flops
from tools.make_vit_b32 import VIT_B_32, build_textual, build_visual, is_current, parameter_count, write_pack
from worker.models.base import RuntimeOptions
from worker.models.clip_textual import ClipTextual
from worker.models.clip_visual import ClipVisual

TINY: dict[str, Any] = {
    "embed_dim": 16,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 32, "layers": 2, "heads": 4, "mlp_ratio": 4.0},
    "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2, "mlp_ratio": 4.0},
}
SOT, EOT = 49406, 49407


def _block_params(w: int) -> int:
    # ln_1 + ln_2 (4w), qkv (3w^2 + 3w), out_proj (w^2 + w), c_fc (4w^2 + 4w), c_proj (4w^2 + w)
    return 12 * w * w + 13 * w


def _visual_params(cfg: dict[str, Any]) -> int:
    v = cfg["vision_cfg"]
    w, p, tokens = v["width"], v["patch_size"], (v["image_size"] // v["patch_size"]) ** 2 + 1
    return 3 * p * p * w + w + tokens * w + 4 * w + v["layers"] * _block_params(w) + w * cfg["embed_dim"]


def _textual_params(cfg: dict[str, Any]) -> int:
    t = cfg["text_cfg"]
    w = t["width"]
    return (t["vocab_size"] + t["context_length"]) * w + t["layers"] * _block_params(w) + 2 * w + w * cfg["embed_dim"]


def _visual_flops(cfg: dict[str, Any]) -> int:
    """Multiply-adds x 2 for one image: patch conv, per layer four dense products and attention, projection."""
    v = cfg["vision_cfg"]
    w, p, patches = v["width"], v["patch_size"], (v["image_size"] // v["patch_size"]) ** 2
    n = patches + 1
    per_layer = 2 * n * w * 3 * w + 2 * 2 * n * n * w + 2 * n * w * w + 2 * 2 * n * w * 4 * w
    return 2 * patches * 3 * p * p * w + v["layers"] * per_layer + 2 * w * cfg["embed_dim"]


def test_full_size_graphs_have_openai_vit_b32_parameter_counts() -> None:
    rng = np.random.default_rng(0)
    visual = parameter_count(build_visual(VIT_B_32, rng))
    textual = parameter_count(build_textual(VIT_B_32, rng))
    assert visual == _visual_params(VIT_B_32) == 87_849_216  # OpenCLIP's ViT-B-32 image tower
    assert textual == _textual_params(VIT_B_32) == 63_428_096  # and its text tower
    assert round(_visual_flops(VIT_B_32) / 2e9, 2) == 4.41  # GMACs per image, as OpenCLIP's tables give it


def test_dense_flops_match_the_architecture(tmp_path: Path) -> None:
    pack = write_pack(tmp_path, seed=1, cfg=TINY, name="tiny-random")
    size = TINY["vision_cfg"]["image_size"]
    counted = count_flops(pack / "visual" / "model.onnx", (3, size, size))
    assert counted.unresolved == 0
    assert counted.flops == _visual_flops(TINY)


def test_pack_loads_through_assetq_and_behaves_like_clip(tmp_path: Path) -> None:
    write_pack(tmp_path, seed=1, cfg=TINY, name="tiny-random")
    opts = RuntimeOptions(intra_op_threads=1)
    visual = ClipVisual("tiny-random", tmp_path, opts)
    rng = np.random.default_rng(3)
    photos = [rng.integers(0, 256, (90 + 10 * i, 120, 3), dtype=np.uint8) for i in range(3)]
    batched = visual.embed_pixels(photos, max_batch=3)
    alone = np.concatenate([visual.embed_pixels([p], max_batch=1) for p in photos])
    assert batched.shape == (3, TINY["embed_dim"])
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batched, alone, atol=1e-5)  # a row depends on its own image only
    assert not np.allclose(batched[0], batched[1], atol=1e-3)

    textual = ClipTextual("tiny-random", tmp_path, opts)
    texts = textual.embed_texts(["a photo of a cat", "a photo of a dog"])
    assert texts.shape == (2, TINY["embed_dim"]) and textual.context_length == TINY["text_cfg"]["context_length"]
    assert not np.allclose(texts[0], texts[1], atol=1e-3)

    # Causal and pooled at end-of-text: tokens after EOT change nothing, a token before it does.
    session = ort.InferenceSession(str(tmp_path / "clip/tiny-random/textual/model.onnx"))
    ids = np.zeros((3, TINY["text_cfg"]["context_length"]), dtype=np.int32)
    ids[:, :4] = [SOT, 320, 1929, EOT]
    ids[1, 5:8] = [500, 600, 700]  # after EOT
    ids[2, 2] = 2368  # before EOT
    out = session.run(None, {"text": ids})[0]
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)
    assert not np.allclose(out[0], out[2], atol=1e-3)


def test_is_current_tells_a_reusable_pack_from_a_stale_one(tmp_path: Path) -> None:
    pack = write_pack(tmp_path, seed=1, cfg=TINY, name="tiny-random")
    assert is_current(pack, seed=1, cfg=TINY)
    assert not is_current(pack, seed=1)  # another config than ViT-B-32
    assert not is_current(pack, seed=0, cfg=TINY)
    assert not is_current(tmp_path / "missing")
