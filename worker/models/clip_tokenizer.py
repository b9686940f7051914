"""CLIP's byte-level BPE tokenizer, without torch, ftfy or the ``regex`` package.

OpenCLIP text towers (OpenAI, LAION, DataComp, DFN ViTs) all read the same
49,408-token vocabulary: 256 byte symbols, the same 256 with the end-of-word
marker ``</w>``, one symbol per merge rule, then ``<|startoftext|>`` and
``<|endoftext|>``. A pack can carry it in either of two files, both read here:

* ``tokenizer.json`` -- Hugging Face ``tokenizers`` format (what Immich's packs
  ship in ``textual/``), with ``tokenizer_config.json`` naming the pad token;
* ``bpe_simple_vocab_16e6.txt.gz`` -- OpenAI/OpenCLIP's merge list.

A sequence is ``[SOT] + tokens + [EOT]``, truncated to the context length with
EOT kept last, then padded. The text towers pool the EOT position, and their
attention is causal, so the pad id does not change the embedding.

Tokenizers other than CLIP's BPE (e.g. the XLM-R tokenizer of multilingual
packs) are handed to the Hugging Face ``tokenizers`` library when it is
installed; it is not a dependency of assetq.
"""

from __future__ import annotations

import gzip
import html
import itertools
import json
import re
import sys
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
BPE_VOCAB_GZ = "bpe_simple_vocab_16e6.txt.gz"
TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG_JSON = "tokenizer_config.json"
# OpenAI's vocabulary uses only the first 48,894 of the file's 262,144 merge
# rules (49,408 tokens = 2 x 256 byte symbols + merges + 2 specials).
CLIP_MERGE_COUNT = 49408 - 2 * 256 - 2
# Words seen again are looked up instead of re-merged; bounded so a stream of
# unique words cannot grow memory without end.
_BPE_CACHE_SIZE = 20_000


class TokenizerError(ValueError):
    """A tokenizer file this module cannot read."""


class TextTokenizer(Protocol):
    context_length: int

    def __call__(self, texts: Sequence[str]) -> np.ndarray: ...


def bytes_to_symbols() -> dict[int, str]:
    """The reversible byte -> printable character map byte-level BPE works in.

    Bytes that are printable Latin-1 characters stand for themselves; the other
    68 bytes (controls, space, soft hyphen ...) take the code points from 256 up,
    in byte order, so no symbol is whitespace or a control character.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def clip_vocabulary(merges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Token -> id for CLIP's layout: bytes, bytes + ``</w>``, one id per merge, SOT, EOT."""
    symbols = list(bytes_to_symbols().values())
    tokens = [*symbols, *(s + END_OF_WORD for s in symbols), *("".join(pair) for pair in merges), SOT_TOKEN, EOT_TOKEN]
    return {token: i for i, token in enumerate(tokens)}


@lru_cache(maxsize=1)
def _pretokenize_pattern() -> re.Pattern[str]:
    """CLIP's pre-tokenizer: specials, English contractions, letter runs, single digits, other-symbol runs.

    The reference uses ``\\p{L}`` and ``\\p{N}``, which ``re`` lacks; the classes
    are built here from the Unicode database so they match exactly.
    """
    letters: list[tuple[int, int]] = []
    numbers: list[tuple[int, int]] = []
    for cp in range(sys.maxunicode + 1):
        major = unicodedata.category(chr(cp))[0]
        target = letters if major == "L" else numbers if major == "N" else None
        if target is None:
            continue
        if target and target[-1][1] == cp - 1:
            target[-1] = (target[-1][0], cp)
        else:
            target.append((cp, cp))

    def char_class(ranges: Iterable[tuple[int, int]]) -> str:
        return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)

    letter, number = char_class(letters), char_class(numbers)
    specials = "|".join(re.escape(t) for t in (SOT_TOKEN, EOT_TOKEN))
    pattern = rf"{specials}|'s|'t|'re|'ve|'m|'ll|'d|[{letter}]+|[{number}]|[^\s{letter}{number}]+"
    return re.compile(pattern, re.IGNORECASE)


