"""History files: allm's own gzip JSON format (and the provider formats of :mod:`allm.formats`).

The ``allm`` format is a gzip-compressed JSON document::

    {"format": "allm.history", "version": 1, "conversation_id": "c1",
     "thread": {"allm_schema": 1, "type": "Thread", "value": {"messages": [...]}}}

``version`` is this format's own; ``thread`` is an :mod:`allm.codec` envelope, with the
codec's schema version. Reading a version newer than this allm knows is refused, never
guessed at. Files are written atomically (a temporary file renamed over the target).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import orjson

from .. import Message, Thread, codec
from ..errors import ValidationError

__all__ = ["FORMAT_NAME", "VERSION", "HistoryInfo", "read_history", "write_history"]

FORMAT_NAME = "allm.history"
VERSION = 1


@attrs.frozen
class HistoryInfo:
    """What an export or import did: the file ``path``, its ``size_bytes`` (compressed, as
    on disk), the ``message_count`` and the ``conversation_id``."""

    path: str
    size_bytes: int
    message_count: int
    conversation_id: str


def write_history(path: str | os.PathLike[str], conversation_id: str, messages: Sequence[Message]) -> HistoryInfo:
    """Write ``messages`` to ``path`` in the ``allm`` format (atomically). Raises ``OSError``,
    :class:`~allm.errors.ValidationError` (``invalid_message``) for metadata JSON cannot hold."""
    doc = {
        "format": FORMAT_NAME,
        "version": VERSION,
        "conversation_id": conversation_id,
        "thread": codec.to_dict(Thread(tuple(messages))),
    }
    try:
        data = gzip.compress(orjson.dumps(doc), mtime=0)
    except TypeError as exc:
        raise ValidationError(f"the history cannot be written as JSON: {exc}", reason="invalid_message") from None
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".allm-history-", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return HistoryInfo(str(target), len(data), len(messages), conversation_id)


def _invalid(path: str, why: str) -> ValidationError:
    return ValidationError(f"{path}: {why}", reason="invalid_thread", metadata={"path": path})


def _decompress(path: str, data: bytes) -> bytes:
    if data[:2] != b"\x1f\x8b":
        return data  # plain JSON is accepted too
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise _invalid(path, f"not a readable gzip file ({exc})") from None


def read_history(path: str | os.PathLike[str], format: str = "allm") -> list[Message]:
    """The messages of a history file (gzip or plain JSON).

    ``format``: ``"allm"`` (this module's format) or a provider format of
    :mod:`allm.formats`. Raises ``OSError`` when the file cannot be read and
    :class:`~allm.errors.ValidationError` (``invalid_thread``) when its content is not a
    history of that format (or a newer version of it); ``invalid_request`` for an
    unknown ``format``.
    """
    p = os.fspath(path)
    raw = _decompress(p, Path(p).read_bytes())
    try:
        doc: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _invalid(p, f"not JSON ({exc})") from None
    if format != "allm":
        raise ValidationError(f"unknown history format {format!r}; known: allm", reason="invalid_request")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise _invalid(p, f"not an {FORMAT_NAME} document")
    version = doc.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise _invalid(p, f"{FORMAT_NAME} version {version!r}; this allm reads up to {VERSION}")
    thread_doc = doc.get("thread")
    if not isinstance(thread_doc, dict):
        raise _invalid(p, "no thread")
    try:
        thread = codec.from_dict(thread_doc, Thread)
    except ValidationError as exc:
        raise _invalid(p, exc.message) from None
    return list(thread.messages)
