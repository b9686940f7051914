"""The pipeline core: decode once, run the model graph over a chunk, build results.

Plain Python: nothing here imports Celery, so the same code serves the Celery
task, ``assetq run``, the benchmarks and the tests.
"""
