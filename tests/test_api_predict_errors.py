"""Bad input to ``/predict`` gets a clear error and costs nothing else; so does a fleet that cannot serve it.

Against a real ``assetq serve``, a real Redis and a real worker. "Costs nothing else": nothing
is enqueued for a refused request, and the server goes on answering.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from contract.fleet import WorkerRegistry
from tests.api_fixtures import CLIP_MODEL, FACES, ApiStack, api_stack  # noqa: F401
from tools.testbed.api_server import ApiServer
from tools.testbed.services import RedisServer

pytestmark = pytest.mark.integration

SMALL_LIMIT = 50_000  # bytes: the astronaut photo (68 kB) is over it


def post(c: httpx.Client, entries: Any = None, image: bytes | None = None, text: str | None = None) -> httpx.Response:
    parts: dict[str, Any] = {}
    if entries is not None:
        parts["entries"] = (None, entries if isinstance(entries, str) else json.dumps(entries))
    if image is not None:
        parts["image"] = ("blob", image, "application/octet-stream")
    if text is not None:
        parts["text"] = (None, text)
    return c.post("/predict", files=parts)


def queued(stack: ApiStack) -> int:
    """Messages waiting in the interactive queue (all priority levels)."""
    import redis

    r = redis.Redis.from_url(stack.env["ASSETQ_REDIS_URL"])
    return sum(int(r.llen(k)) for k in r.scan_iter(match="assetq.interactive*") if r.type(k) == b"list")


@pytest.fixture(scope="module")
def c(api_stack: ApiStack) -> Iterator[httpx.Client]:  # noqa: F811
    with api_stack.client(token=None) as client:
        yield client


@pytest.fixture(scope="module")
def astronaut(api_stack: ApiStack) -> bytes:  # noqa: F811
    return (api_stack.photos / "astronaut.jpg").read_bytes()


@pytest.mark.parametrize(
    ("entries", "field"),
    [
        (None, "entries"),  # missing
        ("{not json", "entries"),
        ('{"facial-recognition": {}, "facial-recognition": {}}', "entries"),  # a key given twice
        ("[1, 2]", "entries"),
        ({"nsfw": {"detection": {"modelName": "x"}}}, "entries.nsfw"),  # unknown task
        ({"facial-recognition": {"recognition": {"modelName": "buffalo_s"}}}, "entries.facial-recognition.detection"),
        ({"facial-recognition": {"detection": {"modelName": "buffalo_s", "options": {"minScore": 2}}}}, "minScore"),
        ({"facial-recognition": {"detection": {"modelName": "buffalo_l"}}}, "detection.modelName"),  # unknown model
        ({"clip": {"textual": {"modelName": CLIP_MODEL}}}, "entries.clip.textual"),  # text entry with an image
    ],
)
def test_bad_entries_get_422_naming_the_field(
    api_stack: ApiStack,  # noqa: F811
    c: httpx.Client,
    astronaut: bytes,
    entries: Any,
    field: str,
) -> None:
    before = queued(api_stack)
    r = post(c, entries, image=astronaut)
    assert r.status_code == 422, r.text
    assert any(field in e["field"] for e in r.json()["errors"]), r.json()
    if "buffalo_l" in json.dumps(entries):
        assert "buffalo_s" in r.json()["detail"]  # names what is installed
    assert queued(api_stack) == before


def test_neither_or_both_image_and_text_get_400(c: httpx.Client, astronaut: bytes) -> None:
    r = post(c, FACES)
    assert r.status_code == 400 and "image or text" in r.json()["detail"]
    r = post(c, {"clip": {"textual": {"modelName": CLIP_MODEL}}}, image=astronaut, text="a cat")
    assert r.status_code == 400 and "not both" in r.json()["detail"]


def test_a_text_request_takes_only_clip_textual(c: httpx.Client) -> None:
    r = post(c, FACES, text="a cat")
    assert r.status_code == 422 and "clip.textual" in r.json()["detail"]
    r = post(c, {"clip": {"textual": {"modelName": "ViT-B-32__openai"}}}, text="a cat")
    assert r.status_code == 422 and CLIP_MODEL in r.json()["detail"]


@pytest.mark.parametrize(
    ("name", "kind"),
    [("truncated.jpg", "truncated"), ("noise.bin", "unsupported_format"), ("empty.jpg", "empty")],
)
def test_an_image_a_batch_would_skip_gets_422_with_the_same_kind(
    api_stack: ApiStack,  # noqa: F811
    c: httpx.Client,
    name: str,
    kind: str,
) -> None:
    data = {"noise.bin": b"\x01\x02not an image at all" * 50, "empty.jpg": b""}.get(name)
    if data is None:
        data = (api_stack.photos / name).read_bytes()
    r = post(c, FACES, image=data)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["kind"] == kind
    if name == "truncated.jpg":  # the batch records the same kind for the same file
        with api_stack.client() as v1:
            spec = {"assets": [{"id": "t", "uri": (api_stack.photos / name).as_uri()}], "tasks": FACES}
            batch = v1.post("/v1/batches", json=spec).json()["batch_id"]
            api_stack.wait_complete(batch)
            line = json.loads(v1.get(f"/v1/batches/{batch}/results").text)
        assert line["error"]["kind"] == kind


def test_a_body_that_is_not_multipart_gets_415(c: httpx.Client) -> None:
    r = c.post("/predict", json={"entries": FACES})
    assert r.status_code == 415 and "multipart" in r.json()["detail"]
    r = c.post("/predict", data={"entries": json.dumps(FACES)})  # urlencoded
    assert r.status_code == 415


def test_a_malformed_multipart_body_gets_a_clear_error(c: httpx.Client) -> None:
    r = c.post("/predict", content=b"abc", headers={"content-type": "multipart/form-data"})  # no boundary
    assert r.status_code == 400, r.text
    # parts that never start: nothing in it, so no entries
    r = c.post("/predict", content=b"--x\r\nnonsense", headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 422 and "entries" in r.json()["detail"], r.text


def test_a_slow_client_gets_408(api_stack: ApiStack) -> None:  # noqa: F811
    # The stack allows 3 s for a body (ASSETQ_API_BODY_TIMEOUT_S); this client sends 20 bytes of 5,000.
    with socket.create_connection(("127.0.0.1", api_stack.server.port), timeout=15) as s:
        s.sendall(
            b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 5000\r\n\r\n--b\r\nContent-Dispos"
        )
        t0 = time.monotonic()
        reply = s.recv(4096)
        waited = time.monotonic() - t0
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert 2 < waited < 10
    with httpx.Client(base_url=api_stack.url) as c:
        assert c.get("/ping").text == "pong"  # the server goes on


@pytest.fixture(scope="module")
def small(api_stack: ApiStack) -> Iterator[ApiServer]:  # noqa: F811
    server = ApiServer(env={**api_stack.env, "ASSETQ_MAX_IMAGE_BYTES": str(SMALL_LIMIT)}).start()
    yield server
    server.stop()


def test_an_upload_over_max_image_bytes_gets_413(small: ApiServer, astronaut: bytes) -> None:
    with httpx.Client(base_url=small.url, timeout=30) as c:
        r = post(c, FACES, image=astronaut)  # over the image limit, inside the body limit
        assert r.status_code == 413 and "ASSETQ_MAX_IMAGE_BYTES" in r.json()["detail"]
        big = b"\xff" * (3 * 1024 * 1024)
        r = post(c, FACES, image=big)  # refused from its Content-Length, before it is read
        assert r.status_code == 413

        def chunked() -> Iterator[bytes]:  # no Content-Length: refused while it streams in
            yield b"--b\r\nContent-Disposition: form-data; name=image; filename=blob\r\n\r\n"
            for _ in range(40):
                yield b"\xff" * 65536

        headers = {"content-type": "multipart/form-data; boundary=b"}
        r = c.post("/predict", content=chunked(), headers=headers)
        assert r.status_code == 413
        assert c.get("/ping").text == "pong"


@pytest.fixture(scope="module")
def fleetless(api_stack: ApiStack) -> Iterator[tuple[RedisServer, ApiServer]]:  # noqa: F811
    """A server whose Redis has no worker at all."""
    redis_server = RedisServer().start()
    env = {**api_stack.env, "ASSETQ_REDIS_URL": redis_server.url, "ASSETQ_API_PREDICT_TIMEOUT_S": "1.5"}
    server = ApiServer(env=env).start()
    yield redis_server, server
    server.stop()
    redis_server.stop()


def test_no_live_worker_for_the_model_gets_503_and_a_lost_one_504(
    fleetless: tuple[RedisServer, ApiServer],
    astronaut: bytes,
) -> None:
    redis_server, server = fleetless
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = post(c, FACES, image=astronaut)
        assert r.status_code == 503 and "no live worker serves" in r.json()["detail"], (
            r.text
        )  # Immich tries its next URL
        # text is embedded by the server itself: it still answers
        assert post(c, {"clip": {"textual": {"modelName": CLIP_MODEL}}}, text="a cat").status_code == 200
        # A worker that advertises the model but never takes the chunk: the request times out (504).
        import redis

        faces = {"detection": ["buffalo_s"], "recognition": ["buffalo_s"]}
        WorkerRegistry(redis.Redis.from_url(redis_server.url)).advertise(
            "ghost@nowhere", {"device": "cpu", "catalog": {"facial-recognition": faces}}
        )
        time.sleep(2.2)  # the server trusts what it read of the fleet for 2 s
        t0 = time.monotonic()
        r = post(c, FACES, image=astronaut)
        assert r.status_code == 504 and "ASSETQ_API_PREDICT_TIMEOUT_S" in r.json()["detail"], r.text
        assert 1.4 < time.monotonic() - t0 < 10
