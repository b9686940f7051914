"""``results.jsonl`` + ``summary.json``: the files ``assetq run`` and ``submit --wait`` both write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_outputs(out_dir: Path, results: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "results.jsonl").open("w") as f:
        for r in results:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
