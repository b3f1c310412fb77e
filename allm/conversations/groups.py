"""Tool groups: tools that share a context of their own.

A :class:`ToolGroup` is a set of tools plus a mapping their handlers receive, as
``ctx.context`` (a :class:`~allm.ToolContext`), over the conversation's context::

    weather = ToolGroup([get_weather], context={"api_key": weather_key})
    calendar = ToolGroup([list_events, add_event], context={"db": db})
    convs.open("c1", engine=engine, tools=[weather, calendar, get_time])

Each call is routed to the group that declared its tool, so ``get_weather`` sees
``weather_key`` and never ``db``. A plain tool in ``tools=`` is a group without a
context. A group's context is held in memory only: it is never stored, shown in a
repr or written to a log (it may hold keys or connections).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from .. import Tool
from ..errors import ValidationError

__all__ = ["ToolGroup", "bind_tools"]


def _tuple(v: Iterable[Tool]) -> tuple[Tool, ...]:
    return tuple(v)


def _mapping(v: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return dict(v) if v else {}


@attrs.frozen
class ToolGroup:
    """``tools`` whose handlers receive ``context`` (over the conversation's context,
    key by key). ``name`` only labels the group in error messages."""

    tools: tuple[Tool, ...] = attrs.field(converter=_tuple)
    context: Mapping[str, Any] = attrs.field(factory=dict, converter=_mapping, repr=False, eq=False)
    name: str | None = None


def _takes_context(handler: Callable[..., Any]) -> bool:
    """Whether a handler takes ``(args, ctx)`` rather than ``(args)``."""
    params = inspect.signature(handler).parameters.values()
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)


def _is_async(handler: Any) -> bool:
    if inspect.iscoroutinefunction(handler):
        return True
    return not inspect.isroutine(handler) and inspect.iscoroutinefunction(type(handler).__call__)


def _bound(tool: Tool, context: Mapping[str, Any]) -> Tool:
    handler = tool.handler
    if handler is None or not context or not _takes_context(handler):
        return tool

    def with_group(ctx: Any) -> Any:
        return attrs.evolve(ctx, context={**ctx.context, **context})

    if _is_async(handler):

        async def ahandler(args: Mapping[str, Any], ctx: Any) -> Any:
            return await handler(args, with_group(ctx))

        wrapped: Callable[..., Any] = ahandler
    else:

        def shandler(args: Mapping[str, Any], ctx: Any) -> Any:
            return handler(args, with_group(ctx))

        wrapped = shandler
    return attrs.evolve(tool, handler=wrapped)


def bind_tools(tools: Sequence[Tool | ToolGroup]) -> tuple[Tool, ...]:
    """The tools of every group, each handler bound to its group's context.

    Raises :class:`~allm.errors.ValidationError` (``invalid_tool``) when two groups
    declare the same tool name, or an entry is neither a Tool nor a ToolGroup.
    """
    out: list[Tool] = []
    owner: dict[str, str] = {}
    for i, entry in enumerate(tools):
        if isinstance(entry, ToolGroup):
            group, members, context = entry.name or f"group {i}", entry.tools, entry.context
        elif isinstance(entry, Tool):
            group, members, context = f"tool {i}", (entry,), {}
        else:
            raise ValidationError(
                f"tools[{i}] is a {type(entry).__name__}; expected an allm Tool or a ToolGroup", reason="invalid_tool"
            )
        for t in members:
            if not isinstance(t, Tool):
                raise ValidationError(f"{group} holds a {type(t).__name__}, not an allm Tool", reason="invalid_tool")
            if t.name in owner:
                raise ValidationError(
                    f"the tool {t.name!r} is declared twice ({owner[t.name]} and {group})", reason="invalid_tool"
                )
            owner[t.name] = group
            out.append(_bound(t, context))
    return tuple(out)
