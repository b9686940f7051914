"""The project's line limit: every Python module of the project is under 400 lines.

Covers cli/, config/, contract/, producer/, worker/, benchmarks/, tests/ and
tools/ (testbed included), recursively, skipping ``__pycache__``. A module that
grows past the limit is split along its sections rather than let through; the
assertion names each offender by path with its line count.
"""

from __future__ import annotations

from tests.conftest import REPO

PACKAGES = ("cli", "config", "contract", "producer", "worker", "benchmarks", "tests", "tools")
LINE_LIMIT = 400  # a module must have fewer lines than this


def test_no_python_module_is_over_the_line_limit() -> None:
    modules = [
        path
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
        if "__pycache__" not in path.relative_to(REPO).parts
    ]
    assert len(modules) > 100  # the folders were found
    lines = {str(path.relative_to(REPO)): len(path.read_text().splitlines()) for path in modules}
    assert {path: n for path, n in lines.items() if n >= LINE_LIMIT} == {}
