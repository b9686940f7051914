"""Run the fault suite several times in a row and report: is it flaky, and how fast is recovery?

    .venv/bin/python tools/fault_suite.py [--runs 5] [--out docs/fault-suite.md]

Each run is a fresh ``pytest -m faults`` (real redis-server, moto S3, real workers, killed at
many moments). The workers-death tests print the seconds from each ``kill -9`` to the chunk
running again; those are gathered over all runs (median and maximum). Not run by CI: it
takes about half an hour on 2 cores.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECOVERY = re.compile(r"^recovery-s (\S+): ([0-9. ]+)", re.MULTILINE)
SUMMARY = re.compile(r"^(?:=+ )?(\d+ (?:passed|failed)[^\n]*?) in [0-9.]+s", re.MULTILINE)


def run_once(log: Path) -> tuple[bool, float, str, dict[str, list[float]]]:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-m", "faults", "tests"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    took = time.monotonic() - t0
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)  # a failure is read from here
    found: dict[str, list[float]] = {}
    for where, values in RECOVERY.findall(proc.stdout):
        found.setdefault(where, []).extend(float(v) for v in values.split())
    summary = SUMMARY.findall(proc.stdout)
    failed = [
        line.split(" - ")[0].removeprefix("FAILED ") for line in proc.stdout.splitlines() if line.startswith("FAILED ")
    ]
    text = (summary[-1] if summary else proc.stdout[-300:]) + "".join(f"; {f}" for f in failed)
    return proc.returncode == 0, took, text, found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, help="also write the report (markdown) here")
    ap.add_argument("--logs", type=Path, default=Path("/tmp/assetq-fault-suite"), help="each run's pytest output")
    a = ap.parse_args()
    lines = ["| run | result | pytest summary | wall |", "|---|---|---|---|"]
    recovery: dict[str, list[float]] = {}
    failed = 0
    for n in range(1, a.runs + 1):
        ok, took, summary, found = run_once(a.logs / f"run-{n}.log")
        failed += not ok
        for where, values in found.items():
            recovery.setdefault(where, []).extend(values)
        lines.append(f"| {n} | {'passed' if ok else 'FAILED'} | {summary} | {took:.0f} s |")
        print(lines[-1], flush=True)
    lines += ["", "| kill -9 of a worker, then the chunk it held running again | kills | median | max |"]
    lines += ["|---|---|---|---|"]
    for where, values in sorted(recovery.items()):
        med, worst = statistics.median(values), max(values)
        lines.append(f"| {where.replace('-', ' ')} | {len(values)} | {med:.1f} s | {worst:.1f} s |")
    report = "\n".join(lines) + "\n"
    print(report)
    if a.out:
        a.out.write_text(report)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
