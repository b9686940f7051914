"""assetq's benchmark harness: ``python -m benchmarks`` (``make bench``); see ``benchmarks/__main__.py``."""
