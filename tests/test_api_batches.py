"""The batch API under ``/v1`` and its auth, against a real ``assetq serve``, a real Redis and a real worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from contract.payload import ChunkPayload
from tests.api_fixtures import FACES, OCR, TOKEN, ApiStack, api_stack  # noqa: F401
from tools.testbed.api_server import ApiServer, serve_command
from tools.testbed.services import REPO, wait_for

pytestmark = pytest.mark.integration

V1_ROUTES = [
    ("GET", "/v1/health"),
    ("GET", "/v1/batches"),
    ("POST", "/v1/batches"),
    ("GET", "/v1/batches/b1"),
    ("GET", "/v1/batches/b1/results"),
    ("GET", "/v1/batches/b1/failures"),
    ("POST", "/v1/batches/b1/replay"),
]


def comparable(result: dict[str, Any]) -> dict[str, Any]:
    """A result document without what differs between two runs of the same asset."""
    return {k: v for k, v in result.items() if k not in ("batch_id", "timings_ms")}


@pytest.mark.parametrize(("method", "path"), V1_ROUTES)
def test_v1_refuses_requests_without_a_valid_token(api_stack: ApiStack, method: str, path: str) -> None:  # noqa: F811
    for token in (None, "wrong-token"):
        with api_stack.client(token=token) as c:
            r = c.request(method, path)
        assert r.status_code == 401, (token, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
    with api_stack.client() as c:
        r = c.request(method, path, json={} if method == "POST" else None)
    assert r.status_code != 401
    if path.startswith("/v1/batches/b1"):
        assert r.status_code == 404 and "unknown batch" in r.json()["detail"]  # an unknown batch


def test_ui_needs_the_token_too(api_stack: ApiStack) -> None:  # noqa: F811
    with api_stack.client(token=None) as c:
        assert c.get("/ui").status_code == 401
        assert c.post("/ui/login", data={"token": "wrong"}).status_code == 401
        r = c.post("/ui/login", data={"token": TOKEN}, follow_redirects=True)  # the sign-in form sets the cookie
        assert r.status_code == 200 and "Live workers" in r.text
    with api_stack.client() as c:
        assert c.get("/ui").status_code == 200


def test_the_server_refuses_to_start_without_a_token(api_stack: ApiStack) -> None:  # noqa: F811
    env = {**os.environ, **api_stack.env, "ASSETQ_API_TOKENS": "[]"}
    out = subprocess.run([*serve_command(), "--port", "1"], env=env, cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 1 and "ASSETQ_API_TOKENS" in out.stderr and "--no-auth" in out.stderr
    # with --no-auth it starts, here with two server processes, and /v1 is open
    server = ApiServer(env={**api_stack.env, "ASSETQ_API_TOKENS": "[]"}, args=["--no-auth", "--workers", "2"]).start()
    try:
        with httpx.Client(base_url=server.url) as c:
            assert [c.get("/v1/health").status_code for _ in range(4)] == [200] * 4
    finally:
        server.stop()


def test_a_setting_puts_ping_and_predict_behind_the_token(api_stack: ApiStack) -> None:  # noqa: F811
    server = ApiServer(env={**api_stack.env, "ASSETQ_API_PREDICT_AUTH": "true"})
    server.start(wait_ready=False)
    try:
        with httpx.Client(base_url=server.url) as c:
            import time

            deadline = time.monotonic() + 60
            while True:
                try:
                    code = c.get("/ping").status_code
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, server.tail()
                    time.sleep(0.2)
            assert code == 401
            assert c.post("/predict", files={"text": (None, "x")}).status_code == 401
            assert c.get("/ping", headers={"Authorization": f"Bearer {TOKEN}"}).text == "pong"
    finally:
        server.stop()


def test_an_invalid_spec_gets_422_naming_each_field_as_validate_does(api_stack: ApiStack, tmp_path: Path) -> None:  # noqa: F811
    bad = {
        "assets": [{"id": "a1", "uri": "http://example.com/a.jpg"}, {"id": "a1", "data": "!!"}],
        "tasks": {"facial-recognition": {"detection": {"modelName": "buffalo_s", "options": {"minScore": 3}}}},
        "priority": 12,
    }
    with api_stack.client() as c:
        before = c.get("/v1/batches").json()
        r = c.post("/v1/batches", json=bad)
        assert r.status_code == 422
        fields = [e["field"] for e in r.json()["errors"]]
        assert c.get("/v1/batches").json() == before  # nothing recorded
        assert (
            c.post("/v1/batches", content=b'{"assets": [', headers={"content-type": "application/json"}).status_code
            == 400
        )
    spec = tmp_path / "bad.json"
    spec.write_text(json.dumps(bad))
    env = {**os.environ, **api_stack.env}
    out = subprocess.run([sys.executable, "-m", "cli", "validate", str(spec)], env=env, capture_output=True, text=True)
    assert out.returncode == 2
    cli_fields = [line.removeprefix("error: ").split(": ", 1)[0] for line in out.stderr.splitlines()]
    assert fields == cli_fields and "tasks.facial-recognition.detection.options.minScore" in fields


def test_a_batch_over_http_gives_the_results_of_assetq_submit(api_stack: ApiStack, tmp_path: Path) -> None:  # noqa: F811
    files = sorted(f for f in api_stack.photos.iterdir() if f.is_file())
    # asset ids as `assetq submit PATH...` names them: the file's name
    spec = {"assets": [{"id": f.name, "uri": f.as_uri()} for f in files], "tasks": {**FACES, **OCR}}
    with api_stack.client() as c:
        r = c.post("/v1/batches", json=spec)
        assert r.status_code == 201, r.text
        batch_id = r.json()["batch_id"]
        assert api_stack.wait_complete(batch_id)["skipped"] == 1  # truncated.jpg
        status = c.get(f"/v1/batches/{batch_id}").json()
        assert status["total"] == len(files) and status["held"]["waiting_for_recovery"] == []

        def released() -> bool:  # the last chunk's results are written before its message is acknowledged
            return c.get(f"/v1/batches/{batch_id}").json()["held"] == {"chunks_held": 0, "waiting_for_recovery": []}

        wait_for(released, 30, "the worker to acknowledge the batch's last chunk")
        over_http = [json.loads(line) for line in c.get(f"/v1/batches/{batch_id}/results").text.splitlines()]
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"tasks": spec["tasks"]}))
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "cli",
        "submit",
        *map(str, files),
        "--spec",
        str(spec_file),
        "--wait",
        "--out",
        str(out),
    ]
    sub = subprocess.run(cmd, env={**os.environ, **api_stack.env}, capture_output=True, text=True, timeout=300)
    assert sub.returncode == 0, sub.stderr
    via_cli = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [comparable(r) for r in over_http] == [comparable(r) for r in sorted(via_cli, key=lambda r: r["asset_id"])]


def test_results_stream_as_ndjson_and_resume_from_a_cursor(api_stack: ApiStack) -> None:  # noqa: F811
    files = sorted((api_stack.photos / "bulk").iterdir())[:10]
    spec = {"assets": [{"id": f.stem, "uri": f.as_uri()} for f in files], "tasks": FACES}
    with api_stack.client() as c:
        batch_id = c.post("/v1/batches", json=spec).json()["batch_id"]
        api_stack.wait_complete(batch_id)
        r = c.get(f"/v1/batches/{batch_id}/results", params={"limit": 4})
        assert r.headers["content-type"] == "application/x-ndjson" and r.headers["x-results-total"] == "10"
        seen = [json.loads(line)["asset_id"] for line in r.text.splitlines()]
        while "x-next-cursor" in r.headers:
            assert r.headers["x-next-cursor"] == seen[-1]  # the cursor is the last asset id read
            r = c.get(f"/v1/batches/{batch_id}/results", params={"limit": 4, "after": r.headers["x-next-cursor"]})
            seen += [json.loads(line)["asset_id"] for line in r.text.splitlines()]
        # a client cut off mid-stream resumes after the last line it got
        rest = c.get(f"/v1/batches/{batch_id}/results", params={"after": seen[6]}).text.splitlines()
    assert seen == sorted(f.stem for f in files)
    assert [json.loads(line)["asset_id"] for line in rest] == seen[7:]


def test_failures_and_replay_as_the_cli_does_them(api_stack: ApiStack) -> None:  # noqa: F811
    from worker.tasks.deadletter import dead_letter_chunk

    p = api_stack.producer()
    photo = api_stack.photos / "astronaut.jpg"
    # A batch whose chunk went to a queue nobody consumes, then dead-lettered as a worker would.
    batch_id = p.submit({"assets": [{"id": "a1", "uri": photo.as_uri()}], "tasks": FACES}, queue="nobody-consumes")
    chunk = ChunkPayload(
        batch_id, f"{batch_id}-0", [{"id": "a1", "uri": photo.as_uri()}], p.store.batch_meta(batch_id)["tasks"]
    )
    dead_letter_chunk(p.store, chunk, "transient", "S3 unreachable", attempts=6)
    with api_stack.client() as c:
        st = c.get(f"/v1/batches/{batch_id}").json()
        assert (st["failed"], st["dead_letters"]) == (1, 1)
        failures = c.get(f"/v1/batches/{batch_id}/failures").json()
        assert failures == p.failures(batch_id) and failures[0]["error"]["message"] == "S3 unreachable"
        dry = c.post(f"/v1/batches/{batch_id}/replay", json={"dry_run": True}).json()
        assert dry == {"batch_id": batch_id, "asset_ids": ["a1"], "count": 1, "dry_run": True}
        assert c.post(f"/v1/batches/{batch_id}/replay", json={"bogus": 1}).status_code == 422
        assert c.post(f"/v1/batches/{batch_id}/replay").json()["count"] == 1
        st = api_stack.wait_complete(batch_id)
        assert (st["ok"], st["failed"], st["dead_letters"]) == (1, 0, 0)
        assert c.get(f"/v1/batches/{batch_id}/failures").json() == []


def test_health_lists_the_live_workers_with_their_models(api_stack: ApiStack) -> None:  # noqa: F811
    with api_stack.client() as c:
        health = c.get("/v1/health").json()
    assert health["redis"] is True
    info = health["workers"][api_stack.worker.name]
    assert info["device"] == "cpu" and "buffalo_s" in info["catalog"]["facial-recognition"]["detection"]


def test_openapi_schema_and_docs(api_stack: ApiStack) -> None:  # noqa: F811
    with api_stack.client(token=None) as c:
        schema = c.get("/openapi.json").json()
        assert c.get("/docs").status_code == 200
    body = schema["paths"]["/v1/batches"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/JobSpec"}
    job = schema["components"]["schemas"]["JobSpec"]
    assert set(job["required"]) == {"assets", "tasks"}
    assert job["properties"]["tasks"] == {"$ref": "#/components/schemas/Tasks"}
    assert "multipart/form-data" in schema["paths"]["/predict"]["post"]["requestBody"]["content"]
