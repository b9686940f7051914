"""The README documents every setting and every CLI command, and its job-spec example and limits are the code's."""

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


def _job_spec_example() -> dict:
    import json

    section = README.split("\n## Job spec\n", 1)[1]
    block = section.split("```json\n", 1)[1].split("\n```", 1)[0]
    return json.loads(block)


def test_the_job_spec_example_is_a_valid_spec_of_packs_assetq_installs() -> None:
    import base64

    from contract.spec import parse_spec
    from worker.models.packs import PACKS

    spec = _job_spec_example()
    del spec["batch_id"]  # its value is a placeholder: "generated when absent"
    for asset in spec["assets"]:
        if "data" in asset:  # "<base64, up to 2 MiB>"
            asset["data"] = base64.b64encode(b"\xff\xd8\xff not a whole JPEG").decode()
    parsed = parse_spec(spec)
    named = {name for _, _, name, _ in parsed.tasks.steps(with_options=False)}
    assert named <= set(PACKS), f"the README's example names packs assetq does not ship: {named - set(PACKS)}"


def test_the_spec_limits_in_the_readme_are_the_codes() -> None:
    from contract import spec

    sentence = " ".join(README.split("* `zero-shot` reuses the CLIP visual embedding", 1)[1].split("\n*", 1)[0].split())
    for claim in (
        f"≤ {spec.MAX_EXAMPLE_CHARS:,} characters",
        f"≤ {spec.MAX_EXAMPLES_PER_CLASS:,} per class and side",
        f"≤ {spec.MAX_CLASSES:,} classes",
        f"≤ {spec.MAX_EXAMPLES_TOTAL:,} examples in all",
    ):
        assert claim in sentence, f"README: {sentence!r} should say {claim!r}"
