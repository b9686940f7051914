"""Every Redis key assetq uses, in one place (the queues themselves are kombu's lists, named after the queue).

All keys start with ``assetq:``. Batch state (expiring after ``result_ttl_s``):

* ``batch:<id>``           hash: ``total``, ``created_at``, ``tasks``, ``output``,
                           counters ``ok``/``skipped``/``failed``
* ``batch:<id>:assets``    hash: asset id -> asset ref JSON (for replay of skipped assets)
* ``batch:<id>:status``    hash: asset id -> ``ok`` | ``skipped`` | ``failed``
* ``batch:<id>:results``   hash: asset id -> result JSON (the one truth for the asset, see ``BatchStore.stage``)
* ``batch:<id>:staged``    hash: asset id -> the result JSON chosen for it, while its external copies are written
* ``batch:<id>:attempts``  hash: asset id -> deliveries that started it (worker side)
* ``batch:<id>:processed`` hash: asset id -> times a worker finished processing it
* ``deadletter:<id>``      hash: entry id -> dead-letter JSON (chunk payload, error, attempts, timestamps)
* ``chunk:<id>``           hash: ``deliveries`` not finished yet, ``first_failed_at``
* ``batches``, ``deadletters``  sorted sets of batch ids by time
* ``results`` stream       one entry per asset whose status changed: ``batch``, ``asset``, ``status``

Delivery (``contract/broker.py``, ``worker/leases.py``):

* ``wake:<queue>``         list of wake-up tokens: pushed with every message, blocked on by idle workers
* ``consumers``            sorted set: consumer id -> its last heartbeat (Redis server time)
* ``consumers:meta``       hash: consumer id -> JSON (host, pid, process start, queues, since)
* ``held:<consumer id>``   hash: fetch id -> ``<source list>\\n<message>``, every message that consumer holds

Fleet and counters: ``worker:<node>`` (advertised models, with a TTL), ``metrics`` (hash of counters),
``fault:*`` (used only by the fault-injection tests).
"""

from __future__ import annotations

PREFIX = "assetq:"

CONSUMERS = PREFIX + "consumers"
CONSUMERS_META = PREFIX + "consumers:meta"
HELD_PREFIX = PREFIX + "held:"
WAKE_PREFIX = PREFIX + "wake:"
METRICS = PREFIX + "metrics"


def key(*parts: str) -> str:
    return PREFIX + ":".join(parts)


def held_key(consumer_id: str) -> str:
    return HELD_PREFIX + consumer_id


def wake_key(queue: str) -> str:
    return WAKE_PREFIX + queue
