"""Section "tail": the end of a batch on several processes, equal shares against factoring.

The full job through ``assetq run``'s process pool (``--concurrency`` processes,
warm), on a batch in the order a folder lists it: each photo's copies side by
side (``astronaut_1mp-0 .. -5``, then ``astronaut_sign_12mp-0 ..``), so equal
counts are not equal costs. Two cuts of the same batch, interleaved round by
round, best round kept:

* equal shares: as few chunks of at most ``chunk_size`` as there are rounds of
  processes, of equal size (0.5.0 to 0.6.2's rule, the baseline);
* factoring: ``contract.chunking.chunk_sizes``, full chunks then rounds halving
  down to one asset (0.6.3's rule, what ``assetq run`` and the producer cut).

Besides images/s it reports how busy each process was: its CPU time (user +
system, from ``/proc``) over the wall time. A process that ran out of chunks
while another finished a heavy one shows as a low figure.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from benchmarks.common import Run, State, cpu_seconds, progress, table
from benchmarks.env import file_assets

REPEAT = 6  # copies of each photo: 72 assets on the 12 photos


def equal_shares(count: int, chunk_size: int, processes: int) -> list[int]:
    """0.5.0 to 0.6.2's cut: rounds of one chunk per process, all of one size (24 on 2 at 16: 12 + 12)."""
    chunks = -(-count // max(1, chunk_size))
    chunks = -(-chunks // processes) * processes
    size = max(1, -(-count // chunks))
    return [min(size, count - start) for start in range(0, count, size)]


def section(run: Run, state: State) -> None:
    from contract.chunking import chunk_sizes, cut
    from worker.local_processes import ProcessPool

    tasks = run.env.tasks()
    processes = max(2, run.concurrency)
    assets = sorted(file_assets(state.photos, REPEAT), key=lambda a: str(a["id"]))
    cuts = {
        "equal shares (0.6.2)": equal_shares(len(assets), run.chunk_size, processes),
        "factoring (0.6.3)": chunk_sizes(len(assets), run.chunk_size, processes),
    }
    settings = run.settings(concurrency=processes)
    progress(f"tail: starting {processes} warm processes")
    walls: dict[str, list[float]] = {name: [] for name in cuts}
    busy: dict[str, list[float]] = {name: [] for name in cuts}
    with ProcessPool(settings, tasks, processes) as pool:

        def once(sizes: list[int]) -> tuple[float, list[float]]:
            chunks: list[list[dict[str, Any]]] = cut(assets, sizes)
            before = [cpu_seconds(p) for p in pool.pids]
            t0 = time.perf_counter()
            done = sum(len(out) for _, out in pool.run(f"tail-{uuid.uuid4().hex[:8]}", chunks, tasks))
            wall = time.perf_counter() - t0
            assert done == len(assets), f"{done} results for {len(assets)} assets"
            return wall, [(cpu_seconds(p) - b) / wall for p, b in zip(pool.pids, before, strict=True)]

        once(cuts["factoring (0.6.3)"])  # every shape seen once: sessions warm for both
        for r in range(run.sizes.rounds):
            for name, sizes in cuts.items():
                progress(f"tail: round {r + 1}/{run.sizes.rounds}, {name}")
                wall, shares = once(sizes)
                walls[name].append(wall)
                busy[name].append(min(shares))
    base = min(walls["equal shares (0.6.2)"])
    rows = []
    for name, sizes in cuts.items():
        best = min(walls[name])
        i = walls[name].index(best)
        rows.append(
            [
                name,
                " ".join(str(s) for s in sizes),
                f"{len(assets) / best:.2f}",
                f"{100 * busy[name][i]:.0f}%",
                f"{base / best:.2f}x",
            ]
        )
    run.say(f"\n## The end of a batch: {len(assets)} assets on {processes} processes, in folder order\n")
    run.say(
        f"Full job ({run.env.job_name()}), `assetq run`'s warm process pool, {processes} processes x "
        f"{settings.intra_op_threads or 'auto'} onnxruntime thread(s), chunk size {run.chunk_size}; the "
        f"{len(state.photos)} photos x {REPEAT} in name order (each photo's copies side by side). Best of "
        f"{run.sizes.rounds} interleaved rounds; least busy process: its CPU time over the wall time, that round.\n"
    )
    run.say(table(["cut", "chunk sizes", "images/s", "least busy process", "vs equal shares"], rows))
    run.say(f"Rounds (s): { {name: ', '.join(f'{w:.1f}' for w in ws) for name, ws in walls.items()} }")
