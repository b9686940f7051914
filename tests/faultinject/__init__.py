"""Shared pieces of the fault-injection tests: the photo set, worker settings, and the promise check.

``sitecustomize.py`` in this directory is not imported from here: it is the
fault hook a test loads into worker processes by putting this directory on
their PYTHONPATH.
"""
