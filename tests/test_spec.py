"""Job-spec validation: Immich's request shape parses; every error names its field."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from contract.spec import SpecError, check_models, parse_spec, parse_tasks

IMMICH_REQUEST = {
    "clip": {"visual": {"modelName": "ViT-B-32__openai"}},
    "facial-recognition": {
        "detection": {"modelName": "buffalo_l"},
        "recognition": {"modelName": "buffalo_l", "options": {"minScore": 0.5}},
    },
    "ocr": {
        "detection": {"modelName": "ch_ppocr_v4", "options": {"minScore": 0.5}},
        "recognition": {"modelName": "ch_ppocr_v4", "options": {"minScore": 0.3}},
    },
}
ASSETS = [{"id": "a1", "uri": "file:///data/a1.jpg"}, {"id": "a2", "uri": "s3://photos/a2.jpg"}]


def fields(e: SpecError) -> list[str]:
    return [loc for loc, _ in e.errors]


def test_immich_request_parses_into_the_tasks_block() -> None:
    tasks = parse_tasks(IMMICH_REQUEST)
    steps = [(t, ty, n) for t, ty, n, _ in tasks.steps()]
    assert ("facial-recognition", "recognition", "buffalo_l") in steps
    assert ("ocr", "recognition", "ch_ppocr_v4") in steps
    assert ("clip", "visual", "ViT-B-32__openai") in steps
    assert tasks.facial_recognition and tasks.facial_recognition.recognition
    assert tasks.facial_recognition.recognition.options.min_score == 0.5


def test_steps_without_options_name_the_same_models_in_the_same_order() -> None:
    tasks = parse_tasks(
        {**IMMICH_REQUEST, "zero-shot": {"modelName": "ViT-B-32__openai", "classes": {"cat": {"positive": ["a cat"]}}}}
    )
    full, bare = tasks.steps(), tasks.steps(with_options=False)
    assert [step[:3] for step in bare] == [step[:3] for step in full]
    assert all(options == {} for *_, options in bare)
    assert full[-1][3]["classes"] == {"cat": {"positive": ["a cat"], "negative": []}}


def test_full_spec_round_trip() -> None:
    spec = parse_spec({"assets": ASSETS, "tasks": IMMICH_REQUEST, "output": {"s3": {"bucket": "results"}}})
    assert spec.output.s3 and spec.output.s3.bucket == "results"
    assert parse_spec(json.loads(spec.model_dump_json(by_alias=True))).tasks.dump() == spec.tasks.dump()


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        (
            {"tasks": {"facial-recognition": {"detection": {"modelName": "x", "options": {"minScore": 2}}}}},
            "tasks.facial-recognition.detection.options.minScore",
        ),
        (
            {"tasks": {"facial-recognition": {"detection": {"modelName": "x", "options": {"minScroe": 0.5}}}}},
            "tasks.facial-recognition.detection.options.minScroe",
        ),
        ({"tasks": {"facial-recognition": {"recognition": {"modelName": "x"}}}}, "tasks.facial-recognition.detection"),
        ({"tasks": {"face": {}}}, "tasks.face"),
        ({"tasks": {}}, "tasks"),
        ({"assets": []}, "assets"),
        ({"assets": [{"id": "a", "uri": "http://example.com/a.jpg"}]}, "assets.0.uri"),
        ({"assets": [{"id": "a", "uri": "file://relative/a.jpg"}]}, "assets.0.uri"),
        ({"assets": [{"id": "a/b", "uri": "file:///a.jpg"}]}, "assets.0.id"),
        ({"assets": [{"id": "a"}]}, "assets.0"),
        ({"assets": [{"id": "a", "data": "not base64!"}]}, "assets.0.data"),
        ({"assets": [{"id": "a", "uri": "file:///a"}, {"id": "a", "uri": "file:///b"}]}, "assets"),
        ({"tasks": {"clip": {"textual": {"modelName": "x", "options": {"text": "a cat"}}}}}, "tasks.clip"),
        (
            {"tasks": {"zero-shot": {"modelName": "m", "classes": {"cat": {"positive": []}}}}},
            "tasks.zero-shot.classes.cat.positive",
        ),
        (
            {"tasks": {"zero-shot": {"modelName": "m", "classes": {"cat": {"positive": ["  "]}}}}},
            "tasks.zero-shot.classes.cat.positive.0",
        ),
        (
            {
                "tasks": {
                    "zero-shot": {"modelName": "m", "classes": {f"c{i}": {"positive": ["x"] * 100} for i in range(300)}}
                }
            },
            "tasks.zero-shot.classes",
        ),
        (
            {
                "tasks": {
                    "zero-shot": {"modelName": "m", "classes": {"cat": {"positive": ["a cat"], "negative": ["a cat"]}}}
                }
            },
            "tasks.zero-shot.classes.cat",
        ),
        ({"priority": 11}, "priority"),
    ],
)
def test_invalid_specs_name_the_field(patch: dict, field: str) -> None:
    spec = {"assets": ASSETS, "tasks": IMMICH_REQUEST, **patch}
    with pytest.raises(SpecError) as e:
        parse_spec(spec)
    assert field in fields(e.value), e.value.errors


def test_unavailable_model_names_what_is_installed() -> None:
    catalog = {"facial-recognition": {"detection": {"buffalo_s"}, "recognition": {"buffalo_s"}}}
    with pytest.raises(SpecError) as e:
        check_models(parse_tasks(IMMICH_REQUEST), catalog)
    msgs = dict(e.value.errors)
    assert "buffalo_s" in msgs["tasks.facial-recognition.detection.modelName"]
    assert "'buffalo_l' is not installed" in msgs["tasks.facial-recognition.detection.modelName"]
    assert "installed: none" in msgs["tasks.clip.visual.modelName"]
    assert "tasks.ocr.recognition.modelName" in msgs


def test_zero_shot_implies_the_clip_visual_step() -> None:
    tasks = parse_tasks({"zero-shot": {"modelName": "tiny", "classes": {"cat": {"positive": ["a cat"]}}}})
    steps = [(t, ty) for t, ty, _, _ in tasks.steps()]
    assert steps == [("clip", "visual"), ("zero-shot", "classifier")]


def test_duplicate_keys_in_a_spec_file_are_an_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    spec = tmp_path / "dup.json"
    spec.write_text(
        '{"tasks": {"zero-shot": {"modelName": "m", "classes": {"a": {"positive": ["x"]}, "a": {"positive": ["y"]}}}}}'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "validate", "--schema-only", str(spec)], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "duplicate key(s) 'a'" in proc.stderr


def test_validate_cli_exit_codes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"tasks": IMMICH_REQUEST}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"tasks": {"ocr": {"detection": {"modelName": "x", "options": {"minScore": -1}}}}}))
    run = [sys.executable, "-m", "cli", "validate", "--schema-only"]
    ok = subprocess.run([*run, str(good)], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.strip() == "ok"
    no = subprocess.run([*run, str(bad)], capture_output=True, text=True)
    assert no.returncode == 2
    assert "tasks.ocr.detection.options.minScore" in no.stderr


def test_producer_imports_no_worker_code_and_no_onnxruntime() -> None:
    code = (
        "import sys, producer, producer.client, cli.main; "
        "bad=[m for m in sys.modules if m.startswith(('worker','onnxruntime','cv2','torch'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
