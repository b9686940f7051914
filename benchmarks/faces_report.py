"""The faces section's configurations and its tables (``benchmarks/faces.py`` measures them)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from benchmarks.common import Run, ratio, table
from benchmarks.face_sets import FaceSet

# The speed-and-memory option for big originals that the faces section measures beside the default (0).
SCALED_SIDE = 1440
MIN_SCORE = 0.7  # the job: Immich's default face detection threshold


@dataclass(frozen=True)
class FacesShape:
    """How assetq runs the faces job: the recommendation (one process, ``threads`` onnxruntime threads)
    and the alternative measured beside it (``processes`` processes of one thread each)."""

    threads: int
    processes: int


def faces_shape(run: Run) -> FacesShape:
    """The cores the harness uses, as one process's threads or as that many one-thread processes."""
    cores = max(1, run.concurrency * run.intra_op_threads)
    return FacesShape(threads=cores, processes=max(1, min(cores, os.cpu_count() or 1)))


@dataclass
class SetResult:
    """Best-of-rounds seconds per configuration for one image set, and what else was read off it."""

    face_set: FaceSet
    images: int
    best_s: dict[str, float] = field(default_factory=dict)
    whole_images: int = 0
    agreement: str = ""
    min_cosine: float = float("nan")
    session_ms: float = float("nan")  # per image: session.run time at one thread, alone, over the cores
    decode_ms: float = float("nan")  # per image: CPU time of the pipeline's decode, alone on one thread
    scaled_agreement: str = ""  # the recommendation at ASSETQ_DETAIL_SIDE=SCALED_SIDE (12 MP set only)
    scaled_min_cosine: float = float("nan")
    side_by_side_ms: float = float("nan")  # per image: the recommendation's session calls replayed on every core
    scaled_decode_ms: float = float("nan")  # per image: CPU time of the DCT-scaled decode, alone (12 MP set only)

    def keep(self, name: str, seconds: float) -> None:
        self.best_s[name] = min(seconds, self.best_s.get(name, float("inf")))

    def per_s(self, name: str) -> float:
        images = self.whole_images if name.startswith("whole") else self.images
        return images / self.best_s[name] if name in self.best_s else float("nan")


def _versus(r: SetResult, name: str) -> str:
    return f"{r.per_s(name):.1f} ({ratio(r.per_s(name), r.per_s('peer')):.2f}x)"


def report(
    run: Run, shape: FacesShape, results: list[SetResult], memory: dict[str, float], floors: dict[str, float]
) -> None:
    """The faces tables. ``floors``: the start-up floor of the ``run`` and ``submit`` commands (s)."""
    run.say("\n## Faces job against the peer-style baseline\n")
    run.say(
        f"Job: facial-recognition, buffalo_s, detection minScore {MIN_SCORE}. Peer-style baseline: Immich ML's "
        "design (1 process, 2 request threads sharing one session per model at 2 intra-op threads, whole-image "
        "decode, per image detection then that image's faces as one batch). assetq at the README's CPU "
        f"recommendation for this job: one process, {shape.threads} inference threads (`ASSETQ_INFERENCE_THREADS`) "
        "sharing its sessions, each call on one onnxruntime thread, chunks of 16, batches auto (1 detector "
        "canvas, 8 faces); "
        f"beside it one session call at a time on {shape.threads} threads (the default) and "
        f"{shape.processes} processes x 1 thread. Images/s, best of the interleaved rounds; ratios against the "
        "peer-style baseline of the same run."
    )
    rows = [
        [
            r.face_set.label,
            r.images,
            r.per_s("peer"),
            _versus(r, "naive"),
            _versus(r, "inprocess"),
            _versus(r, "one_call"),
            _versus(r, "processes"),
            _versus(r, "distributed"),
        ]
        for r in results
    ]
    run.say("\nSteady state (warm; the clock runs from the first image to the last result):\n")
    headers = ["image set", "images", "peer-style", "naive", f"assetq run path, {shape.threads} inference threads"]
    headers += [f"one call at a time x {shape.threads} threads", f"{shape.processes} processes x 1 thread"]
    headers += ["distributed (submit -> results)"]
    run.say(table(headers, rows))
    for r in results:
        if "scaled" in r.best_s:
            most = ratio(1000 / r.per_s("peer"), r.side_by_side_ms + r.scaled_decode_ms / shape.threads)
            run.say(
                f"\n{r.face_set.label} with `ASSETQ_DETAIL_SIDE={SCALED_SIDE}` (JPEGs DCT-scaled to that short side, "
                f"faces aligned from those pixels), the recommendation: {_versus(r, 'scaled')}; outputs vs "
                f"peer-style: {r.scaled_agreement}, min cosine {r.scaled_min_cosine:.4f} (default, full size: "
                f"{r.min_cosine:.4f}). The scaled decode costs {r.scaled_decode_ms:.0f} CPU ms/image "
                f"(full size: {r.decode_ms:.0f}): with it the side-by-side estimate of what any ratio vs peer can be "
                f"is {most:.2f}x (the replayed session calls + that decode over the cores)."
            )
    _whole_commands(run, results, floors)
    _ceiling(run, shape, results)
    run.say(
        "\nPeak resident memory (VmHWM; a worker's is its main and pool processes' summed; a whole command's "
        "read from its /proc status while it runs), after all three sets:\n"
    )
    run.say(table(["configuration", "peak RSS MiB"], [[k, v] for k, v in memory.items()]))
    for r in results:
        run.say(f"- outputs, {r.face_set.label}: assetq vs peer-style: {r.agreement}, min cosine {r.min_cosine:.4f}")
    for r in results:
        figures = [r.per_s(k) for k in ("inprocess", "distributed", "whole_run", "whole_submit")]
        run.ratios[f"faces_vs_peer_{r.face_set.name}"] = min(ratio(f, r.per_s("peer")) for f in figures)
        run.ratios.setdefault("faces_ceiling_pct", 100.0)
        run.ratios["faces_ceiling_pct"] = min(
            run.ratios["faces_ceiling_pct"], 100 * r.session_ms * r.per_s("inprocess") / 1000
        )
    side = min(100 * (r.side_by_side_ms + r.decode_ms / shape.threads) * r.per_s("inprocess") / 1000 for r in results)
    run.notes.append(f"faces run path vs the side-by-side session estimate with decode, least of the sets: {side:.0f}%")
    worker = next(v for k, v in memory.items() if k.startswith("assetq worker"))
    run.ratios["faces_memory_headroom"] = ratio(next(iter(memory.values())), worker)


