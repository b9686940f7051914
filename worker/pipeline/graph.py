"""Order the requested model steps so every step runs after what it reads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# A step's (task, type), e.g. (Task.FACIAL_RECOGNITION, ModelType.DETECTION); the enums are strings,
# so a key spelled with plain strings is the same key. Defined here only; worker.models.base re-exports it.
StepKey = tuple[str, str]


@dataclass(frozen=True)
class Step:
    task: str
    type: str
    model_name: str
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def key(self) -> StepKey:
        return (self.task, self.type)

    @property
    def label(self) -> str:
        return f"{self.task}.{self.type}"


class GraphError(ValueError):
    pass


def order_steps(
    steps: Sequence[Step],
    needs: Callable[[Step], tuple[tuple[StepKey, ...], tuple[StepKey, ...]]],
) -> list[Step]:
    """Topological order of ``steps``; ``needs(step)`` gives (required, optional) upstream keys.

    A missing required dependency is an error naming both steps; an optional
    one (e.g. text-line orientation before recognition) only orders steps.
    Ties keep the request order, so the plan is deterministic.
    """
    by_key = {s.key: s for s in steps}
    if len(by_key) != len(steps):
        raise GraphError("a step is requested twice")
    deps: dict[StepKey, set[StepKey]] = {}
    for s in steps:
        required, optional = needs(s)
        missing = [k for k in required if k not in by_key]
        if missing:
            raise GraphError(f"{s.label} needs {', '.join('.'.join(k) for k in missing)} in the same request")
        deps[s.key] = set(required) | {k for k in optional if k in by_key}
    ordered: list[Step] = []
    done: set[StepKey] = set()
    while len(ordered) < len(steps):
        ready = [s for s in steps if s.key not in done and deps[s.key] <= done]
        if not ready:
            raise GraphError("dependency cycle among " + ", ".join(s.label for s in steps if s.key not in done))
        ordered.append(ready[0])
        done.add(ready[0].key)
    return ordered
