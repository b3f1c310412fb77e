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

Values check their input when built: a bad message part, sampling value, tool name or
``options`` value raises :class:`~allm.errors.ValidationError` naming the bad part,
before anything is sent.
"""

from __future__ import annotations

import base64
import binascii
import copyreg
import itertools
import math
import mimetypes
import operator
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, Literal, TypeVar, Union

import attrs

from .errors import ValidationError

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
    "PromptCache",
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
    "ToolChoice",
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


_COPIERS: dict[type, Callable[[Any], Any]] = {}
_BUILDERS: dict[type, Callable[..., Any]] = {}
_V = TypeVar("_V")


def replaced(value: _V, **changes: Any) -> _V:
    """A copy of the frozen value ``value`` with ``changes``, without running its converters,
    validators or ``__attrs_post_init__`` again: for changes already in their checked form
    (a :class:`Thread`'s messages into a :class:`Request`...). ``attrs.evolve`` costs several
    times more, and the tool loop and every ``Thread.add`` make one per turn."""
    copy = _COPIERS.get(type(value))
    if copy is None:
        copy = _COPIERS[type(value)] = _generated(type(value), copy=True)
    new = copy(value)
    for name, v in changes.items():
        object.__setattr__(new, name, v)
    return new  # type: ignore[no-any-return]


def unchecked(cls: type[_V]) -> Callable[..., _V]:
    """A positional constructor of the attrs class ``cls`` (every field, in order) that runs no
    converter, validator or ``__attrs_post_init__``: for data already known to be in checked
    form (the codec's loads of well-formed data, unpickling). Made once per class."""
    make = _BUILDERS.get(cls)
    if make is None:
        make = _BUILDERS[cls] = _generated(cls, copy=False)
    return make


def _generated(cls: type, *, copy: bool) -> Callable[..., Any]:
    # One straight-line function per class, setting each slot through its descriptor: three
    # times faster than object.__setattr__ in a loop over the fields.
    names = [a.name for a in attrs.fields(cls)]
    ns: dict[str, Any] = {"cls": cls, "new": object.__new__}
    for name in names:
        slot = next((k.__dict__[name] for k in cls.__mro__ if name in k.__dict__), None)
        setter = getattr(slot, "__set__", None)
        ns["set_" + name] = setter if setter is not None else partial(_set_attribute, name=name)
    if copy:
        head, values = "copy(v)", [f"v.{name}" for name in names]
    else:
        head, values = f"make({', '.join(names)})", names
    body = "".join(f"    set_{name}(n, {value})\n" for name, value in zip(names, values, strict=True))
    exec(f"def {head}:\n    n = new(cls)\n{body}    return n\n", ns)
    return ns[head.split("(")[0]]  # type: ignore[no-any-return]


def _set_attribute(obj: Any, value: Any, *, name: str) -> None:
    object.__setattr__(obj, name, value)


def _invalid(message: str, reason: str = "invalid_request") -> ValidationError:
    return ValidationError(message, reason=reason)


def _described(value: Any) -> str:
    """``value``'s type, and for a dict its keys (what a provider-shaped part looks like)."""
    if isinstance(value, Mapping):
        keys = ", ".join(repr(k) for k in list(value)[:4])
        return f"a dict with keys {keys}" if keys else "an empty dict"
    name = type(value).__name__
    return f"an {name}" if name[0] in "aeiouAEIOU" else f"a {name}"


def check_json_value(value: Any, where: str, reason: str = "invalid_request") -> None:
    """Raise :class:`~allm.errors.ValidationError` (``invalid_request``) unless ``value`` is
    JSON-native: ``dict`` with ``str`` keys, ``list``/``tuple``, ``str`` (valid Unicode, no
    lone surrogate), ``int``, finite ``float``, ``bool`` or ``None``. The error names the
    path of the bad value (``options.tags[2]``); ``reason`` is its reason."""
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise _invalid(f"{where} is not valid Unicode text ({exc.reason} at {exc.start})", reason) from None
        return
    if value is None or isinstance(value, int):  # bool is an int
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _invalid(f"{where} is {value!r}; JSON has no NaN or infinity", reason)
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise _invalid(f"{where} has a key {k!r} of type {type(k).__name__}; JSON keys are strings", reason)
            check_json_value(v, f"{where}.{k}", reason)
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_json_value(v, f"{where}[{i}]", reason)
        return
    raise _invalid(
        f"{where} is {_described(value)}, which JSON cannot hold (use a dict, list, str, number, bool or None)", reason
    )


def _check_mapping(value: Any, where: str, reason: str = "invalid_request") -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _invalid(f"{where} must be a mapping (dict), not {_described(value)}", reason)
    return value


# --------------------------------------------------------------------------- parts


@attrs.frozen
class TextPart:
    """A piece of text inside a message's content. Raises
    :class:`~allm.errors.ValidationError` (``invalid_message``) for a ``text`` that is not a string."""

    text: str

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise _invalid(f"TextPart.text must be a string, not {_described(self.text)}", "invalid_message")


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

    def __reduce__(self) -> tuple[Any, ...]:
        # As Message's: the fields, rebuilt unchecked.
        return _make_tool_call, (self.id, self.name, self.arguments, self.raw_arguments, self.parse_error, self.metadata)


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

    def __attrs_post_init__(self) -> None:
        check_tool_name(self.name)
        name = self.name
        if not isinstance(self.description, str):
            raise _invalid(f"tool {name!r}: description must be a string", "invalid_tool")
        if not isinstance(self.schema, Mapping):
            raise _invalid(f"tool {name!r}: schema must be a JSON Schema object (a dict)", "invalid_tool")
        check_json_value(self.schema, f"tool {name!r}: schema", "invalid_tool")
        if self.schema.get("type") != "object":
            raise _invalid(
                f'tool {name!r}: the arguments schema must have "type": "object" (providers send arguments as an object)',
                "invalid_tool",
            )
        if type(self.manual) is not bool:
            raise _invalid(f"tool {name!r}: manual must be True or False", "invalid_tool")
        if self.strict is not None and type(self.strict) is not bool:
            raise _invalid(f"tool {name!r}: strict must be True, False or None", "invalid_tool")
        if self.handler is not None and not callable(self.handler):
            raise _invalid(f"tool {name!r}: handler must be callable", "invalid_tool")
        _check_mapping(self.metadata, f"tool {name!r}: metadata", "invalid_tool")


_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_tool_name(name: Any) -> None:
    """Raise :class:`~allm.errors.ValidationError` (``invalid_tool``) unless ``name`` is 1 to
    64 characters of ``A-Z a-z 0-9 _ -`` (the rule OpenAI, Anthropic and Gemini share)."""
    if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
        raise _invalid(
            f"tool name {name!r} must be 1 to 64 characters of letters, digits, '_' or '-'", "invalid_tool"
        )


_TOOL_MODES = ("auto", "none", "required")


@attrs.frozen
class ToolChoice:
    """Force the model to call the tool ``name`` (one of the request's or engine's tools).

    ``Request(tool_choice=ToolChoice("get_weather"))`` is the same as
    ``tool_choice="get_weather"``; each adapter sends its provider's forced-function form.
    """

    name: str

    def __attrs_post_init__(self) -> None:
        check_tool_name(self.name)
        if self.name in _TOOL_MODES:
            raise _invalid(
                f"ToolChoice({self.name!r}): a tool named {self.name!r} cannot be forced by name "
                f"(tool_choice={self.name!r} is the mode); rename the tool"
            )


def _named_choice(name: Any, shape: Mapping[str, Any]) -> str:
    if not isinstance(name, str):
        raise _invalid(f"tool_choice {dict(shape)!r} names no tool")
    return ToolChoice(name).name


def _choice_from_dict(d: Mapping[str, Any]) -> str:
    """A provider's own ``tool_choice`` shape as ``auto`` / ``none`` / ``required`` / a tool name."""
    t = d.get("type")
    if t == "function":
        fn = d.get("function")
        return _named_choice(fn.get("name") if isinstance(fn, Mapping) else d.get("name"), d)
    if t == "tool":
        return _named_choice(d.get("name"), d)
    if t in ("auto", "none"):
        return str(t)
    if t in ("any", "required"):
        return "required"
    cfg = d.get("functionCallingConfig", d.get("function_calling_config"))
    if isinstance(cfg, Mapping):
        mode = str(cfg.get("mode", "")).upper()
        names = cfg.get("allowedFunctionNames", cfg.get("allowed_function_names"))
        if mode == "ANY" and isinstance(names, (list, tuple)) and len(names) == 1:
            return _named_choice(names[0], d)
        if mode in ("AUTO", "NONE") and not names:
            return mode.lower()
        if mode == "ANY" and not names:
            return "required"
    raise _invalid(
        f"tool_choice {dict(d)!r} is not a shape allm reads: use 'auto', 'none', 'required', a tool name, "
        "ToolChoice(name), or one provider form ({'type': 'function', 'function': {'name': ...}}, "
        "{'type': 'function', 'name': ...}, {'type': 'tool', 'name': ...}, "
        "{'functionCallingConfig': {'mode': 'ANY', 'allowedFunctionNames': [name]}})"
    )


def _tool_choice(value: Any) -> str | None:
    """``tool_choice`` as stored: ``None``, ``auto`` / ``none`` / ``required``, or a tool name."""
    if value is None:
        return None
    if type(value) is ToolChoice:
        return value.name
    if isinstance(value, str):
        if value not in _TOOL_MODES and not _TOOL_NAME.fullmatch(value):
            raise _invalid(f"tool_choice {value!r} is neither auto, none, required nor a tool name")
        return str(value)
    if isinstance(value, Mapping):
        return _choice_from_dict(value)
    raise _invalid(f"tool_choice must be a string, ToolChoice or a provider's dict, not {_described(value)}")


@attrs.frozen
class ResponseFormat:
    """The shape asked of the model's answer: ``text``, ``json_object`` or ``json_schema``."""

    type: Literal["text", "json_object", "json_schema"] = "json_schema"
    name: str | None = None
    schema: Mapping[str, Any] | None = None
    strict: bool = True


# --------------------------------------------------------------------------- messages


_PART_TYPES = (TextPart, ImagePart, ReasoningPart)


def _parts(content: Any) -> str | tuple[Part, ...]:
    """Message content as stored: a string, or a tuple of parts (plain strings in a list
    become :class:`TextPart` s). Raises :class:`~allm.errors.ValidationError`
    (``invalid_message``) naming the first bad part by index and type."""
    if type(content) is str:
        return content
    if isinstance(content, str):
        return str(content)
    if type(content) in _PART_TYPES:
        return (content,)
    if content is None:
        raise _invalid("content is None: use '' for a message without text", "invalid_message")
    if isinstance(content, (bytes, bytearray, Mapping)) or not isinstance(content, Iterable):
        raise _invalid(
            f"content must be a string or a list of parts (TextPart, ImagePart, ReasoningPart), not {_described(content)}",
            "invalid_message",
        )
    out: list[Part] = []
    for i, p in enumerate(content):
        if type(p) in _PART_TYPES:
            out.append(p)
        elif isinstance(p, str):
            out.append(TextPart(str(p)))
        else:
            hint = (
                "; build parts with allm.TextPart(text) or allm.ImagePart.from_url(...) / from_bytes(...)"
                if isinstance(p, Mapping)
                else ""
            )
            raise _invalid(
                f"content[{i}] is {_described(p)}; a part is a str, TextPart, ImagePart or ReasoningPart{hint}",
                "invalid_message",
            )
    return tuple(out)


def _tool_calls(value: Iterable[ToolCall] | None) -> tuple[ToolCall, ...]:
    calls = _as_tuple(value)
    for i, tc in enumerate(calls):
        if type(tc) is not ToolCall:
            raise _invalid(f"tool_calls[{i}] is {_described(tc)}, not an allm.ToolCall", "invalid_message")
    return calls


@attrs.frozen
class Message:
    """One message of a conversation.

    ``content`` is a string or a tuple of parts (:class:`TextPart`,
    :class:`ImagePart`, :class:`ReasoningPart`); a list given here is stored as a
    tuple, and plain strings in it become :class:`TextPart` s. An assistant message
    may carry ``tool_calls``; a ``tool`` message answers one of them by
    ``tool_call_id`` and sets ``is_error`` when the tool failed.

    Raises :class:`~allm.errors.ValidationError` (``invalid_message``) for an unknown
    role, content that is ``None`` or holds something other than parts (a provider's
    ``{"type": "text", ...}`` dict, say: the error names its index and type), tool
    calls that are not :class:`ToolCall` values or sit on a message that is not the
    assistant's.
    """

    role: Role
    content: str | tuple[Part, ...] = attrs.field(default="", converter=_parts)
    tool_calls: tuple[ToolCall, ...] = attrs.field(default=(), converter=_tool_calls)
    tool_call_id: str | None = None
    name: str | None = None
    is_error: bool = False
    metadata: Mapping[str, Any] = attrs.field(factory=_empty_dict)

    def __attrs_post_init__(self) -> None:
        if self.role not in _ROLES:
            raise _invalid(
                f"unknown role {self.role!r}; expected one of system, user, assistant, tool", "invalid_message"
            )
        if self.tool_calls and self.role != "assistant":
            raise _invalid(f"a {self.role} message cannot carry tool_calls (only assistant messages do)", "invalid_message")
        if self.tool_call_id is not None and not isinstance(self.tool_call_id, str):
            raise _invalid(f"tool_call_id must be a string, not {_described(self.tool_call_id)}", "invalid_message")

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as its fields, rebuilt without checking them again: a third of the cost
        # of attrs' own state dict and __setstate__ (long threads are pickled whole).
        return _make_message, (self.role, self.content, self.tool_calls, self.tool_call_id, self.name, self.is_error, self.metadata)

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


def _picklable(make: Callable[..., Any], name: str) -> Callable[..., Any]:
    make.__module__, make.__name__, make.__qualname__ = __name__, name, name  # found again by pickle
    return make


_make_message = _picklable(unchecked(Message), "_make_message")
_make_tool_call = _picklable(unchecked(ToolCall), "_make_tool_call")


def _messages(value: Iterable[Message] | None, reason: str) -> tuple[Message, ...]:
    if isinstance(value, (str, Message)):
        raise _invalid(f"messages must be a list of allm.Message values, not {_described(value)}", reason)
    msgs = _as_tuple(value)
    for i, m in enumerate(msgs):
        if type(m) is not Message:
            raise _invalid(
                f"messages[{i}] is {_described(m)}, not an allm.Message (build one with allm.user(...), "
                "allm.system(...), allm.assistant(...) or allm.tool_result(...))",
                reason,
            )
    return msgs


def _thread_messages(value: Iterable[Message] | None) -> tuple[Message, ...]:
    return _messages(value, "invalid_thread")


def _request_messages(value: Iterable[Message] | None) -> tuple[Message, ...]:
    return _messages(value, "invalid_request")


@attrs.frozen
class Thread:
    """An ordered conversation: a tuple of messages plus caller metadata.

    Raises :class:`~allm.errors.ValidationError` (``invalid_thread``) for an item that is
    not a :class:`Message`. The ``add_*`` methods return a new thread with one message
    appended (the thread they are called on is unchanged).
    """

    messages: tuple[Message, ...] = attrs.field(default=(), converter=_thread_messages)
    metadata: Mapping[str, Any] = attrs.field(factory=_empty_dict)

    def add(self, *messages: Message) -> Thread:
        """A new thread with ``messages`` appended."""
        # Only the new messages are checked (this thread's were when it was built): a
        # thread grown one message at a time stays linear, not quadratic.
        return self._grown(messages)

    def extend(self, messages: Iterable[Message]) -> Thread:
        """A new thread with ``messages`` appended."""
        return self._grown(tuple(messages))

    def _grown(self, new: tuple[Message, ...]) -> Thread:
        for m in new:
            if type(m) is not Message:
                _thread_messages(self.messages + new)  # raises, naming the item's index in the thread
        return replaced(self, messages=self.messages + new)

    def add_user(self, content: str | Part | Sequence[str | Part]) -> Thread:
        """A new thread with a user message appended: text, or parts (see :func:`user`)."""
        return self.add(user(content))

    def add_system(self, content: str) -> Thread:
        """A new thread with a system message appended."""
        return self.add(system(content))

    def add_assistant(
        self, content: str | Part | Sequence[str | Part] = "", tool_calls: Iterable[ToolCall] = ()
    ) -> Thread:
        """A new thread with an assistant message appended (text and/or tool calls)."""
        return self.add(assistant(content, tool_calls))

    def add_tool_result(
        self, tool_call_id: str, content: str, *, name: str | None = None, is_error: bool = False
    ) -> Thread:
        """A new thread with the answer to the tool call ``tool_call_id`` appended (see :func:`tool_result`)."""
        return self.add(tool_result(tool_call_id, content, name=name, is_error=is_error))

    @property
    def last(self) -> Message | None:
        return self.messages[-1] if self.messages else None

    def __len__(self) -> int:
        return len(self.messages)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as one row of fields per message, gathered in C (no Python call per
        # message), rebuilt unchecked: long threads are pickled whole, in sessions too.
        if type(self) is not Thread:  # a subclass may carry more: attrs' own state
            return copyreg.__newobj__, (type(self),), self.__getstate__()  # type: ignore[attr-defined]
        return _thread_from_rows, (list(map(_message_row, self.messages)), self.metadata)


_message_row = operator.attrgetter(*(a.name for a in attrs.fields(Message)))


def _thread_from_rows(rows: Iterable[tuple[Any, ...]], metadata: Mapping[str, Any]) -> Thread:
    thread: Thread = _make_thread(tuple(itertools.starmap(_make_message, rows)), metadata)
    return thread


_make_thread = unchecked(Thread)


# --------------------------------------------------------------------------- request


PromptCacheRetention = Literal["5m", "1h", "24h"]
_RETENTIONS = ("5m", "1h", "24h")


@attrs.frozen
class PromptCache:
    """Ask the provider to cache the prompt's prefix for later calls.

    - ``key``: groups calls that share a prefix (a session or conversation id), so the
      provider routes them to the same cache. OpenAI's ``prompt_cache_key``.
    - ``retention``: how long the cached prefix should live, ``"5m"``, ``"1h"`` or
      ``"24h"`` (``None``: the provider's default).

    Mapped per provider (see ``guides/providers.md``): OpenAI Chat Completions and
    the Responses API send ``prompt_cache_key`` and ``prompt_cache_retention``
    (``"5m"`` -> ``"in_memory"``, ``"1h"`` and ``"24h"`` -> ``"24h"``); Anthropic puts a
    ``cache_control`` breakpoint (``ttl`` ``5m`` / ``1h``) on the last block of the
    prompt; Gemini has no equivalent (dropped with a warning). Raises
    :class:`~allm.errors.ValidationError` for an empty key or an unknown retention.
    """

    key: str | None = None
    retention: PromptCacheRetention | None = None

    def __attrs_post_init__(self) -> None:
        if self.key is not None and (not isinstance(self.key, str) or not self.key):
            raise _invalid(f"PromptCache.key must be a non-empty string or None, not {self.key!r}")
        if self.key is not None:
            check_json_value(self.key, "PromptCache.key")
        if self.retention is not None and self.retention not in _RETENTIONS:
            raise _invalid(f"PromptCache.retention must be '5m', '1h', '24h' or None, not {self.retention!r}")


# The sampling fields: (kind, lowest, highest). Bounds are what every provider accepts as a
# type (tokens fit a 32-bit count, a seed a 64-bit integer); each provider checks its own range.
_INT32 = 2**31 - 1
_SAMPLING: dict[str, tuple[str, float | None, float | None]] = {
    "temperature": ("number", 0, None),
    "top_p": ("number", 0, 1),
    "top_k": ("int", 1, _INT32),
    "max_tokens": ("int", 1, _INT32),
    "seed": ("int", -(2**63), 2**63 - 1),
    "frequency_penalty": ("number", None, None),
    "presence_penalty": ("number", None, None),
}


def _check_sampling(name: str, value: Any) -> None:
    kind, lo, hi = _SAMPLING[name]
    if kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        what = "an integer"
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        what = "a finite number"
    if not ok:
        raise _invalid(f"{name} must be {what}, not {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"at least {lo}" if hi is None else (f"at most {hi}" if lo is None else f"between {lo} and {hi}")
        raise _invalid(f"{name} must be {bounds}, not {value!r}")


def _stop_sequences(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    seqs = _as_tuple(value)
    for i, s in enumerate(seqs):
        if not isinstance(s, str) or not s:
            raise _invalid(f"stop_sequences[{i}] must be a non-empty string, not {s!r}")
        check_json_value(s, f"stop_sequences[{i}]")
    return seqs


def _request_tools(value: Iterable[Tool] | None) -> tuple[Tool, ...]:
    tools = _as_tuple(value)
    for i, t in enumerate(tools):
        if type(t) is not Tool:
            raise _invalid(
                f"tools[{i}] is {_described(t)}, not an allm.Tool (build one with allm.tool or allm.function_tool)",
                "invalid_tool",
            )
    return tools


@attrs.frozen
class Request:
    """Everything one model call needs except the key and the transport.

    Sampling fields left ``None`` are not sent. A field the target provider does
    not support is dropped and reported in :attr:`Response.warnings`.

    - ``temperature`` (a finite number, 0 or more), ``top_p`` (0 to 1), ``top_k``
      (an integer, 1 or more), ``frequency_penalty`` / ``presence_penalty`` (finite
      numbers), ``seed`` (a 64-bit integer).
    - ``max_tokens``: cap on generated tokens (an integer from 1 to 2**31 - 1).
    - ``stop_sequences``: non-empty strings (one string is one sequence).
    - ``tool_choice``: ``"auto"``, ``"none"``, ``"required"``, a tool name, a
      :class:`ToolChoice`, or a provider's own dict for a forced function (stored as
      the mode or the tool name). A name must be one of the tools offered (checked
      when the call is encoded, after the engine's tools are added).
    - ``prompt_cache``: a :class:`PromptCache` (key and retention of the prompt cache).
    - ``options``: provider-specific body fields, merged into the wire body last
      (JSON-native values only; see ``guides/providers.md`` for what each adapter reads).

    Raises :class:`~allm.errors.ValidationError` (``invalid_request``) naming the field
    for a value of the wrong type or out of range (``NaN``, ``inf``, ``"hot"``,
    ``-5``, ``10**30``), an ``options`` value JSON cannot hold (a ``set``, ``NaN``, a
    lone surrogate), and ``invalid_tool`` for a tool that is not a :class:`Tool`.
    """

    messages: tuple[Message, ...] = attrs.field(default=(), converter=_request_messages)
    model: str | None = None
    tools: tuple[Tool, ...] = attrs.field(default=(), converter=_request_tools)
    tool_choice: str | None = attrs.field(default=None, converter=_tool_choice)
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    stop_sequences: tuple[str, ...] = attrs.field(default=(), converter=_stop_sequences)
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    response_format: ResponseFormat | None = None
    options: Mapping[str, Any] = attrs.field(factory=_empty_dict)
    metadata: Mapping[str, Any] = attrs.field(factory=_empty_dict)
    prompt_cache: PromptCache | None = None

    def __attrs_post_init__(self) -> None:
        for name in _SAMPLING:
            value = getattr(self, name)
            if value is not None:
                _check_sampling(name, value)
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise _invalid(f"model must be a non-empty string or None, not {self.model!r}")
        if self.response_format is not None and type(self.response_format) is not ResponseFormat:
            raise _invalid(
                f"response_format must be an allm.ResponseFormat (allm.json_schema(...)), not {_described(self.response_format)}"
            )
        if self.prompt_cache is not None and type(self.prompt_cache) is not PromptCache:
            raise _invalid(f"prompt_cache must be an allm.PromptCache, not {_described(self.prompt_cache)}")
        if self.options:
            check_json_value(_check_mapping(self.options, "options"), "options")
        _check_mapping(self.metadata, "metadata")

    @property
    def thread(self) -> Thread:
        return Thread(self.messages)


# --------------------------------------------------------------------------- response


@attrs.frozen
class Usage:
    """Token counts of one call. A counter the provider did not report is ``None``, never 0.

    Each counter is an ``int`` (0 or more) or ``None``: anything else raises
    :class:`~allm.errors.ValidationError` (``invalid_request``). Adapters read a counter a
    provider sent as a numeric string (``"12"``) as that number; a counter they cannot
    read is ``None`` and its raw value is listed in ``Response.metadata["dropped_usage"]``.

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

    def __attrs_post_init__(self) -> None:
        for v in (
            self.input_tokens,
            self.output_tokens,
            self.cached_input_tokens,
            self.cache_write_input_tokens,
            self.reasoning_tokens,
            self.total_tokens,
        ):
            if v is not None and (type(v) is not int or v < 0):
                self._refuse()

    def _refuse(self) -> None:
        for f in attrs.fields(Usage):
            v = getattr(self, f.name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise _invalid(f"Usage.{f.name} must be a token count (an int, 0 or more) or None, not {v!r}")

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
        "quality", "style", "background", "output_format", "prompt_cache",
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


def system(content: str) -> Message:
    """A system message. Raises :class:`~allm.errors.ValidationError` (``invalid_message``)
    for content that is not text or parts."""
    return Message("system", content)


def user(content: str | Part | Sequence[str | Part]) -> Message:
    """A user message: text, or parts such as ``[TextPart(...), ImagePart(...)]`` (a plain
    string in the list is a :class:`TextPart`). Raises :class:`~allm.errors.ValidationError`
    (``invalid_message``) naming a part that is none of these."""
    return Message("user", content)


def assistant(content: str | Part | Sequence[str | Part] = "", tool_calls: Iterable[ToolCall] = ()) -> Message:
    """An assistant message (for building threads by hand, e.g. few-shot examples)."""
    return Message("assistant", content, tool_calls=tool_calls)


def tool_result(tool_call_id: str, content: str, *, name: str | None = None, is_error: bool = False) -> Message:
    """The answer to the tool call ``tool_call_id``, as the text the model will read.
    Raises :class:`~allm.errors.ValidationError` (``invalid_message``) for an empty or
    non-string ``tool_call_id``."""
    if not isinstance(tool_call_id, str) or not tool_call_id:
        raise _invalid(f"tool_result needs the tool_call_id it answers, not {tool_call_id!r}", "invalid_message")
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
