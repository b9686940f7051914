"""``assetq run`` in one process: chunks run in groups, inference threads wait for each other once per group."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from config import Settings
from producer.assets import assets_from_paths
from worker import local
from worker.local import run_local
from worker.pipeline.run import Pipeline

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
FACES = {"facial-recognition": {"detection": {"modelName": "buffalo_s"}, "recognition": {"modelName": "buffalo_s"}}}


def comparable(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in ("timings_ms", "batch_id")} for r in results]


@pytest.fixture(scope="module")
def assets() -> list[dict[str, Any]]:
    files = sorted(p for p in SAMPLES.iterdir() if p.suffix in (".jpg", ".png"))
    return [*assets_from_paths(files), {"id": "broken", "data": "bm90IGFuIGltYWdl"}]  # "not an image"


def test_one_process_runs_its_chunks_as_groups_and_counts_each_wave(
    model_dir: Path, assets: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    original = Pipeline.run_models

    def counted(self: Pipeline, batch_id: str, chunk: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(chunk))
        return original(self, batch_id, chunk, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "run_models", counted)
    monkeypatch.setattr(local, "RUN_GROUP_IMAGES", 5)
    seen: list[tuple[int, str]] = []
    settings = Settings(model_dir=model_dir, concurrency=1, chunk_size=2, inference_threads=2, intra_op_threads=1)
    grouped, summary = run_local(
        assets, FACES, settings, progress=lambda n: seen.append((n, threading.current_thread().name))
    )
    # Chunks of 2 in groups of 5: one pass of the two inference threads per group.
    assert calls == [5, 5, len(assets) - 10]
    # The faces job's waves are one image on the CPU: the bar moves image by image, from both threads.
    assert [n for n, _ in seen] == [1] * len(assets)
    assert len({name for _, name in seen}) == 2
    assert summary["total"] == len(assets) and summary["skipped"] == 2  # samples/truncated.jpg and "broken"

    monkeypatch.setattr(local, "RUN_GROUP_IMAGES", 1)
    chunked, _ = run_local(assets, FACES, settings)  # groups no larger than the chunks of 2: as before
    assert calls[3:] == [2] * (len(assets) // 2) + [1] * (len(assets) % 2)
    assert comparable(grouped) == comparable(chunked)
    assert [r["asset_id"] for r in grouped] == [a["id"] for a in assets]
