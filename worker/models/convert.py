"""Install-time rewrites of ONNX files that ship with a fixed batch of 1.

Each converter edits one file in place so the session accepts ``[N, ...]``
inputs; the model's numbers are untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

CONVERTERS: dict[str, Callable[[Path], None]] = {}


def converter(name: str) -> Callable[[Callable[[Path], None]], Callable[[Path], None]]:
    def wrap(fn: Callable[[Path], None]) -> Callable[[Path], None]:
        CONVERTERS[name] = fn
        return fn

    return wrap


def _make_symbolic(value: onnx.ValueInfoProto, names: dict[int, str]) -> None:
    """Replace the fixed sizes of the listed axes of a graph input/output by named symbols."""
    dims = value.type.tensor_type.shape.dim
    for axis, symbol in names.items():
        dims[axis].Clear()
        dims[axis].dim_param = symbol


def _save_checked(model: onnx.ModelProto, path: Path) -> None:
    # Intermediate shapes were inferred for the fixed size; drop them so
    # onnxruntime re-infers them for each real input.
    del model.graph.value_info[:]
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@converter("yunet_dynamic_batch")
def yunet_dynamic_batch(path: Path) -> None:
    """YuNet 2023mar: any batch and any (multiple of 32) square or non-square input size.

    Its output heads flatten with ``Reshape`` to the constant target
    ``[1, -1, k]``, which folds a batch into the anchor axis; ``0`` (copy the
    input's batch dimension) keeps images apart.
    """
    model = onnx.load(str(path))
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    rewritten = 0
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[1] not in initializers:
            continue
        target = numpy_helper.to_array(initializers[node.input[1]])
        if target.ndim == 1 and target.size == 3 and target[0] == 1 and target[1] == -1:
            fixed = target.copy()
            fixed[0] = 0
            initializers[node.input[1]].CopyFrom(numpy_helper.from_array(fixed.astype(np.int64), node.input[1]))
            rewritten += 1
    if rewritten == 0:
        raise ValueError(f"{path}: no Reshape with a [1, -1, k] target found; is this YuNet 2023mar?")
    _make_symbolic(graph.input[0], {0: "batch", 2: "height", 3: "width"})
    for output in graph.output:
        _make_symbolic(output, {0: "batch", 1: "cells"})
    _save_checked(model, path)


@converter("sface_dynamic_batch")
def sface_dynamic_batch(path: Path) -> None:
    """SFace 2021dec: symbolic batch axis.

    The file also lists its 174 weights as graph inputs (an old exporter's
    habit); onnxruntime then treats them as overridable and will not fold
    constants through them, so they are removed from the inputs.
    """
    model = onnx.load(str(path))
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    real_inputs = [value for value in graph.input if value.name not in weights]
    del graph.input[:]
    graph.input.extend(real_inputs)
    _make_symbolic(graph.input[0], {0: "batch"})
    for output in graph.output:
        _make_symbolic(output, {0: "batch"})
    _save_checked(model, path)


@converter("arcface_dynamic_batch")
def arcface_dynamic_batch(path: Path) -> None:
    """InsightFace ArcFace exports: the input batch is already symbolic but the
    output is declared ``[1, dim]``; onnxruntime then warns on every batch of
    more than one face. Declare the output's batch axis symbolic too.
    """
    model = onnx.load(str(path))
    _make_symbolic(model.graph.input[0], {0: "batch"})
    for output in model.graph.output:
        _make_symbolic(output, {0: "batch"})
    _save_checked(model, path)
