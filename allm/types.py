"""The values of allm: messages, threads, requests, responses, usage.

Every class here is a frozen, slotted ``attrs`` class. "Changing" a value returns a
new one (``attrs.evolve`` or a named method such as :meth:`Thread.add`). Values hold
no functions, clients, locks or keys, so :mod:`allm.codec` round-trips them through
JSON and pickle losslessly. The one exception is :attr:`Tool.handler`, which is
behaviour rather than data: it is left out of equality and of the JSON form, and a
tool is found again by name on the engine that resumes a thread.

``metadata`` and ``options`` mappings are caller-owned and must hold JSON-native
values (``dict`` with ``str`` keys, ``list``, ``str``, ``int``, ``float``, ``bool``,
``None``) for the JSON round trip to be lossless.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, Union

import attrs

__all__ = [
    "CallWarning",
    "ChatResult",
    "Embeddings",
    "FinishReason",
    "GeneratedImage",
    "Image",
    "ImagePart",
    "ImageRequest",
    "ImageResponse",
    "Message",
    "Part",
    "ReasoningPart",
    "Request",
    "Response",
    "ResponseFormat",
    "Role",
    "Step",
    "TextPart",
    "Thread",
    "Tool",
    "ToolCall",
    "Usage",
    "WarningKind",
]

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error", "other"]
Detail = Literal["auto", "low", "high"]

_ROLES = frozenset(("system", "user", "assistant", "tool"))


def _as_tuple(value: Iterable[Any] | None) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, tuple):
        return value
    if isinstance(value, (str, bytes)):
        raise TypeError("expected a sequence of items, not a single string")
    return tuple(value)


def _empty_dict() -> dict[str, Any]:
    return {}


# --------------------------------------------------------------------------- parts


@attrs.frozen
class TextPart:
    """A piece of text inside a message's content."""

    text: str


@attrs.frozen
class Image:
    """An image: inline bytes (``data``) or a remote ``url``, never both.

    Build one with :meth:`from_bytes`, :meth:`from_base64`, :meth:`from_url` or
    :meth:`from_file`. A file is read when the value is built, so the value stays
    plain data that can be stored and resumed elsewhere. ``mime_type`` is required
    for inline bytes; for URLs it is optional.
    """

    data: bytes | None = None
    url: str | None = None
    mime_type: str | None = None

    def __attrs_post_init__(self) -> None:
        if (self.data is None) == (self.url is None):
            raise ValueError("an Image has exactly one of data= or url=")

    @classmethod
    def from_bytes(cls, data: bytes, mime_type: str) -> Image:
        return cls(data=bytes(data), mime_type=mime_type)

    @classmethod
    def from_base64(cls, b64: str, mime_type: str) -> Image:
        try:
            raw = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"image data is not valid base64: {exc}") from None
        return cls(data=raw, mime_type=mime_type)

    @classmethod
    def from_url(cls, url: str, mime_type: str | None = None) -> Image:
        """A remote image; a ``data:`` URL is decoded into inline bytes."""
        if url.startswith("data:"):
            header, sep, payload = url[5:].partition(",")
            if not sep or not header.endswith(";base64"):
                raise ValueError("only base64 data: URLs are supported")
            return cls.from_base64(payload, header[: -len(";base64")] or (mime_type or ""))
        return cls(url=url, mime_type=mime_type)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], mime_type: str | None = None) -> Image:
        """Read an image file now; the MIME type comes from the extension unless given."""
        p = os.fspath(path)
        if mime_type is None:
            mime_type, _ = mimetypes.guess_type(p)
            if mime_type is None:
                raise ValueError(f"cannot tell the MIME type of {p!r}; pass mime_type=")
        with open(p, "rb") as fh:
            return cls(data=fh.read(), mime_type=mime_type)

    @property
    def base64(self) -> str:
        """The inline bytes as base64 text (raises ``ValueError`` for a URL image)."""
        if self.data is None:
            raise ValueError("a URL image has no inline bytes")
        return base64.b64encode(self.data).decode("ascii")

    def data_url(self) -> str:
        """``data:<mime>;base64,<...>`` for inline bytes, or the URL itself."""
        if self.url is not None:
            return self.url
        return f"data:{self.mime_type};base64,{self.base64}"


