"""What every history format shares: the typed warning, the error, and small readers.

A conversion never drops anything silently: what the target cannot hold becomes a
:class:`FormatWarning` in the returned list, or, with ``strict=True``, a
:class:`FormatError` (reason ``unrepresentable``) at the first loss.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import attrs
import orjson

from ..errors import ValidationError
from ..providers.assembler import parse_arguments
from ..types import Message, Part, Thread, ToolCall

__all__ = ["FormatError", "FormatWarning", "WarningKind"]

WarningKind = Literal[
    "unsupported_content",
    "unsupported_field",
    "foreign_reasoning",
    "rewritten",
    "unknown",
    "not_history",
]
_KINDS = frozenset(
    ("unsupported_content", "unsupported_field", "foreign_reasoning", "rewritten", "unknown", "not_history")
)


@attrs.frozen
class FormatWarning:
    """One thing a conversion could not carry over as it was.

    - ``kind``:

      - ``unsupported_content``: a part, block or item the target cannot hold was
        dropped (an image in a Chat Completions tool result, reasoning in Chat
        Completions...);
      - ``unsupported_field``: a field the target cannot hold was dropped (a
        message ``name``, ``is_error``, ``metadata``...);
      - ``foreign_reasoning``: reasoning made by another provider family (its
        signature would be refused) was dropped;
      - ``rewritten``: a value changed form to fit (a tool-call id rewritten for
        Anthropic, a system message moved to the top, messages merged);
      - ``unknown``: something in an imported payload that allm does not know was
        skipped (an unknown role, block type or key);
      - ``not_history``: request settings beside the conversation (``model``,
        ``tools``, ``temperature``...) were not read. The only kind that
        ``strict=True`` does not turn into an error.
    - ``path``: where, in the source: ``messages[2].content[1]`` for a thread
      being exported or a Chat/Anthropic payload, ``input[3]`` for a Responses
      payload, ``contents[1].parts[0]`` for a Gemini payload.
    - ``message``: what happened, in one sentence.
    """

    kind: WarningKind
    path: str
    message: str

    def __attrs_post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown warning kind {self.kind!r}; expected one of {sorted(_KINDS)}")

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def to_dict(self) -> dict[str, str]:
        """``{"kind", "path", "message"}``; :meth:`from_dict` reads it back."""
        return {"kind": self.kind, "path": self.path, "message": self.message}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FormatWarning:
        return cls(data["kind"], str(data.get("path", "")), str(data.get("message", "")))


class FormatError(ValidationError):
    """A history that cannot be read or written.

    Reasons: ``invalid_payload`` (a payload or file content of the wrong shape; the
    message names the path), ``unrepresentable`` (``strict=True`` and something
    would be lost; ``metadata["warning"]`` holds the :class:`FormatWarning` as a
    dict), ``unknown_format`` (a format name allm does not have, or a bare JSON file
    imported without ``format=``), ``invalid_file`` (not gzip/JSON, too large, or
    unreadable), ``unsupported_version`` (a file written by a newer format version).
    """

    reasons: ClassVar[frozenset[str]] = frozenset(
        {"invalid_payload", "unrepresentable", "unknown_format", "invalid_file", "unsupported_version", "unknown"}
    )
    default_reason: ClassVar[str] = "invalid_payload"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.to_dict(),))

    @property
    def warning(self) -> FormatWarning | None:
        """The loss that made a strict conversion fail (reason ``unrepresentable``)."""
        w = self.metadata.get("warning")
        return FormatWarning.from_dict(w) if isinstance(w, Mapping) else None


def _rebuild(data: Mapping[str, Any]) -> FormatError:
    return FormatError(
        str(data.get("message", "")),
        reason=data.get("reason"),
        metadata=data.get("metadata") or None,
    )


class Report:
    """Collects warnings; raises at the first real loss when strict."""

    __slots__ = ("strict", "warnings")

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.warnings: list[FormatWarning] = []

    def add(self, kind: WarningKind, path: str, message: str) -> None:
        w = FormatWarning(kind, path, message)
        if self.strict and kind != "not_history":
            raise FormatError(str(w), reason="unrepresentable", metadata={"warning": w.to_dict()})
        if w not in self.warnings:
            self.warnings.append(w)


# ------------------------------------------------------------------------------ export helpers


def messages_of(thread: Thread | Iterable[Message]) -> tuple[Message, ...]:
    """The messages of a thread (or of an iterable of messages), checked."""
    msgs = thread.messages if isinstance(thread, Thread) else tuple(thread)
    for i, m in enumerate(msgs):
        if not isinstance(m, Message):
            raise FormatError(f"messages[{i}] is a {type(m).__name__}, not a Message", reason="invalid_payload")
    return msgs


def check_thread_metadata(thread: Thread | Iterable[Message], fmt: str, report: Report) -> None:
    if isinstance(thread, Thread) and thread.metadata:
        report.add("unsupported_field", "metadata", f"thread metadata is not kept by {fmt}")


def check_fields(
    m: Message, where: str, fmt: str, report: Report, *, keep: Iterable[str] = (), metadata_keys: Iterable[str] = ()
) -> None:
    """Report the fields of ``m`` that ``fmt`` cannot hold for its role.

    ``keep`` names the fields the format carries for this message; ``metadata_keys``
    the top-level metadata keys it carries (``"anthropic"`` for cache control...).
    """
    kept = set(keep)
    if m.name is not None and "name" not in kept:
        report.add("unsupported_field", where, f"a {m.role} message name is not kept by {fmt}")
    if m.is_error and "is_error" not in kept:
        report.add("unsupported_field", where, f"is_error on a {m.role} message is not kept by {fmt}")
    if m.tool_call_id is not None and "tool_call_id" not in kept:
        report.add("unsupported_field", where, f"tool_call_id on a {m.role} message is not kept by {fmt}")
    if m.tool_calls and "tool_calls" not in kept:
        report.add("unsupported_content", where, f"tool calls on a {m.role} message are not kept by {fmt}")
    extra = sorted(k for k in m.metadata if k not in set(metadata_keys))
    if extra:
        report.add("unsupported_field", where, f"message metadata {extra} is not kept by {fmt}")


def redundant_tool_name(msgs: Sequence[Message], i: int) -> bool:
    """Whether tool message ``i``'s name is the name of the call it answers (derived, nothing to keep)."""
    m = msgs[i]
    for j in range(i - 1, -1, -1):
        for tc in msgs[j].tool_calls:
            if tc.id == m.tool_call_id and msgs[j].role == "assistant":
                return tc.name == m.name
    return False


