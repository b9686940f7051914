"""assetq producer: job specs, the ``Producer`` API and the ``assetq`` CLI.

Imports no worker code and no onnxruntime: tasks are sent by name.
"""

from producer.client import Producer
from producer.spec import JobSpec, SpecError, parse_spec

__all__ = ["JobSpec", "Producer", "SpecError", "parse_spec"]
