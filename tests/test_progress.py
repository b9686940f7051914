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


def _run(tmp_path: Path, stderr: int) -> subprocess.CompletedProcess[bytes]:
    cmd = [sys.executable, "-m", "cli", "run", str(SAMPLE), "--out", str(tmp_path), "--concurrency", "1"]
    return subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, timeout=120, check=True)


def test_a_terminal_gets_the_bar(tmp_path: Path) -> None:
    controller, terminal = os.openpty()
    # A terminal 100 columns wide: a fresh pseudo-terminal's is 0, and tqdm draws a bar to fit.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        _run(tmp_path, terminal)
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
    assert b"assetq run: 1 files" in drawn
    assert b"1/1" in drawn and b"img" in drawn  # tqdm's "1/1 [...img/s]"


def test_a_pipe_gets_the_lines_without_the_bar(tmp_path: Path) -> None:
    done = _run(tmp_path, subprocess.PIPE)
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("assetq run: 1 files, tasks: "), lines
    assert b"total 1  ok 1" in done.stdout
