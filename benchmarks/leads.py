"""Section "leads": the known leads, verified on real photos: JPEG draft decode sizes, the subnormal flush.

Each lead is timed against its baseline in the same run: a 12 MP JPEG decoded
at full size vs draft-scaled to the sizes the job needs, and the text detector
with and without ``session.set_denormal_as_zero`` (outputs compared too).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from benchmarks.common import Run, State, median_time, table


def section(run: Run, state: State) -> None:
    import onnxruntime as ort

    from worker.models.text_detection import detection_input, network_size
    from worker.pipeline.image import decode_image

    all_photos = state.all_photos
    big = next(p for p in all_photos if p.stem.endswith("12mp"))
    data = big.read_bytes()
    rows = []
    for side, label in ((0, "full size"), (1440, "draft, short side >= 1440 (full job)"), (736, "draft, >= 736")):
        t = median_time(partial(decode_image, data, 50_000_000, side), repeats=3, warmup=0)
        img = decode_image(data, 50_000_000, side)
        rows.append([f"decode {big.name}: {label}", f"{img.pixels.shape[1]}x{img.pixels.shape[0]}", t * 1000])
    run.say("\n## Known leads, verified\n")
    run.say(table(["what", "size", "ms"], rows))

    rows = []
    for pack in ("PP-OCRv6_small", "PP-OCRv5_mobile"):
        path = run.env.source_model_dir / "ocr" / pack / "detection" / "model.onnx"
        if not path.is_file():
            continue
        sessions = {}
        for flush in (False, True):
            so = ort.SessionOptions()
            so.log_severity_level = 3  # shape-merge warnings of this graph are harmless
            if run.intra_op_threads:
                so.intra_op_num_threads = run.intra_op_threads
            if flush:
                so.add_session_config_entry("session.set_denormal_as_zero", "1")
            sessions[flush] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        for photo in all_photos[:3]:
            pixels = decode_image(photo.read_bytes(), 50_000_000, 736).pixels
            height, width = pixels.shape[:2]
            x = detection_input(pixels, network_size(height, width, 736))[None]
            feed = {sessions[False].get_inputs()[0].name: x}
            outs = {f: s.run(None, feed)[0] for f, s in sessions.items()}
            times = {f: median_time(partial(s.run, None, feed), repeats=3) for f, s in sessions.items()}
            diff = float(np.abs(outs[True] - outs[False]).max())
            rows.append(
                [
                    f"{pack} det, {photo.stem} {x.shape[2]}x{x.shape[3]}",
                    times[False] * 1000,
                    times[True] * 1000,
                    f"{times[False] / times[True]:.2f}x",
                    f"{diff:.1e}",
                ]
            )
    run.say(
        "\n" + table(["text detection on a real photo", "ms", "ms, subnormals flushed", "speed-up", "max |diff|"], rows)
    )
