"""assetq's benchmark harness: ``python -m benchmarks`` (``make bench``).

    .venv/bin/python -m benchmarks                 # the full harness (~9 min on a 2-core machine)
    .venv/bin/python -m benchmarks --quick         # a smaller run (~3 min)
    .venv/bin/python -m benchmarks --sections headline,batching,roofline

One run measures, side by side on the same generated photo set (see
``benchmarks/photos.py``) and the full job (faces + OCR + CLIP + zero-shot):

1. the naive baseline (``benchmarks/naive.py``),
2. assetq in-process (the ``assetq run`` path),
3. assetq distributed (real redis-server + one real worker process + the Producer API),

then the batching gain, the roofline, how cost grows (chunk size, faces per
image, enqueue rate against plain Celery, worker memory over many assets,
model unload) and a short load test. It prints markdown tables as it goes,
a summary, and ends with one machine-readable line::

    ratios: inprocess_vs_naive=X distributed_vs_inprocess=Y batch_gain_kept_pct=Z roofline_pct=W floor_pct=V

Times are wall-clock on whatever else the machine is doing: compare the
ratios of one run (the configurations are interleaved round by round, and
each keeps its best round), not absolute times across runs.

Each section is a module of its own (``benchmarks/<section>.py``, whose
``section(run, state)`` measures and prints it); this one parses the
arguments and runs the chosen sections in order. ``benchmarks/common.py``
holds what they share, ``benchmarks/report.py`` the header and the summary.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import (  # noqa: E402
    batching,
    brokers,
    decode,
    enqueue,
    faces,
    headline,
    leads,
    loadtest,
    memory,
    report,
    roofline,
    scale,
    tail,
    unload,
    variants,
)
from benchmarks.common import FULL, QUICK, Run, Sizes, State, progress  # noqa: E402
from benchmarks.distributed import start_worker  # noqa: E402
from benchmarks.env import prepare  # noqa: E402
from benchmarks.photos import photo_set  # noqa: E402

SECTIONS = (
    "headline",
    "faces",
    "decode",
    "brokers",
    "variants",
    "batching",
    "roofline",
    "leads",
    "scale",
    "enqueue",
    "memory",
    "unload",
    "loadtest",
    "tail",
)
# Section name -> the module function that runs it and prints its tables (benchmarks/<name>.py).
RUNNERS: dict[str, Callable[[Run, State], None]] = {
    "headline": headline.section,
    "faces": faces.section,
    "decode": decode.section,
    "brokers": brokers.section,
    "variants": variants.section,
    "batching": batching.section,
    "roofline": roofline.section,
    "leads": leads.section,
    "scale": scale.section,
    "enqueue": enqueue.section,
    "memory": memory.section,
    "unload": unload.section,
    "loadtest": loadtest.section,
    "tail": tail.section,
}
# The order they run in. The first two measure the headline's recorded runtime (asking for either runs the
# headline); the next three use its worker, which stops before the rest, as they start what they need.
ON_HEADLINE_RUNTIME = ("roofline", "batching")
ON_HEADLINE_WORKER = ("loadtest", "enqueue", "memory")
ON_THEIR_OWN = ("faces", "decode", "brokers", "variants", "leads", "scale", "unload", "tail")


def run_sections(run: Run, state: State, sections: set[str]) -> dict[str, float]:
    """Run the chosen sections in their order; the seconds each took."""
    elapsed: dict[str, float] = {}

    def timed(name: str) -> None:
        t0 = time.perf_counter()
        RUNNERS[name](run, state)
        elapsed[name] = time.perf_counter() - t0
        progress(f"{name}: {elapsed[name]:.0f} s")

    try:
        if sections & {"headline", *ON_HEADLINE_RUNTIME}:
            timed("headline")
        if state.deployment is None and sections & {"headline", *ON_HEADLINE_WORKER}:
            state.deployment = start_worker(run, state.photos, run.chunk_size)
        for name in ON_HEADLINE_RUNTIME:
            if name in sections:
                timed(name)
        if state.inproc is not None:
            state.inproc.close()
        for name in ON_HEADLINE_WORKER:
            if name in sections:
                timed(name)
    finally:
        if state.deployment is not None:
            state.deployment.stop()
    for name in ON_THEIR_OWN:
        if name in sections:
            timed(name)
    return elapsed


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from config.settings import Settings

    defaults = Settings()
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a smaller run (3 photos x 2, fewer rounds and assets)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {', '.join(SECTIONS)}")
    p.add_argument("--work", type=Path, default=Path(os.environ.get("ASSETQ_BENCH_DIR", "/tmp/assetq-bench")))
    p.add_argument("--model-dir", type=Path, default=defaults.model_dir, help="where assetq's packs are installed")
    p.add_argument("--wheel-cache", type=Path, default=None)
    p.add_argument("--clip", choices=("auto", "vit-b-32", "tiny", "none"), default="auto")
    p.add_argument("--chunk-size", type=int, default=defaults.chunk_size)
    # The CPU settings the harness's own "CPU settings" table measured best on 2 cores: one process
    # per core with one onnxruntime thread each (up to 4 processes; more cores go to threads).
    cpus = os.cpu_count() or 1
    processes = min(cpus, 4)
    p.add_argument("--concurrency", type=int, default=processes, help="processes (assetq run and worker pool)")
    p.add_argument("--intra-op-threads", type=int, default=max(1, cpus // processes))
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--report", type=Path, default=None, help="also write the tables here (markdown)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sections = set(args.sections.split(","))
    unknown = sections - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections: {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    sizes = QUICK if args.quick else FULL
    if args.rounds:
        sizes = Sizes(**{**sizes.__dict__, "rounds": args.rounds})
    wheel_cache = args.wheel_cache or args.model_dir.parent / "wheels"
    started = time.perf_counter()
    env = prepare(args.work, args.model_dir, wheel_cache, args.clip, log=progress)
    run = Run(env, sizes, args.chunk_size, args.intra_op_threads, args.concurrency)
    listed = photo_set(env.work, wheel_cache, quick=sizes.photos_quick)
    photos = [p for p, _ in listed]
    all_photos = photos if not sizes.photos_quick else [p for p, _ in photo_set(env.work, wheel_cache, quick=False)]
    report.header(run, listed, args.quick)
    # Only the headline section times the distributed configuration; the others use its worker untimed.
    state = State(photos, all_photos, with_distributed="headline" in sections)
    elapsed = run_sections(run, state, sections)
    report.footer(run, elapsed, started)
    line = report.summary(run)
    if args.report:
        args.report.write_text("\n".join(run.out) + "\n\n" + line + "\n")
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
