"""``python -m cli``: the same as the ``assetq`` console script."""

from cli.main import entry

entry()
