"""Section "scale": how in-process cost grows with the chunk size and with the faces per image."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.common import STEP_COLUMNS, Run, State, average_timings, progress, table
from benchmarks.env import file_assets
from benchmarks.inprocess import InProcess, build_recorded_runtime
from benchmarks.photos import face_count_photos, small_photo


def chunk_size_sweep(
    make: Callable[[int], InProcess], assets: list[dict[str, Any]], tasks: dict[str, Any], sizes: tuple[int, ...]
) -> list[tuple[int, float, dict[str, float]]]:
    """(chunk size, images/s, per-image step ms) for each size, the same assets every time."""
    out = []
    for size in sizes:
        runner = make(size)
        try:
            runner.run(assets[: max(2, size)], tasks)  # warm this chunk size's shapes
            wall, results = runner.run(assets, tasks)
        finally:
            runner.close()
        out.append((size, len(assets) / wall, average_timings(results)))
    return out


def faces_sweep(
    runner: InProcess, assets_by_count: dict[int, list[dict[str, Any]]], tasks: dict[str, Any]
) -> list[tuple[int, int, float, float]]:
    """(faces per image asked, faces found per image, images/s, recognition ms per face) per face count."""
    out = []
    for count, assets in assets_by_count.items():
        runner.run(assets[:2], tasks)
        wall, results = runner.run(assets, tasks)
        found = sum(len(r.get("faces", [])) for r in results) / len(results)
        rec_ms = average_timings(results).get("facial-recognition.recognition", 0.0)
        out.append((count, round(found), len(assets) / wall, rec_ms / found if found else 0.0))
    return out


def section(run: Run, state: State) -> None:
    """Images/s against the chunk size (full job), then against the faces in the photo (faces only)."""
    env, sizes = run.env, run.sizes
    tasks = env.tasks()
    small = small_photo(env.work)
    assets = file_assets([small], sizes.chunk_assets)

    def make(size: int) -> InProcess:
        settings = run.settings(chunk_size=size)
        return InProcess(settings, build_recorded_runtime(settings))

    progress("chunk-size sweep")
    sweep = chunk_size_sweep(make, assets, tasks, sizes.chunk_sizes)
    run.say(f"\n## Images/s vs chunk size (in-process, full job, {len(assets)} x {small.name})\n")
    base = sweep[0][1]
    run.say(
        table(
            ["chunk size", "images/s", "vs chunk 1", *(label for _, label in STEP_COLUMNS[1:])],
            [[s, ips, f"{ips / base:.2f}x", *(st.get(k, 0.0) for k, _ in STEP_COLUMNS[1:])] for s, ips, st in sweep],
        )
    )

    progress("faces-per-image sweep")
    photos = face_count_photos(env.work, sizes.face_counts)
    face_tasks = env.tasks(ocr=False, clip=False)
    runner = make(run.chunk_size)
    try:
        rows = faces_sweep(runner, {n: file_assets([p], sizes.face_images) for n, p in photos.items()}, face_tasks)
    finally:
        runner.close()
    run.say(f"\n## Images/s vs faces per image (in-process, faces only, {sizes.face_images} images each)\n")
    run.say(table(["faces in the photo", "faces found", "images/s", "recognition ms/face"], rows))
