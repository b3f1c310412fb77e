"""History files: gzip-compressed JSON with a format name and version.

A file holds ``{"format": NAME, "version": 1, "payload": ...}`` where ``payload`` is
what ``to_<format>(thread)`` returns, plus ``"export_warnings"`` (a list of
``{"kind", "path", "message"}``) when the export could not keep everything.
:func:`import_history` also reads an uncompressed file, and a bare provider-shaped
JSON file (a request body, or its ``messages`` / ``contents`` / ``input`` array)
when told its ``format``.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from ..types import Message, Thread
from ._base import FormatError, FormatWarning, messages_of
from .anthropic import from_anthropic, to_anthropic
from .gemini import from_gemini, to_gemini
from .native import from_allm, to_allm
from .openai_chat import from_openai_chat, to_openai_chat
from .openai_responses import from_openai_responses, to_openai_responses

__all__ = [
    "FILE_VERSION",
    "FORMATS",
    "ExportInfo",
    "ImportInfo",
    "convert",
    "export_history",
    "from_payload",
    "import_history",
    "to_payload",
]

FILE_VERSION = 1
"""The version written in every history file; files of a newer version are refused."""

MAX_BYTES = 256 * 1024 * 1024
"""Default cap on the decompressed size of an imported file (bytes)."""

_Writer = Callable[..., tuple[Any, list[FormatWarning]]]
_Reader = Callable[..., tuple[Thread, list[FormatWarning]]]
_TABLE: dict[str, tuple[_Writer, _Reader]] = {
    "openai_chat": (to_openai_chat, from_openai_chat),
    "openai_responses": (to_openai_responses, from_openai_responses),
    "anthropic": (to_anthropic, from_anthropic),
    "gemini": (to_gemini, from_gemini),
    "allm": (to_allm, from_allm),
}

FORMATS: tuple[str, ...] = tuple(_TABLE)
"""The format names: ``openai_chat``, ``openai_responses``, ``anthropic``, ``gemini``, ``allm``."""


def _entry(format: str) -> tuple[_Writer, _Reader]:
    try:
        return _TABLE[format]
    except (KeyError, TypeError):
        raise FormatError(f"unknown history format {format!r}; known: {', '.join(FORMATS)}", reason="unknown_format") from None


def to_payload(
    thread: Thread | Iterable[Message], format: str, *, strict: bool = False
) -> tuple[Any, list[FormatWarning]]:
    """``to_<format>(thread)`` by name: ``(payload, warnings)``. :class:`FormatError` for an unknown name."""
    return _entry(format)[0](thread, strict=strict)


def from_payload(payload: Any, format: str, *, strict: bool = False) -> tuple[Thread, list[FormatWarning]]:
    """``from_<format>(payload)`` by name: ``(thread, warnings)``. :class:`FormatError` for an unknown name."""
    return _entry(format)[1](payload, strict=strict)


def convert(payload: Any, source: str, target: str, *, strict: bool = False) -> tuple[Any, list[FormatWarning]]:
    """A conversation from one format to another, through a thread: ``(payload, warnings of both steps)``."""
    thread, w1 = from_payload(payload, source, strict=strict)
    out, w2 = to_payload(thread, target, strict=strict)
    return out, w1 + w2


class ExportInfo(tuple[int, int]):
    """What :func:`export_history` wrote: unpacks as ``(bytes_written, message_count)``.

    Also ``.warnings`` (what the format could not keep, also stored in the file) and
    ``.format``, like :class:`os.stat_result` carries more than its tuple.
    """

    warnings: tuple[FormatWarning, ...]
    format: str

    def __new__(cls, bytes_written: int, message_count: int, warnings: Iterable[FormatWarning] = (), format: str = "allm") -> ExportInfo:
        self = super().__new__(cls, (bytes_written, message_count))
        self.warnings = tuple(warnings)
        self.format = format
        return self

    @property
    def bytes_written(self) -> int:
        """Size of the file written, in bytes (compressed)."""
        return self[0]

    @property
    def message_count(self) -> int:
        """Messages in the exported thread."""
        return self[1]

    def __repr__(self) -> str:
        return f"ExportInfo(bytes_written={self[0]}, message_count={self[1]}, format={self.format!r}, warnings={len(self.warnings)})"


class ImportInfo(tuple[Thread, list[FormatWarning]]):
    """What :func:`import_history` read: unpacks as ``(thread, warnings)``.

    Also ``.format``: the format the conversation was read as (the one the file names,
    or the one given for a bare JSON file).
    """

    format: str

    def __new__(cls, thread: Thread, warnings: list[FormatWarning], format: str) -> ImportInfo:
        self = super().__new__(cls, (thread, warnings))
        self.format = format
        return self

    @property
    def thread(self) -> Thread:
        return self[0]

    @property
    def warnings(self) -> list[FormatWarning]:
        return self[1]

    def __repr__(self) -> str:
        return f"ImportInfo(messages={len(self[0].messages)}, format={self.format!r}, warnings={len(self[1])})"


def export_history(
    thread: Thread | Iterable[Message],
    path: str | os.PathLike[str],
    format: str = "allm",
    *,
    strict: bool = False,
) -> ExportInfo:
    """Write ``thread`` to ``path`` as a gzip history file in ``format``: ``(bytes_written, message_count)``.

    The file is written to a temporary name beside ``path`` and renamed into place,
    so an existing file is replaced whole or not at all. The result also carries
    ``.warnings`` (see :class:`ExportInfo`). Raises :class:`FormatError`
    (``unknown_format``; ``unrepresentable`` when ``strict`` and the format cannot
    keep everything, before anything is written; ``invalid_payload`` for metadata
    JSON cannot hold) and ``OSError`` when the file cannot be written.
    """
    writer = _entry(format)[0]
    msgs = messages_of(thread)
    payload, warnings = writer(thread, strict=strict)
    doc: dict[str, Any] = {"format": format, "version": FILE_VERSION, "payload": payload}
    if warnings:
        doc["export_warnings"] = [w.to_dict() for w in warnings]
    try:
        data = gzip.compress(orjson.dumps(doc), mtime=0)
    except TypeError as exc:  # metadata JSON cannot hold (an integer beyond 64 bits, an object)
        raise FormatError(f"the history cannot be written as JSON: {exc}", reason="invalid_payload") from None
    target = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=".allm-history-", dir=os.path.dirname(os.path.abspath(target)))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return ExportInfo(len(data), len(msgs), warnings, format)


def _read(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise FormatError(f"cannot read history file {os.fspath(path)!r}: {exc.strerror or exc}", reason="invalid_file") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as gz:
                raw = gz.read(max_bytes + 1)
        except (OSError, EOFError) as exc:
            raise FormatError(f"{os.fspath(path)!r} is not a readable gzip file: {exc}", reason="invalid_file") from None
    if len(raw) > max_bytes:
        raise FormatError(f"{os.fspath(path)!r} holds more than {max_bytes} bytes of history", reason="invalid_file")
    return raw


LEGACY_FORMAT_NAME = "allm.history"
"""The name in files that ``Conversations.export_history`` wrote before it wrote this
module's files: ``{"format": "allm.history", "version": 1, "conversation_id": ...,
"thread": <codec envelope>}``. :func:`import_history` still reads them (as ``allm``)."""


def _legacy(path: str | os.PathLike[str], doc: dict[str, Any], format: str | None) -> tuple[str, Any]:
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise FormatError(f"history file version {version!r} is not a version", reason="invalid_file")
    if version > 1:
        raise FormatError(
            f"{LEGACY_FORMAT_NAME} version {version} was written by a newer allm; this one reads up to 1",
            reason="unsupported_version",
        )
    if format not in (None, "allm"):
        raise FormatError(f"{os.fspath(path)!r} holds 'allm' history, not {format!r}", reason="invalid_file")
    if not isinstance(doc.get("thread"), dict):
        raise FormatError(f"{os.fspath(path)!r}: an {LEGACY_FORMAT_NAME} file with no thread", reason="invalid_file")
    return "allm", doc["thread"]


def import_history(
    path: str | os.PathLike[str],
    format: str | None = None,
    *,
    strict: bool = False,
    max_bytes: int = MAX_BYTES,
) -> ImportInfo:
    """Read a history file: ``(thread, warnings)`` (an :class:`ImportInfo`, which also
    names the ``.format`` read).

    A file written by :func:`export_history` names its format (``format``, when
    given, must agree). A bare JSON file (gzip or not) is read as ``format``; an
    :mod:`allm.codec` Thread envelope is recognised without one, and so is a file of
    the earlier conversation format (:data:`LEGACY_FORMAT_NAME`). ``warnings`` are
    the losses recorded at export followed by those of this import. Raises
    :class:`FormatError`: ``invalid_file`` (unreadable, not gzip/JSON, larger than
    ``max_bytes`` once decompressed, or another format than ``format``),
    ``unknown_format``, ``unsupported_version``, ``invalid_payload``, and
    ``unrepresentable`` when ``strict``.
    """
    if format is not None:
        _entry(format)
    raw = _read(path, max_bytes)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FormatError(f"{os.fspath(path)!r} is not JSON: {exc}", reason="invalid_file") from None
    earlier: list[FormatWarning] = []
    if isinstance(doc, dict) and doc.get("format") == LEGACY_FORMAT_NAME and "payload" not in doc:
        format, payload = _legacy(path, doc, format)
    elif isinstance(doc, dict) and {"format", "version", "payload"} <= doc.keys():
        version = doc["version"]
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise FormatError(f"history file version {version!r} is not a version", reason="invalid_file")
        if version > FILE_VERSION:
            raise FormatError(
                f"history file version {version} was written by a newer allm; this one reads up to {FILE_VERSION}",
                reason="unsupported_version",
            )
        file_format = doc["format"]
        _entry(file_format)
        if format is not None and format != file_format:
            raise FormatError(f"{os.fspath(path)!r} holds {file_format!r} history, not {format!r}", reason="invalid_file")
        try:
            earlier = [FormatWarning.from_dict(w) for w in doc.get("export_warnings") or []]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise FormatError("the file's export_warnings are malformed", reason="invalid_file") from None
        format, payload = file_format, doc["payload"]
    else:
        payload = doc
        if format is None:
            if isinstance(doc, dict) and "allm_schema" in doc:
                format = "allm"
            else:
                raise FormatError(
                    f"{os.fspath(path)!r} is bare JSON with no format name; pass format= (one of {', '.join(FORMATS)})",
                    reason="unknown_format",
                )
    thread, warnings = from_payload(payload, format, strict=strict)
    return ImportInfo(thread, earlier + warnings, format)