@attrs.frozen
class ImagePart:
    """An image inside a user message, with an optional ``detail`` hint (OpenAI)."""

    image: Image
    detail: Detail | None = None

    @classmethod
    def from_bytes(cls, data: bytes, mime_type: str, detail: Detail | None = None) -> ImagePart:
        return cls(Image.from_bytes(data, mime_type), detail)

    @classmethod
    def from_base64(cls, b64: str, mime_type: str, detail: Detail | None = None) -> ImagePart:
        return cls(Image.from_base64(b64, mime_type), detail)

    @classmethod
    def from_url(cls, url: str, mime_type: str | None = None, detail: Detail | None = None) -> ImagePart:
        return cls(Image.from_url(url, mime_type), detail)

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], mime_type: str | None = None, detail: Detail | None = None
    ) -> ImagePart:
        return cls(Image.from_file(path, mime_type), detail)


@attrs.frozen
class ReasoningPart:
    """Model reasoning kept in an assistant message so it can be sent back.

    ``provider`` names the API family that produced it (``"anthropic"``,
    ``"gemini"``, ``"openai"``...). Providers reject the next tool turn unless their
    own reasoning comes back exactly as received, and reject other providers'
    signatures, so adapters send a part back only to its own provider family.

    - Anthropic: ``text`` + ``signature`` (thinking), or ``redacted_data``
      (redacted_thinking).
    - Gemini: ``text`` (a thought summary) + ``signature`` (``thoughtSignature``).
    - OpenAI Responses: ``id`` (``rs_...``), ``text`` (summary),
      ``encrypted_content``.
    """

    text: str = ""
    signature: str | None = None
    redacted_data: str | None = None
    encrypted_content: str | None = None
    id: str | None = None
    provider: str | None = None


Part = Union[TextPart, ImagePart, ReasoningPart]


# --------------------------------------------------------------------------- tools


@attrs.frozen
class ToolCall:
    """A call the model asked for.

    ``arguments`` is the parsed JSON object; ``raw_arguments`` the exact JSON text
    the model sent. When that text is not a JSON object, ``arguments`` is empty and
    ``parse_error`` says why (the tool loop reports it to the model as a tool error).
    ``metadata`` carries provider data that must travel with the call, keyed by
    provider family (for example ``{"gemini": {"thought_signature": "..."}}``).
    """

    id: str
    name: str
    arguments: Mapping[str, Any] = attrs.field(factory=_empty_dict)
    raw_arguments: str = "{}"
    parse_error: str | None = None
    metadata: Mapping[str, Any] = attrs.field(factory=_empty_dict)


@attrs.frozen
class Tool:
    """A tool the model may call: name, description and JSON Schema of its arguments.

    ``handler`` is the Python function that runs it (see ``guides/tools.md``); it
    is not part of equality or of the JSON form. ``manual=True`` makes the tool loop
    stop and hand the call back instead of running it.
    """

    name: str
    description: str = ""
    schema: Mapping[str, Any] = attrs.field(factory=lambda: {"type": "object", "properties": {}})
    manual: bool = False
    strict: bool | None = None
    handler: Callable[..., Any] | None = attrs.field(default=None, eq=False, repr=False)
    metadata: Mapping[str, Any] = attrs.field(factory=_empty_dict)


@attrs.frozen
class ResponseFormat:
    """The shape asked of the model's answer: ``text``, ``json_object`` or ``json_schema``."""

    type: Literal["text", "json_object", "json_schema"] = "json_schema"
    name: str | None = None
    schema: Mapping[str, Any] | None = None
    strict: bool = True


# --------------------------------------------------------------------------- messages


