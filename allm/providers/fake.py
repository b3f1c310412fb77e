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
- A request every real adapter refuses (a tool result answering no earlier tool call,
  a tool message without ``tool_call_id``, an image in a system message, a
  ``tool_choice`` naming a tool not offered) raises the same
  :class:`~allm.errors.ValidationError` here (see :mod:`allm.providers._threads`), so a
  test written against the Fake fails where production would.
- Image calls (:func:`allm.generate_image`, ``edit_image``, ``image_variations``)
  play their own script: ``images=[...]`` (one call) or ``image_scripts=[[...],
  ...]`` (one list per call), with entries ``image(...)``, ``text``, ``usage`` and
  ``error`` (raised as the call's error). ``image_requests`` records ``(operation,
  ImageRequest)`` per call.
- Embeddings (:func:`allm.embed`): ``embeddings={"text": [0.1, ...]}`` scripts the
  vector of a text; any other text gets a deterministic unit vector derived from its
  SHA-256 (``dimensions`` long, 8 by default). Usage counts one input token per
  word. ``embed_requests`` records each call's :class:`EmbedRequest`.
- Model lists (:func:`allm.list_models`): ``models=[...]``; without it the engine's
  model is listed.
- Token counts (``encode_count_tokens``/``decode_count_tokens``): one token per
  whitespace-separated word of each message's text, plus one per message;
  ``count_requests`` records the requests counted.

Everything but generation goes through the same ``encode_*``/``decode_*`` pairs as an
HTTP adapter's (see :mod:`allm.providers.base`); :meth:`Fake.respond` answers their
calls in process.

