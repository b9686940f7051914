"""CLIP visual and textual towers on the bundled tiny model, in Immich's pack layout."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from tools.synthetic_world import HELD_OUT_SEED, Scene, render
from worker.models.base import ModelNotInstalled, RuntimeOptions
from worker.models.clip_textual import ClipTextual
from worker.models.clip_visual import ClipVisual
from worker.models.install import install_pack, install_path
from worker.models.packs import PACKS
from worker.models.registry import model_class
from worker.models.zero_shot import ZeroShotClassifier
from worker.pipeline.image import DecodedImage

TINY = "tiny-vit-shapes"
RUNTIME = RuntimeOptions(intra_op_threads=1, warmup=False)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    install_pack(PACKS[TINY], root, root / "wheels")
    return root


@pytest.fixture(scope="module")
def images() -> list[DecodedImage]:
    rng = np.random.default_rng(HELD_OUT_SEED)
    scenes = [
        Scene("star", "red"),
        Scene("circle", "blue"),
        Scene("heart", "pink"),
        Scene("cross", "green"),
        Scene("ring", "yellow"),
    ]
    return [DecodedImage.from_array(render(s, rng)) for s in scenes]


def test_pack_is_in_immich_layout(tiny_model_dir: Path) -> None:
    pack = tiny_model_dir / "clip" / TINY
    for rel in (
        "config.json",
        "visual/model.onnx",
        "visual/preprocess_cfg.json",
        "textual/model.onnx",
        "textual/tokenizer.json",
        "textual/tokenizer_config.json",
    ):
        assert (pack / rel).is_file(), rel
    assert model_class("clip", "visual", TINY, tiny_model_dir) is ClipVisual
    assert model_class("clip", "textual", TINY, tiny_model_dir) is ClipTextual
    assert model_class("zero-shot", "classifier", TINY, tiny_model_dir) is ZeroShotClassifier


def test_visual_embeddings_are_normalised_and_batching_changes_nothing(
    tiny_model_dir: Path, images: list[DecodedImage]
) -> None:
    visual = ClipVisual(TINY, tiny_model_dir, RUNTIME)
    batched = visual.run_chunk(images, {}, {}, max_batch=16)
    uneven = visual.run_chunk(images, {}, {}, max_batch=2)
    single = [visual.run_chunk([image], {}, {})[0] for image in images]
    assert len(batched) == len(images)
    for b, u, s in zip(batched, uneven, single, strict=True):
        assert b.shape == (64,) and b.dtype == np.float32
        assert np.linalg.norm(b) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(b, s, atol=1e-5)
        np.testing.assert_allclose(u, s, atol=1e-5)
    # Different images give different embeddings.
    assert float(batched[0] @ batched[1]) < 0.99
    assert visual.run_chunk([], {}, {}) == []


def test_text_embeddings_match_the_images_they_describe(tiny_model_dir: Path, images: list[DecodedImage]) -> None:
    textual = ClipTextual(TINY, tiny_model_dir, RUNTIME)
    assert textual.context_length == 16  # from the graph / config.json, not the 77 default
    prompts = ["a red star", "a blue circle", "a pink heart", "a green cross", "a yellow ring"]
    texts = textual.embed_texts(prompts)
    assert texts.shape == (5, 64) and texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(textual.embed_texts(prompts, batch_size=2), texts, atol=1e-5)
    visual = np.stack(ClipVisual(TINY, tiny_model_dir, RUNTIME).run_chunk(images, {}, {}))
    assert ((visual @ texts.T).argmax(axis=1) == np.arange(5)).all()
    with pytest.raises(TypeError, match="embed_texts"):
        textual.run_chunk(images, {}, {})


def _fix_batch_to_one(path: Path) -> None:
    """Make a graph like Immich's exports: batch dimension fixed at 1."""
    model = onnx.load(str(path))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(model, str(path))


def test_fixed_batch_exports_run_one_at_a_time(
    tiny_model_dir: Path, images: list[DecodedImage], tmp_path: Path
) -> None:
    shutil.copytree(tiny_model_dir / "clip" / TINY, tmp_path / "clip" / "fixed")
    _fix_batch_to_one(tmp_path / "clip" / "fixed" / "visual" / "model.onnx")
    _fix_batch_to_one(tmp_path / "clip" / "fixed" / "textual" / "model.onnx")
    fixed = ClipVisual("fixed", tmp_path, RUNTIME).run_chunk(images, {}, {}, max_batch=16)
    dynamic = ClipVisual(TINY, tiny_model_dir, RUNTIME).run_chunk(images, {}, {}, max_batch=16)
    np.testing.assert_allclose(np.stack(fixed), np.stack(dynamic), atol=1e-5)
    texts = ["a star", "a circle", "a heart"]
    np.testing.assert_allclose(
        ClipTextual("fixed", tmp_path, RUNTIME).embed_texts(texts),
        ClipTextual(TINY, tiny_model_dir, RUNTIME).embed_texts(texts),
        atol=1e-5,
    )


def test_install_from_archive_and_directory(tiny_model_dir: Path, images: list[DecodedImage], tmp_path: Path) -> None:
    source = tiny_model_dir / "clip" / TINY
    archive = tmp_path / "my-clip.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(source, arcname="my-clip")
    target = tmp_path / "models"
    assert install_path(archive, target) == target / "clip" / "my-clip"
    assert install_path(source, target, name="copied") == target / "clip" / "copied"
    reference = ClipVisual(TINY, tiny_model_dir, RUNTIME).run_chunk(images[:2], {}, {})
    for name in ("my-clip", "copied"):
        got = ClipVisual(name, target, RUNTIME).run_chunk(images[:2], {}, {})
        np.testing.assert_allclose(np.stack(got), np.stack(reference), atol=1e-6)


def test_missing_pack_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ModelNotInstalled, match="clip/nope/visual"):
        ClipVisual("nope", tmp_path, RUNTIME).load()
    classifier = ZeroShotClassifier("nope", tmp_path, RUNTIME)
    assert classifier.model_path == tmp_path / "clip" / "nope" / "textual" / "model.onnx"
    with pytest.raises(ModelNotInstalled, match="clip/nope/textual"):
        classifier.load()


def test_a_full_size_decode_is_area_shrunk_to_what_a_dct_scaled_one_would_be() -> None:
    """CLIP handed a full-size 12 MP decode (faces aligned from full size) resizes from about what a
    decode DCT-scaled for CLIP alone would give it; an image under twice its side is left as it is."""
    import io

    from PIL import Image

    from tests import hostile
    from worker.models.clip_visual import DECODE_SIDE, shrunk
    from worker.pipeline.image import decode_image

    small = hostile.noise(2 * DECODE_SIDE - 1, 1200)
    assert shrunk(small) is small
    big = np.tile(hostile.noise(375, 500), (8, 8, 1))  # 3000 x 4000
    data = hostile.jpeg(big, quality=90)
    full = decode_image(data, 50_000_000).pixels
    quarter = decode_image(data, 50_000_000, DECODE_SIDE).pixels  # the DCT at 1/4
    area = shrunk(full)
    assert area.shape == quarter.shape == (750, 1000, 3)
    assert Image.open(io.BytesIO(data)).size == (4000, 3000)
    assert np.abs(area.astype(np.int16) - quarter).mean() < 4
