"""`make test` runs modules side by side (pytest-xdist); those on the machine's RabbitMQ must not be.

Some of them stop that broker's app or change its consumer_timeout for everyone on it, so every
module that reaches it shares one xdist group (``tests/conftest.py``).
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import ON_THE_LOCAL_RABBITMQ

TESTS = Path(__file__).resolve().parent
# The ways a test module reaches the local broker: the RabbitMQ scene, or a vhost of its own.
USES_RABBITMQ = re.compile(r"^\s*from (tests\.rabbit_fixtures|tools\.testbed\.rabbit) import", re.MULTILINE)


def test_every_module_on_the_local_rabbitmq_is_in_its_group() -> None:
    users = {p.name for p in TESTS.glob("test_*.py") if USES_RABBITMQ.search(p.read_text())}
    assert users == ON_THE_LOCAL_RABBITMQ


def test_the_make_target_runs_the_groups() -> None:
    test_recipe = (TESTS.parent / "Makefile").read_text().split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "--dist loadgroup" in test_recipe and " -n " in test_recipe