@attrs.frozen
class Message:
    """One message of a conversation.

    ``content`` is a string or a tuple of parts (:class:`TextPart`,
    :class:`ImagePart`, :class:`ReasoningPart`). An assistant message may carry
    ``tool_calls``; a ``tool`` message answers one of them by ``tool_call_id`` and
    sets ``is_error`` when the tool failed.
    """

    role: Role
    content: str | tuple[Part, ...] = ""
    tool_calls: tuple[ToolCall, ...] = attrs.field(default=(), converter=_as_tuple)
    tool_call_id: str | None = None
    name: str | None = None
    is_error: bool = False
    metadata: Mapping[str, Any] = attrs.field(factory=_empty_dict)

    def __attrs_post_init__(self) -> None:
        if self.role not in _ROLES:
            raise ValueError(f"unknown role {self.role!r}; expected one of system, user, assistant, tool")
        if not isinstance(self.content, str):
            object.__setattr__(self, "content", _as_tuple(self.content))

    @property
    def text(self) -> str:
        """The text of the message: the string content, or its text parts joined."""
        c = self.content
        if isinstance(c, str):
            return c
        return "".join(p.text for p in c if type(p) is TextPart)

    @property
    def parts(self) -> tuple[Part, ...]:
        """The content as parts (a string becomes one :class:`TextPart`, or none if empty)."""
        c = self.content
        if isinstance(c, str):
            return (TextPart(c),) if c else ()
        return c

    @property
    def reasoning(self) -> tuple[ReasoningPart, ...]:
        c = self.content
        if isinstance(c, str):
            return ()
        return tuple(p for p in c if type(p) is ReasoningPart)


@attrs.frozen
class Thread:
    """An ordered conversation: a tuple of messages plus caller metadata."""

    messages: tuple[Message, ...] = attrs.field(default=(), converter=_as_tuple)
    metadata: Mapping[str, Any] = attrs.field(factory=_empty_dict)

    def add(self, *messages: Message) -> Thread:
        """A new thread with ``messages`` appended."""
        return attrs.evolve(self, messages=self.messages + messages)

    def extend(self, messages: Iterable[Message]) -> Thread:
        return attrs.evolve(self, messages=self.messages + tuple(messages))

    @property
    def last(self) -> Message | None:
        return self.messages[-1] if self.messages else None

    def __len__(self) -> int:
        return len(self.messages)


# --------------------------------------------------------------------------- request


@attrs.frozen
class Request:
    """Everything one model call needs except the key and the transport.

    Sampling fields left ``None`` are not sent. A field the target provider does
    not support is dropped and reported in :attr:`Response.warnings`.

    - ``max_tokens``: cap on generated tokens.
    - ``tool_choice``: ``"auto"``, ``"none"``, ``"required"`` or a tool name.
    - ``options``: provider-specific body fields, merged into the wire body last.
    """

    messages: tuple[Message, ...] = attrs.field(default=(), converter=_as_tuple)
    model: str | None = None
    tools: tuple[Tool, ...] = attrs.field(default=(), converter=_as_tuple)
    tool_choice: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    stop_sequences: tuple[str, ...] = attrs.field(default=(), converter=_as_tuple)
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    response_format: ResponseFormat | None = None
    options: Mapping[str, Any] = attrs.field(factory=_empty_dict)
    metadata: Mapping[str, Any] = attrs.field(factory=_empty_dict)

    @property
    def thread(self) -> Thread:
        return Thread(self.messages)


# --------------------------------------------------------------------------- response


