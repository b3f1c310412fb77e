"""The values a queue carries and returns: :class:`Operation`, :class:`Task`, :class:`Outcome`.

All three are frozen ``attrs`` values with a JSON-native ``to_dict()`` / ``from_dict()`` form,
which is what travels through a broker (Celery's JSON serializer, arq's pickle). None of them
has a place for a key: a task names a *key reference*, which the worker resolves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

from ..errors import ValidationError

__all__ = ["Operation", "OperationKind", "Outcome", "Task"]

OperationKind = Literal["continue", "reply", "submit_tool_results", "approve", "reject"]
_KINDS: tuple[str, ...] = ("continue", "reply", "submit_tool_results", "approve", "reject")
_DEFAULT_REJECT = "The user declined this tool call."


def _strs(v: Iterable[str]) -> tuple[str, ...]:
    return tuple(v)


def _invalid(message: str) -> ValidationError:
    return ValidationError(message, reason="invalid_request")


def _fields(data: Any, what: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise _invalid(f"{what} is a mapping, not {type(data).__name__}")
    extra = set(data) - set(allowed)
    if extra:
        raise _invalid(f"unknown {what} field(s) {sorted(extra)}")
    return data


def _ids(value: Any, field: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise _invalid(f"{field} is a list of tool call ids, not {type(value).__name__}")
    for v in value:
        if not isinstance(v, str) or not v:
            raise _invalid(f"{field} holds tool call ids (non-empty strings), not {v!r}")
    return tuple(value)


@attrs.frozen
class Operation:
    """One session operation a task asks a worker to run (see :class:`allm.Session`).

    - ``continue``: run the loop on the session as it is (``idle`` or ``completed``; or
      ``awaiting_tools`` with calls this worker can run).
    - ``reply``: append the user's ``text`` and run the loop (``idle``, ``completed`` or
      ``awaiting_user``).
    - ``submit_tool_results``: answer pending calls with ``results`` (``{tool_call_id:
      JSON-native result}``); ids in ``errors`` are answered as tool errors.
    - ``approve``: run the handlers of the pending calls ``tool_call_ids``.
    - ``reject``: answer the pending calls ``tool_call_ids`` with ``{"error": reason}``.

    Build them with the class methods (``Operation.reply("hi")``...). Raises
    :class:`~allm.errors.ValidationError` (``invalid_request``) for fields that do not fit
    the kind.
    """

    kind: OperationKind
    text: str | None = None
    results: Mapping[str, Any] = attrs.field(factory=dict)
    errors: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    tool_call_ids: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    reason: str | None = None

    def __attrs_post_init__(self) -> None:
        k = self.kind
        if k not in _KINDS:
            raise _invalid(f"unknown operation {k!r}; expected one of {', '.join(_KINDS)}")
        if k == "reply" and (not isinstance(self.text, str) or not self.text):
            raise _invalid("a reply operation needs a non-empty text")
        if k != "reply" and self.text is not None:
            raise _invalid(f"text belongs to reply, not {k}")
        if k == "submit_tool_results":
            if not isinstance(self.results, Mapping) or not self.results:
                raise _invalid("submit_tool_results needs results: {tool_call_id: result, ...}")
            unknown = [i for i in self.errors if i not in self.results]
            if unknown:
                raise _invalid(f"errors names ids without a result: {unknown}")
        elif self.results or self.errors:
            raise _invalid(f"results belong to submit_tool_results, not {k}")
        if k in ("approve", "reject"):
            if not self.tool_call_ids:
                raise _invalid(f"{k} needs at least one tool call id")
            _ids(list(self.tool_call_ids), "tool_call_ids")
        elif self.tool_call_ids:
            raise _invalid(f"tool_call_ids belong to approve and reject, not {k}")
        if k != "reject" and self.reason is not None:
            raise _invalid(f"reason belongs to reject, not {k}")

    # -- constructors

    @classmethod
    def continue_(cls) -> Operation:
        return cls("continue")

    @classmethod
    def reply(cls, text: str) -> Operation:
        return cls("reply", text=text)

    @classmethod
    def submit_tool_results(cls, results: Mapping[str, Any], *, errors: Iterable[str] = ()) -> Operation:
        return cls("submit_tool_results", results=dict(results), errors=tuple(errors))

    @classmethod
    def approve(cls, *tool_call_ids: str) -> Operation:
        return cls("approve", tool_call_ids=tool_call_ids)

    @classmethod
    def reject(cls, *tool_call_ids: str, reason: str = _DEFAULT_REJECT) -> Operation:
        return cls("reject", tool_call_ids=tool_call_ids, reason=reason)

    # -- JSON-native form

    def to_dict(self) -> dict[str, Any]:
        """``{"op": kind, ...}`` with only the fields of the kind."""
        fields = {
            "text": self.text,
            "results": dict(self.results),
            "errors": list(self.errors),
            "tool_call_ids": list(self.tool_call_ids),
            "reason": self.reason,
        }
        return {"op": self.kind, **{k: v for k, v in fields.items() if v is not None and v != [] and v != {}}}

    @classmethod
    def from_dict(cls, data: Operation | Mapping[str, Any]) -> Operation:
        """The operation of :meth:`to_dict`. Raises :class:`~allm.errors.ValidationError`."""
        if isinstance(data, Operation):
            return data
        data = _fields(data, "operation", ("op", "text", "results", "errors", "tool_call_ids", "reason"))
        kind = data.get("op")
        if kind not in _KINDS:
            raise _invalid(f"unknown operation {kind!r}; expected one of {', '.join(_KINDS)}")
        results = data.get("results", {})
        if not isinstance(results, Mapping) or not all(isinstance(k, str) for k in results):
            raise _invalid("results is a mapping of tool call ids to results")
        text = data.get("text")
        if text is not None and not isinstance(text, str):
            raise _invalid("text is a string")
        reason = data.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise _invalid("reason is a string")
        if kind == "reject" and reason is None:
            reason = _DEFAULT_REJECT
        return cls(
            kind,
            text=text,
            results=dict(results),
            errors=_ids(data.get("errors", []), "errors"),
            tool_call_ids=_ids(data.get("tool_call_ids", []), "tool_call_ids"),
            reason=reason,
        )


def _check_name(_i: Any, a: Any, v: Any) -> None:
    if not isinstance(v, str) or not v:
        raise _invalid(f"{a.name} is a non-empty string, not {v!r}")


def _check_ref(_i: Any, _a: Any, v: Any) -> None:
    if v is not None and (not isinstance(v, str) or not v):
        raise _invalid(f"key_ref is a non-empty string (a name the worker resolves) or None, not {type(v).__name__}")


@attrs.frozen
class Task:
    """What a queue carries: which session, which operation, which engine, whose keys.

    - ``session_id``: the stored session's id.
    - ``operation``: an :class:`Operation`.
    - ``engine``: the name the worker's engine factory (or profile loader) builds an
      :class:`~allm.Engine` from.
    - ``key_ref``: a name for the caller's keys (a tenant id, a vault path); the worker
      resolves it to keys with its key resolver. Never a key.
    """

    session_id: str = attrs.field(validator=_check_name)
    operation: Operation
    engine: str = attrs.field(default="default", validator=_check_name)
    key_ref: str | None = attrs.field(default=None, validator=_check_ref)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"session_id": self.session_id, "operation": self.operation.to_dict(), "engine": self.engine}
        if self.key_ref is not None:
            out["key_ref"] = self.key_ref
        return out

    @classmethod
    def from_dict(cls, data: Task | Mapping[str, Any]) -> Task:
        """The task of :meth:`to_dict`. Raises :class:`~allm.errors.ValidationError`."""
        if isinstance(data, Task):
            return data
        data = _fields(data, "task", ("session_id", "operation", "engine", "key_ref"))
        if "session_id" not in data or "operation" not in data:
            raise _invalid("a task needs a session_id and an operation")
        return cls(
            data["session_id"], Operation.from_dict(data["operation"]), data.get("engine", "default"), data.get("key_ref")
        )


@attrs.frozen
class Outcome:
    """What one run of a task did (JSON-native through :meth:`to_dict`; no key, no content).

    - ``status`` / ``version``: the session's status and record version when the run ended
      (as this run last saw them).
    - ``applied``: the task's input (its reply, results, approvals...) is in the stored
      session, by this run or an earlier delivery (``duplicate``).
    - ``conflict``: another writer committed first, or holds the claim on a tool call
      this run was about to run; this run stopped without writing.
    - ``retry_after``: seconds after which running the task again makes progress (set
      when the input is not applied yet, or a claim blocks it); ``None``: nothing left to do.
    - ``model_calls``, ``tool_calls``, ``commits``: what this run did.
    - ``waiting_for``: pending tool call ids this worker does not run (manual tools,
      tools without a handler here): answer them with a new task.
    - ``halted_reason``: ``"max_turns"`` when the run stopped at the worker's limit of
      model calls with the session still ``idle``; else ``None``.
    """

    session_id: str
    status: str
    version: int
    applied: bool
    duplicate: bool = False
    conflict: bool = False
    retry_after: float | None = None
    model_calls: int = 0
    tool_calls: int = 0
    commits: int = 0
    waiting_for: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    halted_reason: str | None = None

    @property
    def should_retry(self) -> bool:
        """Whether a queue should run the task again (after ``retry_after`` seconds)."""
        return self.retry_after is not None

    def to_dict(self) -> dict[str, Any]:
        d = attrs.asdict(self)
        d["waiting_for"] = list(self.waiting_for)
        return d
