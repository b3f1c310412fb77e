"""Where allm makes its ids: request ids (``Response.id`` of a call allm folded) and session
ids. One place, so tests can make them deterministic (see :mod:`allm.testing`)."""

from __future__ import annotations

import base64
import binascii
import os
import random
from collections.abc import Callable

__all__ = ["new_request_id", "new_session_id", "random_bytes"]

#: The source of randomness for ids: ``n -> n bytes`` (``os.urandom`` unless replaced in tests).
random_bytes: Callable[[int], bytes] = os.urandom

# Request ids are made on every model call; os.urandom is a system call each time. While the
# source is os.urandom they come from a generator of this process's own, seeded from it (here
# and again in a forked child, so parent and child never share a sequence; never the shared
# ``random`` module, which a program may seed). The ids are unique, not secret.
_ids = random.Random(os.urandom(32))
_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _reseed() -> None:
    _ids.seed(os.urandom(32))


os.register_at_fork(after_in_child=_reseed)


def new_request_id() -> str:
    """22 URL-safe characters from 16 random bytes."""
    raw = _ids.getrandbits(128).to_bytes(16, "little") if random_bytes is os.urandom else random_bytes(16)
    return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode("ascii")


def new_session_id() -> str:
    """``ses_`` and 16 URL-safe characters from 12 random bytes."""
    return "ses_" + base64.urlsafe_b64encode(random_bytes(12)).decode("ascii")
