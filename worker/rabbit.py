"""The worker's RabbitMQ transport: kombu's py-amqp transport, riding out a consumer timeout.

RabbitMQ closes a channel whose delivery stayed unacknowledged for longer than its
``consumer_timeout`` (406 PRECONDITION_FAILED), and has already put the delivery
back in its queue. Celery takes a channel error as unrecoverable and stops the
whole worker; here it counts as a lost connection instead: the worker reconnects
and goes on, the running chunk still records its results, and its redelivery finds
them recorded (``worker/tasks/process.py``). Queue declarations that disagree with
the broker (also a 406) fail before the consumer starts (``worker/app.py``), so
this cannot hide them in a reconnect loop.

Nothing else changes: RabbitMQ itself returns what a worker held the moment its
connection drops, so there are no leases here (``worker/broker.py`` is Redis's).
"""

from __future__ import annotations

from amqp.exceptions import PreconditionFailed
from kombu.transport import pyamqp

# The transport path for Celery's ``broker_transport`` setting, in workers on an amqp:// broker.
TRANSPORT = f"{__name__}:Transport"


class Transport(pyamqp.Transport):
    connection_errors = (*pyamqp.Transport.connection_errors, PreconditionFailed)