A Fake is a test double, not a value: it counts calls and keeps ``requests``.
Share one Fake across the calls of one test; build a new one per test. It is stored
(inside an ``Engine``) by :meth:`Fake.to_state` and :meth:`Fake.from_state`.
"""

from __future__ import annotations

import hashlib
import math
import struct
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import orjson

from .. import codec
from ..errors import AdapterError, ValidationError, from_status
from ..events import Error, Event, RawChunk
from ..types import Embeddings, GeneratedImage, Image, ImageRequest, ImageResponse, Request, Usage
from ._fake_plain import is_plain, play_plain
from ._fake_script import (
    FINISH_REASONS,
    DelayEntry,
    Entry,
    ErrorEntry,
    FinishEntry,
    ImageEntry,
    ImageScriptEntry,
    RawChunkEntry,
    ReasoningEntry,
    TextEntry,
    ToolCallDeltaEntry,
    ToolCallEntry,
    UsageEntry,
    as_entries,
    as_image_entries,
    dump_scripts,
    load_scripts,
)
from ._threads import check_request
from ._wire import load_json, model_ids, token_count
from .assembler import Assembler
from .base import Delay, HttpCall

# The script entries (TextEntry, ToolCallEntry...) live in ._fake_script and stay importable here.
__all__ = ["EmbedRequest", "Fake"]


@attrs.frozen
class EmbedRequest:
    """One embeddings call the Fake answered: the ``texts``, ``model`` and ``dimensions`` asked for."""

    texts: tuple[str, ...]
    model: str
    dimensions: int | None = None


def _unscripted(what: str, index: int, scripted: int, unit: str) -> AdapterError:
    return AdapterError(
        f"Fake has no scripted {what} {index + 1}: {scripted} {unit} were scripted",
        reason="no_scripted_response",
        provider="fake",
    )


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
        models: Sequence[str] | None = None,
        embeddings: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        if images is not None and image_scripts is not None:
            raise ValueError("Fake takes images= or image_scripts=, not both")
        self._image_scripts: list[list[ImageScriptEntry]] = []
        if images is not None:
            self._image_scripts = [as_image_entries(images, "images")]
        elif image_scripts is not None:
            self._image_scripts = [as_image_entries(s, f"image_scripts[{i}]") for i, s in enumerate(image_scripts)]
        self.image_requests: list[tuple[str, ImageRequest]] = []
        self._models = None if models is None else tuple(str(m) for m in models)
        self._embeddings = {str(t): tuple(float(x) for x in v) for t, v in (embeddings or {}).items()}
        self.embed_requests: list[EmbedRequest] = []
        self.count_requests: list[Request] = []
        given = sum(x is not None for x in (script, scripts, function))
        if given == 0 and any(x is not None for x in (images, image_scripts, models, embeddings)):
            scripts = []
            given = 1
        if given != 1:
            raise ValueError(
                "Fake takes exactly one of script=, scripts= or function= "
                "(or only images=/image_scripts=/models=/embeddings=)"
            )
        self._scripts: list[list[Entry]] | None = None
        if script is not None:
            self._scripts = [as_entries(script, "script")]
        elif scripts is not None:
            if isinstance(scripts, str):
                raise TypeError("scripts= is a list of scripts (one list of entries per call)")
            self._scripts = [as_entries(s, f"scripts[{i}]") for i, s in enumerate(scripts)]
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

        Raises :class:`~allm.errors.ValidationError` for a request every real adapter
        refuses (:func:`~allm.providers._threads.check_request`: a tool result without
        its call, a ``tool_choice`` naming a tool not offered...), before recording it;
        :class:`AdapterError` (``no_scripted_response``) when the script is used up, or
        the scripted error of a ``before_stream`` entry.
        """
        check_request(request)
        with self._lock:
            index = len(self.requests)
            self.requests.append(request)
        if self._function is not None:
            entries = as_entries(self._function(request), "function result")
        else:
            assert self._scripts is not None
            if index >= len(self._scripts):
                raise _unscripted("response for call", index, len(self._scripts), "call(s)")
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
        if is_plain(entries):  # the usual reply, built directly (the same values)
            return play_plain(entries, index, model, self._next_tool_id)
        return self._assembled(entries, index, model)

    def _assembled(self, entries: list[Entry], index: int, model: str) -> Iterator[Event | Delay]:
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
                reason = e.reason if e.reason in FINISH_REASONS else "other"
                yield from asm.finish(reason, e.reason)
                return
        yield from asm.finish("stop", "stop")

    # -- the capabilities beside generation: encode_* -> respond -> decode_*

    def respond(self, call: HttpCall) -> bytes:
        """The body the Fake answers ``call`` with (one made by its own ``encode_*`` methods),
        recording the request. Raises :class:`~allm.errors.AdapterError`:
        ``no_scripted_response`` past the end of the image scripts, a scripted image
        error, or ``not_found`` for a call no ``encode_*`` of a Fake makes."""
        path = call.url.removeprefix(_URL)
        if path == "/embeddings":
            return codec.dumps(self._embed(load_json("fake", call.body or b"", "the embeddings call")))
        if path == "/models":
            listed = self._models if self._models is not None else ()
            return orjson.dumps({"data": [{"id": m} for m in listed]})
        if path == "/count_tokens":
            request = codec.loads(call.body or b"", Request)
            with self._lock:
                self.count_requests.append(request)
            return orjson.dumps({"input_tokens": count_tokens(request)})
        if path.startswith("/images/"):
            return codec.dumps(self._image(path.removeprefix("/images/"), codec.loads(call.body or b"", ImageRequest)))
        raise AdapterError(f"the Fake has no endpoint {call.method} {call.url}", reason="not_found", provider="fake", status=404)

    def _call(self, method: str, path: str, body: bytes | None, model: str | None) -> HttpCall:
        return HttpCall(method, _URL + path, {}, body, False, "fake", model)

    # embeddings

    embed_batch_size = 2048

    def encode_embed(self, texts: Sequence[str], *, model: str, dimensions: int | None = None) -> HttpCall:
        """The call embedding ``texts`` (``POST fake:///embeddings``)."""
        body = {"model": model, "input": list(texts), "dimensions": dimensions}
        return self._call("POST", "/embeddings", orjson.dumps(body), model)

    def decode_embed(self, body: bytes) -> Embeddings:
        return codec.loads(body, Embeddings)

    def _embed(self, asked: Mapping[str, Any]) -> Embeddings:
        req = EmbedRequest(tuple(asked["input"]), asked["model"], asked.get("dimensions"))
        with self._lock:
            self.embed_requests.append(req)
        vectors = tuple(self._embeddings.get(t) or derived_vector(t, req.dimensions or 8) for t in req.texts)
        words = sum(len(t.split()) for t in req.texts)
        return Embeddings(vectors, req.model, Usage(input_tokens=words, total_tokens=words))

    # model lists

    def encode_list_models(self) -> HttpCall:
        """``GET fake:///models``: the ``models=`` given (none: the engine's model is listed)."""
        return self._call("GET", "/models", None, None)

    def decode_list_models(self, body: bytes) -> list[str]:
        return model_ids("fake", body)

    # token counts

    def encode_count_tokens(self, request: Request, model: str | None = None) -> HttpCall:
        """The call counting ``request``'s input tokens (see :func:`count_tokens`). Raises
        :class:`~allm.errors.ValidationError` as :meth:`open` does."""
        check_request(request)
        if model is not None:
            request = attrs.evolve(request, model=model)
        return self._call("POST", "/count_tokens", codec.dumps(request), request.model or self.model)

    def decode_count_tokens(self, body: bytes) -> int:
        return token_count("fake", body)

    # image calls

    image_operations = frozenset({"generate", "edit", "variations"})

    def encode_image(self, operation: str, request: ImageRequest) -> HttpCall:
        """The call for one image ``operation`` (``generate``, ``edit`` or ``variations``)."""
        return self._call("POST", f"/images/{operation}", codec.dumps(request), request.model or self.model)

    def decode_image(self, call: HttpCall, body: bytes) -> ImageResponse:
        return codec.loads(body, ImageResponse)

    def image_error(self, status: int, headers: Mapping[str, str], body: bytes) -> AdapterError:
        return from_status(status, body.decode("utf-8", "replace") or f"HTTP {status}", provider="fake")

    def images(self, operation: str, request: ImageRequest) -> ImageResponse:
        """Play the next image script for ``operation`` (``generate``, ``edit`` or
        ``variations``) and ``request``. Raises :class:`AdapterError`:
        ``no_scripted_response`` past the end of the image scripts, or a scripted error."""
        call = self.encode_image(operation, request)
        return self.decode_image(call, self.respond(call))

    def _image(self, operation: str, request: ImageRequest) -> ImageResponse:
        with self._lock:
            index = len(self.image_requests)
            self.image_requests.append((operation, request))
        if index >= len(self._image_scripts):
            raise _unscripted("image response for image call", index, len(self._image_scripts), "image call(s)")
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

    # -- storing

    def to_state(self) -> dict[str, Any]:
        """The Fake as JSON-native data: its model, how many calls were made, its scripts
        (and image scripts, models, scripted embeddings when set). A Fake built with
        ``function=`` holds behaviour, not data: :class:`~allm.errors.ValidationError`
        (``invalid_request``)."""
        if self._scripts is None:
            raise ValidationError("a Fake built with function= cannot be stored", reason="invalid_request")
        state: dict[str, Any] = {"model": self.model, "calls": self.calls, "scripts": dump_scripts(self._scripts)}
        if self._image_scripts:
            state["image_scripts"] = dump_scripts(self._image_scripts)
        if self._models is not None:
            state["models"] = list(self._models)
        if self._embeddings:
            state["embeddings"] = {t: list(v) for t, v in self._embeddings.items()}
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Fake:
        """The Fake :meth:`to_state` gave ``state`` for, with as many calls already made."""
        images = load_scripts(state["image_scripts"]) if "image_scripts" in state else None
        fake = cls(
            scripts=load_scripts(state["scripts"]),
            model=state.get("model", "fake"),
            image_scripts=images,
            models=state.get("models"),
            embeddings=state.get("embeddings"),
        )
        fake.requests.extend([Request()] * int(state.get("calls", 0)))
        return fake


_URL = "fake://"
def count_tokens(request: Request) -> int:
    """The Fake's token count of ``request``: one token per whitespace-separated word of each
    message's text, plus one per message."""
    return sum(len(m.text.split()) + 1 for m in request.messages)


def derived_vector(text: str, dimensions: int) -> tuple[float, ...]:
    """A unit vector of ``dimensions`` floats derived from the SHA-256 of ``text`` (the same text
    always gives the same vector)."""
    raw = b"".join(hashlib.sha256(f"{i}\0{text}".encode()).digest() for i in range((dimensions + 7) // 8))
    values = [v / 2**31 - 1.0 for v in struct.unpack(f"<{dimensions}I", raw[: 4 * dimensions])]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return tuple(v / norm for v in values)


codec.register(Fake, unstructure=Fake.to_state, structure=Fake.from_state, storable=False)
