"""The peer-style baseline: Immich's machine-learning service's execution design, rebuilt in the harness.

What it rebuilds (from reading ``machine-learning/immich_ml/`` in immich-app/immich for its
design; none of its code is used), at that service's CPU defaults:

* one process serving requests from a pool of ``request_threads`` threads (its default is
  the machine's CPU count, 2 here), each request one image;
* one onnxruntime session per model, loaded once and shared by every request thread, with
  2 intra-op threads and 1 inter-op thread (its CPU session defaults), the memory arena and
  memory pattern on (onnxruntime's defaults, which it keeps);
* per request, Pillow decodes the whole image (no DCT scaling), then face detection runs on
  that image alone (a 640 px canvas, batch 1), then recognition embeds that image's faces
  as one batch;
* a warm cache: models loaded and run once before the clock starts.

The pre- and post-processing are assetq's own model classes, as for the naive baseline, so
the outputs compare face for face and only the execution differs. Decoding goes through
``decode_image`` at full size by Pillow alone (``pillow_only``: Immich ML decodes with Pillow,
not assetq's libjpeg-turbo fast path); it applies EXIF rotation, which Immich ML does not, but
none of the benchmark's photos is rotated, so this costs the baseline nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from worker.models.base import InferenceModel, RuntimeOptions, Session
from worker.models.registry import model_class
from worker.pipeline.graph import Step
from worker.pipeline.image import decode_image
from worker.pipeline.run import Limits

REQUEST_THREADS = 2  # Immich ML's request_threads default: os.cpu_count() (2 on the benchmark machine)
INTRA_OP_THREADS = 2  # its CPU session default when MACHINE_LEARNING_MODEL_INTRA_OP_THREADS is unset
INTER_OP_THREADS = 1
ONE_BATCH = 1 << 16  # "all of this image's faces in one call"


def peer_session(path: Path, opts: RuntimeOptions, flush_denormals: bool) -> Session:
    """A CPU session built the way the peer builds one: its thread defaults, everything else onnxruntime's."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = INTRA_OP_THREADS
    so.inter_op_num_threads = INTER_OP_THREADS
    so.enable_cpu_mem_arena = True
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


class PeerStyleService:
    """One process, a pool of request threads, one shared session per model; one image per request."""

    def __init__(self, model_dir: Path, plan: Sequence[Step], request_threads: int = REQUEST_THREADS) -> None:
        self.plan = list(plan)
        self.models: dict[tuple[str, str], InferenceModel] = {}
        for step in self.plan:
            cls = model_class(step.task, step.type, step.model_name, model_dir)
            model = cls(step.model_name, model_dir, RuntimeOptions(warmup=True), peer_session)
            model.load()
            self.models[step.key] = model
        self.pool = ThreadPoolExecutor(request_threads, thread_name_prefix="peer-request")
        self.max_pixels = Limits().max_pixels

    def handle(self, path: Path) -> dict[tuple[str, str], Any]:
        """One request: decode the whole image, then each step on it alone, in dependency order."""
        image = decode_image(path.read_bytes(), self.max_pixels, pillow_only=True)
        outputs: dict[tuple[str, str], Any] = {}
        for step in self.plan:
            model = self.models[step.key]
            upstream: Mapping[tuple[str, str], Any] = {
                k: [outputs[k]] for k in (*model.depends_on, *model.runs_after) if k in outputs
            }
            outputs[step.key] = model.run_chunk([image], upstream, step.options, max_batch=ONE_BATCH)[0]
        return outputs

    def warm(self, paths: Sequence[Path]) -> None:
        """Untimed requests: every session has run (and the threads exist) before the clock starts."""
        list(self.pool.map(self.handle, paths))

    def run(self, paths: Sequence[Path]) -> tuple[float, list[dict[tuple[str, str], Any]]]:
        """(wall seconds, outputs per image) with every request queued at once: the pool is never starved.

        That is the peer at its best: with enough concurrent clients its threads always have
        the next image (the issue's figures are its best of 1, 2 and 4 clients).
        """
        t0 = time.perf_counter()
        outputs = list(self.pool.map(self.handle, paths))
        return time.perf_counter() - t0, outputs

    def close(self) -> None:
        self.pool.shutdown()
        self.models.clear()


def peak_rss_mb(pid: int | None = None) -> float:
    """A process's peak resident set (VmHWM) in MiB."""
    for line in Path(f"/proc/{pid or 'self'}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def _serve(conn: Any, model_dir: Path, tasks: dict[str, Any]) -> None:
    """The peer's own process: build the service, then answer ("warm"|"run", paths) until ("stop",)."""
    from worker.models.cache import ModelCache
    from worker.pipeline.run import plan_for

    service = PeerStyleService(model_dir, plan_for(tasks, ModelCache(model_dir, RuntimeOptions())))
    conn.send("ready")
    while True:
        command, *args = conn.recv()
        if command == "stop":
            service.close()
            return
        if command == "warm":
            service.warm(args[0])
            conn.send(None)
        else:
            wall, outputs = service.run(args[0])
            conn.send((wall, outputs, peak_rss_mb()))


class PeerProcess:
    """``PeerStyleService`` in a process of its own, as the peer runs: its memory is its own to measure."""

    def __init__(self, model_dir: Path, tasks: dict[str, Any]) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, model_dir, tasks), name="peer-style-service")
        self.process.start()
        if not self.conn.poll(300) or self.conn.recv() != "ready":
            self.close()
            raise RuntimeError("the peer-style service did not start")

    def warm(self, paths: Sequence[Path]) -> None:
        self.conn.send(("warm", list(paths)))
        self.conn.recv()

    def run(self, paths: Sequence[Path]) -> tuple[float, list[dict[tuple[str, str], Any]], float]:
        """(wall seconds, outputs per image, the process's peak RSS in MiB so far)."""
        self.conn.send(("run", list(paths)))
        wall, outputs, peak = self.conn.recv()
        return float(wall), outputs, float(peak)

    def close(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(OSError):  # it may be gone already
                self.conn.send(("stop",))
            self.process.join(30)
        if self.process.is_alive():
            self.process.kill()
