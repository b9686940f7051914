"""`assetq classify --eval` on held-out images of the tiny CLIP's world, in-process and through a worker."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tools.synthetic_world import HELD_OUT_SEED, SHAPES, write_folders
from tools.testbed.services import RedisServer, WorkerProcess

REPO = Path(__file__).resolve().parents[1]
CLASSES = REPO / "docs" / "examples" / "shape-classes.json"


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    write_folders(root, HELD_OUT_SEED + 11, per_combination=1)  # 8 shapes x 8 colours = 64 images
    return root


def classify(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "classify", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def csv_accuracy(path: Path) -> float:
    rows = list(csv.DictReader(path.open()))
    return sum(r["predicted"] == r["true"] for r in rows) / len(rows)


def test_eval_reports_accuracy_confusion_matrix_and_plot(eval_dir: Path, model_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "ASSETQ_MODEL_DIR": str(model_dir)}
    out = tmp_path / "out"
    proc = classify([str(eval_dir), "--classes", str(CLASSES), "--eval", "--out", str(out)], env)
    assert proc.returncode == 0, proc.stderr
    printed = float(re.search(r"accuracy: ([0-9.]+) \((\d+)/64\)", proc.stdout).group(1))  # type: ignore[union-attr]
    assert printed >= 0.9
    assert printed == pytest.approx(csv_accuracy(out / "predictions.csv"), abs=1e-4)
    assert "confusion matrix" in proc.stdout and all(s in proc.stdout for s in SHAPES)
    assert (out / "confusion_matrix.png").stat().st_size > 1000
    assert (out / "report.csv").read_text().startswith("class,precision,recall")


@pytest.mark.integration
def test_classify_through_redis_and_a_worker(
    eval_dir: Path, model_dir: Path, tmp_path: Path, redis_server: RedisServer
) -> None:
    env = {
        **os.environ,
        "ASSETQ_MODEL_DIR": str(model_dir),
        "ASSETQ_REDIS_URL": redis_server.url,
        "ASSETQ_ALLOWED_ROOTS": json.dumps([str(eval_dir)]),
        "ASSETQ_CHUNK_SIZE": "16",
    }
    worker = WorkerProcess(env=env).start()
    try:
        out = tmp_path / "out"
        proc = classify(
            [str(eval_dir), "--classes", str(CLASSES), "--eval", "--submit", "--timeout", "240", "--out", str(out)], env
        )
        assert proc.returncode == 0, proc.stderr + worker.tail()
        assert "accuracy: " in proc.stdout and csv_accuracy(out / "predictions.csv") >= 0.9
    finally:
        worker.stop()
