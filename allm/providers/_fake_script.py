"""The Fake's script entries (built with :mod:`allm.testing`) and their stored form.

Generation entries: :class:`TextEntry`, :class:`ReasoningEntry`, :class:`ToolCallEntry`,
:class:`ToolCallDeltaEntry`, :class:`UsageEntry`, :class:`RawChunkEntry`,
:class:`FinishEntry`, :class:`ErrorEntry`, :class:`DelayEntry`; image calls also take
:class:`ImageEntry`. Stored, each entry is its fields plus ``"entry": <class name>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Union

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
_ENTRY_TYPES = (
    TextEntry,
    ReasoningEntry,
    ToolCallEntry,
    ToolCallDeltaEntry,
    UsageEntry,
    RawChunkEntry,
    FinishEntry,
    ErrorEntry,
    DelayEntry,
)

_IMAGE_ENTRY_TYPES = (ImageEntry, TextEntry, UsageEntry, ErrorEntry)
ImageScriptEntry = Union[ImageEntry, TextEntry, UsageEntry, ErrorEntry]


def as_image_entries(value: Any, where: str) -> list[ImageScriptEntry]:
    if isinstance(value, (str, *_IMAGE_ENTRY_TYPES)):
        value = [value]
    out: list[ImageScriptEntry] = []
    for i, e in enumerate(value):
        if isinstance(e, str):
            out.append(TextEntry(e))
        elif isinstance(e, _IMAGE_ENTRY_TYPES):
            out.append(e)
        else:
            raise TypeError(
                f"{where}[{i}] is a {type(e).__name__}; image script entries are built with allm.testing: "
                "image, text, usage, error"
            )
    return out


FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "error", "other"})


def as_entries(value: Any, where: str) -> list[Entry]:
    if isinstance(value, (str, _ENTRY_TYPES)):
        value = [value]
    out: list[Entry] = []
    for i, e in enumerate(value):
        if isinstance(e, str):
            out.append(TextEntry(e))
        elif isinstance(e, _ENTRY_TYPES):
            out.append(e)
        else:
            raise TypeError(
                f"{where}[{i}] is a {type(e).__name__}; script entries are strings or built with "
                "allm.testing: text, reasoning, tool_call, tool_call_delta, usage, raw_chunk, finish, error, delay"
            )
    return out


_STORED_ENTRIES = {cls.__name__: cls for cls in (*_ENTRY_TYPES, ImageEntry)}


def dump_scripts(scripts: Sequence[Sequence[Any]]) -> list[list[dict[str, Any]]]:
    return [[{"entry": type(e).__name__, **codec.unstructure(e)} for e in s] for s in scripts]


def load_scripts(scripts: Any) -> list[list[Any]]:
    return [
        [codec.structure({k: x for k, x in e.items() if k != "entry"}, _STORED_ENTRIES[e["entry"]]) for e in s]
        for s in scripts
    ]
