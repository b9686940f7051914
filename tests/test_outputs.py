"""Result-document rounding (``worker/models/outputs.py``)."""

from __future__ import annotations

import json

import numpy as np

from worker.models.outputs import rounded, vector_json


def test_vector_json_gives_the_floats_round_gives() -> None:
    # 2,000 unit vectors of 512 float32 values, as a recognizer returns them, plus edge values.
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((2000, 512)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    edges = np.array([0.0, -0.0, 1.0, -1.0, 5e-8, -5e-8, 1.5e-7, 0.99999995, 1e-30], dtype=np.float32)
    for v in [*vectors, edges]:
        assert vector_json(v) == [round(float(x), 7) for x in v]


def test_vector_json_is_a_flat_list_of_python_floats_that_json_writes_short() -> None:
    out = vector_json(np.array([[0.123456789, -0.5]], dtype=np.float32))
    assert out == [0.1234568, -0.5]
    assert all(type(x) is float for x in out)
    assert json.dumps(out) == "[0.1234568, -0.5]"


def test_rounded_keeps_five_digits() -> None:
    assert rounded(np.float32(0.123456789)) == 0.12346
    assert rounded(3.14159265, 2) == 3.14