def clean_text(text: str) -> str:
    """Undo HTML escapes, unify Unicode forms, collapse whitespace, lower-case (as CLIP does before BPE).

    OpenCLIP also runs ``ftfy.fix_text`` (repairs mojibake); well-formed text is
    unaffected, so assetq does without that dependency.
    """
    text = html.unescape(html.unescape(text))
    text = unicodedata.normalize("NFC", text)
    return " ".join(text.split()).lower()


class ClipBpeTokenizer:
    """Text -> ``(n, context_length)`` int64 token ids, the way OpenCLIP's tokenizer does it."""

    def __init__(
        self,
        merges: Sequence[tuple[str, str]],
        context_length: int,
        pad_id: int = 0,
        vocab: Mapping[str, int] | None = None,
    ) -> None:
        if context_length < 2:
            raise TokenizerError(f"context length must be at least 2 (SOT and EOT), got {context_length}")
        self.context_length = context_length
        self.pad_id = pad_id
        self.vocab = dict(vocab) if vocab is not None else clip_vocabulary(merges)
        self.merge_rank = {pair: i for i, pair in enumerate(merges)}
        self.byte_symbols = bytes_to_symbols()
        try:
            self.sot_id = self.vocab[SOT_TOKEN]
            self.eot_id = self.vocab[EOT_TOKEN]
        except KeyError as e:
            raise TokenizerError(f"vocabulary lacks the special token {e.args[0]}") from None
        self._cache: dict[str, list[int]] = {}

    # -- loading -------------------------------------------------------------
    @classmethod
    def from_bpe_gz(cls, path: Path, context_length: int, pad_id: int = 0) -> ClipBpeTokenizer:
        """Read OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` (a header line, then one merge per line)."""
        return cls(read_bpe_gz_merges(path), context_length, pad_id)

    @classmethod
    def from_tokenizer_json(cls, path: Path, context_length: int, pad_token: str | None = None) -> ClipBpeTokenizer:
        """Read a Hugging Face ``tokenizer.json`` holding CLIP's BPE (vocab + merges)."""
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
        if not is_clip_bpe(spec):
            raise TokenizerError(f"{path} is not CLIP's byte-level BPE with '{END_OF_WORD}' word ends")
        model = spec["model"]
        merges = [_merge_pair(m) if isinstance(m, str) else (str(m[0]), str(m[1])) for m in model["merges"]]
        vocab = {str(k): int(v) for k, v in model["vocab"].items()}
        for added in spec.get("added_tokens") or []:
            vocab.setdefault(str(added["content"]), int(added["id"]))
        pad_id = vocab.get(pad_token, 0) if pad_token else 0
        return cls(merges, context_length, pad_id, vocab)

    # -- encoding ------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without SOT/EOT."""
        ids: list[int] = []
        for piece in _pretokenize_pattern().findall(clean_text(text)):
            if piece in (SOT_TOKEN, EOT_TOKEN):
                ids.append(self.vocab[piece])
                continue
            symbols = "".join(self.byte_symbols[b] for b in piece.encode("utf-8"))
            ids.extend(self._word_ids(symbols))
        return ids

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = np.full((len(texts), self.context_length), self.pad_id, dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot_id, *self.encode(text), self.eot_id]
            if len(ids) > self.context_length:
                ids = [*ids[: self.context_length - 1], self.eot_id]
            out[row, : len(ids)] = ids
        return out

    def _word_ids(self, word: str) -> list[int]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        ids = [self.vocab[token] for token in self._bpe(word)]
        if len(self._cache) >= _BPE_CACHE_SIZE:
            self._cache.clear()
        self._cache[word] = ids
        return ids

    def _bpe(self, word: str) -> list[str]:
        """Merge the word's symbols, lowest-ranked pair first, until no rule applies."""
        parts = [*word[:-1], word[-1] + END_OF_WORD]
        while len(parts) > 1:
            ranks = [self.merge_rank.get(pair, -1) for pair in itertools.pairwise(parts)]
            known = [r for r in ranks if r >= 0]
            if not known:
                break
            first, second = parts[ranks.index(min(known))], parts[ranks.index(min(known)) + 1]
            merged: list[str] = []
            i = 0
            while i < len(parts):
                # Merge every occurrence of the chosen pair, left to right, without overlaps.
                if i + 1 < len(parts) and parts[i] == first and parts[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts


def _merge_pair(line: str) -> tuple[str, str]:
    first, _, second = line.partition(" ")
    if not second:
        raise TokenizerError(f"malformed merge rule {line!r}")
    return first, second


def is_clip_bpe(spec: Mapping[str, Any]) -> bool:
    model = spec.get("model") or {}
    return model.get("type") == "BPE" and model.get("end_of_word_suffix") == END_OF_WORD


class _HuggingFaceTokenizer:
    """Any other ``tokenizer.json`` through the optional ``tokenizers`` library (as Immich loads them)."""

    def __init__(self, path: Path, context_length: int, pad_token: str | None) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise TokenizerError(
                f"{path} is not CLIP's BPE; reading it needs the Hugging Face 'tokenizers' package "
                "(pip install tokenizers)"
            ) from None
        self.context_length = context_length
        self._tokenizer = Tokenizer.from_file(str(path))
        pad_id = self._tokenizer.token_to_id(pad_token) if pad_token else None
        self._tokenizer.enable_padding(length=context_length, pad_id=pad_id or 0, pad_token=pad_token or "<pad>")
        self._tokenizer.enable_truncation(max_length=context_length)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch([" ".join(t.split()) for t in texts])
        return np.asarray([e.ids for e in encodings], dtype=np.int64).reshape(len(texts), self.context_length)


def load_tokenizer(textual_dir: Path, context_length: int) -> TextTokenizer:
    """The tokenizer a pack's ``textual/`` directory ships (``tokenizer.json`` preferred)."""
    textual_dir = Path(textual_dir)
    json_path = textual_dir / TOKENIZER_JSON
    pad_token = _pad_token(textual_dir / TOKENIZER_CONFIG_JSON)
    if json_path.is_file():
        spec = json.loads(json_path.read_text(encoding="utf-8"))
        if is_clip_bpe(spec):
            return ClipBpeTokenizer.from_tokenizer_json(json_path, context_length, pad_token)
        return _HuggingFaceTokenizer(json_path, context_length, pad_token)
    gz_path = textual_dir / BPE_VOCAB_GZ
    if gz_path.is_file():
        return ClipBpeTokenizer.from_bpe_gz(gz_path, context_length)
    raise TokenizerError(f"{textual_dir} has neither {TOKENIZER_JSON} nor {BPE_VOCAB_GZ}")


def _pad_token(config_path: Path) -> str | None:
    if not config_path.is_file():
        return None
    token = json.loads(config_path.read_text(encoding="utf-8")).get("pad_token")
    if isinstance(token, dict):  # {"content": "...", ...} in newer transformers
        token = token.get("content")
    return token if isinstance(token, str) else None


def write_tokenizer_json(merges: Sequence[tuple[str, str]], path: Path) -> None:
    """Write CLIP's BPE as a Hugging Face ``tokenizer.json`` (the file Immich's packs ship)."""
    vocab = clip_vocabulary(merges)
    pattern = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
    spec = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": vocab[t],
                "content": t,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for t in (SOT_TOKEN, EOT_TOKEN)
        ],
        "normalizer": {
            "type": "Sequence",
            "normalizers": [
                {"type": "NFC"},
                {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "},
                {"type": "Lowercase"},
            ],
        },
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Removed", "invert": True},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        },
        "post_processor": {
            "type": "RobertaProcessing",
            "sep": [EOT_TOKEN, vocab[EOT_TOKEN]],
            "cls": [SOT_TOKEN, vocab[SOT_TOKEN]],
            "trim_offsets": False,
            "add_prefix_space": False,
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": EOT_TOKEN,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": END_OF_WORD,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [f"{a} {b}" for a, b in merges],
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")


def read_bpe_gz_merges(path: Path) -> list[tuple[str, str]]:
    lines = gzip.decompress(Path(path).read_bytes()).decode("utf-8").split("\n")
    return [_merge_pair(line) for line in lines[1 : 1 + CLIP_MERGE_COUNT]]
