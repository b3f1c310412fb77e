"""allm's own history format: the :mod:`allm.codec` envelope of a :class:`~allm.types.Thread`.

Lossless: every message, part, tool call, signature and metadata value comes back
``==`` (``{"allm_schema": 1, "type": "Thread", "value": {...}}``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import codec
from ..errors import ValidationError
from ..types import Message, Thread
from ._base import FormatError, FormatWarning, messages_of

__all__ = ["from_allm", "to_allm"]

FORMAT = "allm"


def to_allm(thread: Thread | Iterable[Message], *, strict: bool = False) -> tuple[dict[str, Any], list[FormatWarning]]:
    """``(envelope, [])``: the thread as :func:`allm.codec.to_dict` writes it. Nothing is ever lost."""
    t = thread if isinstance(thread, Thread) else Thread(messages_of(thread))
    return codec.to_dict(t), []


def from_allm(payload: Any, *, strict: bool = False) -> tuple[Thread, list[FormatWarning]]:
    """``(thread, [])`` from an :mod:`allm.codec` envelope of a Thread.

    Raises :class:`~allm.formats.FormatError` (``invalid_payload``) when the payload
    is not a stored Thread, or ``unsupported_version`` when a newer allm wrote it.
    """
    if isinstance(payload, dict) and isinstance(payload.get("allm_schema"), int) and payload["allm_schema"] > codec.SCHEMA_VERSION:
        raise FormatError(
            f"the thread was stored with allm schema {payload['allm_schema']}; this allm reads up to {codec.SCHEMA_VERSION}",
            reason="unsupported_version",
        )
    try:
        return codec.from_dict(payload, Thread), []
    except ValidationError as exc:
        raise FormatError(f"not an allm thread: {exc.message}", reason="invalid_payload") from None
