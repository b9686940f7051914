"""OCR speed: recognition batched across the chunk vs one line at a time, detection cost by resolution.

    .venv/bin/python benchmarks/ocr_bench.py [--model-dir DIR] [--pack PP-OCRv6_small] [--threads 2]

Images: the eurotext scan, scikit-image's page photo, and rendered text lines
drawn over scikit-image's photos enlarged to camera-like sizes (so detection
has real shrinking to do). Every table prints a ratio against a baseline
measured in the same run. The last table checks that flushing subnormal
numbers to zero leaves outputs identical on these real images, and what it
saves.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.testbed import ocr_data  # noqa: E402
from worker.models import text_recognition  # noqa: E402
from worker.models.base import RuntimeOptions, onnxruntime_session  # noqa: E402
from worker.models.ocr_geometry import crops_for  # noqa: E402
from worker.models.outputs import TextBox  # noqa: E402
from worker.models.text_detection import PPOCRTextDetector, detection_input, network_size  # noqa: E402
from worker.models.text_recognition import PPOCRTextRecognizer, recognition_input, resized_width  # noqa: E402
from worker.pipeline.image import DecodedImage  # noqa: E402

DETECTION = ("ocr", "detection")


def best_time(repeats: int, fn: Callable[[], object]) -> float:
    """Fastest wall time of ``repeats`` runs after one untimed warm-up run (the least disturbed by other load)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def text_on_photos() -> list[np.ndarray]:
    """Rendered text blocks pasted onto real photos enlarged to 1600 px on the long side."""
    from skimage import data

    fonts = ocr_data.available_fonts()
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    out = []
    for k, (photo, case) in enumerate(zip(photos, ocr_data.render_cases(fonts), strict=False)):
        base = Image.fromarray(photo).convert("RGB")
        scale = 1600 / max(base.size)
        base = base.resize((round(base.width * scale), round(base.height * scale)), Image.Resampling.BICUBIC)
        block = Image.fromarray(
            ocr_data.render_lines(case.lines, fonts[case.font], case.size * 2, case.ink, case.paper, case.angle).pixels
        )
        base.paste(block, (40 + 60 * k, base.height // 3))
        out.append(np.asarray(base))
    return out


def bench_images() -> list[DecodedImage]:
    fonts = ocr_data.available_fonts()
    arrays = [ocr_data.eurotext(), ocr_data.page(), *text_on_photos()]
    arrays += [ocr_data.render_case(c, fonts).pixels for c in ocr_data.render_cases(fonts)]
    return [DecodedImage.from_array(a) for a in arrays]


def recognition_table(
    rec: PPOCRTextRecognizer, images: list[DecodedImage], boxes: list[list[TextBox]], repeats: int
) -> None:
    crops = [
        c
        for im, bs in zip(images, boxes, strict=True)
        for c in crops_for(im.pixels, [np.asarray(b.quad) for b in bs], im.scale)
    ]
    per_image = [
        crops_for(im.pixels, [np.asarray(b.quad) for b in bs], im.scale) for im, bs in zip(images, boxes, strict=True)
    ]
    n = len(crops)
    print(f"\n## recognition: {n} lines from {len(images)} images (one chunk)")
    print(f"{'mode':44s} {'ms':>8s} {'lines/s':>8s} {'vs 1 line':>9s}")
    one = best_time(repeats, lambda: rec.read_lines(crops, 1))
    rows = [("one line at a time", one)]
    rows.append(("batched per image (max 32)", best_time(repeats, lambda: [rec.read_lines(c, 32) for c in per_image])))
    rows.append(("batched across the chunk (max 32)", best_time(repeats, lambda: rec.read_lines(crops, 32))))
    rows.append(("batched across the chunk (max 8)", best_time(repeats, lambda: rec.read_lines(crops, 8))))
    default_min = text_recognition.MIN_INPUT_WIDTH
    try:
        text_recognition.MIN_INPUT_WIDTH = 8
        rows.append(
            ("across the chunk (max 32), no 320 min width", best_time(repeats, lambda: rec.read_lines(crops, 32)))
        )
        same = rec.read_lines(crops, 32)
    finally:
        text_recognition.MIN_INPUT_WIDTH = default_min
    reference = rec.read_lines(crops, 32)
    for name, t in rows:
        print(f"{name:44s} {1e3 * t:8.0f} {n / t:8.1f} {one / t:8.2f}x")
    agree = sum(a[0] == b[0] for a, b in zip(same, reference, strict=True))
    print(f"texts identical without the 320 min width: {agree}/{n}")


def detection_table(model_dir: Path, pack: str, threads: int, images: list[DecodedImage], repeats: int) -> None:
    det = PPOCRTextDetector(pack, model_dir, RuntimeOptions(intra_op_threads=threads))
    det.load()
    print(f"\n## detection: {len(images)} images, ms per image")
    print(f"{'maxResolution':14s} {'ms/image':>9s} {'vs 736':>7s} {'boxes':>6s}")
    base = 0.0
    for res in (736, 960):
        options = {"maxResolution": res}
        t = best_time(repeats, lambda: det.run_chunk(images, {}, options))  # noqa: B023 (called at once)
        found = sum(len(b) for b in det.run_chunk(images, {}, options))
        base = base or t
        print(f"{res:<14d} {1e3 * t / len(images):9.1f} {t / base:6.2f}x {found:6d}")

    # Same-shape batching: copies of one photo-sized image, one session call vs one per image.
    same = [images[2]] * 8
    single = best_time(repeats, lambda: [det.run_chunk([im], {}, {}) for im in same])
    batched = best_time(repeats, lambda: det.run_chunk(same, {}, {}, max_batch=8))
    print(f"\n## detection batching: 8 images of the same shape {images[2].width}x{images[2].height}")
    print(f"{'mode':24s} {'ms/image':>9s} {'speed-up':>8s}")
    print(f"{'one image per call':24s} {1e3 * single / 8:9.1f} {1.0:7.2f}x")
    print(f"{'8 images per call':24s} {1e3 * batched / 8:9.1f} {single / batched:7.2f}x")


def denormal_table(model_dir: Path, pack: str, threads: int, images: list[DecodedImage], repeats: int) -> None:
    runtime = RuntimeOptions(intra_op_threads=threads, warmup=False)
    det_inputs = [
        detection_input(im.pixels, network_size(im.pixels.shape[0], im.pixels.shape[1], 736))[None] for im in images
    ]
    detector = PPOCRTextDetector(pack, model_dir, runtime)
    rec_inputs = []
    for im, boxes in zip(images, detector.run_chunk(images, {}, {}), strict=True):
        crops = crops_for(im.pixels, [np.asarray(b.quad) for b in boxes], im.scale)
        if crops:
            width = max(text_recognition.MIN_INPUT_WIDTH, *(resized_width(*c.shape[:2]) for c in crops))
            rec_inputs.append(np.stack([recognition_input(c, width) for c in crops]))
    print("\n## subnormal flush (session.set_denormal_as_zero): same outputs? time over all images")
    print(f"{'model':12s} {'max |diff|':>10s} {'plain ms':>9s} {'flushed ms':>10s} {'speed-up':>8s}")
    for kind, inputs in (("detection", det_inputs), ("recognition", rec_inputs)):
        path = model_dir / "ocr" / pack / kind / "model.onnx"
        plain, flushed = onnxruntime_session(path, runtime, False), onnxruntime_session(path, runtime, True)
        name = plain.get_inputs()[0].name
        diff = max(float(np.abs(plain.run(None, {name: x})[0] - flushed.run(None, {name: x})[0]).max()) for x in inputs)
        t_plain = best_time(repeats, lambda: [plain.run(None, {name: x}) for x in inputs])  # noqa: B023
        t_flush = best_time(repeats, lambda: [flushed.run(None, {name: x}) for x in inputs])  # noqa: B023
        print(f"{kind:12s} {diff:10.3g} {1e3 * t_plain:9.0f} {1e3 * t_flush:10.0f} {t_plain / t_flush:7.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = Path(os.environ.get("ASSETQ_MODEL_DIR", Path.home() / ".cache" / "assetq" / "models"))
    parser.add_argument("--model-dir", type=Path, default=default_dir)
    parser.add_argument("--pack", default="PP-OCRv6_small")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    images = bench_images()
    det = PPOCRTextDetector(args.pack, args.model_dir, RuntimeOptions(intra_op_threads=args.threads))
    rec = PPOCRTextRecognizer(args.pack, args.model_dir, RuntimeOptions(intra_op_threads=args.threads))
    boxes = det.run_chunk(images, {}, {})
    print(f"# {args.pack}, {args.threads} threads, onnxruntime CPU, best of {args.repeats}")
    recognition_table(rec, images, boxes, args.repeats)
    detection_table(args.model_dir, args.pack, args.threads, images, args.repeats)
    denormal_table(args.model_dir, args.pack, args.threads, images, args.repeats)


if __name__ == "__main__":
    main()
