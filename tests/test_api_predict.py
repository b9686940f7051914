"""``/predict`` as Immich's server uses it, against a real ``assetq serve``, a real Redis and a real worker.

The contract test calls the server from Node with FormData, Blob and fetch, the way Immich's
server builds its requests, and reads the answers the way its services do
(``tests/immich_ml_client.mjs``). What it reads must equal assetq's batch results for the same
images: the same faces, boxes and embeddings, the same text lines, the same CLIP vectors.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api_fixtures import CLIP_MODEL, FACES, OCR, ApiStack, api_stack  # noqa: F401
from tools.testbed.api_server import ApiServer

pytestmark = pytest.mark.integration

CLIENT = Path(__file__).with_name("immich_ml_client.mjs")
CLIP = {"clip": {"visual": {"modelName": CLIP_MODEL}}}
IMAGES = ("astronaut", "astronaut-exif-rotated", "sign", "shape-red-star", "shape-blue-circle")


def node(stack: ApiStack, *args: str, url: str | None = None) -> Any:
    exe = shutil.which("node")
    assert exe is not None, "Node.js is needed for the Immich contract test (Debian's nodejs)"
    out = subprocess.run([exe, str(CLIENT), url or stack.url, *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr + "\n" + stack.server.tail()
    return json.loads(out.stdout)


def image(stack: ApiStack, stem: str) -> Path:
    return next(stack.photos.glob(f"{stem}.*"))


def predict(c: httpx.Client, entries: dict[str, Any], path: Path) -> httpx.Response:
    return c.post("/predict", data={"entries": json.dumps(entries)}, files={"image": path.read_bytes()})


@pytest.fixture(scope="module")
def batch(api_stack: ApiStack) -> dict[str, dict[str, Any]]:  # noqa: F811
    """The reference: the same images through a batch (one asset per chunk, as /predict sends them here)."""
    out: dict[str, dict[str, Any]] = {}
    with api_stack.client() as c:
        for stem in IMAGES:
            spec = {"assets": [{"id": stem, "uri": image(api_stack, stem).as_uri()}], "tasks": {**FACES, **OCR, **CLIP}}
            r = c.post("/v1/batches", json=spec)
            assert r.status_code == 201, r.text
            api_stack.wait_complete(r.json()["batch_id"])
            line = c.get(f"/v1/batches/{r.json()['batch_id']}/results").text
            out[stem] = json.loads(line)
            assert out[stem]["status"] == "ok", out[stem]
    return out


def close(a: list[float], b: list[float], tol: float = 1e-6) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, abs_tol=tol) for x, y in zip(a, b, strict=True))


def test_ping_needs_no_token(api_stack: ApiStack) -> None:  # noqa: F811
    with api_stack.client(token=None) as c:
        r = c.get("/ping")
    assert (r.status_code, r.text) == (200, "pong")


@pytest.mark.parametrize("stem", ["astronaut", "astronaut-exif-rotated"])
def test_faces_as_immich_reads_them_equal_the_batch(api_stack: ApiStack, batch: dict, stem: str) -> None:  # noqa: F811
    faces = node(api_stack, "faces", str(image(api_stack, stem)), "buffalo_s", "0.7")
    ref = batch[stem]
    assert len(faces) == len(ref["faces"]) == 1  # the rotated photo's face is found too: EXIF is applied
    for got, want in zip(faces, ref["faces"], strict=True):
        assert (got["imageWidth"], got["imageHeight"]) == (ref["image"]["width"], ref["image"]["height"]) == (512, 512)
        box = [got["boundingBoxX1"], got["boundingBoxY1"], got["boundingBoxX2"], got["boundingBoxY2"]]
        assert got["integerBox"] and box == [round(v) for v in want["box"]]
        assert got["score"] == want["score"]
        assert got["embeddingIsString"] and close(got["embedding"], want["embedding"])
        assert math.isclose(sum(x * x for x in got["embedding"]), 1.0, abs_tol=1e-4)  # cosine-ready


def test_ocr_as_immich_reads_it_equals_the_batch(api_stack: ApiStack, batch: dict) -> None:  # noqa: F811
    lines = node(api_stack, "ocr", str(image(api_stack, "sign")), "PP-OCRv6_small", "0.5", "0.8", "736")
    ref = batch["sign"]
    w, h = ref["image"]["width"], ref["image"]["height"]
    assert [line["text"] for line in lines] == [line["text"] for line in ref["ocr"]]
    assert "sample sign" in " ".join(line["text"] for line in lines).lower()
    for got, want in zip(lines, ref["ocr"], strict=True):
        # Immich's corners: clockwise from the top left, as fractions of the image's width and height.
        assert close(got["corners"], [v for x, y in want["box"] for v in (x / w, y / h)], tol=1e-5)
        assert (got["boxScore"], got["textScore"]) == (want["box_score"], want["score"])


def test_clip_image_and_text_embeddings(api_stack: ApiStack, batch: dict) -> None:  # noqa: F811
    star = node(api_stack, "clip-image", str(image(api_stack, "shape-red-star")), CLIP_MODEL)
    assert star["isString"] and close(star["embedding"], batch["shape-red-star"]["clip"]["embedding"])
    text = node(api_stack, "clip-text", "a photo of a star", CLIP_MODEL, "en")
    assert text["isString"] and math.isclose(sum(x * x for x in text["embedding"]), 1.0, abs_tol=1e-4)

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    # Immich ranks by cosine distance: the text must be nearer the star than the circle.
    circle = batch["shape-blue-circle"]["clip"]["embedding"]
    assert cosine(text["embedding"], star["embedding"]) > cosine(text["embedding"], circle)
    # the same vector the workers' own text tower gives (zero-shot uses it)
    from worker.models.clip_textual import ClipTextual

    tower = ClipTextual(CLIP_MODEL, Path(api_stack.env["ASSETQ_MODEL_DIR"]))
    assert close(text["embedding"], [float(x) for x in tower.embed_texts(["a photo of a star"])[0]], tol=1e-6)


def test_text_requests_answer_without_the_queue(api_stack: ApiStack) -> None:  # noqa: F811
    entries = json.dumps({"clip": {"textual": {"modelName": CLIP_MODEL}}})
    with api_stack.client(token=None) as c:
        times = []
        for n in range(20):
            t0 = time.perf_counter()
            # multipart, as Immich's FormData sends it (plain fields as parts without a file name)
            r = c.post("/predict", files={"entries": (None, entries), "text": (None, f"a photo of shape {n}")})
            times.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
            assert "X-Assetq-Batch" not in r.headers  # never enqueued
    assert sorted(times)[10] < 0.5, times  # milliseconds in fact; the benchmark measures it


def test_concurrent_requests_for_the_same_tasks_are_one_chunk(api_stack: ApiStack) -> None:  # noqa: F811
    server = ApiServer(env={**api_stack.env, "ASSETQ_API_PREDICT_WINDOW_MS": "500"}).start()
    try:
        stems = ["astronaut", "astronaut-exif-rotated", "sign", "chelsea"]
        with api_stack.client(token=None, url=server.url) as c, concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda s: predict(c, FACES, image(api_stack, s)), stems))
        assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
        assert len({a.headers["X-Assetq-Batch"] for a in answers}) == 1  # one batch, one chunk
        assert {a.headers["X-Assetq-Chunk-Images"] for a in answers} == {"4"}
        faces = [len(a.json()["facial-recognition"]) for a in answers]
        assert faces[:2] == [1, 1] and faces[2] == 0  # each request got its own image's answer
        # a different task set is not merged into the same chunk
        with api_stack.client(token=None, url=server.url) as c, concurrent.futures.ThreadPoolExecutor(2) as pool:
            both = list(pool.map(lambda e: predict(c, e, image(api_stack, "sign")), [FACES, OCR]))
        assert len({a.headers["X-Assetq-Batch"] for a in both}) == 2
    finally:
        server.stop()


def test_interactive_request_overtakes_a_running_backfill(api_stack: ApiStack) -> None:  # noqa: F811
    bulk = sorted((api_stack.photos / "bulk").iterdir())
    spec = {"assets": [{"id": f.stem, "uri": f.as_uri()} for f in bulk], "tasks": {**FACES, **OCR}}
    with api_stack.client() as c:
        batch_id = c.post("/v1/batches", json=spec).json()["batch_id"]
        while c.get(f"/v1/batches/{batch_id}").json()["done"] < 8:  # the backfill is running
            time.sleep(0.1)
        t0 = time.perf_counter()
        r = predict(c, FACES, image(api_stack, "astronaut"))
        latency = time.perf_counter() - t0
        st = c.get(f"/v1/batches/{batch_id}").json()
    assert r.status_code == 200 and len(r.json()["facial-recognition"]) == 1
    # Taken before the waiting bulk chunks: most of the backfill is still ahead of it.
    assert st["pending"] > len(bulk) // 2, (latency, st)
    api_stack.wait_complete(batch_id)
