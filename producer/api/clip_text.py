"""CLIP text towers kept warm in the serve process: the one model ``assetq serve`` loads.

Immich's smart search sends one text request per query and waits for it, so a
text embedding must come back in milliseconds. Through the queue it would wait
for a worker's running chunk first (up to a whole bulk chunk, seconds, while a
backfill runs; ``benchmarks/serve.py`` measures both ways), while a text tower
is small and one query costs a few milliseconds on a CPU. So the server embeds
texts itself, with the same model class the workers' zero-shot step uses.

This is the only module of ``producer`` that reaches into ``worker`` and
onnxruntime, and only when a text tower is first needed: the imports are inside
the functions.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from contract.catalog import scan_model_dir
from contract.names import ModelType, Task

log = logging.getLogger(__name__)

CACHE_ENTRIES = 2048  # recent (model, text) answers: a search is often repeated as the user pages


class TextModelMissing(LookupError):
    """The requested CLIP model has no text tower in this server's model directory."""


class TextTowers:
    def __init__(self, model_dir: Path, threads: int = 1) -> None:
        self.model_dir = model_dir
        self.threads = threads
        self._models: dict[str, Any] = {}
        self._load_lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self._cache_lock = threading.Lock()

    def installed(self) -> set[str]:
        return set(scan_model_dir(self.model_dir).get(Task.CLIP.value, {}).get(ModelType.TEXTUAL.value, set()))

    def preload(self, wanted: bool | list[str] = True) -> list[str]:
        """Load and warm the installed text towers ``ASSETQ_PRELOAD`` asks for; returns their names.

        ``True``: all of them; a list: those it names, or all when it names the ``clip`` task.
        The others load on their first query.
        """
        if wanted is False:
            return []
        names = sorted(n for n in self.installed() if wanted is True or Task.CLIP.value in wanted or n in wanted)
        for name in names:
            self._model(name)
        return names

    def embed(self, model_name: str, text: str) -> list[float]:
        """``text`` as an L2-normalised embedding of ``model_name``'s text tower (blocking)."""
        with self._cache_lock:
            hit = self._cache.get((model_name, text))
            if hit is not None:
                self._cache.move_to_end((model_name, text))
                return hit
        # Seven digits, as the workers write embeddings (worker/pipeline/results.py): float32 holds about that many.
        vector = [round(float(x), 7) for x in self._model(model_name).embed_texts([text])[0]]
        with self._cache_lock:
            self._cache[(model_name, text)] = vector
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return vector

    def _model(self, name: str) -> Any:
        model = self._models.get(name)
        if model is not None:
            return model
        with self._load_lock:
            if name in self._models:
                return self._models[name]
            if name not in self.installed():
                have = ", ".join(sorted(self.installed())) or "none"
                raise TextModelMissing(
                    f"clip model {name!r} has no text tower in {self.model_dir}; installed here: {have}"
                )
            from worker.models.base import RuntimeOptions
            from worker.models.registry import model_class

            cls = model_class(Task.CLIP.value, ModelType.TEXTUAL.value, name, self.model_dir)
            model = cls(name, self.model_dir, RuntimeOptions(device="cpu", intra_op_threads=self.threads))
            model.load()  # and warm it: the first query pays no set-up
            log.info("clip text tower %s loaded", name)
            self._models[name] = model
            return model
