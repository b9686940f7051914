"""Per-image input work done ahead in the decode threads (``InferenceModel.prepare``) changes nothing.

With the real models: a chunk run after ``prepare`` gives exactly the outputs
of the same chunk run cold, and ``prepare`` left the derived inputs on the
images for ``run_chunk`` to find.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests import face_data
from tools.testbed import ocr_data
from worker.models.base import InferenceModel, RuntimeOptions
from worker.models.clip_visual import ClipVisual
from worker.models.face_detection_scrfd import ScrfdDetector
from worker.models.text_detection import PPOCRTextDetector
from worker.pipeline.image import DecodedImage

RUNTIME = RuntimeOptions(warmup=False)


def images() -> list[DecodedImage]:
    """The astronaut (a face), a rendered page and the page enlarged, as fresh images each call."""
    page = ocr_data.render_lines(["assetq prepares ahead", "and nothing changes"], None, 28).pixels
    big = np.repeat(np.repeat(page, 3, axis=0), 3, axis=1)
    return [DecodedImage.from_array(p) for p in (face_data.astronaut(), page, big)]


@pytest.mark.parametrize(
    ("make", "options", "key_prefix"),
    [
        (lambda d: ClipVisual("tiny-vit-shapes", d, RUNTIME), {}, "clip.visual"),
        (lambda d: PPOCRTextDetector("PP-OCRv6_small", d, RUNTIME), {"maxResolution": 736}, "ocr.detection"),
        (lambda d: ScrfdDetector("buffalo_s", d, RUNTIME), {"minScore": 0.5}, "face.letterbox"),
    ],
    ids=["clip", "text-detection", "face-detection"],
)
def test_prepared_chunk_gives_the_same_outputs(model_dir: Path, make, options, key_prefix) -> None:  # type: ignore[no-untyped-def]
    model: InferenceModel = make(model_dir)
    model.load()
    assert model.prepares
    cold = model.run_chunk(images(), {}, options)

    prepared = images()
    for image in prepared:
        model.prepare(image, options)
        assert [k[0] for k in image.derived] == [key_prefix]
    made = [dict(image.derived) for image in prepared]
    warm = model.run_chunk(prepared, {}, options)

    assert [image.derived for image in prepared] == made  # found, not made again
    if isinstance(model, ClipVisual):
        np.testing.assert_array_equal(np.stack(cold), np.stack(warm))
    else:
        assert any(cold) and cold == warm  # faces / text boxes were found, and found the same


def test_prepare_before_load_does_nothing(model_dir: Path) -> None:
    # prepare never loads a session: the model may have been unloaded since the chunk was planned.
    clip = ClipVisual("tiny-vit-shapes", model_dir, RUNTIME)
    image = images()[0]
    clip.prepare(image, {})
    assert image.derived == {} and not clip.loaded
