"""Face models' batching rules, with a stand-in session instead of ONNX Runtime.

``RecordingSession`` answers like SCRFD or ArcFace would and records the shape
of each batch it is given: a detector warms up and obeys a fixed input shape,
batches whole chunks, and a recognizer batches faces across images in order.
No model files are needed (the real models are in tests/test_face_models.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tests.face_data import decoded
from worker.models.base import RuntimeOptions, Session
from worker.models.face_align import ARCFACE_TEMPLATE
from worker.models.face_common import DETECTION_STEP
from worker.models.face_detection_scrfd import ScrfdDetector
from worker.models.face_recognition_arcface import ArcFaceRecognizer
from worker.models.outputs import FaceBox


@dataclass
class Arg:
    name: str
    shape: Sequence[int | str | None]


class RecordingSession:
    """Answers like SCRFD or ArcFace would (zeros / row index) and records each batch it was given."""

    def __init__(self, input_shape: Sequence[int | str | None], outputs: Sequence[Arg]) -> None:
        self.input_shape = input_shape
        self.outputs = outputs
        self.batches: list[tuple[int, ...]] = []

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, np.ndarray]) -> list[Any]:
        (batch,) = input_feed.values()
        self.batches.append(batch.shape)
        n = batch.shape[0]
        if len(self.outputs) == 1:  # a recognizer: embed each crop as its mean pixel value, then a one
            mean = batch.reshape(n, -1).mean(axis=1)
            return [np.stack([mean, np.ones(n)], axis=1).astype(np.float32)]
        side = batch.shape[2]
        return [np.zeros((n, (side // s) ** 2 * 2, k), np.float32) for k in (1, 4, 10) for s in (8, 16, 32)]

    def get_inputs(self) -> Sequence[Arg]:
        return [Arg("input", self.input_shape)]

    def get_outputs(self) -> Sequence[Arg]:
        return self.outputs

    def get_providers(self) -> list[str]:
        return ["CPUExecutionProvider"]


def installed_stub(root: Path, pack: str, type_: str) -> Path:
    path = root / "facial-recognition" / pack / type_ / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"stand-in")
    return root


def stub_factory(session: Session) -> Any:
    return lambda _path, _options, _flush: session


def test_detector_warms_up_and_obeys_a_fixed_input_shape(tmp_path: Path) -> None:
    root = installed_stub(tmp_path, "buffalo_s", "detection")
    fake = RecordingSession([1, 3, 320, 320], [Arg(f"o{i}", ["?"]) for i in range(9)])
    model = ScrfdDetector("buffalo_s", root, RuntimeOptions(), stub_factory(fake))
    model.load()
    assert fake.batches == [(1, 3, 320, 320)]  # warmup: one dummy batch
    image = decoded(np.zeros((100, 80, 3), np.uint8))
    assert model.run_chunk([image] * 3, {}, {}, max_batch=8) == [[], [], []]
    assert fake.batches[1:] == [(1, 3, 320, 320)] * 3


def test_detector_batches_whole_chunks(tmp_path: Path) -> None:
    root = installed_stub(tmp_path, "buffalo_s", "detection")
    fake = RecordingSession(["N", 3, "H", "W"], [Arg(f"o{i}", ["?"]) for i in range(9)])
    model = ScrfdDetector("buffalo_s", root, RuntimeOptions(warmup=False), stub_factory(fake), max_batch=4)
    small = ScrfdDetector("buffalo_s", root, RuntimeOptions(warmup=False), stub_factory(fake), input_size=64)
    images = [decoded(np.zeros((60 + i, 90, 3), np.uint8)) for i in range(6)]
    assert model.run_chunk(images, {}, {}) == [[]] * 6
    assert small.run_chunk(images, {}, {}, max_batch=5) == [[]] * 6
    assert fake.batches == [(4, 3, 640, 640), (2, 3, 640, 640), (5, 3, 64, 64), (1, 3, 64, 64)]


def test_recognizer_batches_faces_across_images_in_order(tmp_path: Path) -> None:
    root = installed_stub(tmp_path, "buffalo_s", "recognition")
    fake = RecordingSession(["N", 3, 112, 112], [Arg("embedding", ["N", 2])])
    model = ArcFaceRecognizer("buffalo_s", root, RuntimeOptions(warmup=False), stub_factory(fake))
    # Three uniformly grey images, each of its own brightness, with 2, 0 and 3 faces.
    brightness = [40, 0, 200]
    counts = [2, 0, 3]
    images = [decoded(np.full((200, 200, 3), b, np.uint8)) for b in brightness]
    marks = tuple(map(tuple, ARCFACE_TEMPLATE + 30))
    faces = [[FaceBox((30, 30, 142, 142), 0.9, marks)] * n for n in counts]
    vectors = model.run_chunk(images, {DETECTION_STEP: faces}, {}, max_batch=4)
    assert [b[0] for b in fake.batches] == [4, 1]  # five faces from three images: one full batch, one left over
    assert [v.shape for v in vectors] == [(2, 2), (0, 2), (3, 2)]
    for b, rows in zip(brightness, vectors, strict=True):
        expected = np.array([(b - 127.5) / 127.5, 1.0])  # the stand-in embeds a crop as its mean, then a one
        np.testing.assert_allclose(rows, np.tile(expected / np.linalg.norm(expected), (len(rows), 1)), atol=1e-6)
