"""Folder-classification metrics: hand-checked numbers, CSV and PNG output, and a real run on the tiny model."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from producer.evaluate import (
    NO_LABEL,
    evaluate,
    format_report,
    plot_confusion_matrix,
    true_label,
    write_predictions_csv,
    write_report_csv,
)
from tools.synthetic_world import HELD_OUT_SEED, SHAPES, article, write_folders
from worker.models.base import RuntimeOptions
from worker.models.clip_visual import ClipVisual
from worker.models.install import install_pack
from worker.models.packs import PACKS
from worker.models.zero_shot import ZeroShotClassifier
from worker.pipeline.image import decode_image

TRUTH = ["cat"] * 5 + ["dog"] * 4 + ["bird"] * 3
PREDICTED = ["cat", "cat", "cat", "dog", None, "dog", "dog", "cat", "dog", "bird", "bird", "dog"]


def test_metrics_by_hand() -> None:
    result = evaluate(TRUTH, PREDICTED, labels=["cat", "dog", "bird"])
    assert result.labels == ("cat", "dog", "bird", NO_LABEL)
    assert result.accuracy == pytest.approx(8 / 12)
    assert (result.correct, result.total) == (8, 12)
    np.testing.assert_array_equal(result.matrix, [[3, 1, 0, 1], [1, 3, 0, 0], [0, 1, 2, 0], [0, 0, 0, 0]])
    by_label = {m.label: m for m in result.per_class}
    assert set(by_label) == {"cat", "dog", "bird"}
    assert (by_label["cat"].precision, by_label["cat"].recall) == (pytest.approx(3 / 4), pytest.approx(3 / 5))
    assert (by_label["dog"].precision, by_label["dog"].recall) == (pytest.approx(3 / 5), pytest.approx(3 / 4))
    assert (by_label["bird"].precision, by_label["bird"].recall) == (pytest.approx(1.0), pytest.approx(2 / 3))
    assert (by_label["dog"].support, by_label["dog"].predicted) == (4, 5)
    text = format_report(result)
    assert "accuracy: 0.6667 (8/12)" in text and "confusion matrix" in text


def test_classes_never_predicted_or_never_seen() -> None:
    result = evaluate(["a", "a"], ["b", "b"], labels=["a", "b", "c"])
    metrics = {m.label: m for m in result.per_class}
    assert metrics["a"].precision == 0.0 and metrics["a"].recall == 0.0
    assert metrics["c"].support == 0 and metrics["c"].recall == 0.0
    assert evaluate(["x"], ["y"]).labels == ("x", "y")  # unlisted labels are added, sorted
    assert evaluate([], []).accuracy == 0.0
    with pytest.raises(ValueError, match="predictions"):
        evaluate(["a"], [])


def test_true_label_is_the_first_folder(tmp_path: Path) -> None:
    assert true_label(tmp_path / "cat" / "x.jpg", tmp_path) == "cat"
    assert true_label(tmp_path / "cat" / "kitten" / "x.jpg", tmp_path) == "cat"
    assert true_label(tmp_path / "x.jpg", tmp_path) is None


def test_csv_outputs(tmp_path: Path) -> None:
    rows = [("a/1.png", "cat", 0.75, "cat", [("cat", 0.75), ("dog", 0.5)]), ("a/2.png", None, None, "dog", [])]
    assert write_predictions_csv(tmp_path / "out" / "predictions.csv", rows) == 2
    with (tmp_path / "out" / "predictions.csv").open() as f:
        read = list(csv.DictReader(f))
    assert read[0] == {
        "path": "a/1.png",
        "predicted": "cat",
        "score": "0.750000",
        "true": "cat",
        "labels": "cat:0.750000;dog:0.500000",
    }
    assert read[1]["predicted"] == "" and read[1]["score"] == ""
    write_report_csv(tmp_path / "report.csv", evaluate(TRUTH, PREDICTED, ["cat", "dog", "bird"]))
    lines = list(csv.reader((tmp_path / "report.csv").open()))
    assert lines[0] == ["class", "precision", "recall", "support", "predicted"]
    assert lines[1][:3] == ["cat", "0.750000", "0.600000"]
    assert ["true \\ predicted", "cat", "dog", "bird", NO_LABEL] in lines


def test_confusion_matrix_png(tmp_path: Path) -> None:
    result = evaluate(TRUTH, PREDICTED, ["cat", "dog", "bird"])
    path = plot_confusion_matrix(result, tmp_path / "cm.png", cell=40)
    image = Image.open(path).convert("RGB")
    assert image.width > 4 * 40 and image.height > 4 * 40
    pixels = np.asarray(image)
    # The diagonal is shaded blue, the off-diagonal errors red: look for both.
    blue = (pixels[..., 2] > 200) & (pixels[..., 0] < 180)
    red = (pixels[..., 0] > 200) & (pixels[..., 2] < 240) & (pixels[..., 1] < 240)
    assert blue.sum() > 500 and red.sum() > 200


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    install_pack(PACKS["tiny-vit-shapes"], root, root / "wheels")
    return root


def test_folder_classification_on_the_tiny_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    """What `assetq classify DIR --eval` does minus the CLI: files -> decode -> CLIP -> zero-shot -> metrics."""
    root = tmp_path / "shapes"
    files = write_folders(root, HELD_OUT_SEED + 1, per_combination=1, label="shape")
    runtime = RuntimeOptions(intra_op_threads=1, warmup=False)
    visual = ClipVisual("tiny-vit-shapes", tiny_model_dir, runtime)
    classifier = ZeroShotClassifier("tiny-vit-shapes", tiny_model_dir, runtime)
    classes = {s: {"positive": [f"a photo of {article(s)} {s}", f"{article(s)} {s}"]} for s in SHAPES}
    images = [decode_image(p.read_bytes(), max_pixels=10_000_000) for p in files]
    embeddings = visual.run_chunk(images, {}, {}, max_batch=16)
    labels = classifier.run_chunk(images, {("clip", "visual"): embeddings}, {"classes": classes, "topK": 3})
    predicted = [per_image[0].name if per_image else None for per_image in labels]
    truth = [true_label(p, root) for p in files]
    result = evaluate([t for t in truth if t], predicted, labels=list(SHAPES))
    assert result.total == len(files) == 64
    assert result.accuracy == pytest.approx(np.mean([p == t for p, t in zip(predicted, truth, strict=True)]))
    assert result.accuracy >= 0.9, format_report(result)
    assert all(len(per_image) == 3 for per_image in labels)
