"""Do the fast paths compute the same thing? Naive outputs against assetq's results, image by image.

assetq decodes JPEGs smaller (DCT scaling), batches, and flushes subnormals
where verified, so results are close rather than bit-identical; this prints
how close, so a speed-up can never come from doing less work unnoticed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

FACE_DET = ("facial-recognition", "detection")
FACE_REC = ("facial-recognition", "recognition")
TEXT_REC = ("ocr", "recognition")
CLIP_VIS = ("clip", "visual")


@dataclass
class Agreement:
    images: int
    faces_naive: int
    faces_fast: int
    face_cosine: float  # mean cosine of matched face embeddings (nan: no faces)
    face_cosine_min: float  # the least of them
    lines_naive: int
    lines_matched: int  # naive text lines read identically by the fast path
    clip_cosine: float  # mean cosine of CLIP embeddings (nan: no CLIP)

    def summary(self) -> str:
        parts = [f"faces {self.faces_fast}/{self.faces_naive}"]
        if self.faces_naive:
            parts.append(f"face-embedding cosine {self.face_cosine:.3f}")
        if self.lines_naive:
            parts.append(f"text lines identical {self.lines_matched}/{self.lines_naive}")
        if not np.isnan(self.clip_cosine):
            parts.append(f"CLIP cosine {self.clip_cosine:.4f}")
        return ", ".join(parts)


def compare(naive: Sequence[Mapping[tuple[str, str], Any]], fast: Sequence[Mapping[str, Any]]) -> Agreement:
    """``naive[i]``: step outputs of image i; ``fast[i]``: assetq's result document for the same image."""
    faces_n = faces_f = lines_n = lines_m = 0
    face_cos: list[float] = []
    clip_cos: list[float] = []
    for out, res in zip(naive, fast, strict=True):
        naive_faces = out.get(FACE_DET, [])
        fast_faces = res.get("faces", [])
        faces_n += len(naive_faces)
        faces_f += len(fast_faces)
        if FACE_REC in out and fast_faces:
            centres = np.array([[(f["box"][0] + f["box"][2]) / 2, (f["box"][1] + f["box"][3]) / 2] for f in fast_faces])
            for face, vec in zip(naive_faces, out[FACE_REC], strict=True):
                c = np.array([(face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2])
                j = int(np.argmin(np.linalg.norm(centres - c, axis=1)))
                face_cos.append(float(np.dot(vec, np.asarray(fast_faces[j]["embedding"], dtype=np.float32))))
        if TEXT_REC in out:
            fast_texts = [line["text"] for line in res.get("ocr", [])]
            for line in out[TEXT_REC]:
                lines_n += 1
                if line.text in fast_texts:
                    fast_texts.remove(line.text)
                    lines_m += 1
        if CLIP_VIS in out and "clip" in res:
            clip_cos.append(float(np.dot(out[CLIP_VIS], np.asarray(res["clip"]["embedding"], dtype=np.float32))))
    return Agreement(
        len(naive),
        faces_n,
        faces_f,
        float(np.mean(face_cos)) if face_cos else float("nan"),
        float(np.min(face_cos)) if face_cos else float("nan"),
        lines_n,
        lines_m,
        float(np.mean(clip_cos)) if clip_cos else float("nan"),
    )
