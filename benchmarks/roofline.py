"""Section "roofline": FLOPs from the ONNX graphs, the machine's float32 GEMM rate, and what the job achieves.

FLOPs count only the dense-algebra nodes (Conv, ConvTranspose, MatMul, Gemm),
a multiply-add counted as 2. Shapes come from onnxruntime's symbolic shape
inference with the input fixed to the shape actually run (one item; every
node here scales linearly with the batch). The recorder wraps each session of
a run and logs the input shape and time of every call, so the FLOPs of a whole
job are those of the calls it really made (padding included).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Run, State, progress, ratio
from benchmarks.common import table as markdown_table  # `table` here is the FLOP table of sustained_rate
from worker.models.base import RuntimeOptions, Session, SessionFactory, onnxruntime_session

DENSE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
GEMM_SIZE = 2048


@dataclass
class FlopCount:
    flops: int
    nodes: int
    unresolved: int  # dense nodes with a dimension symbolic inference could not pin (counted as 1)


def _dims(value_info: Any) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def count_flops(model_path: Path, item_shape: Sequence[int]) -> FlopCount:
    """FLOPs of one inference of ``model_path`` with its first input shaped ``(1, *item_shape)``."""
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = onnx.load(str(model_path))
    first = model.graph.input[0]
    for dim, value in zip(first.type.tensor_type.shape.dim, (1, *item_shape), strict=True):
        dim.ClearField("dim_param")
        dim.dim_value = int(value)
    inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    shapes: dict[str, list[int | None]] = {}
    for vi in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output):
        shapes[vi.name] = _dims(vi)
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    total = nodes = unresolved = 0
    for node in inferred.graph.node:
        if node.op_type not in DENSE_OPS:
            continue
        nodes += 1
        flops, exact = _node_flops(node, shapes)
        total += flops
        unresolved += 0 if exact else 1
    return FlopCount(total, nodes, unresolved)


def _node_flops(node: Any, shapes: Mapping[str, list[int | None]]) -> tuple[int, bool]:
    def get(name: str) -> tuple[list[int], bool]:
        dims = shapes.get(name)
        if dims is None:
            return [], False
        return [d or 1 for d in dims], None not in dims

    attrs = {a.name: a for a in node.attribute}
    if node.op_type == "Conv":
        (w, ok_w), (y, ok_y) = get(node.input[1]), get(node.output[0])
        # y: (N, Cout, *spatial); w: (Cout, Cin/group, *kernel)
        return 2 * int(np.prod(y)) * int(np.prod(w[1:])), ok_w and ok_y
    if node.op_type == "ConvTranspose":
        (x, ok_x), (w, ok_w) = get(node.input[0]), get(node.input[1])
        # every input pixel scatters into a (Cout/group, *kernel) block
        return 2 * int(np.prod(x)) * int(np.prod(w[1:])), ok_x and ok_w
    if node.op_type == "MatMul":
        (a, ok_a), (y, ok_y) = get(node.input[0]), get(node.output[0])
        k = a[-1] if a else 1
        return 2 * int(np.prod(y)) * k, ok_a and ok_y
    # Gemm: Y (M, N) = A' (M, K) B' (K, N)
    (a, ok_a), (y, ok_y) = get(node.input[0]), get(node.output[0])
    trans_a = "transA" in attrs and attrs["transA"].i == 1
    k = (a[0] if trans_a else a[-1]) if a else 1
    return 2 * int(np.prod(y)) * k, ok_a and ok_y


class FlopTable:
    """``count_flops`` memoised per (model, item shape): symbolic inference takes up to seconds."""

    def __init__(self) -> None:
        self._memo: dict[tuple[Path, tuple[int, ...]], FlopCount] = {}

    def per_item(self, model_path: Path, item_shape: tuple[int, ...]) -> FlopCount:
        key = (model_path, item_shape)
        if key not in self._memo:
            self._memo[key] = count_flops(model_path, item_shape)
        return self._memo[key]


@dataclass
class ModelLog:
    calls: int = 0
    seconds: float = 0.0
    items: dict[tuple[int, ...], int] = field(default_factory=lambda: defaultdict(int))  # item shape -> items
    shape_calls: dict[tuple[int, ...], int] = field(default_factory=lambda: defaultdict(int))  # item shape -> calls

    def clear(self) -> None:
        self.calls, self.seconds = 0, 0.0
        self.items.clear()
        self.shape_calls.clear()

    def commonest(self) -> tuple[tuple[int, ...], int]:
        """(item shape, typical batch) of the shape that took the most items."""
        shape = max(self.items, key=lambda s: self.items[s])
        return shape, max(1, round(self.items[shape] / self.shape_calls[shape]))


class RecordingSession:
    """Passes every call through to the real session and notes the input shape and the time taken."""

    def __init__(self, inner: Session, log: ModelLog, lock: threading.Lock) -> None:
        self._inner = inner
        self._log = log
        self._lock = lock

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, np.ndarray]) -> list[Any]:
        t0 = time.perf_counter()
        out = self._inner.run(output_names, input_feed)
        dt = time.perf_counter() - t0
        first = next(iter(input_feed.values()))
        with self._lock:
            self._log.calls += 1
            self._log.seconds += dt
            shape = tuple(int(d) for d in first.shape[1:])
            self._log.items[shape] += int(first.shape[0])
            self._log.shape_calls[shape] += 1
        return out

    def __getattr__(self, name: str) -> Any:  # get_inputs, get_outputs, get_providers, get_modelmeta ...
        return getattr(self._inner, name)


class SessionRecorder:
    """A session factory that records every model's calls; ``reset()`` between measured runs."""

    def __init__(self, inner: SessionFactory = onnxruntime_session) -> None:
        self.inner = inner
        self.logs: dict[Path, ModelLog] = {}
        self._lock = threading.Lock()

    def factory(self, path: Path, opts: RuntimeOptions, flush_denormals: bool) -> Session:
        log = self.logs.setdefault(Path(path), ModelLog())
        return RecordingSession(self.inner(path, opts, flush_denormals), log, self._lock)

    def reset(self) -> None:
        with self._lock:
            for log in self.logs.values():
                log.clear()  # in place: the sessions hold these objects

    def flops(self, table: FlopTable) -> dict[Path, int]:
        """Total FLOPs of the recorded calls, per model file."""
        return {
            path: sum(table.per_item(path, shape).flops * n for shape, n in log.items.items())
            for path, log in self.logs.items()
        }


