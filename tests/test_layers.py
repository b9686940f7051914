"""The layers the README describes, checked in fresh interpreters: what each part may import.

* the core (``worker/pipeline``, ``worker/models``) imports no Celery, kombu or Redis client;
* ``contract`` imports neither side (no ``producer``, no ``worker``);
* the producer imports no worker code and no onnxruntime;
* importing a package's ``__init__`` costs nothing heavy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def modules_of(package: str) -> list[str]:
    root = REPO / package.replace(".", "/")
    return sorted(
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__") for p in root.rglob("*.py")
    )


def loaded_after(imports: list[str]) -> set[str]:
    """Top-level packages in sys.modules after importing ``imports`` in a fresh interpreter."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {imports!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("package", ["worker.pipeline", "worker.models"])
def test_the_core_imports_no_celery_kombu_or_redis(package: str) -> None:
    loaded = loaded_after(modules_of(package))
    assert not loaded & {"celery", "kombu", "redis", "billiard"}, sorted(loaded & {"celery", "kombu", "redis"})


def test_the_contract_imports_neither_side() -> None:
    loaded = loaded_after(modules_of("contract"))
    assert not loaded & {"producer", "worker", "cli", "onnxruntime"}, sorted(loaded & {"producer", "worker"})


def test_the_producer_imports_no_worker_code_and_no_onnxruntime() -> None:
    loaded = loaded_after(["producer", "producer.client"])
    assert not loaded & {"worker", "onnxruntime", "cv2"}, sorted(loaded & {"worker", "onnxruntime", "cv2"})


@pytest.mark.parametrize("package", ["contract", "producer", "config"])
def test_package_inits_import_nothing_heavy(package: str) -> None:
    loaded = loaded_after([package])
    assert not loaded & {"celery", "kombu", "redis", "onnxruntime", "numpy", "cv2"}, package


def test_a_local_run_imports_no_broker_client() -> None:
    # `assetq run` over a folder needs no Redis: its start-up does not pay for the clients' imports.
    loaded = loaded_after(["cli.local", "worker.local", "worker.runtime"])
    assert not loaded & {"celery", "kombu", "redis", "boto3"}, sorted(loaded & {"celery", "kombu", "redis", "boto3"})


def test_a_workers_main_process_loads_no_inference_libraries() -> None:
    # The prefork main process only consumes and dispatches; the pool processes load these themselves.
    loaded = loaded_after(["worker.app", "worker.tasks.process", "worker.tasks.deadletter", "worker.tasks.refused"])
    heavy = {"numpy", "PIL", "onnxruntime", "cv2", "boto3"}
    assert not loaded & heavy, sorted(loaded & heavy)


def test_a_submit_to_redis_imports_no_celery_or_kombu() -> None:
    # `assetq submit` to the store's Redis goes out in one script: Celery and kombu stay unimported
    # (a fifth and a seventh of its start-up); a RabbitMQ or other broker imports them when it sends.
    loaded = loaded_after(["cli.batches", "producer.client", "contract.broker", "contract.submit"])
    assert not loaded & {"celery", "kombu"}, sorted(loaded & {"celery", "kombu"})


def test_a_one_process_run_loads_no_pool_no_progress_bar_and_only_the_photo_plugins(tmp_path: Path) -> None:
    # A real `assetq run --concurrency 1` over one sample, standard error a pipe (as under a server,
    # cron or a log): it reaches its results without multiprocessing (a pool's), tqdm (a terminal's
    # bar) or Pillow's other ~40 plugins (Image.init(): PDF, ICNS, DDS ...): start-up it had paid
    # for nothing.
    code = (
        "import json, sys\n"
        "from cli.main import main\n"
        f"rc = main(['run', {str(REPO / 'samples' / 'chelsea.jpg')!r}, '--out', {str(tmp_path)!r},"
        " '--concurrency', '1'])\n"
        "print(json.dumps([rc, sorted(sys.modules)]))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    rc, modules = json.loads(out.stdout.strip().splitlines()[-1])
    assert rc == 0 and (tmp_path / "results.jsonl").is_file()
    assert "tqdm" not in modules and "multiprocessing" not in modules
    plugins = {m for m in modules if m.startswith("PIL.") and m.endswith("ImagePlugin")}
    assert "PIL.JpegImagePlugin" in plugins
    # The photo formats', and PPM: Image.open's own preinit() imports it with JPEG, PNG, GIF and BMP.
    photo = {f"PIL.{n}ImagePlugin" for n in ("Jpeg", "Png", "Gif", "WebP", "Tiff", "Bmp", "Avif", "Mpo", "Ppm")}
    assert plugins <= photo, sorted(plugins - photo)
