"""Pipeline core with stand-in model classes: decode once, dependency order, chunk batching, skips.

The real models are tested in their own files and end to end in test_integration.py;
here a test family of tiny classes records what the pipeline hands them.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from PIL import Image

from worker.models.base import InferenceModel, RuntimeOptions, StepKey
from worker.models.cache import ModelCache
from worker.models.face_common import FaceDetector, FaceRecognizer
from worker.models.outputs import FaceBox
from worker.models.registry import register
from worker.pipeline.fetch import Fetcher
from worker.pipeline.image import DecodedImage
from worker.pipeline.run import Limits, Pipeline, plan_for

CALLS: list[tuple[str, int, int]] = []  # (step, images in the call, id of the first image)


class FakeSession:
    def __init__(self, *_: Any) -> None:
        pass


def fake_factory(path: Path, opts: RuntimeOptions, flush: bool) -> Any:
    return FakeSession()


class FakeDetector(InferenceModel):
    task = "facial-recognition"
    type = "detection"
    result_fields = FaceDetector.result_fields  # the real detectors' "faces" JSON

    def warmup(self) -> None:
        pass

    def run_chunk(
        self,
        images: Sequence[DecodedImage],
        upstream: Mapping[StepKey, Sequence[Any]],
        options: Mapping[str, Any],
        *,
        max_batch: int | None = None,
    ) -> list[Any]:
        CALLS.append(("det", len(images), id(images[0].pixels)))
        # one face per 100 px of width, scored 0.9 then 0.5
        return [
            [FaceBox((0, 0, 10, 10), 0.9 if i == 0 else 0.5, ((1, 1),) * 5) for i in range(img.width // 100)]
            for img in images
        ]


class FakeRecognizer(InferenceModel):
    task = "facial-recognition"
    type = "recognition"
    depends_on: ClassVar[tuple[StepKey, ...]] = (("facial-recognition", "detection"),)
    batch_setting: ClassVar[str | None] = "face_batch_size"
    result_fields = FaceRecognizer.result_fields  # the real recognizers' "faces" JSON, with embeddings

    def warmup(self) -> None:
        pass

    def run_chunk(
        self,
        images: Sequence[DecodedImage],
        upstream: Mapping[StepKey, Sequence[Any]],
        options: Mapping[str, Any],
        *,
        max_batch: int | None = None,
    ) -> list[Any]:
        faces = upstream[("facial-recognition", "detection")]
        total = sum(len(f) for f in faces)
        CALLS.append(("rec", total, id(images[0].pixels)))
        assert max_batch == 7
        out = []
        for f in faces:
            v = np.ones((len(f), 4), np.float32)
            out.append(v / np.linalg.norm(v, axis=1, keepdims=True) if len(f) else v)
        return out


register("fake-test")(FakeDetector)
register("fake-test")(FakeRecognizer)


@pytest.fixture
def fake_models(tmp_path: Path) -> Path:
    pack = tmp_path / "facial-recognition" / "fake"
    for t in ("detection", "recognition"):
        (pack / t).mkdir(parents=True)
        (pack / t / "model.onnx").write_bytes(b"not used")
    (pack / "assetq.json").write_text(json.dumps({"family": "fake-test"}))
    return tmp_path


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


def pipeline(model_dir: Path, tmp_path: Path) -> Pipeline:
    cache = ModelCache(model_dir, RuntimeOptions(warmup=False), session_factory=fake_factory)
    return Pipeline(cache, Fetcher([tmp_path], 10_000_000), Limits(face_batch_size=7))


TASKS = {
    "facial-recognition": {
        "detection": {"modelName": "fake", "options": {"minScore": 0.1}},
        "recognition": {"modelName": "fake", "options": {"minScore": 0.6}},
    }
}


def test_chunk_batched_in_dependency_order_with_bad_assets_skipped(fake_models: Path, tmp_path: Path) -> None:
    CALLS.clear()
    (tmp_path / "a.png").write_bytes(png(300, 50))
    (tmp_path / "b.png").write_bytes(png(200, 50))
    (tmp_path / "bad.jpg").write_bytes(b"<html>not an image</html>")
    assets = [
        {"id": "a", "uri": (tmp_path / "a.png").as_uri()},
        {"id": "bad", "uri": (tmp_path / "bad.jpg").as_uri()},
        {"id": "b", "uri": (tmp_path / "b.png").as_uri()},
        {"id": "gone", "uri": (tmp_path / "missing.png").as_uri()},
    ]
    results = pipeline(fake_models, tmp_path).process("B", assets, TASKS)
    assert [r["asset_id"] for r in results] == ["a", "bad", "b", "gone"]
    assert [r["status"] for r in results] == ["ok", "skipped", "ok", "skipped"]
    assert results[1]["error"]["kind"] == "unsupported_format"
    assert results[3]["error"]["kind"] == "not_found"
    # detection saw both good images in one call; recognition got all 5 faces of the chunk at once
    assert [c[:2] for c in CALLS] == [("det", 2), ("rec", 5)]
    assert CALLS[0][2] == CALLS[1][2]  # the same decoded pixels were shared, not decoded again
    a = results[0]
    assert a["image"] == {"width": 300, "height": 50}
    assert len(a["faces"]) == 1  # recognition minScore 0.6 filters the 0.5 faces
    assert a["faces"][0]["model"] == {"detection": "fake", "recognition": "fake"}
    assert np.isclose(np.linalg.norm(a["faces"][0]["embedding"]), 1.0)
    assert set(a["timings_ms"]) == {"decode", "facial-recognition.detection", "facial-recognition.recognition"}


def test_invalid_tasks_reaching_a_worker_are_skipped_not_retried(fake_models: Path, tmp_path: Path) -> None:
    results = pipeline(fake_models, tmp_path).process("B", [{"id": "a", "data": ""}], {"nope": {}})
    assert results[0]["status"] == "skipped" and results[0]["error"]["kind"] == "invalid_spec"


def test_all_assets_bad_runs_no_model(fake_models: Path, tmp_path: Path) -> None:
    CALLS.clear()
    results = pipeline(fake_models, tmp_path).process("B", [{"id": "z", "data": ""}], TASKS)
    assert results[0]["error"]["kind"] == "empty" and CALLS == []


def test_file_outside_roots_is_skipped(fake_models: Path, tmp_path: Path) -> None:
    results = pipeline(fake_models, tmp_path).process("B", [{"id": "x", "uri": "file:///etc/hostname"}], TASKS)
    assert results[0]["error"]["kind"] == "outside_roots"


def test_model_cache_unloads_idle_models(fake_models: Path) -> None:
    now = [0.0]
    cache = ModelCache(
        fake_models, RuntimeOptions(warmup=False), ttl_s=10, session_factory=fake_factory, clock=lambda: now[0]
    )
    det = cache.get("facial-recognition", "detection", "fake")
    assert det.loaded and cache.get("facial-recognition", "detection", "fake") is det
    now[0] = 5
    cache.get("facial-recognition", "recognition", "fake")
    now[0] = 12
    assert cache.evict_idle() == [("facial-recognition", "detection", "fake")]
    assert not det.loaded
    assert cache.loaded() == [("facial-recognition", "recognition", "fake")]


PREPARED: list[tuple[str, str]] = []  # (thread name, what was made)


class PreparingDetector(FakeDetector):
    """Derives a 'canvas' per image in ``prepare``; fails to for images 200 px wide."""

    prepares: ClassVar[bool] = True

    def prepare(self, image: DecodedImage, options: Mapping[str, Any]) -> None:
        if image.width == 200:
            raise RuntimeError("prepare failed")
        image.derive(("canvas", options["minScore"]), self._canvas)

    def _canvas(self, pixels: np.ndarray) -> np.ndarray:
        PREPARED.append((threading.current_thread().name, f"{pixels.shape[1]}"))
        return pixels[::2, ::2]

    def run_chunk(
        self,
        images: Sequence[DecodedImage],
        upstream: Mapping[StepKey, Sequence[Any]],
        options: Mapping[str, Any],
        *,
        max_batch: int | None = None,
    ) -> list[Any]:
        for image in images:
            image.derive(("canvas", options["minScore"]), self._canvas)
        return super().run_chunk(images, upstream, options, max_batch=max_batch)


register("fake-prepare")(PreparingDetector)
register("fake-prepare")(FakeRecognizer)


def test_decode_threads_prepare_model_inputs_and_a_failed_prepare_loses_nothing(
    fake_models: Path, tmp_path: Path
) -> None:
    (fake_models / "facial-recognition" / "fake" / "assetq.json").write_text(json.dumps({"family": "fake-prepare"}))
    PREPARED.clear()
    for name, width in (("a", 300), ("b", 200)):
        (tmp_path / f"{name}.png").write_bytes(png(width, 50))
    assets = [{"id": n, "uri": (tmp_path / f"{n}.png").as_uri()} for n in ("a", "b")]
    results = pipeline(fake_models, tmp_path).process("B", assets, TASKS)
    assert [r["status"] for r in results] == ["ok", "ok"]
    assert [len(r["faces"]) for r in results] == [1, 1]
    # a's canvas was made once, in a decode thread; b's prepare failed, so the step made it itself,
    # in one of the inference threads (the caller's or a lane's).
    made_in = {what: thread for thread, what in PREPARED}
    assert len(PREPARED) == 2
    assert made_in["300"].startswith("assetq-decode")
    assert made_in["200"] == threading.current_thread().name or made_in["200"].startswith("assetq-lane")


def test_every_registered_model_declares_what_the_pipeline_reads() -> None:
    from config.settings import default_of
    from worker.models.registry import check_declarations, registered

    limits = Limits()
    for cls in registered().values():
        check_declarations(cls)
        if cls.batch_setting is not None:  # a Settings field with a Limits field of the same name
            assert getattr(limits, cls.batch_setting) == default_of(cls.batch_setting), cls
            assert limits.batch_size(cls.batch_setting) == cls.default_max_batch() >= 1, cls
        assert cls.decode_side({}, limits.detail_side) >= 0, cls


def test_detection_and_face_batches_are_small_on_the_cpu_and_large_on_a_gpu_unless_set() -> None:
    # 0 (the default) is "auto": on the CPU larger batches only cost memory.
    assert Limits().detection_batch_size == Limits().face_batch_size == 0
    assert Limits(device="cpu").batch_size("detection_batch_size") == 1
    assert Limits(device="0").batch_size("detection_batch_size") == 8
    assert Limits(device="cpu").batch_size("face_batch_size") == 8  # calls on onnxruntime's every core
    assert Limits(device="cpu", intra_op_threads=2).batch_size("face_batch_size") == 8
    # one thread a call: a batch of 1 runs from the cache, 7-9% faster per face than 8, ~60 MiB less
    assert Limits(device="cpu", intra_op_threads=1).batch_size("face_batch_size") == 1
    assert Limits(device="1").batch_size("face_batch_size") == 32
    assert Limits(device="1", intra_op_threads=1).batch_size("face_batch_size") == 32
    assert Limits(device="cpu", detection_batch_size=4).batch_size("detection_batch_size") == 4
    assert Limits(device="0", face_batch_size=5).batch_size("face_batch_size") == 5
    assert FaceDetector.default_max_batch() == 1 and FaceRecognizer.default_max_batch() == 8


def test_a_workers_limits_size_auto_batches_by_its_resolved_threads() -> None:
    from config.settings import Settings

    one_each = Settings(concurrency=1, inference_threads=2, intra_op_threads=1)
    assert Limits.from_settings(one_each).batch_size("face_batch_size") == 1
    shared = Settings(concurrency=1, inference_threads=1, intra_op_threads=2)
    assert Limits.from_settings(shared).batch_size("face_batch_size") == 8


class StreamDetector(FakeDetector):
    batch_setting: ClassVar[str | None] = "detection_batch_size"  # images per call, like the real detectors


class StreamRecognizer(FakeRecognizer):
    batches_images: ClassVar[bool] = False  # faces per call

    def run_chunk(self, *args: Any, **kwargs: Any) -> list[Any]:
        LIVE.append(sum(1 for ref in DECODED if ref() is not None))
        return super().run_chunk(*args, **kwargs)


register("fake-stream")(StreamDetector)
register("fake-stream")(StreamRecognizer)
LIVE: list[int] = []  # decoded images still alive whenever recognition starts
DECODED: list[Any] = []  # weak references to every image decoded


def test_a_chunk_streams_wave_by_wave_and_lets_each_waves_pixels_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import weakref

    import worker.pipeline.run as run_module

    pack = tmp_path / "models" / "facial-recognition" / "fake"
    for t in ("detection", "recognition"):
        (pack / t).mkdir(parents=True)
        (pack / t / "model.onnx").write_bytes(b"not used")
    (pack / "assetq.json").write_text(json.dumps({"family": "fake-stream"}))
    real_decode = run_module.decode_image

    def tracked(*args: Any, **kwargs: Any) -> DecodedImage:
        image = real_decode(*args, **kwargs)
        DECODED.append(weakref.ref(image))
        return image

    monkeypatch.setattr(run_module, "decode_image", tracked)
    monkeypatch.setattr(run_module, "WAVE_PIXELS", 1)  # these images are tiny: make every one count as big
    assets = []
    for i in range(12):
        (tmp_path / f"{i}.png").write_bytes(png(100 + 100 * (i % 3), 40))
        assets.append({"id": str(i), "uri": (tmp_path / f"{i}.png").as_uri()})
    outcomes = {}
    for detection_batch in (1, 12):
        CALLS.clear()
        LIVE.clear()
        DECODED.clear()
        cache = ModelCache(tmp_path / "models", RuntimeOptions(warmup=False), session_factory=fake_factory)
        limits = Limits(face_batch_size=7, detection_batch_size=detection_batch, inference_threads=1)
        pipe = Pipeline(cache, Fetcher([tmp_path], 10_000_000), limits)
        assert pipe.wave_size(plan_for(TASKS, cache)) == detection_batch
        results = pipe.process("B", assets, TASKS)
        pipe.close()
        outcomes[detection_batch] = [{k: v for k, v in r.items() if k != "timings_ms"} for r in results]
        if detection_batch == 1:
            # image by image: detection then recognition, each image's faces in their own batch
            assert [c[0] for c in CALLS] == ["det", "rec"] * 12
            # never more than the wave and the decode threads' look-ahead alive (2 threads + 1 + the one decoding)
            assert max(LIVE) <= 1 + pipe.look_ahead(plan_for(TASKS, cache)), LIVE
        else:
            assert [c[:2] for c in CALLS] == [("det", 12), ("rec", 24)]
            assert max(LIVE) == 12
    assert outcomes[1] == outcomes[12]  # the same results whatever the wave
    # At the real pixel budget, images this small gather into one wave even with detection batch 1.
    monkeypatch.setattr(run_module, "WAVE_PIXELS", 16_000_000)
    CALLS.clear()
    cache = ModelCache(tmp_path / "models", RuntimeOptions(warmup=False), session_factory=fake_factory)
    limits = Limits(face_batch_size=7, detection_batch_size=1, inference_threads=1)
    Pipeline(cache, Fetcher([tmp_path], 10_000_000), limits).process("B", assets, TASKS)
    assert [c[0] for c in CALLS] == ["det", "rec"]


def test_the_decode_pool_runs_a_bounded_number_of_jobs_ahead_of_its_consumer() -> None:
    from worker.pipeline.deadline_pool import DeadlinePool

    started: list[int] = []
    pool: DeadlinePool[int, int] = DeadlinePool(2)
    results = pool.map(lambda i: started.append(i) or i, list(range(10)), limit_s=5, ahead=3)
    for i in range(10):
        assert next(results) == i
        assert max(started) <= i + 2, (i, started)  # while i is held, at most i+1 and i+2 are submitted
    pool.shutdown()