@attrs.frozen
class Usage:
    """Token counts of one call. A counter the provider did not report is ``None``, never 0.

    ``input_tokens`` includes cached input (``cached_input_tokens`` read from the
    cache, ``cache_write_input_tokens`` written to it); ``output_tokens`` includes
    ``reasoning_tokens``.
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_input_tokens: int | None = None
    reasoning_tokens: int | None = None
    total_tokens: int | None = None

    def merge(self, other: Usage) -> Usage:
        """Field-wise: a reported value in ``other`` replaces this one."""
        return Usage(
            other.input_tokens if other.input_tokens is not None else self.input_tokens,
            other.output_tokens if other.output_tokens is not None else self.output_tokens,
            other.cached_input_tokens if other.cached_input_tokens is not None else self.cached_input_tokens,
            other.cache_write_input_tokens
            if other.cache_write_input_tokens is not None
            else self.cache_write_input_tokens,
            other.reasoning_tokens if other.reasoning_tokens is not None else self.reasoning_tokens,
            other.total_tokens if other.total_tokens is not None else self.total_tokens,
        )

    def __add__(self, other: Usage) -> Usage:
        """Sum over calls (a counter stays ``None`` only if both are ``None``)."""

        def add(a: int | None, b: int | None) -> int | None:
            if a is None:
                return b
            if b is None:
                return a
            return a + b

        return Usage(
            add(self.input_tokens, other.input_tokens),
            add(self.output_tokens, other.output_tokens),
            add(self.cached_input_tokens, other.cached_input_tokens),
            add(self.cache_write_input_tokens, other.cache_write_input_tokens),
            add(self.reasoning_tokens, other.reasoning_tokens),
            add(self.total_tokens, other.total_tokens),
        )


WarningKind = Literal["dropped_setting", "unsupported_feature", "dropped_content", "moved_content", "other"]

_DROPPED = r"(\w+) is not supported by (.+?) and was not sent"
# The Request and ImageRequest settings an adapter may drop.
_REQUEST_SETTINGS = frozenset(
    {
        "temperature", "top_p", "top_k", "max_tokens", "stop_sequences", "seed", "frequency_penalty",
        "presence_penalty", "tool_choice", "response_format", "prompt", "n", "size", "aspect_ratio",
        "quality", "style", "background", "output_format",
    }
)


@attrs.frozen
class CallWarning:
    """Something an adapter did not send as asked; the call went ahead without it.

    - ``kind``: ``"dropped_setting"`` (a :class:`Request` or :class:`ImageRequest`
      field the provider does not accept: not sent), ``"unsupported_feature"`` (a
      feature of the input the provider lacks, such as an image's ``detail``, a
      tool's ``strict`` or a message's ``name``: not sent), ``"dropped_content"`` (a
      message with nothing the provider can read: not sent), ``"moved_content"``
      (content sent in another place, such as a late system message moved to
      Anthropic's system prompt) or ``"other"``.
    - ``setting``: the field or feature concerned (``"top_k"``, ``"detail"``), else ``None``.
    - ``provider``: the provider name of the adapter that reported it (``"openai"``, ``"anthropic"``...).
    - ``message``: the sentence for people; ``str(warning)`` is this text.

    A warning stored as a plain string (allm's first stored form) loads as one of these
    (see :meth:`from_text`).
    """

    kind: WarningKind = "other"
    setting: str | None = None
    provider: str | None = None
    message: str = ""

    def __str__(self) -> str:
        return self.message

    @classmethod
    def from_text(cls, text: str) -> CallWarning:
        """The warning a message text stands for: ``"<field> is not supported by ... and was not
        sent"`` naming a :class:`Request` field is a ``dropped_setting`` of that field; any other
        text is kind ``"other"``."""
        m = re.fullmatch(_DROPPED, text)
        if m is not None and m.group(1) in _REQUEST_SETTINGS:
            return cls("dropped_setting", m.group(1), None, text)
        return cls("other", None, None, text)


def _as_warnings(value: Iterable[CallWarning | str] | None) -> tuple[CallWarning, ...]:
    if not value:
        return ()
    out = tuple(value)
    if all(type(w) is CallWarning for w in out):
        return out  # type: ignore[return-value]
    return tuple(w if isinstance(w, CallWarning) else CallWarning.from_text(str(w)) for w in out)


@attrs.frozen
class Response:
    """The result of one model call: the fold of its event stream.

    ``finish_reason`` is derived: any completed tool call makes it ``"tool_calls"``
    whatever the provider said; ``raw_finish_reason`` keeps the provider's string.
    A stream that failed part-way has ``finish_reason="error"`` with the partial
    output kept and the typed error in ``metadata["error"]``; one that the caller
    stopped early has ``finish_reason=None`` and ``metadata["halted_reason"] ==
    "cancelled"``. ``warnings`` lists what the adapter did not send as asked
    (:class:`CallWarning`: settings the provider does not support, dropped content).
    """

    message: Message
    id: str | None = None
    request_id: str | None = None
    model: str | None = None
    output_text: str = ""
    tool_calls: tuple[ToolCall, ...] = attrs.field(default=(), converter=_as_tuple)
    finish_reason: FinishReason | None = None
    raw_finish_reason: str | None = None
    usage: Usage = attrs.field(factory=Usage)
    warnings: tuple[CallWarning, ...] = attrs.field(default=(), converter=_as_warnings)
    metadata: Mapping[str, Any] = attrs.field(factory=_empty_dict)

    @property
    def text(self) -> str:
        return self.output_text

    @property
    def reasoning_text(self) -> str:
        return "".join(p.text for p in self.message.reasoning)


# --------------------------------------------------------------------------- loop results


@attrs.frozen
class Step:
    """One turn of the tool loop: the model call, the thread after it and the tool results.

    ``halted_reason`` is ``None`` when the loop would go on (tools ran and the model
    should read their results; ``done`` is then ``False``), else why this turn
    ends the loop. ``pending_tool_calls`` are the calls handed back unrun (manual
    mode or ``manual=True`` tools).
    """

    response: Response
    thread: Thread
    tool_results: tuple[Message, ...] = attrs.field(default=(), converter=_as_tuple)
    mode: Literal["auto", "manual"] = "auto"
    done: bool = True
    halted_reason: str | None = None
    metadata: Mapping[str, Any] = attrs.field(factory=_empty_dict)
    pending_tool_calls: tuple[ToolCall, ...] = attrs.field(default=(), converter=_as_tuple)


@attrs.frozen
class ChatResult:
    """The outcome of a chat: the final thread, the last response and every step.

    ``halted_reason`` is one of ``completed``, ``error``, ``max_turns``,
    ``halt_when``, ``ask_user``, ``tool_error``, ``manual_tool_calls``,
    ``cancelled`` or a tool handler's own reason. ``pending_tool_calls`` are the
    calls handed back unrun (``manual_tool_calls``): answer each with a tool
    message before continuing.
    """

    thread: Thread
    final_response: Response | None = None
    steps: tuple[Step, ...] = attrs.field(default=(), converter=_as_tuple)
    halted_reason: str = "completed"
    pending_question: str | None = None
    pending_tool_call_id: str | None = None
    metadata: Mapping[str, Any] = attrs.field(factory=_empty_dict)
    pending_tool_calls: tuple[ToolCall, ...] = attrs.field(default=(), converter=_as_tuple)


# --------------------------------------------------------------------------- constructors


def _content(content: str | Part | Sequence[Part]) -> str | tuple[Part, ...]:
    if isinstance(content, str):
        return content
    if isinstance(content, (TextPart, ImagePart, ReasoningPart)):
        return (content,)
    return tuple(content)


def system(content: str) -> Message:
    """A system message."""
    return Message("system", content)


def user(content: str | Part | Sequence[Part]) -> Message:
    """A user message: text, or parts such as ``[TextPart(...), ImagePart(...)]``."""
    return Message("user", _content(content))


def assistant(content: str | Part | Sequence[Part] = "", tool_calls: Iterable[ToolCall] = ()) -> Message:
    """An assistant message (for building threads by hand, e.g. few-shot examples)."""
    return Message("assistant", _content(content), tool_calls=tuple(tool_calls))


def tool_result(tool_call_id: str, content: str, *, name: str | None = None, is_error: bool = False) -> Message:
    """The answer to the tool call ``tool_call_id``, as the text the model will read."""
    return Message("tool", content, tool_call_id=tool_call_id, name=name, is_error=is_error)


def json_schema(name: str, schema: Mapping[str, Any], strict: bool = True) -> ResponseFormat:
    """Ask for JSON matching ``schema`` (a JSON Schema object), named ``name``."""
    return ResponseFormat("json_schema", name, dict(schema), strict)


def request(messages: Thread | Iterable[Message] | str, **fields: Any) -> Request:
    """Build a :class:`Request` from a thread, a list of messages or a user prompt.

    ``fields`` are :class:`Request` fields (``max_tokens=64``, ``temperature=0``,
    ``tools=[...]``...). Raises ``TypeError`` for an unknown field name.
    """
    if isinstance(messages, str):
        msgs: tuple[Message, ...] = (user(messages),)
    elif isinstance(messages, Thread):
        msgs = messages.messages
    else:
        msgs = tuple(messages)
    for m in msgs:
        if not isinstance(m, Message):
            raise TypeError(f"messages must be Message values, got {type(m).__name__}")
    return Request(messages=msgs, **fields)


@attrs.frozen
class Embeddings:
    """Vectors for a list of texts, in input order.

    ``vectors[i]`` is the embedding of ``texts[i]`` (floats); ``usage.input_tokens``
    counts the tokens read, summed over batches.
    """

    vectors: tuple[tuple[float, ...], ...] = attrs.field(default=(), converter=_as_tuple)
    model: str | None = None
    usage: Usage = attrs.field(factory=Usage)

    def __len__(self) -> int:
        return len(self.vectors)

    def __getitem__(self, i: int) -> tuple[float, ...]:
        return self.vectors[i]


# --------------------------------------------------------------------------- image generation


@attrs.frozen
class ImageRequest:
    """One image generation, edit or variation call (see :mod:`allm.images`).

    - ``prompt``: what to draw, or how to change ``images``.
    - ``images``: input images (edits: one or more; variations: exactly one).
    - ``mask``: a PNG whose transparent pixels mark where an edit may paint (OpenAI).
    - ``n``: how many images; ``size`` (``"1024x1024"``), ``quality``, ``style``,
      ``background``, ``output_format`` (``"png"``, ``"jpeg"``, ``"webp"``) and
      ``response_format`` (``"url"`` or ``"b64_json"``) are OpenAI Images API fields;
      ``aspect_ratio`` (``"16:9"``) is Gemini's ``imageConfig.aspectRatio``.
    - ``options``: provider-specific fields, merged into the wire request last.

    Fields left ``None`` are not sent; a field the provider does not have is dropped
    and reported in :attr:`ImageResponse.warnings`.
    """

    prompt: str = ""
    model: str | None = None
    images: tuple[Image, ...] = attrs.field(default=(), converter=_as_tuple)
    mask: Image | None = None
    n: int | None = None
    size: str | None = None
    aspect_ratio: str | None = None
    quality: str | None = None
    style: str | None = None
    background: str | None = None
    output_format: str | None = None
    response_format: Literal["url", "b64_json"] | None = None
    options: Mapping[str, Any] = attrs.field(factory=_empty_dict)
    metadata: Mapping[str, Any] = attrs.field(factory=_empty_dict)


@attrs.frozen
class GeneratedImage:
    """One image a model made: inline bytes or a (usually short-lived) URL, and the
    prompt the provider actually used when it rewrote yours (DALL-E 3)."""

    image: Image
    revised_prompt: str | None = None


@attrs.frozen
class ImageResponse:
    """The images of one generation, edit or variation call.

    ``text`` is any text the model wrote beside the images (Gemini). ``usage`` is in
    tokens where the provider reports it (GPT image models, Gemini), else ``None``
    counters. ``created`` is the provider's Unix timestamp, when sent.
    """

    images: tuple[GeneratedImage, ...] = attrs.field(default=(), converter=_as_tuple)
    model: str | None = None
    id: str | None = None
    created: int | None = None
    text: str = ""
    usage: Usage = attrs.field(factory=Usage)
    warnings: tuple[CallWarning, ...] = attrs.field(default=(), converter=_as_warnings)
    metadata: Mapping[str, Any] = attrs.field(factory=_empty_dict)

    @property
    def image(self) -> Image:
        """The first image (raises ``IndexError`` when there is none)."""
        return self.images[0].image

    @property
    def revised_prompt(self) -> str | None:
        """The first image's revised prompt, if the provider sent one."""
        return self.images[0].revised_prompt if self.images else None

    def __len__(self) -> int:
        return len(self.images)
