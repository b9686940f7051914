"""assetq worker: the pipeline core, the model layer, sinks and the Celery adapters."""
