"""Where allm makes its ids: request ids (``Response.id`` of a call allm folded) and session
ids. One place, so tests can make them deterministic (see :mod:`allm.testing`)."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable

__all__ = ["new_request_id", "new_session_id", "random_bytes"]

#: The source of randomness for ids: ``n -> n bytes`` (``os.urandom`` unless replaced in tests).
random_bytes: Callable[[int], bytes] = os.urandom


def new_request_id() -> str:
    """22 URL-safe characters from 16 random bytes."""
    return base64.urlsafe_b64encode(random_bytes(16)).rstrip(b"=").decode("ascii")


def new_session_id() -> str:
    """``ses_`` and 16 URL-safe characters from 12 random bytes."""
    return "ses_" + base64.urlsafe_b64encode(random_bytes(12)).decode("ascii")
