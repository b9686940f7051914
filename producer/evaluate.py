"""Scoring folder classification: accuracy, per-class precision/recall, a confusion matrix.

``assetq classify DIR --eval`` takes each image's true label from the first
folder below ``DIR`` it lies in (``DIR/cat/x.jpg`` is a ``cat``) and compares
it with the predicted class. Everything here is plain functions over lists of
labels, so the numbers can be checked by hand; the confusion-matrix picture is
drawn with Pillow (no plotting library is needed).

An image the classifier gave no label (every class under ``minScore``) is
predicted as :data:`NO_LABEL`: it counts as wrong and gets its own column.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

NO_LABEL = "(none)"


def true_label(path: Path, root: Path) -> str | None:
    """The name of the first folder below ``root`` that holds ``path`` (None for files directly in ``root``)."""
    parts = Path(path).resolve().relative_to(Path(root).resolve()).parts
    return parts[0] if len(parts) > 1 else None


@dataclass(frozen=True)
class ClassMetrics:
    label: str
    precision: float  # correct / predicted as this class (0 when never predicted)
    recall: float  # correct / truly this class (0 when the class has no images)
    support: int  # images truly of this class
    predicted: int  # images predicted as this class


@dataclass(frozen=True)
class Evaluation:
    labels: tuple[str, ...]  # row/column order of the matrix
    matrix: np.ndarray  # (L, L) int64: matrix[true, predicted]
    accuracy: float
    per_class: tuple[ClassMetrics, ...]

    @property
    def total(self) -> int:
        return int(self.matrix.sum())

    @property
    def correct(self) -> int:
        return int(np.trace(self.matrix))


def evaluate(truth: Sequence[str], predicted: Sequence[str | None], labels: Sequence[str] | None = None) -> Evaluation:
    """Compare true and predicted labels (same order, same length).

    ``labels`` fixes the class order (e.g. the order of classes.json); labels
    seen only in the data are appended in sorted order, and :data:`NO_LABEL` last.
    """
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} true labels but {len(predicted)} predictions")
    guesses = [p if p else NO_LABEL for p in predicted]
    order = list(dict.fromkeys(labels or []))
    seen = sorted({*truth, *guesses} - set(order) - {NO_LABEL})
    order += seen
    if NO_LABEL in guesses:
        order.append(NO_LABEL)
    index = {label: i for i, label in enumerate(order)}
    matrix = np.zeros((len(order), len(order)), dtype=np.int64)
    if truth:
        np.add.at(matrix, ([index[t] for t in truth], [index[g] for g in guesses]), 1)
    support = matrix.sum(axis=1)
    predicted_count = matrix.sum(axis=0)
    diagonal = np.diag(matrix)
    per_class = tuple(
        ClassMetrics(
            label=label,
            precision=float(diagonal[i] / predicted_count[i]) if predicted_count[i] else 0.0,
            recall=float(diagonal[i] / support[i]) if support[i] else 0.0,
            support=int(support[i]),
            predicted=int(predicted_count[i]),
        )
        for i, label in enumerate(order)
        if label != NO_LABEL
    )
    accuracy = float(diagonal.sum() / len(truth)) if truth else 0.0
    return Evaluation(labels=tuple(order), matrix=matrix, accuracy=accuracy, per_class=per_class)


def format_report(result: Evaluation) -> str:
    """Accuracy, a per-class precision/recall table and the confusion matrix, as plain text."""
    width = max([len("class"), *(len(label) for label in result.labels)])
    lines = [f"accuracy: {result.accuracy:.4f} ({result.correct}/{result.total})", ""]
    lines.append(f"{'class':<{width}}  precision  recall  support  predicted")
    for m in result.per_class:
        lines.append(f"{m.label:<{width}}  {m.precision:9.4f}  {m.recall:6.4f}  {m.support:7d}  {m.predicted:9d}")
    lines += ["", "confusion matrix (rows: true, columns: predicted)"]
    longest = max([5, *(len(str(v)) for v in result.matrix.flat), *(len(label) for label in result.labels)])
    cell = min(longest, 10)
    short = [label[:cell] for label in result.labels]
    lines.append(" " * width + "  " + " ".join(f"{s:>{cell}}" for s in short))
    for label, row in zip(result.labels, result.matrix, strict=True):
        lines.append(f"{label:<{width}}  " + " ".join(f"{v:>{cell}d}" for v in row))
    return "\n".join(lines)


PREDICTION_COLUMNS = ("path", "predicted", "score", "true", "labels")


def write_predictions_csv(
    path: Path,
    rows: Iterable[tuple[str, str | None, float | None, str | None, Sequence[tuple[str, float]]]],
) -> int:
    """Write one line per image: path, predicted class, its score, true class (if known), and all
    returned ``name:score`` pairs joined by ``;``. Returns the number of rows written."""
    count = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(PREDICTION_COLUMNS)
        for image, predicted, score, truth, labels in rows:
            writer.writerow(
                [
                    image,
                    predicted or "",
                    "" if score is None else f"{score:.6f}",
                    truth or "",
                    ";".join(f"{name}:{value:.6f}" for name, value in labels),
                ]
            )
            count += 1
    return count


def write_report_csv(path: Path, result: Evaluation) -> None:
    """Per-class precision/recall as CSV, followed by the confusion matrix with its labels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "precision", "recall", "support", "predicted"])
        for m in result.per_class:
            writer.writerow([m.label, f"{m.precision:.6f}", f"{m.recall:.6f}", m.support, m.predicted])
        writer.writerow(["accuracy", f"{result.accuracy:.6f}", "", result.total, ""])
        writer.writerow([])
        writer.writerow(["true \\ predicted", *result.labels])
        for label, row in zip(result.labels, result.matrix, strict=True):
            writer.writerow([label, *(int(v) for v in row)])


