"""The ``assetq`` command line: the application layer above the producer and the worker.

``main.py`` builds the parser from the command modules, each of which adds its own subcommands:
``batches.py`` (submit, status, results, failures, replay, validate), ``local.py`` (run, classify),
``ops.py`` (worker, flower, metrics, models) and ``serve.py`` (the HTTP API, ``producer/api``).
Producer-side commands import no worker code; the others load the worker side lazily, only when called.
"""
