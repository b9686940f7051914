"""Folders expand to image files by extension; sidecars are left out and counted; named files are kept."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import Settings
from producer.assets import NO_EXTENSION, collect_assets, walk
from tests.conftest import REPO, SAMPLES


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """A Takeout-like folder: photos with a .json sidecar each, notes, hidden bookkeeping."""
    root = tmp_path / "library"
    (root / "2024").mkdir(parents=True)
    (root / ".thumbnails").mkdir()
    for name in ("IMG_0001.JPG", "2024/IMG_0002.jpeg", "2024/scan.Png", ".thumbnails/IMG_0001.jpg", "._IMG_0001.JPG"):
        (root / name).write_bytes(b"bytes")
    for name in ("IMG_0001.JPG.json", "2024/IMG_0002.jpeg.json", "notes.txt", "2024/README", ".DS_Store"):
        (root / name).write_text("{}")
    return root


def test_a_folder_expands_to_its_image_files_case_insensitively(library: Path) -> None:
    found = walk([library])
    assert [f.relative_to(library).as_posix() for _, f in found.files] == [
        "2024/IMG_0002.jpeg",
        "2024/scan.Png",
        "IMG_0001.JPG",
    ]
    # Hidden files and folders are skipped without being counted: they are not part of the library.
    assert found.left_out == {".json": 2, ".txt": 1, NO_EXTENSION: 1}
    assert found.left_out_note() == "4 files left out (not images by extension: .json 2, (no extension) 1, .txt 1)"


def test_a_file_named_explicitly_is_taken_whatever_its_extension(library: Path) -> None:
    sidecar = library / "IMG_0001.JPG.json"
    collected = collect_assets([sidecar, library / "notes.txt"])
    assert [a["id"] for a in collected.assets] == ["IMG_0001.JPG.json", "notes.txt"]
    assert collected.files["notes.txt"] == library / "notes.txt"
    assert collected.found.left_out_note() == ""


def test_the_extension_list_is_a_setting(library: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSETQ_IMAGE_EXTENSIONS", '["JSON", "txt"]')
    settings = Settings(_env_file=None)
    assert settings.image_extensions == [".json", ".txt"]
    found = walk([library], settings.image_extensions)
    assert sorted(f.name for _, f in found.files) == ["IMG_0001.JPG.json", "IMG_0002.jpeg.json", "notes.txt"]
    assert found.left_out == {".jpg": 1, ".jpeg": 1, ".png": 1, NO_EXTENSION: 1}


def test_default_extensions_are_the_decoders_formats() -> None:
    defaults = Settings(_env_file=None).image_extensions
    assert {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"} <= set(defaults)
    assert ".heic" not in defaults  # Pillow opens no HEIF here: such files are counted as left out


def test_assetq_run_counts_the_sidecars_it_left_out(model_dir: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(SAMPLES / "astronaut.jpg", photos / "astronaut.jpg")
    (photos / "astronaut.jpg.json").write_text(json.dumps({"title": "astronaut.jpg", "photoTakenTime": {}}))
    (photos / "album.txt").write_text("holiday\n")
    # Named on its own, a PNG called .json is still read: the decoder goes by content.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(SAMPLES / "sign.png", elsewhere / "sign.json")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"tasks": {"clip": {"visual": {"modelName": "tiny-vit-shapes"}}}}))
    out = tmp_path / "out"
    args = ["run", str(photos), str(elsewhere / "sign.json"), "--out", str(out), "--spec", str(spec)]
    proc = subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=REPO,
        env={**os.environ, "ASSETQ_MODEL_DIR": str(model_dir), "ASSETQ_INTRA_OP_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    summary_line = proc.stdout.splitlines()[0]
    assert summary_line.startswith("total 2  ok 2  skipped 0  failed 0  wall "), proc.stdout
    assert summary_line.endswith("  2 files left out (not images by extension: .json 1, .txt 1)"), proc.stdout
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["asset_id"] for r in results) == ["astronaut.jpg", "sign.json"]
    assert all(r["status"] == "ok" for r in results)


def test_assetq_run_on_a_folder_of_sidecars_only_says_what_it_left_out(model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("{}")
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "run", str(tmp_path), "--out", str(tmp_path / "out")],
        cwd=REPO,
        env={**os.environ, "ASSETQ_MODEL_DIR": str(model_dir)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "error: no files found; 1 file left out (not images by extension: .json 1)" in proc.stderr


@pytest.mark.parametrize(("env", "warmed"), [({}, False), ({"ASSETQ_WARMUP": "true"}, True)])
def test_assetq_run_skips_the_dummy_batches_unless_warmup_is_set(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], warmed: bool
) -> None:
    from cli.main import main
    from worker.models.base import InferenceModel

    seen: list[bool] = []
    load = InferenceModel.load

    def recorded(self: InferenceModel) -> None:
        if not self.loaded:
            seen.append(self.runtime.warmup)  # what load() decides by, for every model the run loads
        load(self)

    monkeypatch.setattr(InferenceModel, "load", recorded)
    monkeypatch.setenv("ASSETQ_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("ASSETQ_INTRA_OP_THREADS", "1")
    monkeypatch.delenv("ASSETQ_WARMUP", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spec = tmp_path / "spec.json"
    faces = {"detection": {"modelName": "buffalo_s"}, "recognition": {"modelName": "buffalo_s"}}
    spec.write_text(json.dumps({"tasks": {"facial-recognition": faces}}))
    out = tmp_path / "out"
    assert main(["run", str(SAMPLES / "astronaut.jpg"), "--out", str(out), "--spec", str(spec)]) == 0
    assert seen == [warmed, warmed]  # the detector and the recogniser
    (result,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert result["status"] == "ok" and len(result["faces"]) == 1
