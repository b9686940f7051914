"""The GPU check's measurements and report (``benchmarks/gpu_check.sh`` sets up the host and calls this).

    python -m benchmarks.gpu_check --out DIR [--work DIR] [--cpu] [--budget-s 360] [--images 128]

One ``assetq worker`` pinned to device 0 (``ASSETQ_DEVICE=0``: the worker sees
only that GPU) behind a private redis-server, fed by the Producer; without a
redis-server on the host, the in-process ``assetq run`` path on the same device
instead, and the report says so. For each chunk size (16 and 64) one worker is
started with its batch limits raised to the chunk (``ASSETQ_CLIP_BATCH_SIZE``,
``ASSETQ_DETECTION_BATCH_SIZE``), so a larger chunk really reaches the GPU as a
larger batch; it runs the faces job and the full job (faces + OCR + CLIP
ViT-B-32 + zero-shot), each after one untimed warm-up chunk. GPU memory is
nvidia-smi's reading of the device, sampled every 0.2 s during each run.

The report (``gpu-check.md``) is rewritten after every measurement, so a run
stopped at its time limit still leaves what it measured. ``--cpu`` is the dry
run: the same steps on the CPU with tiny sizes (chunks 2 and 4, the tiny CLIP).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported lazily: the Environment table is written before assetq's dependencies load
    from benchmarks.env import BenchEnv

REPORT = "gpu-check.md"
GPU_CHUNKS = (16, 64)
DRY_CHUNKS = (2, 4)
JOBS = ("faces", "full")
SAMPLE_S = 0.2
# The untimed first chunk loads nothing (the worker preloads) but picks CUDA kernels: a minute is plenty;
# longer means a worker that cannot finish a chunk, and the in-process path gets the time left.
WARMUP_LIMIT_S = 90.0


@dataclass
class Measurement:
    job: str
    chunk: int
    images: int = 0
    wall_s: float = 0.0
    gpu_peak_mib: float | None = None  # device memory in use, peak during the run
    gpu_idle_mib: float | None = None  # before the worker started
    providers: str = ""
    error: str = ""

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class Check:
    out: Path  # the report and its log only: a GPU host's $OUT comes back a few small files at most
    work: Path  # photos, the generated ViT-B-32 (~580 MB), worker logs
    dry_run: bool
    budget_s: float
    images: int
    started: float = field(default_factory=time.monotonic)
    facts: dict[str, str] = field(default_factory=dict)
    results: list[Measurement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def chunks(self) -> tuple[int, ...]:
        return DRY_CHUNKS if self.dry_run else GPU_CHUNKS

    def left_s(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    def write(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / REPORT
        path.write_text(render(self))
        return path


def nvidia_smi(*query: str) -> list[str]:
    """nvidia-smi's CSV lines for ``query`` (no header, no units), or [] where there is no nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, *query, "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def gpu_used_mib() -> float | None:
    lines = nvidia_smi("--query-gpu=memory.used", "-i", "0")
    try:
        return float(lines[0]) if lines else None
    except ValueError:
        return None


