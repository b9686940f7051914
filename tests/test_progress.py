"""The progress bar: drawn on a terminal, left out where standard error is a file or a pipe."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
import termios
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "chelsea.jpg"


def _run_cmd(tmp_path: Path) -> list[str]:
    return [sys.executable, "-m", "cli", "run", str(SAMPLE), "--out", str(tmp_path), "--concurrency", "1"]


def _on_a_terminal(cmd: list[str]) -> bytes:
    """What ``cmd`` writes to standard error when that is a terminal 100 columns wide."""
    controller, terminal = os.openpty()
    # A fresh pseudo-terminal is 0 columns wide, and tqdm draws a bar to fit.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=terminal, timeout=120, check=True)
        os.close(terminal)
        terminal = -1
        drawn = b""
        while True:
            try:
                data = os.read(controller, 65536)
            except OSError:  # EIO: the terminal's other end is closed and everything was read
                break
            if not data:
                break
            drawn += data
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    return drawn


def test_a_terminal_gets_the_bar(tmp_path: Path) -> None:
    drawn = _on_a_terminal(_run_cmd(tmp_path))
    assert b"assetq run: 1 files" in drawn
    assert b"1/1" in drawn and b"img" in drawn  # tqdm's "1/1 [...img/s]"


def test_a_batchs_counts_are_shown_beside_the_bar() -> None:
    # What `assetq submit --wait` draws as the batch's status comes in.
    script = (
        "from cli.common import Progress\n"
        "bar = Progress(10, 'batch x')\n"
        "bar.show(4, ok=3, skipped=1, failed=0)\n"
        "bar.show(10, ok=8, skipped=1, failed=1)\n"
        "bar.close()\n"
    )
    drawn = _on_a_terminal([sys.executable, "-c", script])
    assert b"4/10" in drawn and b"ok=3, skipped=1, failed=0" in drawn
    assert b"10/10" in drawn and b"ok=8, skipped=1, failed=1" in drawn


def test_a_pipe_gets_the_lines_without_the_bar(tmp_path: Path) -> None:
    done = subprocess.run(_run_cmd(tmp_path), cwd=REPO, capture_output=True, timeout=120, check=True)
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("assetq run: 1 files, tasks: "), lines
    assert b"total 1  ok 1" in done.stdout
