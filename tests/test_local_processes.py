"""``assetq run`` over several processes (worker.local_processes): same results, same order, every process used."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from config import Settings
from producer.assets import assets_from_paths
from worker.local import run_local
from worker.local_processes import ProcessPool

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


def comparable(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in ("timings_ms", "batch_id")} for r in results]


@pytest.fixture(scope="module")
def job(model_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    tasks = json.loads((ROOT / "docs" / "examples" / "demo-spec.json").read_text())["tasks"]
    files = sorted(p for p in SAMPLES.iterdir() if p.suffix in (".jpg", ".png"))
    assets = [*assets_from_paths(files), {"id": "broken", "data": "bm90IGFuIGltYWdl"}]  # "not an image"
    return assets, tasks


def test_two_processes_give_the_results_of_one_in_asset_order(
    model_dir: Path, job: tuple[list[dict[str, Any]], dict[str, Any]]
) -> None:
    assets, tasks = job
    here, _ = run_local(assets, tasks, Settings(model_dir=model_dir, concurrency=1, chunk_size=4))
    seen: list[int] = []
    spread, summary = run_local(
        assets, tasks, Settings(model_dir=model_dir, concurrency=2, chunk_size=4), progress=seen.append
    )
    assert [r["asset_id"] for r in spread] == [a["id"] for a in assets]
    assert comparable(spread) == comparable(here)
    assert spread[-1]["status"] == "skipped"  # the broken asset (and samples/truncated.jpg) skipped, not fatal
    assert summary["skipped"] == sum(r["status"] == "skipped" for r in here) == 2
    assert sum(seen) == len(assets) and summary["total"] == len(assets)


def test_a_pool_is_warm_reusable_and_spreads_chunks(
    model_dir: Path, job: tuple[list[dict[str, Any]], dict[str, Any]]
) -> None:
    assets, tasks = job
    settings = Settings(model_dir=model_dir, concurrency=2, chunk_size=2, intra_op_threads=1)
    with ProcessPool(settings, tasks, 2) as pool:
        assert len(set(pool.pids)) == 2 and os.getpid() not in pool.pids
        first, _ = run_local(assets, tasks, settings, runtime=pool)
        second, _ = run_local(assets, tasks, settings, runtime=pool)
    assert comparable(first) == comparable(second)
    assert len({r["asset_id"] for r in first}) == len(assets)
