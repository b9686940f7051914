"""ASSETQ_PRELOAD: what a worker loads when it starts (all, nothing, or named tasks and models)."""

from __future__ import annotations

import pytest

from config.settings import Settings
from worker.bootstrap import preload_tasks

INSTALLED = {
    "facial-recognition": {"detection": {"modelName": "buffalo_s"}, "recognition": {"modelName": "buffalo_s"}},
    "ocr": {"detection": {"modelName": "PP-OCRv6_small"}, "recognition": {"modelName": "PP-OCRv6_small"}},
    "clip": {"visual": {"modelName": "tiny-shapes"}},
}


@pytest.mark.parametrize(
    ("env", "tasks"),
    [
        ("true", ["facial-recognition", "ocr", "clip"]),
        ("false", []),
        ("[]", []),
        ('["facial-recognition"]', ["facial-recognition"]),
        ('["buffalo_s", "tiny-shapes"]', ["facial-recognition", "clip"]),  # by model: the whole task, deps too
        ('["no-such-model"]', []),
    ],
)
def test_preload_takes_all_nothing_or_what_it_names(
    monkeypatch: pytest.MonkeyPatch, env: str, tasks: list[str]
) -> None:
    monkeypatch.setenv("ASSETQ_PRELOAD", env)
    wanted = Settings(_env_file=None).preload
    assert list(preload_tasks(INSTALLED, wanted)) == tasks
