"""Zero-shot image classification with positive and negative text examples.

The rule (DirectAI's "data-free" classifier): every class has one or more
positive text examples and optionally negative ones. For an image embedding
``v`` and a class, take the example ``t`` most similar to ``v`` among the
class's positives and negatives together; the class scores ``d(t, v)`` when
``t`` is a positive and ``-d(t, v)`` when it is a negative, with
``d = (1 + cos) / 2`` in [0, 1]. The prediction is the class with the highest
score. So a class wins with a score in [0, 1] only when one of its positives
describes the image better than every one of its negatives; a class whose
closest example is a negative scores in [-1, 0], below every class that
matched positively. With one positive per class and no negatives this is plain
CLIP zero-shot (argmax of cosine similarity).

Vectorised: examples are laid out class by class, positives and negatives in
separate arrays, so the per-class maximum is one ``np.maximum.reduceat`` over
contiguous segments (a scatter-max over example -> class indices) for a whole
batch of images. Text embeddings are computed once per (model, class config)
and kept in a bounded LRU.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contract.names import ModelType, Task
from worker.models.base import AssetOutputs, InferenceModel, StepKey
from worker.models.clip_textual import ClipTextual
from worker.models.clip_visual import DECODE_SIDE as CLIP_DECODE_SIDE
from worker.models.outputs import Label, rounded
from worker.pipeline.graph import Step
from worker.pipeline.image import DecodedImage

CLIP_VISUAL: StepKey = (Task.CLIP, ModelType.VISUAL)

# Class configs whose text embeddings stay cached per worker process. An entry
# of 1,000 classes x 10 examples of a 512-d model is 20 MB, so keep this small.

ClassConfig = Mapping[str, Mapping[str, Sequence[str]]]  # name -> {"positive": [...], "negative": [...]}


@dataclass(frozen=True)
class ClassExamples:
    """A class config's example embeddings, laid out for segment-wise maxima.

    ``positive`` holds every class's positive examples as columns, class by
    class (``positive_starts[c]`` is where class ``c`` begins; every class has
    at least one). ``negative`` holds the negatives of the classes listed in
    ``negative_classes`` in the same way. Columns, not rows: ``images @ positive``
    is then a plain contiguous matrix product, about twice as fast as
    multiplying by a transposed view.
    """

    names: tuple[str, ...]
    positive: np.ndarray  # (dim, P) float32
    positive_starts: np.ndarray  # (C,) int64
    negative: np.ndarray  # (dim, Q) float32
    negative_starts: np.ndarray  # (K,) int64
    negative_classes: np.ndarray  # (K,) int64, indices into names

    @property
    def nbytes(self) -> int:
        return int(self.positive.nbytes + self.negative.nbytes)


def class_config_key(classes: ClassConfig) -> str:
    """A stable digest of a class config (the text-embedding cache key, with the model name)."""
    canonical = {
        name: {"positive": list(spec.get("positive") or []), "negative": list(spec.get("negative") or [])}
        for name, spec in classes.items()
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def build_class_examples(classes: ClassConfig, embed: Any) -> ClassExamples:
    """Embed every distinct example text once (``embed``: list[str] -> (n, dim)) and lay them out per class."""
    if not classes:
        raise ValueError("zero-shot needs at least one class")
    names = tuple(classes)
    texts: dict[str, int] = {}
    positive_rows: list[int] = []
    positive_starts: list[int] = []
    negative_rows: list[int] = []
    negative_starts: list[int] = []
    negative_classes: list[int] = []
    for index, name in enumerate(names):
        positives = list(classes[name].get("positive") or [])
        negatives = list(classes[name].get("negative") or [])
        if not positives:
            raise ValueError(f"class {name!r} has no positive example")
        positive_starts.append(len(positive_rows))
        positive_rows += [texts.setdefault(t, len(texts)) for t in positives]
        if negatives:
            negative_starts.append(len(negative_rows))
            negative_classes.append(index)
            negative_rows += [texts.setdefault(t, len(texts)) for t in negatives]
    vectors = np.asarray(embed(list(texts)), dtype=np.float32)
    dim = vectors.shape[1]
    return ClassExamples(
        names=names,
        positive=np.ascontiguousarray(vectors[positive_rows].T),
        positive_starts=np.asarray(positive_starts, dtype=np.int64),
        negative=np.ascontiguousarray(vectors[negative_rows].T) if negative_rows else np.zeros((dim, 0), np.float32),
        negative_starts=np.asarray(negative_starts, dtype=np.int64),
        negative_classes=np.asarray(negative_classes, dtype=np.int64),
    )


def zero_shot_scores(image_embeddings: np.ndarray, examples: ClassExamples) -> np.ndarray:
    """(N, dim) L2-normalised image embeddings -> (N, C) class scores in [-1, 1] (see the module docstring)."""
    images = np.asarray(image_embeddings, dtype=np.float32)
    n_images, n_classes = images.shape[0], len(examples.names)
    # d = (1 + cos) / 2, then the best positive of each class: one reduceat over contiguous class segments.
    best_positive = np.maximum.reduceat((1 + images @ examples.positive) / 2, examples.positive_starts, axis=1)
    if not len(examples.negative_classes):
        return best_positive.astype(np.float32, copy=False)
    best_negative = np.full((n_images, n_classes), -np.inf, dtype=np.float32)
    negative_similarity = (1 + images @ examples.negative) / 2
    best_negative[:, examples.negative_classes] = np.maximum.reduceat(
        negative_similarity, examples.negative_starts, axis=1
    )
    # A tie goes to the negative example: a class must be described better than it is excluded.
    return np.where(best_positive > best_negative, best_positive, -best_negative).astype(np.float32, copy=False)


def top_labels(names: Sequence[str], scores: np.ndarray, min_score: float | None, top_k: int | None) -> list[Label]:
    """One image's labels, best first; those under ``min_score`` dropped, at most ``top_k`` kept.

    Selects before it builds: with 1,000 classes and ``top_k=5`` only five ``Label`` objects are made.
    """
    kept = np.arange(len(scores)) if min_score is None else np.flatnonzero(scores >= min_score)
    if top_k is not None and top_k < len(kept):
        kept = kept[np.argpartition(-scores[kept], top_k - 1)[:top_k]]
        kept.sort()  # index order first, so equal scores keep the class order below
    order = kept[np.argsort(-scores[kept], kind="stable")]
    return [Label(names[i], float(scores[i])) for i in order]


class _LruCache:
    """A small thread-safe LRU of ``ClassExamples`` keyed by (model, class-config digest)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, str], ClassExamples] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, str]) -> ClassExamples | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item

    def put(self, key: tuple[str, str], value: ClassExamples) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class ZeroShotClassifier(InferenceModel):
    """Reads the chunk's CLIP image embeddings; embeds class examples with the same pack's textual tower."""

    task = Task.ZERO_SHOT
    type = ModelType.CLASSIFIER
    depends_on = (CLIP_VISUAL,)
    # No batch setting: it scores the chunk's embeddings in one matrix product.

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.textual = ClipTextual(self.model_name, self.model_dir, self.runtime, self._session_factory)
        self.text_cache = _LruCache(self.runtime.text_cache_entries)

    # The files are the CLIP pack's: <model_dir>/clip/<modelName>/textual/...
    @property
    def pack_dir(self) -> Path:
        return self.textual.pack_dir

    @property
    def type_dir(self) -> Path:
        return self.textual.type_dir

    def load(self) -> None:
        if self._session is not None:
            return
        self.textual.load()  # raises ModelNotInstalled naming the textual tower; warms it up when asked
        self._session = self.textual.session

    def unload(self) -> None:
        self.textual.unload()
        self.text_cache.clear()
        super().unload()

    @classmethod
    def decode_side(cls, options: Mapping[str, Any], detail_side: int) -> int:
        return CLIP_DECODE_SIDE  # reads no pixels; it never needs more than the CLIP step it reads

    def result_fields(self, output: list[Label], step: Step, asset: AssetOutputs) -> dict[str, Any]:
        return {"labels": [{"name": label.name, "score": rounded(label.score)} for label in output]}

    def warmup(self) -> None:
        self.textual.embed_texts(["a photo"])

    def class_examples(self, classes: ClassConfig) -> ClassExamples:
        key = (self.model_name, class_config_key(classes))
        cached = self.text_cache.get(key)
        if cached is None:
            cached = build_class_examples(classes, self.textual.embed_texts)
            self.text_cache.put(key, cached)
        return cached

    def run_chunk(
        self,
        images: Sequence[DecodedImage],
        upstream: Mapping[StepKey, Sequence[Any]],
        options: Mapping[str, Any],
        *,
        max_batch: int | None = None,
    ) -> list[list[Label]]:
        """Per image, every class's ``Label(name, score)``, best first (``minScore``/``topK`` applied)."""
        if not images:
            return []
        examples = self.class_examples(options["classes"])
        embeddings = np.stack([np.asarray(e, dtype=np.float32) for e in upstream[CLIP_VISUAL]])
        scores = zero_shot_scores(embeddings, examples)
        min_score = options.get("minScore")
        top_k = options.get("topK")
        return [
            top_labels(
                examples.names,
                row,
                None if min_score is None else float(min_score),
                None if top_k is None else int(top_k),
            )
            for row in scores
        ]
