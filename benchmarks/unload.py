"""Is an idle model's memory really returned? RSS of a fresh process: loaded, after a run, after the TTL unload.

    python -m benchmarks.unload --model-dir DIR --tasks '{"ocr": ...}' IMAGE...

Runs in its own process (RSS is per process), prints one JSON object with
``start_mb``, ``loaded_mb``, ``after_run_mb``, ``unloaded_mb`` and
``unloaded`` (the models the cache's idle eviction dropped). The eviction is
the one idle workers run: the cache's own timer, ``ttl_s`` after a model's last use.
``section`` is the harness's "unload" section: this command on 3 of its photos.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import Run, State, progress, rss_mb, table

ROOT = Path(__file__).resolve().parents[1]
TTL_S = 0.5


def measure(model_dir: Path, tasks: dict[str, Any], images: Sequence[Path]) -> dict[str, Any]:
    from config.settings import Settings
    from worker.local import run_local
    from worker.runtime import build_engine

    start = rss_mb()
    settings = Settings(model_dir=model_dir, model_ttl_s=1)  # an int field: the TTL is shortened below
    runtime = build_engine(settings, local_paths_ok=True)
    runtime.cache.ttl_s = TTL_S
    runtime.preload(tasks)
    loaded = rss_mb()
    assets = [{"id": f"i{n}", "uri": p.resolve().as_uri()} for n, p in enumerate(images)]
    run_local(assets, tasks, settings, runtime=runtime)
    after_run = rss_mb()
    held = runtime.cache.loaded()
    deadline = time.monotonic() + 60 * TTL_S
    while runtime.cache.loaded() and time.monotonic() < deadline:  # no task: the cache's timer unloads them
        time.sleep(TTL_S / 4)
    unloaded = [key for key in held if key not in runtime.cache.loaded()]
    runtime.pipeline.close()
    return {
        "start_mb": round(start, 1),
        "loaded_mb": round(loaded, 1),
        "after_run_mb": round(after_run, 1),
        "unloaded_mb": round(rss_mb(), 1),
        "unloaded": ["/".join(k) for k in unloaded],
    }


def measure_in_subprocess(model_dir: Path, tasks: dict[str, Any], images: Sequence[Path]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.unload", "--model-dir", str(model_dir), "--tasks", json.dumps(tasks)]
    out = subprocess.run([*cmd, *map(str, images)], cwd=ROOT, capture_output=True, text=True, check=True, timeout=600)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def section(run: Run, state: State) -> None:
    """RSS of a fresh process through the full job's models on 3 photos, then after the idle unload."""
    progress("model unload: RSS in a fresh process")
    r = measure_in_subprocess(run.env.model_dir, run.env.tasks(), state.photos[:3])
    run.say("\n## Idle model unload (ModelCache TTL eviction, fresh process)\n")
    run.say(
        table(
            ["process start", "models loaded", "after 3 photos", "after TTL unload", "models unloaded"],
            [[r["start_mb"], r["loaded_mb"], r["after_run_mb"], r["unloaded_mb"], len(r["unloaded"])]],
        )
    )
    run.say("RSS in MiB. Unloading drops the sessions, collects garbage and calls glibc's malloc_trim.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--tasks", required=True, help="a tasks block, as JSON")
    parser.add_argument("images", nargs="+", type=Path)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.model_dir, json.loads(args.tasks), args.images)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
