"""PP-OCR text recognition (CTC): what each detected line says.

Every detected quad of every image in the chunk is cropped upright, scaled to
the network's height of 48 keeping its aspect ratio, and the lines of the whole
chunk are batched together sorted by width, so that each batch is padded only
to about its own lines' width. The network emits per-column class
probabilities; greedy CTC decoding (collapse repeats, drop the blank) gives the
text, and the mean winning probability of the kept columns its score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from contract.names import ModelType, Task
from worker.models.base import AssetOutputs, InferenceModel, ModelNotInstalled, StepKey
from worker.models.ocr_geometry import crops_for
from worker.models.outputs import TextBox, TextLine, rounded
from worker.pipeline.graph import Step
from worker.pipeline.image import DecodedImage
from worker.pipeline.lanes import spread

DETECTION: StepKey = (Task.OCR, ModelType.DETECTION)
ORIENTATION: StepKey = (Task.OCR, ModelType.CLASSIFICATION)

# Immich's default minRecognitionScore.
DEFAULT_MIN_SCORE = 0.8
INPUT_HEIGHT = 48
# Lines are padded at least to this width, as PaddleOCR and RapidOCR do (the recognisers are
# trained on 48x320 inputs). benchmarks/ocr_bench.py measured the same texts and speed without it.
MIN_INPUT_WIDTH = 320
# Upper bound on batch * width columns of one session call, so a chunk of very long lines
# cannot allocate an unbounded activation tensor (32 lines of 640 columns each).
MAX_BATCH_COLUMNS = 32 * 640
# What one session call costs beyond its columns, in columns: on the 2-core CPU, 16 lines of
# 320 in one call take about 1.2x less than 16 calls of one, i.e. ~55 columns' worth per call.
# Only the split of lines into batches depends on it (benchmarks/batching.py measures the result).
CALL_OVERHEAD_COLUMNS = 64
DICT_FILE = "dict.txt"
METADATA_KEY = "character"


class DictionaryError(ValueError):
    """The character dictionary does not fit the recognition model."""


def dictionary_from(characters: Sequence[str], num_classes: int) -> list[str]:
    """The class-index -> text table: CTC blank at 0, then characters, then the space class.

    PP-OCR dictionaries list only the printable characters (the model adds the blank
    and, trained with spaces, a trailing space class); some packs ship the full
    table already. Which one this is follows from the model's number of classes.
    """
    chars = list(characters)
    if len(chars) == num_classes:
        return ["", *chars[1:]]  # entry 0 is a placeholder for the blank ("blank")
    if len(chars) == num_classes - 2:
        return ["", *chars, " "]
    if len(chars) == num_classes - 1:
        return ["", *chars]
    raise DictionaryError(f"dictionary has {len(chars)} entries but the model predicts {num_classes} classes")


def read_dictionary_file(path: Path) -> list[str]:
    # One character per line; a line may be a lone space, so strip only the line break.
    return [line.rstrip("\r") for line in path.read_text(encoding="utf-8").rstrip("\n").split("\n")]


def recognition_input(crop: np.ndarray, width: int) -> np.ndarray:
    """(3, 48, ``width``) float32 from an RGB crop: scaled to height 48, BGR, (x/255-0.5)/0.5, zero padded."""
    h, w = crop.shape[:2]
    resized_w = min(width, resized_width(h, w))
    resized = cv2.resize(crop, (resized_w, INPUT_HEIGHT), interpolation=cv2.INTER_LINEAR)
    out = np.zeros((3, INPUT_HEIGHT, width), dtype=np.float32)
    out[:, :, :resized_w] = resized[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0
    return out


def resized_width(height: int, width: int) -> int:
    return max(1, math.ceil(INPUT_HEIGHT * width / max(1, height)))


def width_batches(widths: Sequence[int], max_batch: int) -> list[list[int]]:
    """Indices grouped into batches of similar width, at the least estimated cost.

    A batch runs padded to its widest line, so its cost is about
    ``lines * widest`` columns plus a fixed per-call overhead. Lines sorted by
    width are cut into consecutive batches (at most ``max_batch`` lines and
    ``MAX_BATCH_COLUMNS`` columns each) minimising that sum: a short line is
    never padded to a long one's width just because they fell into the same
    group of 32, and lines of one width still share one call.
    """
    order = sorted(range(len(widths)), key=lambda j: widths[j])
    padded = [max(MIN_INPUT_WIDTH, widths[i]) for i in order]
    # best[end]: least cost of the first ``end`` sorted lines; start[end]: where its last batch begins.
    best = [0.0] + [math.inf] * len(order)
    start = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        for first in range(max(0, end - max_batch), end):
            lines = end - first
            if lines > 1 and lines * padded[end - 1] > MAX_BATCH_COLUMNS:
                continue
            cost = best[first] + CALL_OVERHEAD_COLUMNS + lines * padded[end - 1]
            if cost <= best[end]:  # on a tie, the later cut: full batches first
                best[end], start[end] = cost, first
    batches: list[list[int]] = []
    end = len(order)
    while end > 0:
        batches.append(order[start[end] : end])
        end = start[end]
    return batches[::-1]


def ctc_greedy_decode(probs: np.ndarray, dictionary: Sequence[str]) -> list[tuple[str, float]]:
    """(text, score) per row of ``probs`` (B, T, classes): collapse repeats, drop blanks (class 0)."""
    best = probs.argmax(axis=2)
    best_prob = probs.max(axis=2)
    results: list[tuple[str, float]] = []
    for ids, p in zip(best, best_prob, strict=True):
        keep = ids != 0
        keep[1:] &= ids[1:] != ids[:-1]
        text = "".join(dictionary[k] for k in ids[keep])
        results.append((text, float(p[keep].mean()) if keep.any() else 0.0))
    return results


class PPOCRTextRecognizer(InferenceModel):
    """CTC recogniser of a PP-OCR pack (``ocr/<pack>/recognition/model.onnx``).

    The character dictionary comes from ``recognition/dict.txt`` if the pack has
    one (PP-OCRv5), else from the ONNX metadata key ``character`` (PP-OCRv6).

    ``run_chunk`` returns, per image, a ``list[TextLine]`` in the detector's
    reading order, without lines that read as nothing or score under ``minScore``
    (default 0.8). When the orientation step ran, its per-box flags (in
    ``upstream[("ocr", "classification")]``) turn those crops by 180° first.
    Options: ``minScore``.
    """

    task: ClassVar[Task] = Task.OCR
    type: ClassVar[ModelType] = ModelType.RECOGNITION
    depends_on: ClassVar[tuple[StepKey, ...]] = (DETECTION,)
    # Read when present; the pipeline runs the orientation step first when it was requested.
    runs_after: ClassVar[tuple[StepKey, ...]] = (ORIENTATION,)
    batch_setting: ClassVar[str | None] = "text_batch_size"
    batches_images: ClassVar[bool] = False  # faces / text lines, found in the images
    # flush_denormals stays off: outputs are identical with it, but only 241 weights are
    # subnormal and no speed-up was measured (benchmarks/ocr_bench.py).

    _dictionary: list[str] | None = None

    @property
    def dictionary(self) -> list[str]:
        if self._dictionary is None:
            self.load()
        assert self._dictionary is not None
        return self._dictionary

    def unload(self) -> None:
        super().unload()
        self._dictionary = None

    def _after_load(self) -> None:
        self._dictionary = dictionary_from(self._raw_characters(), self._num_classes())

    def _raw_characters(self) -> list[str]:
        side_file = self.type_dir / DICT_FILE
        if side_file.is_file():
            return read_dictionary_file(side_file)
        get_meta = getattr(self.session, "get_modelmeta", None)
        metadata = get_meta().custom_metadata_map if get_meta is not None else {}
        if METADATA_KEY in metadata:
            return str(metadata[METADATA_KEY]).split("\n")
        raise ModelNotInstalled(
            f"{self.task}/{self.model_name}/{self.type}: no character dictionary "
            f"({side_file} missing and the model has no '{METADATA_KEY}' metadata)"
        )

    def _num_classes(self) -> int:
        classes = self.session.get_outputs()[0].shape[-1]
        if isinstance(classes, int) and classes > 0:
            return classes
        probe = np.zeros((1, 3, INPUT_HEIGHT, MIN_INPUT_WIDTH), dtype=np.float32)
        return int(self.predict(probe)[0].shape[-1])

    @classmethod
    def decode_side(cls, options: Mapping[str, Any], detail_side: int) -> int:
        return detail_side  # reads crops of text lines: small print needs the pixels

    def result_fields(self, output: list[TextLine], step: Step, asset: AssetOutputs) -> dict[str, Any]:
        # Rewrites the detector's "ocr" with the lines read.
        return {
            "ocr": [
                {
                    "box": [[rounded(x, 2), rounded(y, 2)] for x, y in line.quad],
                    "text": line.text,
                    "score": rounded(line.score),
                    "box_score": rounded(line.box_score),
                }
                for line in output
            ]
        }

    def warmup(self) -> None:
        self.predict(np.zeros((1, 3, INPUT_HEIGHT, MIN_INPUT_WIDTH), dtype=np.float32))

    def run_chunk(
        self,
        images: Sequence[DecodedImage],
        upstream: Mapping[StepKey, Sequence[Any]],
        options: Mapping[str, Any],
        *,
        max_batch: int | None = None,
    ) -> list[list[TextLine]]:
        min_score = float(options.get("minScore", DEFAULT_MIN_SCORE))
        boxes_per_image: Sequence[Sequence[TextBox]] = upstream[DETECTION]
        flips: Sequence[Sequence[bool]] | None = upstream.get(ORIENTATION)

        owners: list[tuple[int, TextBox]] = []
        crops: list[np.ndarray] = []
        for i, (image, boxes) in enumerate(zip(images, boxes_per_image, strict=True)):
            image_crops = crops_for(image.pixels, [np.asarray(b.quad) for b in boxes], image.scale)
            if flips is not None:
                image_crops = [c[::-1, ::-1] if f else c for c, f in zip(image_crops, flips[i], strict=True)]
            owners.extend((i, b) for b in boxes)
            crops.extend(image_crops)

        reads = self.read_lines(crops, self.batch_limit(max_batch))
        results: list[list[TextLine]] = [[] for _ in images]
        for (i, box), (text, score) in zip(owners, reads, strict=True):
            text = text.strip()
            if text and score >= min_score:
                results[i].append(TextLine(quad=box.quad, text=text, score=score, box_score=box.score))
        return results

    def read_lines(self, crops: Sequence[np.ndarray], max_batch: int) -> list[tuple[str, float]]:
        """(text, score) for each RGB line crop, batched by width."""
        widths = [resized_width(c.shape[0], c.shape[1]) for c in crops]
        dictionary = self.dictionary

        def read(batch: list[int]) -> list[tuple[str, float]]:
            width = max(MIN_INPUT_WIDTH, max(widths[i] for i in batch))
            tensor = np.stack([recognition_input(crops[i], width) for i in batch])
            return ctc_greedy_decode(self.predict(tensor)[0], dictionary)

        reads: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        batches = width_batches(widths, max_batch)
        # Independent calls: at a chunk's end, inference threads out of waves take some (``spread``).
        for batch, decoded in zip(batches, spread(read, batches), strict=True):
            for i, line in zip(batch, decoded, strict=True):
                reads[i] = line
        return reads