def _whole_commands(run: Run, results: list[SetResult], floors: dict[str, float]) -> None:
    rows = []
    for r in results:
        row: list[object] = [r.face_set.label, r.whole_images]
        for whole, steady, floor in (("whole_run", "inprocess", "run"), ("whole_submit", "distributed", "submit")):
            steady_s = r.whole_images / r.per_s(steady)
            fixed = r.best_s[whole] - steady_s if whole in r.best_s else float("nan")
            most = ratio(r.whole_images / r.per_s("peer"), floors[floor] + steady_s)
            row += [_versus(r, whole), f"{fixed:.2f}", f"{most:.2f}x"]
        rows.append(row)
    run.say(
        "\nWhole commands (start-up, model loading, enqueueing and waiting included), against the warm peer. "
        "Fixed s: the command's wall time less its images at the steady rate of the same path (run path; "
        f"distributed). Start-up floor: a bare Python process that only imports numpy, Pillow and onnxruntime "
        f"and opens the job's two sessions takes {floors['run']:.2f} s (for `run`); one that imports redis and "
        f'pydantic {floors["submit"]:.2f} s (for `submit`). "Most": the ratio a command could reach at the '
        "steady rate if its fixed cost were only that floor.\n"
    )
    headers = ["image set", "images", "`assetq run --concurrency 1`", "fixed s", "most"]
    headers += ["`assetq submit --wait` (worker up)", "fixed s", "most"]
    run.say(table(headers, rows))


def _ceiling(run: Run, shape: FacesShape, results: list[SetResult]) -> None:
    rows = []
    for r in results:
        measured_ms = 1000 / r.per_s("inprocess")
        peer_ms = 1000 / r.per_s("peer")
        with_decode = r.session_ms + r.decode_ms / shape.threads
        side_with_decode = r.side_by_side_ms + r.decode_ms / shape.threads
        rows.append(
            [
                r.face_set.label,
                r.session_ms,
                measured_ms,
                f"{100 * r.session_ms / measured_ms:.0f}%",
                r.decode_ms,
                f"{100 * with_decode / measured_ms:.0f}%",
                r.side_by_side_ms,
                f"{100 * side_with_decode / measured_ms:.0f}%",
                peer_ms,
                f"{ratio(peer_ms, r.session_ms):.2f}x / {ratio(peer_ms, with_decode):.2f}x; "
                f"{ratio(peer_ms, side_with_decode):.2f}x",
            ]
        )
    run.say(
        "\nSession-time ceiling: the job's time inside session.run per image with every call on one onnxruntime "
        f"thread and nothing beside it, spread over the {shape.threads} cores (what assetq would reach if "
        "everything outside session.run were free and the cores ran calls side by side at one thread's speed). "
        "Decoding is work no scheduler removes: its CPU time per image (measured alone, one thread), spread "
        f"over the {shape.threads} cores, gives the second ceiling. The cores do not run calls side by side at "
        "one call's lone speed (they share the memory bus and cache): the side-by-side estimate is the "
        f"recommendation's own session calls over the set's photos, replayed from {shape.threads} threads at once "
        "with nothing else running (`benchmarks/replay.py`), then with the decode added. It is an estimate, not a "
        "bound: calls on every core at once run slower than with a pipeline's other work between them, and "
        "assetq can come out over 100% of it.\n"
    )
    headers = ["image set", "ceiling ms/image", "assetq run ms/image", "of the ceiling", "decode CPU ms/image"]
    headers += ["of ceiling + decode", "side-by-side ms/image", "of side-by-side + decode", "peer ms/image"]
    headers += ["most any ratio vs peer can be: session / + decode; side-by-side + decode, an estimate"]
    run.say(table(headers, rows))
