"""Celery tasks: thin adapters over the pipeline core."""
