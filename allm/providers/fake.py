"""A deterministic, scriptable provider for tests and offline pipelines.

The Fake ignores what it is asked (but records every request) and plays a script::

    from allm.providers import Fake
    from allm.testing import text, tool_call, usage, finish

    fake = Fake(scripts=[
        [tool_call("get_weather", {"city": "Paris"}), finish()],   # first call
        [text("It is 18 °C in Paris."), usage(input_tokens=12, output_tokens=8)],  # second call
    ])
    engine = allm.Engine(adapter=fake, model="fake")

- ``script=[...]``: the entries of one call. ``scripts=[[...], [...]]``: one list per
  call, in order. ``function=lambda request: ...``: computes each call's entries
  from the request (return a string, one entry, or a list of entries).
- Entries (build them with :mod:`allm.testing`): ``text``, ``reasoning``,
  ``tool_call``, ``tool_call_delta``, ``usage``, ``raw_chunk``, ``finish``,
  ``error``, ``delay``. A plain string is a ``text`` entry. Without ``finish`` a
  call ends with ``finish("stop")``.
- ``error(reason, ...)`` reports a failure mid-stream (an ``Error`` event, the
  fold records ``finish_reason="error"``); ``error(..., before_stream=True)``
  fails the call before any event, like an HTTP error status (and is retried by
  the engine's retry policy when its reason is retryable).
- A call past the end of the script raises ``AdapterError`` with reason
  ``no_scripted_response``, naming how many calls were scripted.
- Image calls (:func:`allm.generate_image`, ``edit_image``, ``image_variations``)
  play their own script: ``images=[...]`` (one call) or ``image_scripts=[[...],
  ...]`` (one list per call), with entries ``image(...)``, ``text``, ``usage`` and
  ``error`` (raised as the call's error). ``image_requests`` records ``(operation,
  ImageRequest)`` per call.

A Fake is a test double, not a value: it counts calls and keeps ``requests``.
Share one Fake across the calls of one test; build a new one per test.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Union

import attrs

from ..errors import AdapterError
from ..events import Error, Event, RawChunk
from ..types import GeneratedImage, Image, ImageRequest, ImageResponse, Request, Usage
from .base import Assembler, Delay

__all__ = [
    "DelayEntry",
    "ErrorEntry",
    "Fake",
    "FinishEntry",
    "ImageEntry",
    "RawChunkEntry",
    "ReasoningEntry",
    "TextEntry",
    "ToolCallDeltaEntry",
    "ToolCallEntry",
    "UsageEntry",
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


def _image_entries(value: Any, where: str) -> list[ImageScriptEntry]:
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


_FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "error", "other"})


def _entries(value: Any, where: str) -> list[Entry]:
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


class Fake:
    """A scripted provider. See the module docstring.

    Attributes: ``requests`` (every :class:`~allm.types.Request` received, in
    order), ``calls`` (how many calls were made).
    """

    provider = "fake"
    image_operations = frozenset({"generate", "edit", "variations"})

    def __init__(
        self,
        script: Sequence[Any] | None = None,
        *,
        scripts: Sequence[Sequence[Any]] | None = None,
        function: Callable[[Request], Any] | None = None,
        model: str = "fake",
        images: Sequence[Any] | None = None,
        image_scripts: Sequence[Sequence[Any]] | None = None,
    ) -> None:
        if images is not None and image_scripts is not None:
            raise ValueError("Fake takes images= or image_scripts=, not both")
        self._image_scripts: list[list[ImageScriptEntry]] = []
        if images is not None:
            self._image_scripts = [_image_entries(images, "images")]
        elif image_scripts is not None:
            self._image_scripts = [_image_entries(s, f"image_scripts[{i}]") for i, s in enumerate(image_scripts)]
        self.image_requests: list[tuple[str, ImageRequest]] = []
        given = sum(x is not None for x in (script, scripts, function))
        if given == 0 and (images is not None or image_scripts is not None):
            scripts = []
            given = 1
        if given != 1:
            raise ValueError("Fake takes exactly one of script=, scripts= or function= (or only images=/image_scripts=)")
        self._scripts: list[list[Entry]] | None = None
        if script is not None:
            self._scripts = [_entries(script, "script")]
        elif scripts is not None:
            if isinstance(scripts, str):
                raise TypeError("scripts= is a list of scripts (one list of entries per call)")
            self._scripts = [_entries(s, f"scripts[{i}]") for i, s in enumerate(scripts)]
        self._function = function
        self.model = model
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._tool_ids = 0

    def __repr__(self) -> str:
        n = "function" if self._scripts is None else f"{len(self._scripts)} scripted call(s)"
        return f"Fake({n}, calls={self.calls})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def calls(self) -> int:
        return len(self.requests)

    @property
    def remaining(self) -> int | None:
        """Scripted calls not yet made (``None`` for the function form)."""
        if self._scripts is None:
            return None
        return max(0, len(self._scripts) - self.calls)

    def open(self, request: Request) -> Iterator[Event | Delay]:
        """Start one call: record ``request`` and return its events (pure iteration, no I/O).

        Raises :class:`AdapterError` (``no_scripted_response``) when the script is used
        up, or the scripted error of a ``before_stream`` entry.
        """
        with self._lock:
            index = len(self.requests)
            self.requests.append(request)
        if self._function is not None:
            entries = _entries(self._function(request), "function result")
        else:
            assert self._scripts is not None
            if index >= len(self._scripts):
                raise AdapterError(
                    f"Fake has no scripted response for call {index + 1}: "
                    f"{len(self._scripts)} call(s) were scripted",
                    reason="no_scripted_response",
                    provider="fake",
                )
            entries = self._scripts[index]
        if entries and isinstance(entries[0], ErrorEntry) and entries[0].before_stream:
            e = entries[0]
            raise AdapterError(
                e.message, reason=e.reason, provider="fake", status=e.status, retry_after=e.retry_after
            )
        return self._play(entries, index, request.model or self.model)

    def _next_tool_id(self) -> str:
        with self._lock:
            self._tool_ids += 1
            return f"call_{self._tool_ids}"

    def _play(self, entries: list[Entry], index: int, model: str) -> Iterator[Event | Delay]:
        asm = Assembler("fake")
        yield from asm.start(f"fake-{index + 1}", model)
        tool_n = 0
        for e in entries:
            t = type(e)
            if t is TextEntry:
                yield asm.text(e.text)  # type: ignore[union-attr]
            elif t is ToolCallEntry:
                assert isinstance(e, ToolCallEntry)
                key = ("call", tool_n)
                tool_n += 1
                raw = e.raw_arguments
                if raw is None:
                    import orjson

                    raw = orjson.dumps(dict(e.arguments or {})).decode()
                yield from asm.tool_call(key, id=e.id or self._next_tool_id(), name=e.name)
                yield from asm.tool_arguments(key, raw)
                yield from asm.close_block(key, "tool")
            elif t is ToolCallDeltaEntry:
                assert isinstance(e, ToolCallDeltaEntry)
                yield from asm.tool_call(("delta", e.id), id=e.id, name=e.name)
                yield from asm.tool_arguments(("delta", e.id), e.arguments_delta)
            elif t is ReasoningEntry:
                assert isinstance(e, ReasoningEntry)
                yield asm.reasoning(e.text)
                if e.signature is not None:
                    asm.reasoning_signature(signature=e.signature)
            elif t is UsageEntry:
                assert isinstance(e, UsageEntry)
                yield asm.add_usage(e.usage)
            elif t is RawChunkEntry:
                assert isinstance(e, RawChunkEntry)
                yield RawChunk(e.data)
            elif t is DelayEntry:
                assert isinstance(e, DelayEntry)
                yield Delay(e.seconds)
            elif t is ErrorEntry:
                assert isinstance(e, ErrorEntry)
                yield Error(
                    AdapterError(e.message, reason=e.reason, provider="fake", status=e.status, retry_after=e.retry_after)
                )
                return
            elif t is FinishEntry:
                assert isinstance(e, FinishEntry)
                reason = e.reason if e.reason in _FINISH_REASONS else "other"
                yield from asm.finish(reason, e.reason)
                return
        yield from asm.finish("stop", "stop")

    # -- image calls

    def images(self, operation: str, request: ImageRequest) -> ImageResponse:
        """Play the next image script for ``operation`` (``generate``, ``edit`` or
        ``variations``) and ``request``. Raises :class:`AdapterError`:
        ``no_scripted_response`` past the end of the image scripts, or a scripted error."""
        with self._lock:
            index = len(self.image_requests)
            self.image_requests.append((operation, request))
        if index >= len(self._image_scripts):
            raise AdapterError(
                f"Fake has no scripted image response for image call {index + 1}: "
                f"{len(self._image_scripts)} image call(s) were scripted",
                reason="no_scripted_response",
                provider="fake",
            )
        images: list[GeneratedImage] = []
        text: list[str] = []
        total = Usage()
        for e in self._image_scripts[index]:
            if isinstance(e, ImageEntry):
                img = Image(url=e.url, mime_type=e.mime_type) if e.url is not None else Image(data=e.data or b"", mime_type=e.mime_type)
                images.append(GeneratedImage(img, e.revised_prompt))
            elif isinstance(e, TextEntry):
                text.append(e.text)
            elif isinstance(e, UsageEntry):
                total = total.merge(e.usage)
            else:
                raise AdapterError(e.message, reason=e.reason, provider="fake", status=e.status, retry_after=e.retry_after)
        return ImageResponse(tuple(images), request.model or self.model, f"fake-image-{index + 1}", None, "".join(text), total)
