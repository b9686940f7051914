"""What the command modules share: exit codes, settings, JSON input, progress and summary output."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm

    from config.settings import Settings
    from producer.client import Producer

EXIT_OK, EXIT_ERROR, EXIT_INVALID = 0, 1, 2

# What ``register(subcommands)`` in each command module receives: ``ArgumentParser.add_subparsers()``.
Subcommands = argparse._SubParsersAction


def settings() -> Settings:
    """The settings as the environment holds them now (global flags are set into it before commands run)."""
    from config.settings import get_settings

    get_settings.cache_clear()
    return get_settings()


def producer() -> Producer:
    from producer.client import Producer

    return Producer(settings=settings())


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Plain json keeps the last of two equal keys: a class or option given twice would silently vanish.
    keys = [k for k, _ in pairs]
    dups = sorted({k for k in keys if keys.count(k) > 1})
    if dups:
        raise json.JSONDecodeError(f"duplicate key(s) {', '.join(map(repr, dups))}", "", 0)
    return dict(pairs)


def read_json(path: str) -> Any:
    """A JSON file, or standard input for ``-``; a key given twice in one object is an error."""
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    return json.loads(text, object_pairs_hook=_no_duplicate_keys)


def tasks_from_spec_file(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    data = read_json(path)
    if isinstance(data, dict) and "tasks" in data:
        return dict(data["tasks"])
    return dict(data)


def print_errors(errors: list[tuple[str, str]]) -> None:
    for loc, msg in errors:
        print(f"error: {loc}: {msg}", file=sys.stderr)


class Progress:
    """A progress bar on a terminal; nothing where standard error is a file or a pipe.

    A log then gets no carriage-return redraws, and a scripted run (a server calling the CLI,
    cron, the benchmarks) skips importing tqdm, 70-90 ms of start-up with the multiprocessing
    lock it makes. The closing summary line is printed either way.
    """

    def __init__(self, total: int, desc: str) -> None:
        self._bar: tqdm[Any] | None = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True, file=sys.stderr)

    def advance(self, n: int) -> None:
        """The images just finished (``run_local``'s ``progress`` callback)."""
        if self._bar is not None:
            self._bar.update(n)

    def show(self, done: int, **counts: int) -> None:
        """Where a batch stands: ``done`` of its total, and its counts beside the bar."""
        if self._bar is not None:
            self._bar.n = done
            self._bar.set_postfix(ordered_dict=counts, refresh=False)
            self._bar.refresh()  # once, for the count and the postfix together

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def print_summary(summary: dict[str, Any], out: Path | None, left_out: str = "") -> None:
    """The closing counts line (and where the files went); ``left_out`` names folder files not taken."""
    line = f"total {summary['total']}  ok {summary['ok']}  skipped {summary['skipped']}  failed {summary['failed']}"
    if summary.get("wall_s") is not None:
        line += f"  wall {summary['wall_s']:.2f}s  {summary.get('images_per_s') or 0:.2f} img/s"
    if left_out:
        line += f"  {left_out}"
    print(line)
    if out is not None:
        print(f"results: {out / 'results.jsonl'}\nsummary: {out / 'summary.json'}")
