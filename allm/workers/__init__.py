"""Resume stored sessions in workers: the glue between a queue you run and :class:`allm.Session`.

A task carries a session id, an :class:`Operation` (continue, reply, submit tool results,
approve, reject), an engine name and a key reference, never a key or a session. A worker
loads the session from a :class:`~allm.stores.Store`, runs the operation and drives the
session until it rests, committing each model call and each tool result with an optimistic
version check (see :mod:`allm.workers._core` for the journal). Delivery is at least once;
the effect of each step is once.

- :class:`Worker`: the store, engines (``name -> Engine``), key resolver and options;
  ``run`` (sync) and ``arun`` (async) run one task.
- :mod:`allm.workers.celery` (``allm[celery]``): a Celery task.
- :mod:`allm.workers.arq` (``allm[arq]``): an arq job function.

See ``guides/workers.md``.
"""

from __future__ import annotations

from ._core import NAMESPACE, EngineFactory, KeyResolver, Worker, decode_record, encode_record
from ._values import Operation, OperationKind, Outcome, Task

__all__ = [
    "NAMESPACE",
    "EngineFactory",
    "KeyResolver",
    "Operation",
    "OperationKind",
    "Outcome",
    "Task",
    "Worker",
    "decode_record",
    "encode_record",
]
