"""The README documents every setting and every CLI command."""

from __future__ import annotations

from pathlib import Path

from cli.main import build_parser
from config.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = [f"ASSETQ_{name.upper()}" for name in Settings.model_fields if f"ASSETQ_{name.upper()}" not in README]
    assert not missing, f"add these to the README's configuration table: {missing}"


def test_every_command_is_documented() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "cmd")
    missing = [cmd for cmd in sub.choices if f"assetq {cmd}" not in README]  # type: ignore[union-attr]
    assert not missing, f"document these commands in the README: {missing}"


def test_published_json_schema_is_current() -> None:
    from tools.write_schema import TARGET, schema_text

    assert TARGET.read_text() == schema_text(), "run `python tools/write_schema.py`"
