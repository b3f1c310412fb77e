"""The Fake's script entries (built with :mod:`allm.testing`) and their stored form.

Generation entries: :class:`TextEntry`, :class:`ReasoningEntry`, :class:`ToolCallEntry`,
:class:`ToolCallDeltaEntry`, :class:`UsageEntry`, :class:`RawChunkEntry`,
:class:`FinishEntry`, :class:`ErrorEntry`, :class:`DelayEntry`; image calls also take
:class:`ImageEntry`. Stored, each entry is its fields plus ``"entry": <class name>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Union, get_args

import attrs

from .. import codec
from ..types import Usage

__all__ = [
    "DelayEntry",
    "Entry",
    "ErrorEntry",
    "FinishEntry",
    "ImageEntry",
    "ImageScriptEntry",
    "RawChunkEntry",
    "ReasoningEntry",
    "TextEntry",
    "ToolCallDeltaEntry",
    "ToolCallEntry",
    "UsageEntry",
    "dump_scripts",
    "as_entries",
    "as_image_entries",
    "load_scripts",
]


@attrs.frozen
class TextEntry:
    text: str


@attrs.frozen
class ReasoningEntry:
    text: str
    signature: str | None = None


@attrs.frozen
class ToolCallEntry:
    name: str
    arguments: Mapping[str, Any] | None = None
    id: str | None = None
    raw_arguments: str | None = None


@attrs.frozen
class ToolCallDeltaEntry:
    id: str
    arguments_delta: str
    name: str | None = None


@attrs.frozen
class UsageEntry:
    usage: Usage


@attrs.frozen
class RawChunkEntry:
    data: Any


@attrs.frozen
class FinishEntry:
    reason: str = "stop"


@attrs.frozen
class ErrorEntry:
    reason: str = "unknown"
    message: str = "scripted error"
    status: int | None = None
    retry_after: float | None = None
    before_stream: bool = False


@attrs.frozen
class DelayEntry:
    seconds: float


@attrs.frozen
class ImageEntry:
    """An image of an image call: inline ``data`` (with ``mime_type``) or a ``url``."""

    data: bytes | None = None
    url: str | None = None
    mime_type: str | None = "image/png"
    revised_prompt: str | None = None


Entry = Union[
    TextEntry,
    ReasoningEntry,
    ToolCallEntry,
    ToolCallDeltaEntry,
    UsageEntry,
    RawChunkEntry,
    FinishEntry,
    ErrorEntry,
    DelayEntry,
]
_ENTRY_TYPES: tuple[type[Any], ...] = get_args(Entry)

ImageScriptEntry = Union[ImageEntry, TextEntry, UsageEntry, ErrorEntry]
_IMAGE_ENTRY_TYPES: tuple[type[Any], ...] = get_args(ImageScriptEntry)


def _as_list(value: Any, where: str, types: tuple[type[Any], ...], what: str) -> list[Any]:
    """``value`` (one entry or a list of them) as a list of entries; a string is a ``TextEntry``."""
    if isinstance(value, (str, *types)):
        value = [value]
    out: list[Any] = []
    for i, e in enumerate(value):
        if isinstance(e, str):
            out.append(TextEntry(e))
        elif isinstance(e, types):
            out.append(e)
        else:
            raise TypeError(f"{where}[{i}] is a {type(e).__name__}; {what}")
    return out


def as_image_entries(value: Any, where: str) -> list[ImageScriptEntry]:
    """An image script: ``image``, ``text``, ``usage`` and ``error`` entries (``TypeError`` for others)."""
    return _as_list(value, where, _IMAGE_ENTRY_TYPES, "image script entries are built with allm.testing: image, text, usage, error")


def as_entries(value: Any, where: str) -> list[Entry]:
    """A generation script (``TypeError`` for an entry of another kind)."""
    return _as_list(
        value,
        where,
        _ENTRY_TYPES,
        "script entries are strings or built with allm.testing: text, reasoning, tool_call, tool_call_delta, "
        "usage, raw_chunk, finish, error, delay",
    )


FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "error", "other"})


_STORED_ENTRIES = {cls.__name__: cls for cls in (*_ENTRY_TYPES, ImageEntry)}


def dump_scripts(scripts: Sequence[Sequence[Any]]) -> list[list[dict[str, Any]]]:
    return [[{"entry": type(e).__name__, **codec.unstructure(e)} for e in s] for s in scripts]


def load_scripts(scripts: Any) -> list[list[Any]]:
    return [
        [codec.structure({k: x for k, x in e.items() if k != "entry"}, _STORED_ENTRIES[e["entry"]]) for e in s]
        for s in scripts
    ]
