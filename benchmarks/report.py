"""The report's frame around the sections: the header (machine, photos, settings), the section times,
and the summary against the targets that ends with the machine-readable ``ratios:`` line."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np

from benchmarks.common import Run, load_average, table
from benchmarks.photos import PhotoSpec

# The ratios the run is judged by, each with its target (at least this much).
TARGETS = {
    "inprocess_vs_naive": 2.0,
    "distributed_vs_inprocess": 0.9,
    "batch_gain_kept_pct": 90.0,
    "roofline_pct": 50.0,
    "floor_pct": 50.0,
    # The faces job (section "faces"): the least of assetq's four figures (run and submit, steady and
    # whole command) against the peer-style baseline, per image set; the session-time ceiling reached;
    # the baseline's peak memory over the worker's (at least 1: the worker uses no more).
    "faces_vs_peer_previews": 1.5,
    "faces_vs_peer_small": 1.5,
    "faces_vs_peer_12mp": 2.0,
    "faces_ceiling_pct": 85.0,
    "faces_memory_headroom": 1.0,
    "enqueue_vs_celery": 0.8,
}


def header(run: Run, listed: list[tuple[Path, PhotoSpec]], quick: bool) -> None:
    """The title and what the run is made of: the machine, the photo set, assetq's settings."""
    sizes = run.sizes
    photos = [p for p, _ in listed]
    mp = [s.size[0] * s.size[1] / 1e6 for _, s in listed]
    run.say("# assetq benchmark" + (" (--quick)" if quick else ""))
    run.say(f"\nMachine: {machine_line()}. At start: {load_average()}.")
    run.say(
        f"Photos: {len(photos)} JPEGs, {min(mp):.1f}-{max(mp):.0f} MP (mean {np.mean(mp):.1f} MP), x{sizes.repeat} = "
        f"{len(photos) * sizes.repeat} assets; faces and text in most (benchmarks/photos.py)."
    )
    run.say(
        f"assetq settings: concurrency={run.concurrency} processes (assetq run's, and the worker's pool) x "
        f"intra_op_threads={run.intra_op_threads or 'default'}, chunk_size={run.chunk_size} (at most; "
        f"smaller towards a batch's end on several processes); {sizes.rounds} interleaved round(s), best kept."
    )


def footer(run: Run, elapsed: dict[str, float], started: float) -> None:
    """How long each section took, and the machine's load at the end (``started``: ``time.perf_counter``)."""
    run.say("\nSection times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in elapsed.items()))
    run.say(f"\nAt end: {load_average()}. Harness wall time {time.perf_counter() - started:.0f} s.")


def summary(run: Run) -> str:
    """Print the summary table; return the machine-readable ``ratios:`` line (``nan`` for what was not run)."""
    run.say("\n## Summary against the targets\n")
    rows = []
    for key, target in TARGETS.items():
        value = run.ratios.get(key)
        if value is None:
            rows.append([key, "not measured", f">= {target:g}", ""])
            continue
        rows.append(
            [
                key,
                f"{value:.2f}" if target < 10 else f"{value:.0f}",
                f">= {target:g}",
                "met" if value >= target else "NOT met",
            ]
        )
    growth = run.ratios.get("memory_growth_pct")
    if growth is not None:
        rows.append(["memory_growth_pct", f"{growth:+.1f}", "< 5", "met" if growth < 5 else "NOT met"])
    run.say(table(["measure", "value", "target", ""], rows))
    for note in run.notes:
        run.say(f"- {note}")
    digits = {k: 2 if t < 10 else 0 for k, t in TARGETS.items()}
    values = " ".join(f"{k}={run.ratios[k]:.{digits[k]}f}" if k in run.ratios else f"{k}=nan" for k in TARGETS)
    return f"ratios: {values}"


def machine_line() -> str:
    import onnxruntime as ort

    cpu = platform.processor() or platform.machine()
    flags = ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        for line in info.splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = line
                break
    except OSError:
        pass
    avx512 = "yes" if " avx512f" in flags else "no"
    return f"{cpu}, {os.cpu_count()} CPUs, AVX-512 {avx512}; onnxruntime {ort.__version__}, numpy {np.__version__}"
