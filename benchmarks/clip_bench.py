"""CLIP speed: visual embeddings batched across a chunk vs one at a time, and zero-shot scoring cost.

    .venv/bin/python tools/make_vit_b32.py                # once: random-weight ViT-B-32 (onnx + numpy, ~5 s)
    .venv/bin/python benchmarks/clip_bench.py             # ViT-B-32__random from /tmp/assetq-bench/models
    .venv/bin/python benchmarks/clip_bench.py --model tiny-vit-shapes --model-dir ~/.cache/assetq/models

Tables print a ratio against the baseline measured in the same run: the
visual tower against one image per session call, the zero-shot scorer
against a per-class Python loop over the same embeddings.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.synthetic_world import HELD_OUT_SEED, scenes  # noqa: E402
from worker.models.base import RuntimeOptions  # noqa: E402
from worker.models.clip_preprocess import preprocess_batch  # noqa: E402
from worker.models.clip_textual import ClipTextual  # noqa: E402
from worker.models.clip_visual import ClipVisual  # noqa: E402
from worker.models.zero_shot import build_class_examples, top_labels, zero_shot_scores  # noqa: E402
from worker.pipeline.image import DecodedImage  # noqa: E402


def interleaved(repeats: int, variants: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Median wall time of each variant over ``repeats`` rounds, after one untimed warm-up round.

    The variants take turns within each round, so load from other processes on a
    shared machine falls on all of them alike and the ratios stay meaningful.
    """
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def photo_sized_images(count: int, size: tuple[int, int]) -> list[DecodedImage]:
    """Synthetic scenes enlarged to photo-like sizes, so preprocessing has real resizing to do."""
    return [
        DecodedImage.from_array(np.asarray(Image.fromarray(px).resize(size, Image.Resampling.BILINEAR)))
        for _, px in scenes(HELD_OUT_SEED, count)
    ]


def bench_visual(model_dir: Path, name: str, images: list[DecodedImage], threads: int, repeats: int) -> int:
    visual = ClipVisual(name, model_dir, RuntimeOptions(intra_op_threads=threads))
    visual.load()
    n = len(images)
    pre = interleaved(repeats, {"pre": lambda: preprocess_batch([im.pixels for im in images], visual.preprocess_cfg)})[
        "pre"
    ]
    print(f"\n## visual tower: {name}, {n} images of {images[0].width}x{images[0].height}, {threads} threads")
    print(f"preprocessing alone: {1000 * pre / n:.2f} ms/image\n")
    print("| mode | ms/image | images/s | vs one at a time |")
    print("|---|---:|---:|---:|")
    variants: dict[str, Callable[[], object]] = {
        "one at a time (B=1)": lambda: [visual.run_chunk([im], {}, {}, max_batch=1) for im in images]
    }
    for batch in (4, 16, 32):

        def whole_chunk(size: int = batch) -> object:
            return visual.run_chunk(images, {}, {}, max_batch=size)

        variants[f"chunk, batches of {batch}"] = whole_chunk
    rows = interleaved(repeats, variants)
    baseline = rows["one at a time (B=1)"]
    for label, seconds in rows.items():
        print(f"| {label} | {1000 * seconds / n:.1f} | {n / seconds:.1f} | {baseline / seconds:.2f}x |")
    dim = int(visual.run_chunk(images[:1], {}, {})[0].shape[0])
    return dim


def bench_zero_shot(dim: int, n_classes: int, examples_per_class: int, negatives: int, repeats: int) -> None:
    rng = np.random.default_rng(0)

    def unit(rows: np.ndarray) -> np.ndarray:
        return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)

    classes = {
        f"class {c}": {
            "positive": [f"c{c} p{k}" for k in range(examples_per_class - negatives)],
            "negative": [f"c{c} n{k}" for k in range(negatives)],
        }
        for c in range(n_classes)
    }
    texts = [t for spec in classes.values() for key in ("positive", "negative") for t in spec[key]]
    vectors = dict(zip(texts, unit(rng.normal(size=(len(texts), dim))), strict=True))
    examples = build_class_examples(classes, lambda ts: np.stack([vectors[t] for t in ts]))
    images = unit(rng.normal(size=(16, dim)))

    def per_class_loop() -> np.ndarray:
        out = np.empty((len(images), n_classes), dtype=np.float32)
        for c, spec in enumerate(classes.values()):
            best_pos = ((1 + images @ np.stack([vectors[t] for t in spec["positive"]]).T) / 2).max(axis=1)
            if spec["negative"]:
                best_neg = ((1 + images @ np.stack([vectors[t] for t in spec["negative"]]).T) / 2).max(axis=1)
                best_pos = np.where(best_pos > best_neg, best_pos, -best_neg)
            out[:, c] = best_pos
        return out

    np.testing.assert_allclose(per_class_loop(), zero_shot_scores(images, examples), atol=1e-5)
    n = len(images)
    rows = interleaved(
        repeats * 5,  # each call takes milliseconds: more rounds for a stable median
        {
            "per-class Python loop (baseline)": per_class_loop,
            "vectorised (reduceat scatter-max)": lambda: zero_shot_scores(images, examples),
            "vectorised + labels, topK=5": lambda: [
                top_labels(examples.names, row, None, 5) for row in zero_shot_scores(images, examples)
            ],
            f"vectorised + all {n_classes:,} labels": lambda: [
                top_labels(examples.names, row, None, None) for row in zero_shot_scores(images, examples)
            ],
        },
    )
    baseline = rows["per-class Python loop (baseline)"]
    print(
        f"\n## zero-shot scoring: {n_classes} classes x {examples_per_class} examples "
        f"({negatives} negative), {dim}-d, {n} images per call, text embeddings cached\n"
    )
    print("| scorer | ms/image | vs per-class loop |")
    print("|---|---:|---:|")
    for label, seconds in rows.items():
        print(f"| {label} | {1000 * seconds / n:.3f} | {baseline / seconds:.1f}x |")


def bench_textual(model_dir: Path, name: str, threads: int, repeats: int) -> None:
    textual = ClipTextual(name, model_dir, RuntimeOptions(intra_op_threads=threads))
    try:
        textual.load()
    except FileNotFoundError:
        print(f"\n(no textual tower for {name}: text-embedding cost not measured)")
        return
    texts = [f"a photo of a thing number {i}" for i in range(64)]
    seconds = interleaved(repeats, {"text": lambda: textual.embed_texts(texts)})["text"]
    print(
        f"\n## textual tower: {name}: {1000 * seconds / len(texts):.1f} ms/text in batches of 64 "
        f"(a cache miss on 1,000 x 10 examples costs ~{10_000 * seconds / len(texts):.0f} s once)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/assetq-bench/models"))
    parser.add_argument("--model", default="ViT-B-32__random")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--examples", type=int, default=10)
    parser.add_argument("--negatives", type=int, default=3)
    args = parser.parse_args()
    if not (args.model_dir / "clip" / args.model / "visual" / "model.onnx").is_file():
        sys.exit(f"{args.model_dir}/clip/{args.model} not found: run tools/make_vit_b32.py first (or pass --model)")
    images = photo_sized_images(args.images, (640, 480))
    dim = bench_visual(args.model_dir, args.model, images, args.threads, args.repeats)
    bench_zero_shot(dim, args.classes, args.examples, args.negatives, args.repeats)
    bench_textual(args.model_dir, args.model, args.threads, args.repeats)


if __name__ == "__main__":
    main()
