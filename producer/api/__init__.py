"""``assetq serve``: an HTTP API for any server, and a drop-in machine-learning endpoint for Immich.

* ``app``          the FastAPI application (``create_app``) and its OpenAPI schema
* ``batches``      ``/v1``: submit a job spec, follow the batch, stream its results, replay failures
* ``predict``      ``/ping`` and ``/predict``, Immich's contract; ``immich`` shapes its requests and answers
* ``interactive``  ``/predict`` images as interactive chunks, batched across requests, and waiting for results
* ``clip_text``    the CLIP text towers kept warm here (the one place this package loads a model)
* ``ui``           ``/ui``, the operator page (``ui_pages`` renders it)
* ``auth``, ``limits``  bearer tokens; body size and slow-client limits
* ``server``       running it under uvicorn

A producer: it imports no worker code and no onnxruntime, except lazily in ``clip_text``.
"""
