"""Per-asset result documents (JSON-ready dicts), each step's part made by its own model class."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from worker.pipeline.graph import Step, StepKey

if TYPE_CHECKING:  # ``skipped`` is also what a worker's main process writes for a dead letter: no numpy there
    from worker.models.base import InferenceModel


def skipped(
    batch_id: str,
    asset_id: str,
    kind: str,
    message: str,
    status: str = "skipped",
    timings: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    return {
        "batch_id": batch_id,
        "asset_id": asset_id,
        "status": status,
        "error": {"kind": kind, "message": message},
        "timings_ms": dict(timings or {}),
    }


def build(
    batch_id: str,
    asset_id: str,
    width: int,
    height: int,
    plan: Sequence[Step],
    models: Mapping[StepKey, InferenceModel],
    outputs: Mapping[StepKey, Any],
    timings: Mapping[str, float],
    requested: frozenset[str],
) -> dict[str, Any]:
    """``outputs`` holds this asset's output of every step in ``plan``, run by ``models``.

    Each step adds its keys through its model's ``result_fields``, in plan order (so a
    step refining another's output, e.g. recognition after detection, has the last word);
    ``requested`` are the tasks the request named.
    """
    from worker.models.base import AssetOutputs

    asset = AssetOutputs({s.key: s for s in plan}, outputs, requested)
    result: dict[str, Any] = {
        "batch_id": batch_id,
        "asset_id": asset_id,
        "status": "ok",
        "error": None,
        "image": {"width": width, "height": height},
    }
    for step in plan:
        result.update(models[step.key].result_fields(outputs[step.key], step, asset))
    result["timings_ms"] = {k: round(v, 3) for k, v in timings.items()}
    return result
