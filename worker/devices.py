"""GPU pinning: which device a worker sees, what it consumes, what it is called."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerPlacement:
    device: str  # "cpu" or the physical GPU index, e.g. "1"
    env: dict[str, str]  # environment overrides for the worker process
    queues: list[str]
    node_name: str


def parse_device(value: str) -> str:
    value = value.strip().lower()
    if value == "cpu":
        return "cpu"
    if value.isdigit():
        return str(int(value))
    raise ValueError(f"--device takes 'cpu' or a GPU index, not {value!r}")


def parse_devices(value: str) -> list[str]:
    devices = [parse_device(v) for v in value.split(",") if v.strip()]
    if not devices:
        raise ValueError("--devices needs at least one device")
    if len(set(devices)) != len(devices):
        raise ValueError(f"--devices lists a device twice: {value}")
    return devices


def placement(device: str, queue: str, gpu_queue: str, host: str | None = None) -> WorkerPlacement:
    """Where a worker for ``device`` runs.

    A GPU worker sees only its GPU (``CUDA_VISIBLE_DEVICES=N``; inside the
    process it is device 0), consumes the GPU queue as well as the shared one,
    and its node name says which device it drives (``gpu1@host``), so Flower
    shows one line per device.
    """
    host = host or socket.gethostname()
    if device == "cpu":
        # Hide every GPU so a CPU worker never grabs one by accident.
        return WorkerPlacement("cpu", {"CUDA_VISIBLE_DEVICES": "", "ASSETQ_DEVICE": "cpu"}, [queue], f"cpu@{host}")
    env = {"CUDA_VISIBLE_DEVICES": device, "ASSETQ_DEVICE": "0", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    return WorkerPlacement(device, env, [gpu_queue, queue], f"gpu{device}@{host}")


def apply(place: WorkerPlacement) -> None:
    """Pin the current process (before onnxruntime is imported)."""
    os.environ.update(place.env)
