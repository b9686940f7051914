"""``results.jsonl`` + ``summary.json``: the files ``assetq run`` and ``submit --wait`` both write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from contract import documents


def write_outputs(out_dir: Path, results: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "results.jsonl").open("wb") as f:
        for r in results:
            f.write(documents.encode(r) + b"\n")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
