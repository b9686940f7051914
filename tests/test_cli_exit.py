"""The console script's quick exit: one-shot commands leave without the interpreter's teardown,
and lose nothing they printed on the way out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
GOOD = {"tasks": {"clip": {"visual": {"modelName": "any"}}}}


def _cli(args: list[str], stdout: Any, stderr: Any) -> int:
    # Block-buffered streams, as for anyone redirecting to a file: a quick exit that forgot to
    # flush would lose what was printed.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=REPO, env=env, stdout=stdout, stderr=stderr, timeout=60
    ).returncode


def test_what_a_quick_exit_printed_to_files_is_all_there(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(GOOD))
    bad.write_text(json.dumps({"tasks": {"ocr": {"detection": {"modelName": ""}}, "nope": 1}}))
    with (tmp_path / "out").open("w") as out, (tmp_path / "err").open("w") as err:
        assert _cli(["validate", "--schema-only", str(good)], out, err) == 0
        assert _cli(["validate", "--schema-only", str(bad)], out, err) == 2
    assert (tmp_path / "out").read_text() == "ok\n"
    errors = (tmp_path / "err").read_text().splitlines()
    assert any("tasks.nope" in line for line in errors) and any("modelName" in line for line in errors), errors


def _entry_with(monkeypatch: pytest.MonkeyPatch, rc: int, command: str) -> list[int]:
    exits: list[int] = []
    monkeypatch.setattr(cli_main, "_dispatch", lambda argv: (rc, command))

    def fake_exit(code: int) -> None:
        exits.append(code)

    monkeypatch.setattr(cli_main.os, "_exit", fake_exit)
    # Not this test process's own logging: record that the logs would be flushed, before the exit.
    monkeypatch.setattr(cli_main.logging, "shutdown", lambda: exits.append(-1))
    cli_main.entry()
    return exits


def test_one_shot_commands_exit_quickly_with_their_code(monkeypatch: pytest.MonkeyPatch) -> None:
    for command in ("run", "submit", "results", "validate"):
        assert _entry_with(monkeypatch, 3, command) == [-1, 3]  # the logs flushed, then the exit


def test_long_running_commands_exit_normally(monkeypatch: pytest.MonkeyPatch) -> None:
    for command in ("worker", "serve", "flower", "metrics", "models"):
        with pytest.raises(SystemExit) as e:
            _entry_with(monkeypatch, 0, command)
        assert e.value.code == 0


def test_a_stream_that_cannot_be_flushed_exits_120_as_python_does(monkeypatch: pytest.MonkeyPatch) -> None:
    class ClosedPipe:
        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli_main.sys, "stdout", ClosedPipe())
    assert _entry_with(monkeypatch, 0, "results") == [-1, 120]
    assert _entry_with(monkeypatch, 2, "results") == [-1, 2]  # a failure's own code is kept
