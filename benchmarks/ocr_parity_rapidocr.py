"""Parity of assetq's OCR steps with RapidOCR's own pipeline on the same PP-OCRv6 small files.

RapidOCR is not an assetq dependency; run this from a separate virtual env that
has it (the script installs nothing):

    python3.11 -m venv /tmp/rapidocr-venv
    /tmp/rapidocr-venv/bin/pip install rapidocr==3.10.0 onnxruntime==1.31.1 scikit-image==0.26.0
    /tmp/rapidocr-venv/bin/python benchmarks/ocr_parity_rapidocr.py [--model-dir ~/.cache/assetq/models]

``rapidocr==3.10.0`` bundles ``PP-OCRv6_det_small.onnx`` / ``PP-OCRv6_rec_small.onnx``,
byte-identical to assetq's ``PP-OCRv6_small`` pack (checked below). Two RapidOCR
configurations are compared: "matched" (its detector set to assetq's
preprocessing: long side at most 736, ImageNet mean/std) isolates the
implementation; "default" is RapidOCR out of the box (short side raised to 736,
mean/std 0.5). Orientation classification is off in both.

Per image set it prints: boxes found by each, boxes matched (polygon IoU >= 0.5),
mean IoU and largest corner distance of matched boxes, and for matched lines the
share with identical text and the character agreement (1 - edit distance / length).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.testbed import ocr_data  # noqa: E402
from worker.models.base import RuntimeOptions  # noqa: E402
from worker.models.text_detection import PPOCRTextDetector  # noqa: E402
from worker.models.text_recognition import PPOCRTextRecognizer  # noqa: E402
from worker.pipeline.image import DecodedImage  # noqa: E402

PACK = "PP-OCRv6_small"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
MATCH_IOU = 0.5

Read = tuple[np.ndarray, str]  # (quad, text)


def polygon_iou(a: np.ndarray, b: np.ndarray) -> float:
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    inter, _ = cv2.intersectConvexConvex(a32, b32)
    union = cv2.contourArea(a32) + cv2.contourArea(b32) - inter
    return float(inter / union) if union > 0 else 0.0


def image_sets() -> dict[str, list[np.ndarray]]:
    fonts = ocr_data.available_fonts()
    return {
        "eurotext (scan)": [ocr_data.eurotext()],
        "page (photo)": [ocr_data.page()],
        "rendered": [ocr_data.render_case(c, fonts).pixels for c in ocr_data.render_cases(fonts)],
        # Camera-sized: the detector input is shrunk from 1600 px (assetq: INTER_AREA, RapidOCR: bilinear).
        "photo 1600px": [
            ocr_data.on_photo(ocr_data.render_lines(ocr_data.SENTENCES[k : k + 3], fonts[font], 44, angle=a)).pixels
            for k, font, a in ((0, ocr_data.DEFAULT_FONT, -2.0), (6, ocr_data.DEFAULT_FONT, 3.0))
        ],
    }


def assetq_reads(model_dir: Path, images: list[np.ndarray]) -> list[list[Read]]:
    runtime = RuntimeOptions(warmup=False)
    detector = PPOCRTextDetector(PACK, model_dir, runtime)
    recognizer = PPOCRTextRecognizer(PACK, model_dir, runtime)
    decoded = [DecodedImage.from_array(px) for px in images]
    boxes = detector.run_chunk(decoded, {}, {})
    lines = recognizer.run_chunk(decoded, {("ocr", "detection"): boxes}, {"minScore": 0.0})
    return [[(np.array(line.quad), line.text) for line in per_image] for per_image in lines]


def rapidocr_reads(engine: Any, images: list[np.ndarray]) -> list[list[Read]]:
    out: list[list[Read]] = []
    for px in images:
        result = engine(np.ascontiguousarray(px[:, :, ::-1]))  # RapidOCR takes arrays as BGR
        boxes = getattr(result, "boxes", None)
        txts = getattr(result, "txts", None)
        if boxes is None or txts is None:
            out.append([])
            continue
        out.append([(np.asarray(b, dtype=np.float64), t) for b, t in zip(boxes, txts, strict=True)])
    return out


def compare(ours: list[list[Read]], theirs: list[list[Read]]) -> dict[str, float]:
    n_ours = n_theirs = matched = same_text = 0
    ious: list[float] = []
    corner = 0.0
    char_errors = char_total = 0
    for mine, ref in zip(ours, theirs, strict=True):
        n_ours += len(mine)
        n_theirs += len(ref)
        used: set[int] = set()
        for quad, text in ref:
            scores = [(polygon_iou(quad, q), j) for j, (q, _) in enumerate(mine) if j not in used]
            if not scores:
                continue
            iou, j = max(scores)
            if iou < MATCH_IOU:
                continue
            used.add(j)
            matched += 1
            ious.append(iou)
            corner = max(corner, float(np.abs(mine[j][0] - quad).max()))
            same_text += mine[j][1] == text
            char_errors += ocr_data.edit_distance(text, mine[j][1])
            char_total += max(1, len(text))
    return {
        "ours": n_ours,
        "rapidocr": n_theirs,
        "matched": matched,
        "mean_iou": float(np.mean(ious)) if ious else 0.0,
        "max_corner_px": corner,
        "same_text": same_text / matched if matched else 0.0,
        "char_agreement": 1 - char_errors / char_total if char_total else 0.0,
    }


def check_same_files(model_dir: Path) -> None:
    import rapidocr

    bundled = Path(rapidocr.__file__).parent / "models"
    for kind, name in (("detection", "PP-OCRv6_det_small.onnx"), ("recognition", "PP-OCRv6_rec_small.onnx")):
        ours = hashlib.sha256((model_dir / "ocr" / PACK / kind / "model.onnx").read_bytes()).hexdigest()
        theirs = hashlib.sha256((bundled / name).read_bytes()).hexdigest()
        print(f"{kind:12s} assetq {ours[:12]}  rapidocr {theirs[:12]}  {'same' if ours == theirs else 'DIFFERENT'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = Path(os.environ.get("ASSETQ_MODEL_DIR", Path.home() / ".cache" / "assetq" / "models"))
    parser.add_argument("--model-dir", type=Path, default=default_dir)
    args = parser.parse_args()

    from rapidocr import RapidOCR

    check_same_files(args.model_dir)
    common = {"Global.use_cls": False, "Global.text_score": 0.0, "Global.log_level": "warning"}
    engines = {
        "matched": RapidOCR(
            params={
                **common,
                "Det.limit_type": "max",
                "Det.limit_side_len": 736,
                "Det.mean": IMAGENET_MEAN,
                "Det.std": IMAGENET_STD,
            }
        ),
        "default": RapidOCR(params=common),
    }
    print(
        f"\n{'images':16s} {'rapidocr cfg':12s} {'ours':>5s} {'theirs':>6s} {'matched':>7s} {'mean IoU':>8s} "
        f"{'max corner px':>13s} {'same text':>9s} {'char agree':>10s}"
    )
    for set_name, images in image_sets().items():
        ours = assetq_reads(args.model_dir, images)
        for cfg_name, engine in engines.items():
            r = compare(ours, rapidocr_reads(engine, images))
            print(
                f"{set_name:16s} {cfg_name:12s} {r['ours']:5d} {r['rapidocr']:6d} {r['matched']:7d} "
                f"{r['mean_iou']:8.3f} {r['max_corner_px']:13.1f} {r['same_text']:9.1%} {r['char_agreement']:10.2%}"
            )


if __name__ == "__main__":
    main()