def plot_confusion_matrix(result: Evaluation, path: Path, cell: int = 36) -> Path:
    """Draw the confusion matrix as a PNG with Pillow: rows are true labels, columns predictions,
    cells shaded by the share of the row, with counts written in."""
    font = ImageFont.load_default(size=13)
    n = len(result.labels)
    label_px = max([40, *(int(font.getlength(label)) + 12 for label in result.labels)])
    title_px = 28
    title = f"accuracy {result.accuracy:.3f} ({result.correct}/{result.total}); rows: true, columns: predicted"
    width = max(label_px + n * cell + 12, int(font.getlength(title)) + 12)
    height = title_px + label_px + n * cell + 12
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((6, 6), title, fill="black", font=font)
    top, left = title_px + label_px, label_px
    rows = result.matrix.sum(axis=1, keepdims=True)
    share = np.divide(result.matrix, rows, out=np.zeros(result.matrix.shape), where=rows > 0)
    for i, label in enumerate(result.labels):
        draw.text((6, top + i * cell + cell // 2 - 6), label, fill="black", font=font)
        # Column labels are written vertically: render horizontally, then rotate.
        text = Image.new("RGB", (label_px, cell), "white")
        ImageDraw.Draw(text).text((6, cell // 2 - 6), label, fill="black", font=font)
        image.paste(text.rotate(90, expand=True), (left + i * cell, title_px))
        for j in range(n):
            level = int(255 - 200 * share[i, j])
            fill = (level, level, 255) if i == j else (255, level, level)
            box = (left + j * cell, top + i * cell, left + (j + 1) * cell - 1, top + (i + 1) * cell - 1)
            draw.rectangle(box, fill=fill, outline=(200, 200, 200))
            count = str(int(result.matrix[i, j]))
            draw.text(
                (box[0] + (cell - font.getlength(count)) / 2, box[1] + cell // 2 - 6),
                count,
                fill="black" if share[i, j] < 0.6 else "white",
                font=font,
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
