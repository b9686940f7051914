"""OCR step classes with fake sessions: batching, option handling, bookkeeping (no real models)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from worker.models.base import ModelNotInstalled, RuntimeOptions, SessionFactory
from worker.models.outputs import TextBox
from worker.models.text_detection import PPOCRTextDetector, network_size
from worker.models.text_orientation import PPOCRTextOrientation
from worker.models.text_recognition import (
    MAX_BATCH_COLUMNS,
    MIN_INPUT_WIDTH,
    DictionaryError,
    PPOCRTextRecognizer,
    ctc_greedy_decode,
    dictionary_from,
    read_dictionary_file,
    width_batches,
)
from worker.pipeline.image import DecodedImage

DETECTION = ("ocr", "detection")
ORIENTATION = ("ocr", "classification")
RUNTIME = RuntimeOptions(warmup=False)


@dataclass
class Arg:
    name: str
    shape: Sequence[int | str | None]


@dataclass
class FakeSession:
    """Answers every call with ``respond(input)``; remembers the inputs."""

    respond: Callable[[np.ndarray], np.ndarray]
    output_shape: Sequence[int | str | None] = ("N", 1, "H", "W")
    calls: list[np.ndarray] = field(default_factory=list)

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, np.ndarray]) -> list[Any]:
        x = input_feed["x"]
        self.calls.append(x)
        return [self.respond(x)]

    def get_inputs(self) -> Sequence[Arg]:
        return [Arg("x", ("N", 3, "H", "W"))]

    def get_outputs(self) -> Sequence[Arg]:
        return [Arg("out", self.output_shape)]

    def get_providers(self) -> list[str]:
        return ["CPUExecutionProvider"]


def factory(session: FakeSession) -> SessionFactory:
    return lambda path, opts, flush: session


def fake_pack(root: Path, *types: str, dictionary: Sequence[str] | None = None) -> Path:
    for t in types:
        (root / "ocr" / "FAKE" / t).mkdir(parents=True, exist_ok=True)
        (root / "ocr" / "FAKE" / t / "model.onnx").write_bytes(b"")
    if dictionary is not None:
        (root / "ocr" / "FAKE" / "recognition" / "dict.txt").write_text("\n".join(dictionary) + "\n", encoding="utf-8")
    return root


def image(h: int, w: int, value: int = 255) -> DecodedImage:
    return DecodedImage.from_array(np.full((h, w, 3), value, dtype=np.uint8))


def box(x0: float, y0: float, x1: float, y1: float, score: float = 0.9) -> TextBox:
    return TextBox(quad=((x0, y0), (x1, y0), (x1, y1), (x0, y1)), score=score)


# --- dictionary and CTC decoding ---------------------------------------------------


def test_dictionary_forms() -> None:
    assert dictionary_from(["a", "b"], 4) == ["", "a", "b", " "]  # PP-OCRv6 metadata: blank and space added
    assert dictionary_from(["blank", "a", "b", " "], 4) == ["", "a", "b", " "]  # PP-OCRv5 dict.txt: complete
    assert dictionary_from(["a", "b"], 3) == ["", "a", "b"]  # trained without the space class
    with pytest.raises(DictionaryError, match="2 entries but the model predicts 7"):
        dictionary_from(["a", "b"], 7)


def test_dictionary_file_keeps_a_space_line(tmp_path: Path) -> None:
    path = tmp_path / "dict.txt"
    path.write_text("blank\na\r\n \nb\n", encoding="utf-8")
    assert read_dictionary_file(path) == ["blank", "a", " ", "b"]


def test_ctc_greedy_decode_collapses_repeats_and_drops_blanks() -> None:
    table = ["", "a", "b", " "]
    steps = [1, 1, 0, 1, 2, 2, 0, 3, 0]  # a a _ a b b _ ' ' _
    probs = np.full((1, len(steps), 4), 0.02, dtype=np.float32)
    for t, k in enumerate(steps):
        probs[0, t, k] = 0.5 + 0.05 * t
    ((text, score),) = ctc_greedy_decode(probs, table)
    assert text == "aab "
    kept = [0, 3, 4, 7]  # first of each run of non-blank classes
    assert score == pytest.approx(np.mean([0.5 + 0.05 * t for t in kept]))
    assert ctc_greedy_decode(np.eye(4, dtype=np.float32)[[0, 0, 0]][None], table) == [("", 0.0)]


def test_width_batches_group_similar_widths() -> None:
    widths = [900, 100, 400, 120, 410, 880, 95]
    batches = width_batches(widths, max_batch=2)
    # Sorted by width; the 120 px line runs alone rather than padded to 400 next to one.
    assert batches == [[6, 1], [3], [2, 4], [5, 0]]
    assert sorted(i for b in batches for i in b) == list(range(len(widths)))


def test_width_batches_do_not_pad_short_lines_to_long_ones() -> None:
    # A page's worth: 20 short lines (all padded to the 320 minimum anyway) and 20 long ones of
    # 560-800 px. Cutting the sorted list every 32 lines would pad 12 short lines to 640+.
    widths = [40 + 4 * i for i in range(20)] + [560 + 12 * i for i in range(20)]
    batches = width_batches(widths, max_batch=32)
    assert batches[0] == list(range(20))  # the short lines share one call, at 320
    for batch in batches[1:]:
        padded = max(widths[i] for i in batch)
        assert all(padded - widths[i] <= 0.25 * padded for i in batch)
    assert sorted(i for b in batches for i in b) == list(range(len(widths)))
    # Equal widths are never split below max_batch.
    assert [len(b) for b in width_batches([320] * 40, max_batch=32)] == [32, 8]
    # Very wide lines: the column budget splits batches before max_batch is reached.
    wide = width_batches([MAX_BATCH_COLUMNS // 2 + 1] * 3, max_batch=32)
    assert [len(b) for b in wide] == [1, 1, 1]


# --- recognition -------------------------------------------------------------------


def reading_session(classes: int = 5) -> FakeSession:
    """Reads every line as the class numbered by its row in the batch ('a', 'b', ...), 8 steps per 64 px."""

    def respond(x: np.ndarray) -> np.ndarray:
        n, _, _, w = x.shape
        probs = np.full((n, w // 8, classes), 0.01, dtype=np.float32)
        probs[:, :, 0] = 0.9
        for row in range(n):
            probs[row, 0, 0] = 0.01
            probs[row, 0, 1 + row % (classes - 2)] = 0.9 - 0.2 * (row // (classes - 2))
        return probs

    return FakeSession(respond, output_shape=("N", "T", classes))


def test_recognizer_batches_lines_across_images(tmp_path: Path) -> None:
    root = fake_pack(tmp_path, "recognition", dictionary=["blank", "a", "b", "c", " "])
    session = reading_session()
    rec = PPOCRTextRecognizer("FAKE", root, RUNTIME, factory(session))
    images = [image(100, 400), image(100, 400), image(100, 400)]
    boxes = [[box(0, 0, 370, 40), box(0, 50, 390, 90)], [], [box(0, 0, 380, 40)]]
    lines = rec.run_chunk(images, {DETECTION: boxes}, {"minScore": 0.0}, max_batch=32)
    assert len(session.calls) == 1 and session.calls[0].shape[0] == 3  # one batch for the whole chunk
    assert session.calls[0].shape[3] == max(MIN_INPUT_WIDTH, math.ceil(48 * 390 / 40))
    assert [len(per) for per in lines] == [2, 0, 1]
    # Sorted by width: 370 px line -> row 0 ('a'), 380 px -> row 1 ('b'), 390 px -> row 2 ('c').
    assert [ln.text for ln in lines[0]] == ["a", "c"] and lines[2][0].text == "b"
    assert lines[0][1].quad == boxes[0][1].quad and lines[0][1].box_score == 0.9


def test_recognizer_max_batch_and_min_score(tmp_path: Path) -> None:
    root = fake_pack(tmp_path, "recognition", dictionary=["blank", "a", "b", "c", " "])
    session = reading_session()
    rec = PPOCRTextRecognizer("FAKE", root, RUNTIME, factory(session))
    boxes = [[box(0, 10 * i, 100, 10 * i + 8) for i in range(5)]]  # equal widths: batches of 2, 2, 1
    lines = rec.run_chunk([image(100, 400)], {DETECTION: boxes}, {}, max_batch=2)
    assert [c.shape[0] for c in session.calls] == [2, 2, 1]
    assert all(ln.score >= 0.8 for ln in lines[0]) and len(lines[0]) == 5  # rows 0-1 of each batch score 0.9
    session.calls.clear()
    assert rec.run_chunk([image(100, 400)], {DETECTION: boxes}, {"minScore": 0.95})[0] == []


def test_recognizer_turns_flagged_crops(tmp_path: Path) -> None:
    root = fake_pack(tmp_path, "recognition", dictionary=["blank", "a", "b", "c", " "])
    session = reading_session()
    rec = PPOCRTextRecognizer("FAKE", root, RUNTIME, factory(session))
    pixels = np.zeros((48, 192, 3), dtype=np.uint8)
    pixels[:, 96:] = 255  # dark left half, bright right half
    img = DecodedImage.from_array(pixels)
    boxes = [[box(0, 0, 192, 48)]]
    rec.run_chunk([img], {DETECTION: boxes, ORIENTATION: [[False]]}, {})
    rec.run_chunk([img], {DETECTION: boxes, ORIENTATION: [[True]]}, {})
    upright, turned = session.calls[0][0], session.calls[1][0]
    assert upright[:, :, :96].mean() < -0.9 and upright[:, :, 96:192].mean() > 0.9
    assert turned[:, :, :96].mean() > 0.9 and turned[:, :, 96:192].mean() < -0.9


def test_recognizer_reads_dictionary_from_metadata(tmp_path: Path) -> None:
    @dataclass
    class Meta:
        custom_metadata_map: dict[str, str]

    root = fake_pack(tmp_path, "recognition")
    session = reading_session()
    session.get_modelmeta = lambda: Meta({"character": "x\ny\nz"})  # type: ignore[attr-defined]
    rec = PPOCRTextRecognizer("FAKE", root, RUNTIME, factory(session))
    assert rec.dictionary == ["", "x", "y", "z", " "]


def test_recognizer_without_dictionary_says_so(tmp_path: Path) -> None:
    root = fake_pack(tmp_path, "recognition")
    rec = PPOCRTextRecognizer("FAKE", root, RUNTIME, factory(reading_session()))
    with pytest.raises(ModelNotInstalled, match="no character dictionary"):
        rec.load()


# --- detection ---------------------------------------------------------------------


def blank_map_session() -> FakeSession:
    def respond(x: np.ndarray) -> np.ndarray:
        probs = np.zeros((x.shape[0], 1, x.shape[2], x.shape[3]), dtype=np.float32)
        probs[:, :, 8:24, 8:56] = 0.9  # one box near the top-left of every image
        return probs

    return FakeSession(respond)


def test_network_size_only_shrinks_and_rounds_to_32() -> None:
    assert network_size(3000, 4000, 736) == (544, 736)
    assert network_size(100, 200, 736) == (96, 192)
    assert network_size(40, 33, 736) == (32, 32)


def test_detector_batches_images_of_the_same_shape(tmp_path: Path) -> None:
    session = blank_map_session()
    det = PPOCRTextDetector("FAKE", fake_pack(tmp_path, "detection"), RUNTIME, factory(session))
    images = [image(300, 400), image(600, 800), image(100, 100), image(300, 400), image(20, 400)]
    out = det.run_chunk(images, {}, {"maxResolution": 400}, max_batch=2)
    shapes = sorted(tuple(c.shape) for c in session.calls)
    # 300x400 and 600x800 both become 288x384 (three images: batches of 2 + 1); 100x100 stays 96x96;
    # the 20 px tall image is never sent.
    assert shapes == [(1, 3, 96, 96), (1, 3, 288, 384), (2, 3, 288, 384)]
    assert out[4] == [] and all(len(b) == 1 for b in out[:4])


def test_detector_reports_original_pixels(tmp_path: Path) -> None:
    session = blank_map_session()
    det = PPOCRTextDetector("FAKE", fake_pack(tmp_path, "detection"), RUNTIME, factory(session))
    full = image(256, 512)
    # The same picture decoded at half size (JPEG draft mode) for a 512x256 original.
    half = DecodedImage(pixels=np.full((128, 256, 3), 255, dtype=np.uint8), width=512, height=256)
    (a,), (b,) = det.run_chunk([full], {}, {}), det.run_chunk([half], {}, {})
    # The same map box: the full image maps 1:1 to original pixels, the half-size one 2:1.
    assert np.allclose(np.array(b[0].quad), 2 * np.array(a[0].quad), atol=1e-3)
    assert 56 < max(x for x, _ in a[0].quad) < 56 + 12  # grown by 48*16*1.6/128 = 9.6 px


def test_detector_rejects_a_tiny_max_resolution(tmp_path: Path) -> None:
    det = PPOCRTextDetector("FAKE", fake_pack(tmp_path, "detection"), RUNTIME, factory(blank_map_session()))
    with pytest.raises(ValueError, match="maxResolution"):
        det.run_chunk([image(100, 100)], {}, {"maxResolution": 16})


# --- orientation -------------------------------------------------------------------


def test_orientation_flags_per_image(tmp_path: Path) -> None:
    def respond(x: np.ndarray) -> np.ndarray:
        # Upside down exactly when the crop is dark (the test marks turned lines by colour).
        p180 = np.where(x.mean(axis=(1, 2, 3)) < 0, 0.95, 0.05)
        return np.stack([1 - p180, p180], axis=1).astype(np.float32)

    session = FakeSession(respond, output_shape=("N", 2))
    cls = PPOCRTextOrientation("FAKE", fake_pack(tmp_path, "classification"), RUNTIME, factory(session))
    dark, light = image(60, 200, 0), image(60, 200, 255)
    boxes = [[box(0, 0, 100, 30), box(0, 30, 100, 58)], [box(0, 0, 150, 40)]]
    assert cls.run_chunk([dark, light], {DETECTION: boxes}, {}) == [[True, True], [False]]
    assert session.calls[0].shape == (3, 3, 80, 160)
    assert cls.run_chunk([dark, light], {DETECTION: boxes}, {"minScore": 0.99}) == [[False, False], [False]]


def test_orientation_names_the_missing_classifier(tmp_path: Path) -> None:
    root = fake_pack(tmp_path, "detection", "recognition")
    cls = PPOCRTextOrientation("FAKE", root, RUNTIME, factory(blank_map_session()))
    with pytest.raises(ModelNotInstalled, match="no text-line orientation classifier"):
        cls.run_chunk([image(60, 200)], {DETECTION: [[box(0, 0, 100, 30)]]}, {})
