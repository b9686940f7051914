"""What every benchmark section shares: the run's sizes and record, clocks, process memory, tables.

``Run`` is what the sections print to and measure into (the summary reads it);
``State`` is what they hand on to each other (the headline's runtime and worker).
This module imports nothing heavy, so the command-line helpers that run in a
process of their own (``benchmarks.unload``, ``benchmarks.loadtest``) can use it.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.distributed import Deployment
    from benchmarks.env import BenchEnv
    from benchmarks.inprocess import InProcess
    from benchmarks.roofline import SessionRecorder
    from config.settings import Settings

# The per-step columns of the timing tables: (``timings_ms`` key, column label).
STEP_COLUMNS = (
    ("decode", "decode"),
    ("facial-recognition.detection", "face det"),
    ("facial-recognition.recognition", "face rec"),
    ("ocr.detection", "text det"),
    ("ocr.recognition", "text rec"),
    ("clip.visual", "CLIP"),
    ("zero-shot.classifier", "zero-shot"),
)


@dataclass(frozen=True)
class Sizes:
    """How much of everything a run does (full or --quick)."""

    photos_quick: bool
    repeat: int  # assets = photos x repeat
    rounds: int  # interleaved rounds of the headline configurations
    batching_rounds: int
    chunk_sizes: tuple[int, ...]
    chunk_assets: int
    face_counts: tuple[int, ...]
    face_images: int
    enqueue_jobs: int
    memory_warm: int  # distinct photos run once before the "after warm-up" reading
    memory_assets: int  # then this many more, all distinct and unseen
    load_jobs: int
    load_concurrency: int


FULL = Sizes(False, 2, 3, 5, (1, 4, 16, 64), 64, (0, 1, 10, 50), 8, 10_000, 100, 2_000, 32, 4)
QUICK = Sizes(True, 2, 1, 2, (1, 4, 16), 16, (0, 1, 10, 50), 2, 500, 20, 100, 8, 2)


@dataclass
class Run:
    """Everything measured, for the summary."""

    env: BenchEnv
    sizes: Sizes
    chunk_size: int
    intra_op_threads: int
    concurrency: int  # worker pool processes (distributed)
    out: list[str] = field(default_factory=list)
    measured: dict[str, Measured] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    recorded_images: int = 0  # images the roofline's session recorder saw

    def say(self, text: str = "") -> None:
        print(text, flush=True)
        self.out.append(text)

    def settings(self, **overrides: Any) -> Settings:
        from config.settings import Settings

        base = {
            "model_dir": self.env.model_dir,
            "chunk_size": self.chunk_size,
            "intra_op_threads": self.intra_op_threads,
            "concurrency": self.concurrency,
            "model_ttl_s": 0,
        }
        return Settings(**{**base, **overrides})


@dataclass
class State:
    """What the sections hand on: the photo set, and what the headline leaves running for the next ones.

    The headline's in-process runtime (recorded by ``recorder``) is measured
    by the roofline and batching sections; its worker (``deployment``) serves
    the load test, enqueue and memory sections. ``__main__`` closes both.
    """

    photos: list[Path]
    all_photos: list[Path]  # the full photo set, even under --quick (the leads and batching pick from it)
    with_distributed: bool = True  # whether the headline times the distributed configuration
    inproc: InProcess | None = None
    recorder: SessionRecorder | None = None
    deployment: Deployment | None = None


def progress(text: str) -> None:
    """A progress line on stderr: not part of the report, which goes to stdout."""
    print(f"  .. {text}", file=sys.stderr, flush=True)


@dataclass
class Measured:
    """What one configuration of the full job did on the photo set."""

    name: str
    images: int
    wall_s: float  # best round
    step_ms: dict[str, float] = field(default_factory=dict)  # per image, averaged over the set
    rounds_s: list[float] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def ms_per_image(self) -> float:
        return 1000 * self.wall_s / max(1, self.images)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()  # don't let a collection of the previous round land in this one
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    return statistics.median(timed(fn)[0] for _ in range(max(1, repeats)))


def rss_mb(pid: int | None = None) -> float:
    """Resident set size of a process (default: this one) in MiB, from /proc."""
    path = Path(f"/proc/{pid or os.getpid()}/status")
    for line in path.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS in {path}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} (1 / 5 min) on {os.cpu_count()} CPUs"


def average_timings(results: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Mean of each ``timings_ms`` key over the results (each step's per-asset share)."""
    total: dict[str, float] = {}
    n = 0
    for r in results:
        n += 1
        for k, v in (r.get("timings_ms") or {}).items():
            total[k] = total.get(k, 0.0) + float(v)
    return {k: v / max(1, n) for k, v in total.items()}


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table (readable in a terminal, pasteable into the README)."""
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")