def check_image_url(p: Any, where: str, fmt: str, report: Report) -> None:
    """Report the ``mime_type`` of a URL image, which a URL-only image field cannot hold."""
    if p.image.url is not None and p.image.mime_type is not None:
        report.add("unsupported_field", where, f"the mime_type of an image given by URL is not kept by {fmt}")


def arguments_text(tc: ToolCall) -> str:
    """The JSON text of a call's arguments: the model's own text when it agrees with
    ``arguments`` (or could not be parsed), else ``arguments`` serialised."""
    raw = tc.raw_arguments
    if tc.parse_error is not None:
        return raw
    parsed, err = parse_arguments(raw)
    if err is None and parsed == dict(tc.arguments):
        return raw if raw.strip() else "{}"
    return dumps(tc.arguments)


def call_arguments(tc: ToolCall, where: str, fmt: str, report: Report) -> dict[str, Any]:
    """A call's arguments as an object, for formats that carry objects (Anthropic, Gemini)."""
    if tc.parse_error is not None:
        report.add(
            "unsupported_content",
            where,
            f"the arguments of tool call {tc.id!r} are not a JSON object ({tc.raw_arguments!r}); {fmt} carries "
            "objects only, so {} was written",
        )
    return dict(tc.arguments)


def check_call_metadata(tc: ToolCall, where: str, fmt: str, report: Report, keep: Iterable[str] = ()) -> None:
    extra = sorted(k for k in tc.metadata if k not in set(keep))
    if extra:
        report.add("unsupported_field", where, f"tool call {tc.id!r} metadata {extra} is not kept by {fmt}")


# ------------------------------------------------------------------------------ import helpers


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode("utf-8")


def tool_call_from_text(id: str, name: str, raw: str, metadata: Mapping[str, Any] | None = None) -> ToolCall:
    args, err = parse_arguments(raw)
    return ToolCall(id, name, args, raw, err, dict(metadata or {}))


def tool_call_from_object(id: str, name: str, args: Mapping[str, Any], metadata: Mapping[str, Any] | None = None) -> ToolCall:
    return ToolCall(id, name, dict(args), dumps(args), None, dict(metadata or {}))


def empty(value: Any) -> bool:
    """Whether a JSON value carries nothing (``null``, ``[]``, ``{}``)."""
    return value is None or (isinstance(value, (list, dict)) and not value)


def unknown_keys(obj: Mapping[str, Any], known: Iterable[str], where: str, report: Report, what: str) -> None:
    """Report keys of ``obj`` that are neither known nor empty."""
    k = set(known)
    for key, value in obj.items():
        if key not in k and not empty(value):
            report.add("unknown", where, f"{what} field {key!r} is not read")


def need(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise FormatError(f"{where}: {what}", reason="invalid_payload")


def need_str(obj: Mapping[str, Any], key: str, where: str) -> str:
    v = obj.get(key)
    need(isinstance(v, str), where, f"{key!r} must be a string, got {type(v).__name__}")
    assert isinstance(v, str)
    return v


def need_list(value: Any, where: str) -> Sequence[Any]:
    need(isinstance(value, list), where, f"expected a JSON array, got {type(value).__name__}")
    assert isinstance(value, list)
    return value


def need_dict(value: Any, where: str) -> Mapping[str, Any]:
    need(isinstance(value, dict), where, f"expected a JSON object, got {type(value).__name__}")
    assert isinstance(value, dict)
    return value


def read_parts(
    content: Any, where: str, read: Callable[[str, Mapping[str, Any], str], Part | None]
) -> str | tuple[Part, ...]:
    """A content that is a string, ``null`` (``""``) or an array of part objects; each part is
    given to ``read(type, part, path)``, which returns a :class:`Part` or ``None`` (skipped,
    and reported by ``read``)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: list[Part] = []
    for j, raw in enumerate(need_list(content, f"{where}.content")):
        pw = f"{where}.content[{j}]"
        p = need_dict(raw, pw)
        part = read(str(p.get("type")), p, pw)
        if part is not None:
            parts.append(part)
    return tuple(parts)


def conversation(
    payload: Any, keys: Sequence[str], list_key: str, fmt: str, report: Report
) -> dict[str, Any]:
    """The conversation keys of a payload: a bare list stands for ``{list_key: list}``;
    a mapping's other keys are request settings, reported once as ``not_history``."""
    if isinstance(payload, list):
        return {list_key: payload}
    need(isinstance(payload, Mapping), "", f"a {fmt} payload must be a JSON object or array, got {type(payload).__name__}")
    other = sorted(k for k in payload if k not in keys)
    if other:
        report.add("not_history", "", f"request fields that are not conversation history were not read: {', '.join(other)}")
    return {k: payload[k] for k in keys if k in payload}


def merge_meta(*pairs: tuple[str, Mapping[str, Any] | None]) -> dict[str, Any]:
    return {k: dict(v) for k, v in pairs if v}
