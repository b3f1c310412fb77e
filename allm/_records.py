"""The telemetry record value (see :mod:`allm.telemetry`, which exports it as
``allm.telemetry.Record``; kept apart so that ``import allm`` does not build it).

A record is made for every phase of every observed operation, so it is built as cheaply as
Python allows: the fields given are the instance's ``__dict__`` (one dict, no per-field
setter), the others read their class default. It is immutable all the same, and compares
and hashes by its fields (content fields excepted), like a frozen ``attrs`` value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from attrs.exceptions import FrozenInstanceError

from .types import Message, Request, Usage

__all__ = ["FIELDS", "CONTENT", "Record"]

#: Every field of a record, in order (the first three are required).
FIELDS = (
    "kind",
    "phase",
    "id",
    "parent_id",
    "operation",
    "time",
    "request_id",
    "session_id",
    "provider",
    "model",
    "server_address",
    "server_port",
    "duration",
    "time_to_first_event",
    "attempts",
    "response_id",
    "response_model",
    "usage",
    "finish_reason",
    "cancelled",
    "error_reason",
    "error_type",
    "attempt",
    "retry_delay",
    "tool_name",
    "tool_call_id",
    "image_operation",
    "stream",
    "request",
    "output",
    "tool_arguments",
    "tool_result",
    "error",
)
#: The fields that point at the call's content: not shown in ``repr``, not compared.
CONTENT = frozenset({"request", "output", "tool_arguments", "tool_result", "error"})
_SHOWN = tuple(f for f in FIELDS if f not in CONTENT)
_KNOWN = frozenset(FIELDS)

_new = object.__new__
_set = object.__setattr__


class Lazy:
    """A record field's value made on first read, once (a chat's request is built only if a
    handler reads it). ``make`` must only read immutable values."""

    __slots__ = ("_make", "_value")

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make: Callable[[], Any] | None = make
        self._value: Any = None

    def value(self) -> Any:
        make = self._make
        if make is not None:
            self._value = make()
            self._make = None
        return self._value


class Record:
    """One telemetry record. Times are seconds; token counts are the provider's.

    - ``kind``: see :data:`allm.telemetry.KINDS`; ``phase``: ``start``, ``stop``,
      ``exception`` or ``retry``.
    - ``id``: the operation's id (shared by its records, unique in the process);
      ``parent_id``: the enclosing operation's, or ``None``.
    - ``operation``: the OpenTelemetry GenAI operation name (``chat``, ``invoke_agent``,
      ``execute_tool``, ``embeddings``, ``generate_content``...); ``time``: the wall-clock
      instant of the record (``time.time()``).
    - ``request_id``: allm's id of a model call (``Response.request_id``; a tool run
      carries the id of the call that asked for it); ``session_id``: the chat's or
      session's id, when it has one.
    - ``provider``, ``model`` (requested), ``server_address``, ``server_port`` (the host
      called; never the URL, which may carry a key).
    - ``stop``/``exception``: ``duration`` (since ``start``), ``attempts`` (made),
      ``response_id``, ``response_model``, ``usage`` (a chat's is the sum of its
      calls'), ``finish_reason`` (a chat's or step's ``halted_reason``),
      ``time_to_first_event`` (streams: from ``start`` to the first event handed to
      the caller), ``cancelled`` (the caller stopped before the end).
    - ``exception``: ``error_reason`` (an :class:`~allm.errors.AllmError`'s ``reason``,
      else the exception's class name), ``error_type`` (the class name), ``error``.
    - ``retry``: ``attempt`` (the attempt that failed, from 1), ``retry_delay`` (the
      sleep before the next), ``error_reason``, ``error_type``, ``error``.
    - ``tool``: ``tool_name``, ``tool_call_id``; ``image``: ``image_operation``
      (``generate``, ``edit``, ``variations``); model calls: ``stream`` (the provider was
      asked for a stream: ``False`` with ``http_streaming=False``).
    - Content (hidden from repr, not compared): ``request`` (the
      :class:`~allm.types.Request` sent; a chat's first), ``output`` (the final assistant
      message), ``tool_arguments``, ``tool_result``, ``error``.

    ``Record(kind, phase, id, **fields)`` raises ``TypeError`` for a field it does not
    have. Records are immutable (setting a field raises
    ``attrs.exceptions.FrozenInstanceError``); :meth:`evolve` gives a changed copy.
    """

    __match_args__ = FIELDS

    kind: str
    phase: str
    id: int
    parent_id: int | None = None
    operation: str | None = None
    time: float = 0.0
    request_id: str | None = None
    session_id: str | None = None
    provider: str | None = None
    model: str | None = None
    server_address: str | None = None
    server_port: int | None = None
    duration: float | None = None
    time_to_first_event: float | None = None
    attempts: int | None = None
    response_id: str | None = None
    response_model: str | None = None
    usage: Usage | None = None
    finish_reason: str | None = None
    cancelled: bool = False
    error_reason: str | None = None
    error_type: str | None = None
    attempt: int | None = None
    retry_delay: float | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None
    image_operation: str | None = None
    stream: bool | None = None
    output: Message | None = None
    tool_arguments: Mapping[str, Any] | None = None
    tool_result: Any = None
    error: BaseException | None = None

    def __init__(self, kind: str, phase: str, id: int, **fields: Any) -> None:
        unknown = fields.keys() - _KNOWN
        if unknown:
            raise TypeError(f"Record has no field {sorted(unknown)[0]!r}")
        fields["kind"], fields["phase"], fields["id"] = kind, phase, id
        _set(self, "__dict__", fields)

    @property
    def request(self) -> Request | None:
        """The :class:`~allm.types.Request` sent (a chat's first), or ``None``."""
        v = self.__dict__.get("request")
        if type(v) is Lazy:
            v = v.value()
        return v

    def evolve(self, **changes: Any) -> Record:
        """A copy with ``changes`` (``TypeError`` for a field it does not have)."""
        d = {**self.__dict__, **changes}
        return Record(d.pop("kind"), d.pop("phase"), d.pop("id"), **d)

    def _key(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f) for f in _SHOWN)

    def __eq__(self, other: object) -> bool:
        if type(other) is not Record:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return "Record(" + ", ".join(f"{f}={getattr(self, f)!r}" for f in _SHOWN) + ")"

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise FrozenInstanceError()

    def __delattr__(self, name: str) -> NoReturn:
        raise FrozenInstanceError()

    def __reduce__(self) -> tuple[Any, ...]:
        d = dict(self.__dict__)
        if type(d.get("request")) is Lazy:
            d["request"] = self.request
        return (_rebuild, (d,))


def _rebuild(fields: dict[str, Any]) -> Record:
    return make(fields)


def make(fields: dict[str, Any]) -> Record:
    """The record whose fields are ``fields`` (taken, not copied; the names are allm's own, so
    not checked): the hooks' constructor."""
    r: Record = _new(Record)
    _set(r, "__dict__", fields)
    return r
