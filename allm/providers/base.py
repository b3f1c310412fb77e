"""The adapter contract: what an adapter is, and the capabilities it may have.

An adapter is a small value with pure methods; the engine's I/O shells do the rest.

**Generation** (every adapter is one of the two):

- :class:`HttpAdapter`: ``encode(request, *, stream) -> HttpCall`` (method, URL,
  headers without the key, JSON body, and :class:`~allm.types.CallWarning` s for
  what was not sent); ``auth_headers(key)`` (where the key goes: the shell adds it,
  it never enters an ``HttpCall``); ``decoder(call, *, include_raw) -> Decoder``
  (``feed(bytes) -> list[Event]``, ``close() -> list[Event]``: the same events
  whatever the byte boundaries); ``decode_body(call, body)`` (a non-streaming body
  as the *same* events a stream gives); ``error(status, headers, body) ->
  AdapterError``; ``key_spec`` (the provider name and environment variables of its
  key).
- :class:`LocalAdapter` (the Fake): ``open(request) -> Iterator[Event | Delay]``
  makes the events in process, and ``respond(call) -> bytes`` answers the
  :class:`HttpCall` of a capability below in process, so a local adapter's
  capabilities use the same ``encode_*``/``decode_*`` pair as an HTTP one.

**Capabilities**, each a runtime-checkable :class:`~typing.Protocol` (test with
``isinstance(adapter, Embeds)``): :class:`Embeds`, :class:`ListsModels`,
:class:`MakesImages`, :class:`CountsTokens`. Each is an ``encode_*`` method that
returns an :class:`HttpCall` and a ``decode_*`` method that reads the answer's body;
the shell performs the call in between (an HTTP adapter's with its key, a local
adapter's with ``respond``). ``decode_*`` raises
:class:`~allm.errors.AdapterError` (``malformed_response``) for a body of another shape.

Nothing here does I/O. The pieces adapters are built from live beside it:
:mod:`~allm.providers.assembler` (deltas -> events and the final message) and
:mod:`~allm.providers._wire` (SSE decoding, JSON bodies, warnings).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol, runtime_checkable

import attrs

from ..errors import AdapterError
from ..events import Event
from ..types import CallWarning, Embeddings, ImageRequest, ImageResponse, Request

__all__ = [
    "Adapter",
    "CountsTokens",
    "Decoder",
    "Delay",
    "Embeds",
    "HttpAdapter",
    "HttpCall",
    "KeySpec",
    "ListsModels",
    "LocalAdapter",
    "MakesImages",
]


@attrs.frozen
class KeySpec:
    """Where an adapter's key comes from: a provider name for the key chain and env variables.

    ``required=False`` (local servers) means a call without any key is sent with no
    auth header.
    """

    provider: str
    env: tuple[str, ...] = ()
    required: bool = True


@attrs.frozen
class HttpCall:
    """One HTTP exchange to make, as data. Holds no key.

    ``warnings``: what the adapter did not send as asked (settings the provider does
    not support...); they reach ``MessageStarted.warnings`` and ``Response.warnings``.
    """

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None
    stream: bool
    provider: str
    model: str | None = None
    warnings: tuple[CallWarning, ...] = ()


@attrs.frozen
class Delay:
    """A pause a local adapter asks the shell to make (``seconds``), with no event."""

    seconds: float


class Decoder(Protocol):
    """Incremental decoder. ``finished``: the terminal marker was seen or the stream failed;
    ``failed``: an ``Error`` event was produced. After either, ``feed`` returns ``[]``."""

    finished: bool
    failed: bool

    def feed(self, chunk: bytes) -> list[Event]: ...

    def close(self) -> list[Event]: ...


# ------------------------------------------------------------------------------ generation


@runtime_checkable
class HttpAdapter(Protocol):
    """An adapter whose calls go over HTTP (see the module docstring)."""

    @property
    def key_spec(self) -> KeySpec: ...

    def encode(self, request: Request, *, stream: bool) -> HttpCall: ...

    def auth_headers(self, key: str | None) -> dict[str, str]: ...

    def decoder(self, call: HttpCall, *, include_raw: bool = False) -> Decoder: ...

    def decode_body(self, call: HttpCall, body: bytes, *, include_raw: bool = False) -> list[Event]: ...

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> AdapterError: ...


@runtime_checkable
class LocalAdapter(Protocol):
    """An adapter that answers in process (the Fake).

    ``open(request)`` records the call and returns its events (and :class:`Delay` s);
    ``respond(call)`` returns the body a capability's :class:`HttpCall` gets, or
    raises the :class:`~allm.errors.AdapterError` the call fails with.
    """

    def open(self, request: Request) -> Iterator[Event | Delay]: ...

    def respond(self, call: HttpCall) -> bytes: ...


Adapter = HttpAdapter | LocalAdapter


# ------------------------------------------------------------------------------ capabilities


@runtime_checkable
class Embeds(Protocol):
    """Text embeddings (``allm.embed``).

    - ``embed_batch_size``: the most texts one call may carry; longer lists are sent
      in several calls (OpenAI 2048, Gemini 100).
    - ``encode_embed(texts, *, model, dimensions)``: one call embedding ``texts``;
      ``dimensions`` asks for shorter vectors where the provider has it.
    - ``decode_embed(body)``: one vector per text, in input order, with the token
      usage the provider reports.
    """

    embed_batch_size: int

    def encode_embed(self, texts: Sequence[str], *, model: str, dimensions: int | None = None) -> HttpCall: ...

    def decode_embed(self, body: bytes) -> Embeddings: ...


@runtime_checkable
class ListsModels(Protocol):
    """The provider's model list (``allm.list_models``).

    - ``encode_list_models()``: the call (``GET /models`` or its equivalent).
    - ``decode_list_models(body)``: model ids as ``model=`` takes them.
    """

    def encode_list_models(self) -> HttpCall: ...

    def decode_list_models(self, body: bytes) -> list[str]: ...


@runtime_checkable
class MakesImages(Protocol):
    """Image generation, edits and variations (``allm.generate_image``, ``edit_image``,
    ``image_variations``).

    - ``image_operations``: which of ``"generate"``, ``"edit"``, ``"variations"`` it has.
    - ``encode_image(operation, request)``: the call for one operation; settings the
      endpoint lacks are dropped with a warning.
    - ``decode_image(call, body)``: the images (and text, usage, warnings).
    - ``image_error(status, headers, body)``: an HTTP error of an image call, with a
      moderation refusal as reason ``content_filter``.
    """

    image_operations: frozenset[str]

    def encode_image(self, operation: str, request: ImageRequest) -> HttpCall: ...

    def decode_image(self, call: HttpCall, body: bytes) -> ImageResponse: ...

    def image_error(self, status: int, headers: Mapping[str, str], body: bytes) -> AdapterError: ...


@runtime_checkable
class CountsTokens(Protocol):
    """The input tokens a request would use, counted by the provider without running it.

    - ``encode_count_tokens(request, model)``: the call; ``model`` (when given) wins
      over ``request.model``. The messages, system prompt and tools are counted the
      way the provider counts a real call.
    - ``decode_count_tokens(body)``: the count, in tokens.
    """

    def encode_count_tokens(self, request: Request, model: str | None = None) -> HttpCall: ...

    def decode_count_tokens(self, body: bytes) -> int: ...
