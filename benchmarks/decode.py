"""Section "decode": JPEG decode CPU time, Pillow against assetq's libjpeg-turbo path, same pixels.

On the faces job's three image sets (12 distinct JPEGs each), ``decode_image`` with
``pillow_only=True`` (Pillow decodes into its own image, copied into the array: what the baselines
and Immich ML do) against the default (``worker/pipeline/jpeg.py``: straight into the array), at
full size (``ASSETQ_DETAIL_SIDE=0``, the default) and DCT-scaled to a 1440 px short side. CPU time
of the decoding thread (system time included: page faults of fresh buffers are part of the cost),
one thread, alone, best of 3 passes. Every image is checked to decode to the same pixels both ways.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.common import Run, State, progress, table
from benchmarks.face_sets import FACE_SETS, distinct_photos

SIDES = {"full size": 0, "short side 1440": 1440}
PASSES = 3
MAX_PIXELS = 50_000_000


def cpu_ms(datas: list[bytes], decode: Callable[[bytes], object]) -> float:
    """Best of ``PASSES`` passes: CPU ms per image of ``decode`` on this thread."""
    decode(datas[0])  # warm
    best = float("inf")
    for _ in range(PASSES):
        t0 = time.thread_time()
        for data in datas:
            decode(data)
        best = min(best, (time.thread_time() - t0) / len(datas))
    return 1000 * best


def same_pixels(datas: list[bytes], side: int) -> bool:
    from worker.pipeline.image import decode_image

    return all(
        np.array_equal(
            decode_image(d, MAX_PIXELS, side).pixels, decode_image(d, MAX_PIXELS, side, pillow_only=True).pixels
        )
        for d in datas
    )


def section(run: Run, state: State) -> None:
    from worker.pipeline.image import decode_image

    rows: list[list[object]] = []
    for face_set in FACE_SETS:
        progress(f"decode: {face_set.name}")
        datas = [Path(p).read_bytes() for p in distinct_photos(run.env.work, run.env.wheel_cache, face_set)]
        for label, side in SIDES.items():
            pillow = cpu_ms(datas, lambda d, s=side: decode_image(d, MAX_PIXELS, s, pillow_only=True))
            fast = cpu_ms(datas, lambda d, s=side: decode_image(d, MAX_PIXELS, s))
            same = "yes" if same_pixels(datas, side) else "NO"
            rows.append([face_set.label, label, f"{pillow:.1f}", f"{fast:.1f}", f"{pillow / fast:.2f}x", same])
    run.say("\n## JPEG decode: Pillow against assetq's libjpeg-turbo path\n")
    run.say(
        "CPU ms per image (user + system) of `decode_image`, one thread alone, best of 3 passes over each set's "
        "12 distinct JPEGs; Pillow: `pillow_only=True` (Pillow's own image, then copied out), assetq: straight "
        "into the array (`worker/pipeline/jpeg.py`).\n"
    )
    run.say(table(["image set", "decoded at", "Pillow ms", "assetq ms", "speed-up", "same pixels"], rows))
