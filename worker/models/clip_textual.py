"""CLIP text embeddings from the textual tower of an OpenCLIP export.

Pack layout (Immich's): ``clip/<modelName>/textual/model.onnx`` with the
tokenizer beside it (``tokenizer.json`` + ``tokenizer_config.json``, or
``bpe_simple_vocab_16e6.txt.gz``) and the context length in the pack's
``config.json`` (``text_cfg.context_length``, 77 when absent). A graph with a
fixed sequence length is trusted over the config.

The textual tower is not a per-image step: the zero-shot classifier (and
anything else that needs text vectors) calls :meth:`ClipTextual.embed_texts`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from contract.names import ModelType, Task
from worker.models.base import InferenceModel, StepKey
from worker.models.clip_preprocess import read_model_config
from worker.models.clip_tokenizer import TextTokenizer, load_tokenizer
from worker.models.clip_visual import l2_normalise, run_in_batches, session_batch_limit
from worker.pipeline.image import DecodedImage

# OpenCLIP's context length for every CLIP-BPE text tower unless the pack says otherwise.
DEFAULT_CONTEXT_LENGTH = 77
# Texts per session call: short sequences, so larger batches than images stay cheap.
DEFAULT_TEXT_BATCH = 64


class ClipTextual(InferenceModel):
    """Not a pipeline step (the spec takes no ``clip.textual``): no batch setting, decode side or result."""

    task = Task.CLIP
    type = ModelType.TEXTUAL

    tokenizer: TextTokenizer
    _input_dtype: np.dtype[Any]

    def _after_load(self) -> None:
        model_input = self.session.get_inputs()[0]
        shape = list(model_input.shape)
        text_cfg = read_model_config(self.pack_dir).get("text_cfg") or {}
        context_length = int(text_cfg.get("context_length", DEFAULT_CONTEXT_LENGTH))
        if len(shape) > 1 and isinstance(shape[1], int) and shape[1] > 0:
            context_length = shape[1]
        self.tokenizer = load_tokenizer(self.type_dir, context_length)
        # Immich's exports take int32 ids; some others int64.
        int64 = getattr(model_input, "type", None) == "tensor(int64)"
        self._input_dtype = np.dtype(np.int64) if int64 else np.dtype(np.int32)

    def warmup(self) -> None:
        self.embed_texts(["a photo"])

    @property
    def context_length(self) -> int:
        _ = self.session  # loading reads the context length
        return self.tokenizer.context_length

    def tokenize(self, texts: Sequence[str]) -> np.ndarray:
        _ = self.session
        return self.tokenizer(texts).astype(self._input_dtype, copy=False)

    def embed_texts(self, texts: Sequence[str], batch_size: int = DEFAULT_TEXT_BATCH) -> np.ndarray:
        """Texts -> (n, dim) float32 L2-normalised embeddings, batched."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        tokens = self.tokenize(texts)
        size, fixed = session_batch_limit(self.session.get_inputs()[0].shape, batch_size)
        return l2_normalise(run_in_batches(self, tokens, size, fixed))

    def run_chunk(
        self,
        images: Sequence[DecodedImage],
        upstream: Mapping[StepKey, Sequence[Any]],
        options: Mapping[str, Any],
        *,
        max_batch: int | None = None,
    ) -> list[Any]:
        raise TypeError("clip/textual embeds texts, not images: call embed_texts() (the zero-shot step does)")
