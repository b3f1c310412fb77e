"""Testing code built on allm: no network, no key, no flakiness.

- Script the model: entries :func:`text`, :func:`tool_call`, :func:`usage`,
  :func:`finish`, :func:`error`, :func:`delay`... for :class:`~allm.providers.Fake`;
  :func:`fake` / :func:`fake_engine` build a :class:`ScriptedFake` that keeps the
  requests it was sent and the events it streamed; with no script, :func:`auto` plays
  a model that calls every tool with arguments made from its schema (:func:`example`).
- Check what was sent: :func:`assert_sent` (thread, tools, settings, with diffs);
  :func:`explain` diffs any two allm values.
- Replay real traffic: :func:`recording` records a provider's bytes once and replays
  them offline through the same adapters (:class:`Recording`, :class:`NoRecording`).
- Guard: :func:`block_requests` makes any real request raise :class:`RequestBlocked`.
- Ids: :func:`deterministic_ids` seeds request and session ids.

The pytest plugin (``allm.testing.pytest_plugin``, loaded automatically when allm is
installed) puts all of it behind fixtures and markers. See ``guides/testing.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes
from .fakes import ScriptedFake, auto, example, fake, fake_engine
from .script import (
    collect,
    delay,
    error,
    event_types,
    finish,
    image,
    raw_chunk,
    reasoning,
    text,
    tool_call,
    tool_call_delta,
    usage,
)

if TYPE_CHECKING:
    from .asserts import assert_sent, explain, render_message, render_thread
    from .guard import RequestBlocked, allow_requests, block_requests, requests_blocked
    from .ids import deterministic_ids
    from .recorder import Exchange, NoRecording, Recording, load_exchange, recording

__all__ = [
    "Exchange",
    "NoRecording",
    "Recording",
    "RequestBlocked",
    "ScriptedFake",
    "allow_requests",
    "assert_sent",
    "auto",
    "block_requests",
    "collect",
    "delay",
    "deterministic_ids",
    "error",
    "event_types",
    "example",
    "explain",
    "fake",
    "fake_engine",
    "finish",
    "image",
    "load_exchange",
    "raw_chunk",
    "reasoning",
    "recording",
    "render_message",
    "render_thread",
    "requests_blocked",
    "text",
    "tool_call",
    "tool_call_delta",
    "usage",
]

# The guard, recordings and assertions load on first use (they bring httpx and difflib).
_LAZY = {
    "assert_sent": ".asserts",
    "explain": ".asserts",
    "render_message": ".asserts",
    "render_thread": ".asserts",
    "RequestBlocked": ".guard",
    "allow_requests": ".guard",
    "block_requests": ".guard",
    "requests_blocked": ".guard",
    "deterministic_ids": ".ids",
    "Exchange": ".recorder",
    "NoRecording": ".recorder",
    "Recording": ".recorder",
    "load_exchange": ".recorder",
    "recording": ".recorder",
}


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY)
