"""The telemetry record value (see :mod:`allm.telemetry`, which exports it as
``allm.telemetry.Record``; kept apart so that ``import allm`` does not build it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .types import Message, Request, Usage

__all__ = ["Record"]


@attrs.frozen
class Record:
    """One telemetry record. Times are seconds; token counts are the provider's.

    - ``kind``: see :data:`KINDS`; ``phase``: ``start``, ``stop``, ``exception`` or ``retry``.
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
    - Content (hidden from repr): ``request`` (the :class:`~allm.types.Request` sent;
      a chat's first), ``output`` (the final assistant message), ``tool_arguments``,
      ``tool_result``.
    """

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
    request: Request | None = attrs.field(default=None, repr=False, eq=False)
    output: Message | None = attrs.field(default=None, repr=False, eq=False)
    tool_arguments: Mapping[str, Any] | None = attrs.field(default=None, repr=False, eq=False)
    tool_result: Any = attrs.field(default=None, repr=False, eq=False)
    error: BaseException | None = attrs.field(default=None, repr=False, eq=False)
