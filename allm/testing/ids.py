"""Deterministic ids under test.

allm makes two kinds of random ids: a request id per model call (``Response.request_id``,
22 URL-safe characters) and a session id (``Session.id``, ``ses_`` and 16 characters).
Both take their random bytes from one source, ``allm.ids.random_bytes`` (by default
``os.urandom``; request ids then come from a generator of the process's own seeded from it).
:func:`deterministic_ids` swaps in a seeded generator, so the same test makes the same
ids run after run (same shapes as real ones, all distinct within the run).

The other ids a test sees are already deterministic: the Fake's response ids
(``fake-1``, ``fake-2``... per call) and its automatic tool-call ids (``call_1``,
``call_2``... per Fake); a replayed recording gives back the provider's recorded ids.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable, Iterator

from .. import ids

__all__ = ["deterministic_ids"]


@contextlib.contextmanager
def deterministic_ids(seed: int | str = 0) -> Iterator[Callable[[int], bytes]]:
    """Within the block, request and session ids come from ``random.Random(seed)`` (process-wide).

    Yields the byte source (``n -> n bytes``). Nested blocks restore the outer source on
    exit. Ids drawn from several threads at once are distinct but their order, and so
    which call gets which id, follows the threads' scheduling.
    """
    rng = random.Random(seed)
    lock = threading.Lock()

    def source(n: int) -> bytes:
        with lock:
            return rng.randbytes(n)

    previous = ids.random_bytes
    ids.random_bytes = source
    try:
        yield source
    finally:
        ids.random_bytes = previous
