"""Dependency ordering of model steps."""

from __future__ import annotations

import pytest

from worker.pipeline.graph import GraphError, Step, order_steps

DEPS = {
    ("facial-recognition", "recognition"): ((("facial-recognition", "detection"),), ()),
    ("ocr", "recognition"): ((("ocr", "detection"),), (("ocr", "classification"),)),
    ("ocr", "classification"): ((("ocr", "detection"),), ()),
    ("zero-shot", "classifier"): ((("clip", "visual"),), ()),
}


def needs(step: Step) -> tuple:
    return DEPS.get(step.key, ((), ()))


def keys(steps: list[Step]) -> list[str]:
    return [s.label for s in steps]


def test_dependencies_come_first_whatever_the_request_order() -> None:
    steps = [
        Step("zero-shot", "classifier", "m"),
        Step("ocr", "recognition", "m"),
        Step("facial-recognition", "recognition", "m"),
        Step("ocr", "classification", "m"),
        Step("clip", "visual", "m"),
        Step("ocr", "detection", "m"),
        Step("facial-recognition", "detection", "m"),
    ]
    order = keys(order_steps(steps, needs))
    for before, after in [
        ("facial-recognition.detection", "facial-recognition.recognition"),
        ("ocr.detection", "ocr.classification"),
        ("ocr.classification", "ocr.recognition"),
        ("clip.visual", "zero-shot.classifier"),
    ]:
        assert order.index(before) < order.index(after)


def test_optional_dependency_only_orders() -> None:
    order = keys(order_steps([Step("ocr", "recognition", "m"), Step("ocr", "detection", "m")], needs))
    assert order == ["ocr.detection", "ocr.recognition"]


def test_missing_dependency_is_named() -> None:
    with pytest.raises(GraphError, match=r"facial-recognition\.recognition needs facial-recognition\.detection"):
        order_steps([Step("facial-recognition", "recognition", "m")], needs)


def test_cycle_detected() -> None:
    cyc = {("a", "x"): ((("b", "x"),), ()), ("b", "x"): ((("a", "x"),), ())}
    with pytest.raises(GraphError, match="cycle"):
        order_steps([Step("a", "x", "m"), Step("b", "x", "m")], lambda s: cyc[s.key])
