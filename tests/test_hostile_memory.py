"""Peak memory of hostile and real decodes, measured in a fresh interpreter.

Decompression bombs (from tests/hostile.py) must be refused before any pixel
is allocated, and real decodes -- a rotated 12 MP JPEG, an RGBA PNG -- must
peak under 3.2 times their RGB array. The peak is read from Linux's
``/proc/self/status`` (VmHWM), so these tests are skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests import hostile
from tests.conftest import REPO

# VmHWM is this process's own peak RSS; getrusage's ru_maxrss would carry over the
# (larger) pytest parent's peak across fork + exec and hide the decode's.
_MEASURE = """
import json, sys
from worker.pipeline.errors import AssetError
from worker.pipeline.image import decode_image

def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

out = {}
for path in sys.argv[1:]:
    data = open(path, "rb").read()
    before = peak()
    try:
        img = decode_image(data, 50_000_000)
        result, rgb_bytes = "ok", img.pixels.nbytes
        del img
    except AssetError as e:
        result, rgb_bytes = e.kind, 0
    out[path] = [result, peak() - before, rgb_bytes]
print(json.dumps(out))
"""


def _peak_growth(paths: list[Path]) -> dict[str, list[Any]]:
    """Decode the files in turn in a fresh interpreter; how much each raised the peak RSS, in bytes.

    The peak is a high-water mark: a file only shows what it needed beyond the
    files before it, so files whose own peak matters get a process each.
    """
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


needs_proc = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from Linux's /proc")


@needs_proc
def test_bombs_are_refused_before_any_pixel_is_allocated(tmp_path: Path) -> None:
    bombs = ["png_bomb", "gif_bomb", "jpeg_bomb", "png_over_pixel_limit", "png_text_bomb"]
    paths = []
    for name in bombs:
        paths.append(tmp_path / name)
        paths[-1].write_bytes(hostile.CORPUS[name]())
    for path, (result, growth, _) in _peak_growth(paths).items():
        assert result == "too_large", path
        # 100,000 x 100,000 RGB would be 30 GB; anything past a few MB means pixels were allocated.
        assert growth < 16 << 20, (path, growth)


@needs_proc
def test_decoding_peaks_under_3_2_rgb_arrays(tmp_path: Path) -> None:
    """A rotated 12 MP JPEG and an RGBA PNG peak at about 2.7x their RGB array.

    That is Pillow's decoded image (4 bytes a pixel) and its transposed or
    blended copy, or one of them and our array. Copying out with
    ``np.asarray(image)`` and compositing with ``alpha_composite`` peaked at
    3.4x and 6.7x.
    """
    tile = hostile.noise(375, 500)
    big = np.tile(tile, (8, 8, 1))  # 4000 x 3000
    jpeg_path, rgba_path = tmp_path / "rotated.jpg", tmp_path / "alpha.png"
    jpeg_path.write_bytes(hostile.jpeg(big, quality=85, exif=hostile.exif_block(6)))
    rgba = np.dstack([big, big[:, :, 1]])
    rgba_path.write_bytes(hostile.encode(Image.fromarray(rgba), "PNG", compress_level=1))
    for path in (jpeg_path, rgba_path):
        result, growth, rgb_bytes = _peak_growth([path])[str(path)]
        assert result == "ok", path
        assert growth < 3.2 * rgb_bytes, (path, growth / rgb_bytes)
