"""An idle model's memory really goes back to the operating system when the cache unloads it.

Measured in a fresh subprocess (RSS is per process): load faces + OCR, run
two photos (onnxruntime's arena grows by hundreds of MB), wait past the TTL,
let ``ModelCache.evict_idle`` unload. Without ``malloc_trim`` glibc keeps the
freed pages and RSS stays above the loaded level; with it RSS falls well
below it (the weights are gone too).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.photos import face_grid, write_jpeg
from benchmarks.unload import measure_in_subprocess

TASKS = {
    "facial-recognition": {"detection": {"modelName": "buffalo_s"}, "recognition": {"modelName": "buffalo_s"}},
    "ocr": {"detection": {"modelName": "PP-OCRv6_small"}, "recognition": {"modelName": "PP-OCRv6_small"}},
}


@pytest.mark.timeout(180)
def test_unloading_idle_models_returns_their_memory(model_dir: Path, tmp_path: Path) -> None:
    from benchmarks.photos import draw_sign

    photo = face_grid(4, (1600, 1200))
    draw_sign(photo, ("Platform 9 departs at 17:05", "Fresh bread & pastries daily"), (40, 40), 40)
    images = [write_jpeg(photo, tmp_path / "a.jpg"), write_jpeg(face_grid(1, (800, 600)), tmp_path / "b.jpg")]
    r = measure_in_subprocess(model_dir, TASKS, images)
    assert len(r["unloaded"]) == 4, r
    grown = r["after_run_mb"] - r["loaded_mb"]
    assert grown > 50, f"the run should have grown the arena: {r}"
    # Below the loaded level: the arena, the weights and the freed heap went back to the kernel
    # (measured: ~85 MB below with malloc_trim, ~25 MB above without it).
    assert r["unloaded_mb"] < r["loaded_mb"] - 30, r
