"""benchmarks/gpu_check.sh's CPU dry run: the whole script (worker behind a private redis-server, both jobs, both
chunk sizes) on tiny sizes, and the report it must always write."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tools.testbed.services import REPO


def test_dry_run_writes_the_report_with_every_row(tmp_path: Path) -> None:
    out = tmp_path / "gpu"
    env = {
        **os.environ,
        "GPU_CHECK_PYTHON": sys.executable,
        "PYTHONPATH": str(REPO),
        "GPU_CHECK_WORK": str(tmp_path / "work"),
    }
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    report = (out / "gpu-check.md").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["gpu-check.log", "gpu-check.md"]  # scratch stays out of OUT
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:] + report
    assert "mode: CPU dry run" in report
    assert "| path | assetq worker (Celery, 1 pool process) + private redis-server" in report
    assert "| job | chunk | images | wall s | images/s | GPU memory peak MiB |" in report
    assert "| job | images/s at chunk 2 | images/s at chunk 4 | gain |" in report
    rows = [line.split("|")[1:-1] for line in report.splitlines() if line.startswith(("| faces |", "| full |"))]
    measured = [[c.strip() for c in r] for r in rows if len(r) == 9]
    assert sorted((r[0], r[1]) for r in measured) == [("faces", "2"), ("faces", "4"), ("full", "2"), ("full", "4")]
    for job, _chunk, images, _wall, rate, *_, providers, error in measured:
        assert images == "8" and float(rate) > 0 and error == "-", (job, error)
        assert providers == "CPUExecutionProvider"  # read from the worker's own log
    gains = [[c.strip() for c in r] for r in rows if len(r) == 4]
    assert [g[0] for g in gains] == ["faces", "full"] and all(g[3].endswith("x") for g in gains)


def test_a_failing_step_still_leaves_a_report(tmp_path: Path) -> None:
    out = tmp_path / "gpu"
    # A Python that fails every command: nothing is measured, yet the report is there and says why it stopped.
    env = {**os.environ, "GPU_CHECK_PYTHON": "/bin/false"}
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = (out / "gpu-check.md").read_text()
    assert proc.returncode == 1
    assert report.startswith("# assetq GPU check")
    assert "The measurement step wrote no report (exit 1)" in report
    assert "## Incomplete (exit 1)" in report