class MemorySampler:
    """The peak of ``gpu_used_mib`` while the context is open, read every ``SAMPLE_S`` in a thread."""

    def __init__(self) -> None:
        self.peak: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            used = gpu_used_mib()
            if used is not None:
                self.peak = used if self.peak is None else max(self.peak, used)
            self._stop.wait(SAMPLE_S)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def check_runtime(check: Check) -> bool:
    """Record onnxruntime's providers and whether a session really runs on CUDA; True when it does."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    check.facts["python"] = platform.python_version()
    check.facts["onnxruntime"] = f"{ort.__version__} ({', '.join(ort.get_available_providers())})"
    gpus = nvidia_smi("--query-gpu=name,driver_version,memory.total")
    check.facts["GPU (nvidia-smi)"] = "; ".join(gpus) if gpus else "none (no nvidia-smi or no GPU)"
    if check.dry_run:
        check.facts["CUDAExecutionProvider"] = "not asked for (CPU dry run)"
        return True
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        check.facts["CUDAExecutionProvider"] = "NOT available: the gpu extra (onnxruntime-gpu) is not installed"
        return False
    # Listed is not enough (a missing libcudnn only shows at session creation): run a MatMul on device 0.
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "a"], ["b"])],
        "probe",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [64, 64])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [64, 64])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    try:
        session = ort.InferenceSession(
            model.SerializeToString(), providers=[("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
        )
        a = np.eye(64, dtype=np.float32)
        ok = session.get_providers()[0] == "CUDAExecutionProvider" and bool(
            np.allclose(session.run(None, {"a": a})[0], a)
        )
    except Exception as e:  # the provider's libraries fail to load: say why
        check.facts["CUDAExecutionProvider"] = f"listed, but a session failed: {e}"
        return False
    check.facts["CUDAExecutionProvider"] = (
        "verified (a MatMul ran on device 0)" if ok else "listed, but fell back to CPU"
    )
    return ok


def prepare_inputs(check: Check) -> tuple[BenchEnv, list[dict[str, Any]]]:
    """The benchmark's model directory (faces, OCR, CLIP) and the assets of one run."""
    from benchmarks.env import file_assets, prepare
    from benchmarks.photos import photo_set, varied_small_photos

    work = check.work
    source = Path(os.environ.get("ASSETQ_MODEL_DIR", Path.home() / ".cache/assetq/models"))
    wheels = Path(os.environ.get("GPU_CHECK_WHEEL_CACHE", Path.home() / ".cache/assetq/wheels"))
    env = prepare(work, source, wheels, "tiny" if check.dry_run else "auto", log=lambda m: check.notes.append(m))
    if check.dry_run:
        photos = varied_small_photos(work, 4, max_side=480)
    else:
        photos = [path for path, _ in photo_set(work, wheels, quick=True)]
    check.facts["photos"] = ", ".join(p.name for p in photos) + f" (repeated to {check.images} per run)"
    assets = file_assets(photos, repeat=-(-check.images // len(photos)))[: check.images]
    return env, assets


def worker_env(check: Check, chunk: int) -> dict[str, str]:
    device = "cpu" if check.dry_run else "0"
    return {
        "ASSETQ_DEVICE": device,
        "ASSETQ_CLIP_BATCH_SIZE": str(chunk),
        "ASSETQ_DETECTION_BATCH_SIZE": str(chunk),
    }


def measure_with_worker(check: Check, env: BenchEnv, assets: list[dict[str, Any]], chunk: int) -> None:
    """One worker (device 0, or the CPU in a dry run) behind a private redis-server; both jobs at ``chunk``."""
    from benchmarks.distributed import Deployment

    idle = gpu_used_mib()
    roots = sorted({Path(a["uri"].removeprefix("file://")).parent for a in assets})
    deployment = Deployment(env.model_dir, roots, chunk, 0, 1, check.work / "logs", extra_env=worker_env(check, chunk))
    try:
        deployment.start()
        producer = deployment.producer()
        for job in JOBS:
            m = Measurement(job, chunk, gpu_idle_mib=idle)
            check.results.append(m)
            if check.left_s() < 30:
                m.error = "skipped: the time budget is spent"
                continue
            tasks = env.tasks(ocr=job == "full", clip=job == "full")
            try:
                run_batch(check, deployment, producer, assets[:chunk], tasks, WARMUP_LIMIT_S)  # untimed: first calls
                with MemorySampler() as memory:
                    wall = run_batch(check, deployment, producer, assets, tasks, check.left_s() - 10)
                m.images, m.wall_s, m.gpu_peak_mib = len(assets), wall, memory.peak
                m.providers = worker_providers(deployment.worker_log(400))
            except Exception as e:
                m.error = f"{type(e).__name__}: {e}"[:400]
            check.write()
    finally:
        deployment.stop()


def run_batch(
    check: Check, deployment: Any, producer: Any, assets: list[dict[str, Any]], tasks: Any, limit_s: float
) -> float:
    """Seconds from submit to complete for one batch, waiting ``limit_s`` at most (never past the budget)."""
    t0 = time.perf_counter()
    batch = producer.submit({"assets": assets, "tasks": tasks, "output": {"redis": True}})
    status = producer.wait(batch, timeout_s=max(5.0, min(limit_s, check.left_s() - 10)), poll_s=0.02)
    wall = time.perf_counter() - t0
    if status.get("ok") != len(assets):
        tail = deployment.worker_log(15)[-1500:]
        raise RuntimeError(f"batch {batch} not complete within the budget: {status}; worker log: {tail}")
    return wall


def worker_providers(log: str) -> str:
    """The providers the worker's sessions were loaded on, from its ``loaded <path> on <provider>`` lines."""
    seen = sorted(
        {line.rsplit(" on ", 1)[1].strip() for line in log.splitlines() if "loaded " in line and " on " in line}
    )
    return ", ".join(seen)


def measure_in_process(check: Check, env: BenchEnv, assets: list[dict[str, Any]], chunk: int) -> None:
    """The ``assetq run`` path (no Redis): the same pipeline in this process, on the device a worker would use."""
    from benchmarks.inprocess import InProcess, build_recorded_runtime
    from config.settings import Settings

    idle = gpu_used_mib()
    os.environ.update(worker_env(check, chunk))  # the batch limits, read by Settings
    device = "cpu" if check.dry_run else "0"
    settings = Settings(model_dir=env.model_dir, chunk_size=chunk, model_ttl_s=0, device=device)
    runner = InProcess(settings, build_recorded_runtime(settings))
    try:
        for job in JOBS:
            m = Measurement(job, chunk, gpu_idle_mib=idle, providers=f"in-process, device {device}")
            check.results.append(m)
            if check.left_s() < 30:
                m.error = "skipped: the time budget is spent"
                continue
            tasks = env.tasks(ocr=job == "full", clip=job == "full")
            try:
                runner.run(assets[:chunk], tasks)  # untimed: models load, first calls
                with MemorySampler() as memory:
                    wall, _ = runner.run(assets, tasks)
                m.images, m.wall_s, m.gpu_peak_mib = len(assets), wall, memory.peak
            except Exception as e:
                m.error = f"{type(e).__name__}: {e}"[:400]
            check.write()
    finally:
        runner.close()


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def render(check: Check) -> str:
    mode = "CPU dry run (tiny sizes; no GPU figures)" if check.dry_run else "GPU, device 0"
    lines = [
        "# assetq GPU check",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, host {platform.node()}, mode: {mode}, "
        f"{time.monotonic() - check.started:.0f} s so far (budget {check.budget_s:.0f} s).",
        "",
        "## Environment",
        "",
        "| what | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in check.facts.items()),
        "",
        "## Throughput",
        "",
        "| job | chunk | images | wall s | images/s | GPU memory peak MiB | GPU memory before MiB | providers "
        "| error |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for m in check.results:
        lines.append(
            f"| {m.job} | {m.chunk} | {m.images} | {m.wall_s:.2f} | {m.images_per_s:.2f} | "
            f"{_cell(m.gpu_peak_mib, '.0f')} | {_cell(m.gpu_idle_mib, '.0f')} | {m.providers or '-'} "
            f"| {m.error or '-'} |"
        )
    small, large = check.chunks
    lines += ["", "## Batching gain", "", f"| job | images/s at chunk {small} | images/s at chunk {large} | gain |"]
    lines.append("|---|---:|---:|---:|")
    for job in JOBS:
        rate = {m.chunk: m.images_per_s for m in check.results if m.job == job and not m.error and m.wall_s > 0}
        gain = f"{rate[large] / rate[small]:.2f}x" if small in rate and large in rate else "-"
        lines.append(f"| {job} | {_cell(rate.get(small), '.2f')} | {_cell(rate.get(large), '.2f')} | {gain} |")
    if check.notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in check.notes)]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/assetq-gpu-check"), help="scratch (not under --out)")
    parser.add_argument("--cpu", action="store_true", help="dry run on the CPU with tiny sizes")
    parser.add_argument("--budget-s", type=float, default=360.0)
    parser.add_argument("--images", type=int, default=0, help="assets per run (default 128; 8 in a dry run)")
    parser.add_argument("--install-note", default="", help="what the shell script did about the gpu extra")
    args = parser.parse_args()
    check = Check(args.out, args.work, args.cpu, args.budget_s, args.images or (8 if args.cpu else 128))
    if args.install_note:
        check.facts["gpu extra"] = args.install_note
    check.write()
    if not check_runtime(check):
        check.notes.append("No GPU measurement: CUDAExecutionProvider is not usable here (see Environment).")
        check.write()
        return 2
    env, assets = prepare_inputs(check)
    check.facts["full job"] = env.job_name()
    redis_server = None if os.environ.get("GPU_CHECK_NO_REDIS") else shutil.which("redis-server")
    # The worker needs celery (boto3 only once a job writes to S3, which this check's jobs do not).
    missing = [m for m in ("celery",) if importlib.util.find_spec(m) is None]
    use_worker = bool(redis_server) and not missing
    check.facts["path"] = (
        f"assetq worker (Celery, 1 pool process) + private redis-server ({redis_server})"
        if use_worker
        else "in-process `assetq run` path (the same pipeline, no Redis): "
        + (f"{', '.join(missing)} not importable here" if redis_server else "no usable redis-server on this host")
    )
    check.write()
    for chunk in check.chunks:
        if use_worker:
            try:
                measure_with_worker(check, env, assets, chunk)
            except Exception as e:  # a worker that never came up
                check.notes.append(f"chunk {chunk}: the worker did not start: {type(e).__name__}: {e}"[:600])
            if not any(m.chunk == chunk and not m.error for m in check.results):
                use_worker = False  # a broken worker path: measure what the in-process path can
                check.notes.append(f"chunk {chunk}: nothing measured with the worker; in-process path from here on")
                check.facts["path"] += "; fell back to the in-process path (see Notes)"
        if not use_worker:
            try:
                measure_in_process(check, env, assets, chunk)
            except Exception as e:
                check.notes.append(f"chunk {chunk}: in-process: {type(e).__name__}: {e}"[:600])
        check.write()
    failed = [m for m in check.results if m.error]
    return 1 if failed or len(check.results) < len(JOBS) * len(check.chunks) else 0


if __name__ == "__main__":
    raise SystemExit(main())
