"""Write docs/jobspec.schema.json (JSON Schema of the job spec) from the pydantic models."""

from __future__ import annotations

import json
from pathlib import Path

from contract.spec import JobSpec

TARGET = Path(__file__).resolve().parents[1] / "docs" / "jobspec.schema.json"


def schema_text() -> str:
    return json.dumps(JobSpec.model_json_schema(by_alias=True), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    TARGET.write_text(schema_text())
    print(f"wrote {TARGET}")
