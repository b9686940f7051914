"""``assetq serve`` is a producer: importing it loads no worker code and no onnxruntime."""

from __future__ import annotations

import subprocess
import sys

from tools.testbed.services import REPO


def test_the_server_imports_no_worker_code_nor_onnxruntime() -> None:
    code = (
        "import sys, cli.serve, producer.api.app, producer.api.server; "
        "print([m for m in sys.modules if m == 'onnxruntime' or m == 'worker' or m.startswith('worker.')])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
