"""Middleware: code that runs at the tool loop's points, for logging, token budgets, rate
limits and content filters. See ``guides/middleware.md``.

A **middleware** is any object with one or more of these methods (each optional); every
one receives the run first (:class:`Run`: its id, session id, context, turn, usage so far):

==================================  ==========================================================
``before_model(run, request)``      before each model call: return ``None`` (go on), a new
                                    :class:`~allm.types.Request` (sent instead, this call only;
                                    the thread keeps the original) or a :class:`Stop`
``after_model(run, response)``      after each model call (``response.usage`` included):
                                    ``None`` or a :class:`Stop`
``before_tool(run, call)``          before each tool call the loop runs: ``None`` or a
                                    :class:`Refuse` (the model reads a tool error naming it)
``after_tool(run, outcome)``        after each tool call (a ``ToolOutcome``: ``call``,
                                    ``value``, ``error``); observes only
``on_event(run, event)``            every event of the run, as it is emitted; observes only
==================================  ==========================================================

The first three may be ``async def`` (then only the async calls can run them) or have an
async twin (``abefore_model``, ``aafter_model``, ``abefore_tool``) that the async calls use
instead: that is how a middleware doing I/O (Redis) stays off the event loop's thread.

A **pipeline** is an ordered list of entries, each a registered **name**, a middleware
(shared by every run) or a **factory** (a class or zero-argument function, called once per
run). A run's pipeline is ``Engine(middleware=...)``, then a session's stored names
(``Session.new(..., pipeline=[...])``), then the call's ``middleware=`` option. Hooks run in
that order; the first :class:`Stop` or :class:`Refuse` wins.

Where a middleware stops a run, the chat ends with ``halted_reason`` the stop's reason (the
built-ins use their names: ``token_budget``, ``rate_limit``, ``content_filter``) and
``metadata["stopped_by"]``; the thread stays consistent: a stop before a model call makes no
call; a stop after one keeps the response in a last step but never adds its message to the
thread. A session settles ``completed`` (legal next: ``reply``, ``continue_``).

Built-ins: :class:`TokenBudget`, :class:`RateLimit`, :class:`ContentFilter`,
:class:`RequestLog`; counters in memory (:class:`MemoryLimits`) or Redis
(:class:`RedisLimits`, ``pip install 'allm[redis]'``). :func:`from_spec` builds them from
plain data (a server's config).

Names: :func:`register` maps a name to a factory in this process; a stored session or engine
keeps names, and running one whose name is not registered raises
:class:`~allm.errors.EngineError` (``unknown_middleware``) naming it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes
from ._pipeline import HOOKS, Pipeline, as_pipeline, factory, register, registered, unregister

if TYPE_CHECKING:
    from ..tools import ToolOutcome
    from ._builtins import ContentFilter, RateLimit, RequestLog, TokenBudget, from_spec
    from ._core import Refuse, Run, Stop, Verdict
    from ._limits import Admission, Limits, MemoryLimits, RedisLimits

__all__ = [
    "HOOKS",
    "Admission",
    "ContentFilter",
    "Limits",
    "MemoryLimits",
    "Pipeline",
    "RateLimit",
    "RedisLimits",
    "Refuse",
    "RequestLog",
    "Run",
    "Stop",
    "TokenBudget",
    "ToolOutcome",
    "Verdict",
    "as_pipeline",
    "factory",
    "from_spec",
    "register",
    "registered",
    "unregister",
]

_LAZY = {
    "ToolOutcome": "..tools",
    "Refuse": "._core",
    "Run": "._core",
    "Stop": "._core",
    "Verdict": "._core",
    "ContentFilter": "._builtins",
    "RateLimit": "._builtins",
    "RequestLog": "._builtins",
    "TokenBudget": "._builtins",
    "from_spec": "._builtins",
    "Admission": "._limits",
    "Limits": "._limits",
    "MemoryLimits": "._limits",
    "RedisLimits": "._limits",
}


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY)