@dataclass(frozen=True)
class GemmPeak:
    numpy_gflops: float
    onnxruntime_gflops: float

    @property
    def peak(self) -> float:
        return max(self.numpy_gflops, self.onnxruntime_gflops)


def gemm_peak(repeats: int = 5, threads: int = 0) -> GemmPeak:
    """float32 2048³ GEMM rate through numpy (its BLAS) and through an onnxruntime MatMul."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    n = GEMM_SIZE
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    flops = 2.0 * n**3

    def best(fn: Any) -> float:
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)  # the rate the machine can reach: the least disturbed run

    numpy_s = best(lambda: a @ b)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["A", "B"], ["Y"])],
        "gemm",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in ("A", "B")],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    so = ort.SessionOptions()
    if threads > 0:
        so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ort_s = best(lambda: sess.run(None, {"A": a, "B": b}))
    return GemmPeak(flops / numpy_s / 1e9, flops / ort_s / 1e9)


def sustained_rate(
    model_path: Path,
    item_shape: tuple[int, ...],
    batch: int,
    opts: RuntimeOptions,
    flush: bool,
    streams: int,
    table: FlopTable,
    seconds: float = 2.0,
) -> float:
    """GFLOP/s of ``model_path`` run the way the pipeline runs it: ``streams`` threads calling one session."""
    session = onnxruntime_session(model_path, opts, flush)
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).random((batch, *item_shape), dtype=np.float32)
    session.run(None, {name: x})
    calls = [0] * streams
    stop = time.perf_counter() + seconds

    def loop(i: int) -> None:
        while time.perf_counter() < stop:
            session.run(None, {name: x})
            calls[i] += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return table.per_item(model_path, item_shape).flops * batch * sum(calls) / wall / 1e9


def section(run: Run, state: State) -> None:
    """FLOPs and rates of the headline's recorded in-process run, against the GEMM peak."""
    from worker.runtime import runtime_options

    recorder = state.recorder
    assert recorder is not None, "the roofline reads the headline's recorded sessions"
    progress("measuring the GEMM peak")
    peak = gemm_peak()
    measured = run.measured["inprocess"]
    images = run.recorded_images
    flop_table = FlopTable()
    progress("counting FLOPs (symbolic shape inference per input shape)")
    flops = recorder.flops(flop_table)
    rows = []
    total = 0.0
    for path, log in sorted(recorder.logs.items(), key=lambda kv: -kv[1].seconds):
        if not log.calls:
            continue
        per_image = flops[path] / images
        total += per_image
        rows.append(
            [
                _model_label(path, run.env.model_dir),
                per_image / 1e9,
                log.seconds * 1000 / images,
                flops[path] / log.seconds / 1e9 if log.seconds else 0.0,
                sum(log.items.values()) / images,
            ]
        )
    dominant_path, dominant = max(recorder.logs.items(), key=lambda kv: kv[1].seconds)
    shape, batch = dominant.commonest()
    cls_flush = _flush_of(dominant_path, run.env.model_dir)
    progress(f"sustained rate of {_model_label(dominant_path, run.env.model_dir)}")
    # As many call streams as the pipeline runs (its processes), each with the configured threads.
    rate = sustained_rate(
        dominant_path, shape, batch, runtime_options(run.settings()), cls_flush, run.concurrency, flop_table
    )
    floor_ms = total / (peak.peak * 1e9) * 1000
    run.say("\n## Roofline\n")
    run.say(
        f"float32 GEMM {GEMM_SIZE}³: numpy {peak.numpy_gflops:.0f} GFLOP/s, onnxruntime MatMul "
        f"{peak.onnxruntime_gflops:.0f} GFLOP/s -> peak {peak.peak:.0f} GFLOP/s (best of 5, all cores)\n"
    )
    run.say(
        markdown_table(
            ["model (session)", "GFLOPs/image", "ms/image in 1 process", "GFLOP/s per call stream", "items/image"],
            rows,
        )
    )
    run.say(
        f"\nDominant model: {_model_label(dominant_path, run.env.model_dir)}, input {shape} at batch {batch}, "
        f"one session as in the pipeline: {rate:.0f} GFLOP/s = {100 * rate / peak.peak:.0f}% of peak."
    )
    run.say(
        f"Whole job: {total / 1e9:.1f} GFLOPs per image -> compute floor {floor_ms:.0f} ms/image at peak; "
        f"measured in-process {measured.ms_per_image:.0f} ms/image = {100 * floor_ms / measured.ms_per_image:.0f}% "
        "of the floor's speed."
    )
    run.say(
        "FLOPs count Conv/ConvTranspose/MatMul/Gemm (multiply-add = 2) at the shapes actually run, padding "
        "included; the CLIP text tower is not per image (class texts are embedded once per class set)."
    )
    # Session time of one process, shared by the processes that run side by side.
    session_ms = sum(log.seconds for log in recorder.logs.values()) * 1000 / images / run.concurrency
    ceiling = ratio(run.measured["naive"].ms_per_image, session_ms)
    run.say(
        f"Inside onnxruntime (session.run) in-process: {session_ms:.0f} of {measured.ms_per_image:.0f} ms/image"
        + (f" (one process's session time / {run.concurrency} processes)" if run.concurrency > 1 else "")
        + f"; the rest is decode waits, pre- and post-processing. Ceiling for in-process vs naive with the "
        f"models' arithmetic unchanged (everything outside session.run free): naive ms/image / {session_ms:.0f} "
        f"= {ceiling:.2f}x."
    )
    run.notes.append(f"ceiling for inprocess_vs_naive, everything outside session.run free: {ceiling:.2f}")
    run.ratios["roofline_pct"] = 100 * rate / peak.peak
    run.ratios["floor_pct"] = 100 * floor_ms / measured.ms_per_image


def _model_label(path: Path, model_dir: Path) -> str:
    try:
        rel = path.relative_to(model_dir)
    except ValueError:
        return str(path)
    return "/".join(rel.parts[1:3])  # modelName/type


def _flush_of(path: Path, model_dir: Path) -> bool:
    from worker.models.registry import model_class

    task, name, type_ = path.relative_to(model_dir).parts[:3]
    return bool(model_class(task, type_, name, model_dir).flush_denormals)
