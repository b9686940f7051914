"""Print the README's configuration table from ``config.Settings`` (so the two never drift)."""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic_core import PydanticUndefined

from config.settings import Settings


def table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        if field.default_factory is not None:
            default = "~/.cache/assetq/models" if name == "model_dir" else repr(field.default_factory())  # type: ignore[call-arg]
        elif field.default is PydanticUndefined:
            default = "(required)"
        else:
            default = repr(field.default) if field.default is not None else "unset"
        rows.append(f"| `ASSETQ_{name.upper()}` | `{default}` | {field.description or ''} |")
    return "\n".join(rows)


def write_readme(readme: Path) -> None:
    """Replace the table between the settings markers in the README."""
    text = readme.read_text()
    start, end = "<!-- settings:start -->\n", "\n<!-- settings:end -->"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    readme.write_text(head + start + table() + end + tail)


if __name__ == "__main__":
    if "--write" in sys.argv:
        write_readme(Path(__file__).resolve().parents[1] / "README.md")
    else:
        print(table())
