"""GPU pinning and provider choice (no GPU here: the logic is tested, not the device)."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.devices import parse_device, parse_devices, placement
from worker.launch import celery_argv
from worker.models.base import RuntimeOptions, choose_providers, onnxruntime_session

CUDA_AND_CPU = ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_gpu_worker_sees_only_its_device_and_consumes_the_gpu_queue() -> None:
    p = placement("1", "assetq", "gpu", host="h")
    assert p.env["CUDA_VISIBLE_DEVICES"] == "1"
    assert p.env["ASSETQ_DEVICE"] == "0"  # inside the process the pinned GPU is device 0
    assert p.queues == ["gpu", "assetq"]
    assert p.node_name == "gpu1@h"


def test_cpu_worker_hides_all_gpus() -> None:
    p = placement("cpu", "assetq", "gpu", host="h")
    assert p.env["CUDA_VISIBLE_DEVICES"] == ""
    assert p.queues == ["assetq"] and p.node_name == "cpu@h"


def test_one_placement_per_device() -> None:
    nodes = {placement(d, "assetq", "gpu", host="h").env["CUDA_VISIBLE_DEVICES"] for d in parse_devices("0,1,3")}
    assert nodes == {"0", "1", "3"}


@pytest.mark.parametrize("bad", ["gpu", "-1", "1.5", ""])
def test_bad_device_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_device(bad)


def test_duplicate_devices_rejected() -> None:
    with pytest.raises(ValueError, match="twice"):
        parse_devices("0,0")


def test_cuda_first_with_bounded_arena_then_cpu() -> None:
    opts = RuntimeOptions(device="0", gpu_mem_limit_mb=2048, cuda_arena_extend_strategy="kSameAsRequested")
    providers = choose_providers("0", CUDA_AND_CPU, opts)
    name, cfg = providers[0]
    assert name == "CUDAExecutionProvider"
    assert cfg["device_id"] == 0 and cfg["gpu_mem_limit"] == 2048 * 1024 * 1024
    assert cfg["arena_extend_strategy"] == "kSameAsRequested"
    assert providers[-1] == "CPUExecutionProvider"


def test_cuda_requested_but_missing_falls_back_to_cpu_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert choose_providers("0", ["CPUExecutionProvider"], RuntimeOptions(device="0")) == ["CPUExecutionProvider"]
    assert "not available" in caplog.text


def test_cpu_device_never_uses_cuda() -> None:
    assert choose_providers("cpu", CUDA_AND_CPU, RuntimeOptions()) == ["CPUExecutionProvider"]


def test_celery_argv_names_queues_and_node() -> None:
    argv = celery_argv(["gpu", "assetq"], "gpu0@h", 2, "prefork", "INFO", [])
    assert argv[argv.index("-Q") + 1] == "gpu,assetq"
    assert argv[argv.index("-n") + 1] == "gpu0@h"


def test_real_session_options(model_dir: Path) -> None:
    # No per-shape memory patterns (they grow with every new text-line or canvas shape);
    # threads as configured; subnormals flushed only where the model allows it.
    path = model_dir / "facial-recognition" / "buffalo_s" / "detection" / "model.onnx"
    session = onnxruntime_session(path, RuntimeOptions(intra_op_threads=1), flush_denormals=True)
    options = session.get_session_options()  # type: ignore[attr-defined]
    assert options.enable_mem_pattern is False
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.set_denormal_as_zero") == "1"
    plain = onnxruntime_session(path, RuntimeOptions(), flush_denormals=False).get_session_options()  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="does not have configuration"):
        plain.get_session_config_entry("session.set_denormal_as_zero")
