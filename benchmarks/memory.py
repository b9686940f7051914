"""Section "memory": the worker's memory (RSS of its pool processes) over many distinct, unseen assets.

Variable-shape steps are where memory could grow with every new shape, so the
assets have random sizes, faces and text lines, and run faces + OCR (CLIP's
input shape is fixed). Growth is read after a warm-up, against the assets that follow.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from benchmarks.common import Run, State, progress, table
from benchmarks.distributed import Deployment
from benchmarks.env import file_assets
from benchmarks.photos import varied_small_photos

MEMORY_MAX_SIDE = 480  # small photos: 2,000 of them fit the time budget


def memory_growth(
    deployment: Deployment, assets: list[dict[str, Any]], tasks: dict[str, Any], total: int, batch_size: int = 500
) -> tuple[float, float, float]:
    """(worker RSS MiB before, after, seconds) for ``total`` assets cycled from ``assets`` in batches."""
    producer = deployment.producer()
    before = deployment.worker_rss_mb()
    t0 = time.perf_counter()
    done = 0
    while done < total:
        n = min(batch_size, total - done)
        batch = [{**assets[(done + i) % len(assets)], "id": f"m{done + i}-{uuid.uuid4().hex[:6]}"} for i in range(n)]
        deployment.run(producer, batch, tasks)
        done += n
    seconds = time.perf_counter() - t0
    return before, deployment.worker_rss_mb(), seconds


def section(run: Run, state: State) -> None:
    """RSS after a warm-up vs after the unseen assets, on the headline's worker."""
    deployment = state.deployment
    assert deployment is not None, "the memory section measures the headline's worker"
    sizes = run.sizes
    photos = varied_small_photos(run.env.work, sizes.memory_warm + sizes.memory_assets, max_side=MEMORY_MAX_SIDE)
    warm, rest = file_assets(photos[: sizes.memory_warm]), file_assets(photos[sizes.memory_warm :])
    tasks = run.env.tasks(clip=False)
    progress(f"worker memory: {len(warm)} warm-up assets, then {len(rest)} unseen ones")
    memory_growth(deployment, warm, tasks, len(warm))
    before, after, seconds = memory_growth(deployment, rest, tasks, len(rest))
    growth = 100 * (after - before) / before
    run.say(f"\n## Worker memory (RSS of its pool processes) over {len(rest)} assets\n")
    run.say(
        table(
            ["after warm-up (MiB)", f"after {len(rest)} more assets (MiB)", "growth", "assets/s"],
            [[before, after, f"{growth:+.1f}%", len(rest) / seconds]],
        )
    )
    run.say(
        f"Warm-up: the headline runs (full job on the photo set), then {len(warm)} small photos. The "
        f"{len(rest)} assets after it are all distinct and unseen: random sizes (256-{MEMORY_MAX_SIDE} px), "
        "0-3 faces, 0-4 text lines; faces + OCR (the variable-shape steps; CLIP's input shape is fixed)."
    )
    run.ratios["memory_growth_pct"] = growth
