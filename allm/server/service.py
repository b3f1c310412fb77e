"""The server's work, apart from HTTP: routes -> engines, running responses, storing them.

:class:`Responses` owns the route engines, the hosted tools, the store and the responses
running in this process (:class:`Run`). Each response runs as one asyncio task over
:func:`allm.astream` (the engine's tool loop, retries, keys and deadlines); its allm events
go through :class:`~allm.server.translate.EventMapper` into Open Responses events kept on
the run (followers read them as they come) and, with ``store``, written to the store
before the terminal event is published (so a response whose terminal event was sent
survives a crash).

Stored layout (namespace ``responses``, one key per response id): the record is JSON
``{"response", "core", "input_items", "events"}`` where ``core`` is the conversation after
the response without its ``instructions`` (:mod:`allm.codec` form), which a continuation
by ``previous_response_id`` extends; the log holds the streamed events, one JSON each.

A background response in a store other processes may share (any but ``memory://``: several
``allm serve`` workers or servers on one SQLite file or Redis) is visible to them while it
runs: its record (``{"response", "input_items", "running": true}``, no ``core`` yet) is
written before ``create`` returns, and every :data:`SHARE_EVERY` seconds the owning process
appends the new events to the log and rewrites the record (a conditional write on its
version). Another process answers ``GET`` from it, follows the log for
``GET ?stream=true``, asks for a cancel through namespace ``responses.cancel`` (which the
owner reads on its next visit), and deletes it by deleting the record (the owner's next
write then fails, and it stops the response without storing it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import attrs
import orjson

from .. import codec
from ..engine import Engine
from ..errors import AllmError, StoreError
from ..providers import registry
from ..stores import Store, open_store
from ..stores.memory import MemoryStore
from ..types import Message, Request, Thread, Tool
from .config import ConfigError, Route, ServerConfig, resolve_callable
from .stops import first_event_error, outcome
from .translate import (
    TERMINAL_EVENTS,
    ApiError,
    CreateParams,
    EventMapper,
    InputItemReader,
    ItemRewriter,
    ToolTranslator,
    build_call,
    client_tools,
    encode_compaction,
    error_from_allm,
    input_items,
    invalid,
    items_to_thread,
    kept_item,
    new_id,
    response_of_item,
    transcript,
    usage_object,
)

__all__ = ["CANCELS", "NAMESPACE", "RUNNING", "SHARE_EVERY", "STALE_AFTER", "Responses", "Run", "RunObserver"]

log = logging.getLogger("allm.server")

NAMESPACE = "responses"
#: Cancel requests for background responses running in another process (key: the response id).
CANCELS = "responses.cancel"
#: Seconds between the visits of a shared background response to the store.
SHARE_EVERY = 0.25
#: The summary call's instructions (``POST /v1/responses/compact``).
COMPACT_INSTRUCTIONS = (
    "You compact conversations. Summarise the conversation you are given so that it can go on "
    "without it: keep every fact, decision, name, number, tool result and open question a later "
    "turn needs, and what the assistant already said or did. Write only the summary."
)
#: How the summary starts, as the assistant message a compaction item reads back as.
SUMMARY_PREFIX = "Summary of the conversation so far: "
#: Seconds without a visit after which a running background response's process is taken as gone.
STALE_AFTER = 10.0
#: The statuses of a response that has not ended.
RUNNING = frozenset({"queued", "in_progress"})
#: Called with (run, event) for every event a run publishes (metrics, tracing...).
RunObserver = Callable[["Run", Mapping[str, Any]], None]


def _now() -> int:
    return int(time.time())


class Run:
    """One response being produced in this process.

    ``events`` grows as the response streams (each a dict with ``sequence_number``);
    :meth:`follow` yields them to any number of readers; ``final`` is the response object
    after the terminal event; ``started`` resolves at the first upstream event (or with
    the :class:`ApiError` of a call that failed before it).
    """

    def __init__(self, service: Responses, params: CreateParams, mapper: EventMapper, core: Thread,
                 items: list[dict[str, Any]], route: Route, *, live: bool = False) -> None:
        self.service = service
        self.params = params
        self.mapper = mapper
        self.id = mapper.id
        self.core = core
        self.items = items
        self.route = route
        self.events: list[dict[str, Any]] = []
        self.final: dict[str, Any] | None = None
        self.done = asyncio.Event()
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None
        self.cancel_status = "incomplete"
        self.cancel_reason = "client_disconnected"
        self.after_core: Thread | None = None
        self.live = live  # its events go out as they come whatever `stream` says (a WebSocket turn)
        self.discard = False  # deleted while running: not stored when it ends
        self.concluding = False  # storing its end: no longer cancelled
        self.sharer: asyncio.Task[None] | None = None  # its visits to a shared store
        self.stop_sharing = asyncio.Event()
        self.shared_events = 0  # events already in the store's log
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def status(self) -> str:
        """The response's status now."""
        if self.final is not None:
            return str(self.final["status"])
        return "in_progress" if self.started.done() or not self.params.background else "queued"

    def snapshot(self) -> dict[str, Any]:
        """The response object now (the final one once done)."""
        return self.final if self.final is not None else self.mapper.snapshot(self.status)

    def _wake(self) -> None:
        """Resume every follower waiting for events."""
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def _push(self, events: Sequence[dict[str, Any]]) -> None:
        if not events:
            return
        self.events.extend(events)
        for obs in self.service.observers:
            for ev in events:
                try:
                    obs(self, ev)
                except Exception:  # an observer never breaks a response
                    log.exception("server observer failed")
        if self._waiters:
            self._wake()

    async def follow_batches(self, after: int = -1) -> AsyncIterator[list[dict[str, Any]]]:
        """The events with ``sequence_number > after`` as lists of every event published since the
        last list (in order, none missed or repeated), as they come, until the terminal one."""
        i = after + 1
        while True:
            n = len(self.events)
            if i < n:
                batch = self.events[i:n]
                i = n
                yield batch
                continue
            if self.done.is_set():
                return
            w = asyncio.get_running_loop().create_future()
            self._waiters.append(w)
            try:
                await w
            finally:
                if not w.done():
                    w.cancel()

    async def follow(self, after: int = -1) -> AsyncIterator[dict[str, Any]]:
        """Every event with ``sequence_number > after``, as they come, until the terminal one."""
        async for batch in self.follow_batches(after):
            for ev in batch:
                yield ev

    def cancel(self, status: str = "incomplete", reason: str = "client_disconnected") -> None:
        """Stop the work: the upstream call is closed, running tools cancelled; the response
        ends ``incomplete`` (or ``cancelled``) with ``reason``."""
        if self.task is not None and not self.task.done() and not self.done.is_set() and not self.concluding:
            self.cancel_status, self.cancel_reason = status, reason
            self.task.cancel()

    async def wait(self) -> dict[str, Any]:
        """The final response object (waits for the terminal event)."""
        await self.done.wait()
        assert self.final is not None
        return self.final


@attrs.frozen
class _RouteEngine:
    route: Route
    engine: Engine
    hosted: tuple[Tool, ...]


class Responses:
    """Routes, hosted tools, the store and the running responses (see the module docstring).

    ``tool_types`` maps extra request tool types to translators (the seam for ``mcp``);
    ``observers`` see every published event; ``chat_options`` give extra
    :class:`allm.ChatOptions` per call (``(route, params, headers) -> mapping``);
    ``item_rewriters`` rewrite output items as clients see them; ``input_item_types`` read
    custom input item types back as standard items.
    Raises :class:`~allm.server.config.ConfigError` for a route or tool that cannot be built.
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        store: Store | None = None,
        tool_types: Mapping[str, ToolTranslator] | None = None,
        observers: Sequence[RunObserver] = (),
        chat_options: Sequence[Callable[[Route, CreateParams, Mapping[str, str]], Mapping[str, Any]]] = (),
        item_rewriters: Sequence[ItemRewriter] = (),
        input_item_types: Mapping[str, InputItemReader] | None = None,
    ) -> None:
        self.config = config
        self.store = store if store is not None else open_store(config.store_url())
        self.tool_types = dict(tool_types or {})
        self.observers = list(observers)
        self.chat_options = list(chat_options)
        self.item_rewriters = tuple(item_rewriters)
        self.input_item_types = dict(input_item_types or {})
        self.runs: dict[str, Run] = {}
        self.mapper_factory: Callable[..., EventMapper] = EventMapper  # allm.server.extras
        self.prepare_input: list[Callable[[CreateParams, list[dict[str, Any]], Thread], Any]] = []
        self._writes = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Whether other processes may read this store (see the module docstring).
        self.shared = not isinstance(self.store, MemoryStore)
        hosted = self._hosted_tools(config)
        self.routes = [self._build(i, r, hosted) for i, r in enumerate(config.routes)]

    # -- setup

    @staticmethod
    def _hosted_tools(config: ServerConfig) -> dict[str, Tool]:
        from ..tools import function_tool

        out: dict[str, Tool] = {}
        for name, spec in config.tools.items():
            fn = spec if callable(spec) else resolve_callable(spec, key=f"tools.{name}")
            try:
                out[name] = function_tool(name=name)(fn)
            except (AllmError, TypeError, ValueError) as exc:
                raise ConfigError(f"cannot make a tool of {spec!r}: {exc}", key=f"tools.{name}") from None
        return out

    @staticmethod
    def _build(i: int, r: Route, hosted: Mapping[str, Tool]) -> _RouteEngine:
        try:
            if r.adapter:
                factory = r.adapter if callable(r.adapter) else resolve_callable(r.adapter, key=f"routes[{i}].adapter")
                adapter = factory(**r.options)
            else:
                assert r.provider is not None
                adapter = registry.build(r.provider, base_url=r.base_url, **r.options)
            mw: list[Any] = []
            if r.middleware:
                from ..middleware import from_spec

                mw = list(from_spec(list(r.middleware)))
            from ..policy import RetryPolicy, Timeouts

            engine = Engine(adapter=adapter, model=r.model, defaults=dict(r.defaults), middleware=mw,
                            retry=RetryPolicy(**r.retry), timeouts=Timeouts(**r.timeouts))
        except ConfigError:
            raise
        except (AllmError, TypeError, ValueError) as exc:
            raise ConfigError(f"cannot build the route: {exc}", key=f"routes[{i}]") from None
        names = r.tools if r.tools is not None else tuple(hosted)
        return _RouteEngine(r, engine, tuple(hosted[n] for n in names))

    def route_for(self, model: str) -> _RouteEngine:
        """The first route whose ``match`` is found in ``model``; 404 ``model_not_found`` when none."""
        for re_ in self.routes:
            if re_.route.pattern.search(model):
                return re_
        raise ApiError(404, "not_found", f"no route serves the model {model!r}", code="model_not_found", param="model")

    def models(self) -> list[dict[str, Any]]:
        """``GET /v1/models`` entries: each route's ``models`` and its fixed ``model``."""
        seen: dict[str, str] = {}
        for re_ in self.routes:
            for m in (*re_.route.models, *((re_.route.model,) if re_.route.model else ())):
                seen.setdefault(m, re_.route.name)
        return [{"id": m, "object": "model", "created": 0, "owned_by": owner} for m, owner in seen.items()]

    # -- stored responses

    async def load(self, response_id: str) -> dict[str, Any] | None:
        """The stored record (``{"response", "core", "input_items"}``) or ``None``.

        The record of a background response still running elsewhere whose process has not
        rewritten it for :data:`STALE_AFTER` seconds is answered ``failed`` (``server_error``):
        that process is gone (the stored record itself is left as it is)."""
        rec = await self.store.aget(NAMESPACE, response_id)
        if rec is None:
            return None
        data: dict[str, Any] = orjson.loads(rec.value)
        if data.get("running") and time.time() - rec.updated_at > STALE_AFTER and response_id not in self.runs:
            message = "the server process running this response stopped before it ended"
            data["response"] = {**data["response"], "status": "failed",
                                "error": {"code": "server_error", "message": message}}
        return data

    async def previous_core(self, previous_id: str, cache: Mapping[str, Thread] | None = None) -> Thread:
        """The conversation after response ``previous_id``: from ``cache`` (a WebSocket's
        connection-local state), a run of this process that is done, or the store; 400
        ``previous_response_not_found`` otherwise."""
        if cache is not None and previous_id in cache:
            return cache[previous_id]
        run = self.runs.get(previous_id)
        if run is not None and run.params.store and run.done.is_set() and run.after_core is not None:
            return run.after_core
        data = await self.load(previous_id)
        if data is None:
            raise ApiError(400, "invalid_request", f"Previous response with id {previous_id!r} not found.",
                           code="previous_response_not_found", param="previous_response_id")
        if "core" not in data:  # a background response still running (in another process)
            raise ApiError(400, "invalid_request", f"Previous response with id {previous_id!r} has not finished.",
                           code="previous_response_not_finished", param="previous_response_id")
        return codec.from_dict(data["core"], Thread)

    async def cancel_elsewhere(self, response_id: str, wait: float = 10.0) -> dict[str, Any] | None:
        """Ask the process running background response ``response_id`` to cancel it (see the
        module docstring); the stored record once it has ended, or as it is after ``wait``
        seconds (its process may be gone); ``None`` when it was deleted meanwhile."""
        await self.store.aput(CANCELS, response_id, b"1")
        deadline = time.monotonic() + wait
        while True:
            data = await self.load(response_id)
            if data is None or data["response"].get("status") not in RUNNING:
                # Ended (perhaps before the request was written, so its owner never read it): the
                # request goes too, lest it outlive the response.
                await self.store.adelete(CANCELS, response_id)
                return data
            if time.monotonic() >= deadline:
                return data
            await asyncio.sleep(0.05)

    async def follow_stored(self, response_id: str, after: int = -1, idle: float = STALE_AFTER) -> AsyncIterator[bytes]:
        """The stored events after ``after`` (JSON each), and, while the response runs in
        another process, those it adds, until the terminal one; stops when the record is
        deleted or has not changed for ``idle`` seconds (its process is gone)."""
        i = after + 1
        while True:
            items = await self.store.aread(NAMESPACE, response_id, i)
            for item in items:
                yield item
            i += len(items)
            if items and orjson.loads(items[-1]).get("type") in TERMINAL_EVENTS:
                return
            rec = await self.store.aget(NAMESPACE, response_id)
            if rec is None:
                return
            if not orjson.loads(rec.value).get("running"):
                rest = await self.store.aread(NAMESPACE, response_id, i)  # written just before the record
                for item in rest:
                    yield item
                return
            if time.time() - rec.updated_at > idle:
                return
            await asyncio.sleep(SHARE_EVERY / 2)

    async def delete(self, response_id: str) -> bool:
        """Delete a stored response (and stop it if running here); whether it existed."""
        run = self.runs.get(response_id)
        if run is not None and run.params.store:
            run.discard = True
            run.cancel("cancelled", "deleted")
            await run.done.wait()
            await self.store.adelete(NAMESPACE, response_id)
            return True
        return await self.store.adelete(NAMESPACE, response_id)

    async def prune(self) -> list[str]:
        """Apply the retention limit (``retention_max_age`` / ``retention_max_count``); the ids removed."""
        c = self.config
        if c.retention_max_age is None and c.retention_max_count is None:
            return []
        return await self.store.aprune(NAMESPACE, max_age=c.retention_max_age, max_count=c.retention_max_count)

    async def _persist(self, run: Run, final: dict[str, Any], terminal: dict[str, Any]) -> None:
        events = [*run.events, terminal]
        record = {
            "response": final,
            "core": codec.to_dict(run.after_core or run.core),
            "input_items": run.items,
        }
        if run.sharer is not None:
            # Its record and the first events are in the store already, read by other
            # processes: the rest of the log, then the final record over the running one.
            await self.store.aappend(NAMESPACE, run.id, [orjson.dumps(e) for e in events[run.shared_events:]])
            await self.store.aput(NAMESPACE, run.id, orjson.dumps(record))
            await self.store.adelete(CANCELS, run.id)
        else:
            await self.store.adelete(NAMESPACE, run.id)
            await self.store.aappend(NAMESPACE, run.id, [orjson.dumps(e) for e in events])
            await self.store.aput(NAMESPACE, run.id, orjson.dumps(record))
        self._writes += 1
        if self._writes % 100 == 0:
            try:
                await self.prune()
            except AllmError:
                log.exception("pruning stored responses failed")

    async def resolve_references(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``items`` with each ``item_reference`` replaced by the item it names: an output or
        input item of a stored response (or of one of this process that has ended). Raises
        :class:`ApiError` 400 ``item_not_found`` for an id that names no such item (an item of a
        ``store: false`` response, a deleted one, or an id this server did not make)."""
        if not any(it.get("type") == "item_reference" for it in items):
            return items
        out: list[dict[str, Any]] = []
        outputs: dict[str, list[Any]] = {}
        for i, it in enumerate(items):
            if it.get("type") != "item_reference":
                out.append(it)
                continue
            ref = it.get("id")
            where = f"input[{i}].id"
            if not isinstance(ref, str) or not ref:
                raise invalid(f"{where}: an item_reference needs the id of an item", where)
            rid = response_of_item(ref)
            if rid is not None and rid not in outputs:
                outputs[rid] = await self._items_of(rid)
            found = next((x for x in outputs.get(rid or "", ()) if isinstance(x, dict) and x.get("id") == ref), None)
            if found is None:
                raise ApiError(400, "invalid_request", f"Item with id {ref!r} not found.", code="item_not_found", param=where)
            out.append(dict(found))
        return out

    async def _items_of(self, response_id: str) -> list[Any]:
        """The output and input items of a stored response, or of one of this process that has ended."""
        run = self.runs.get(response_id)
        if run is not None and run.final is not None and run.params.store:
            return [*(run.final.get("output") or ()), *run.items]
        data = await self.load(response_id)
        if data is None or data.get("running"):
            return []
        return [*(data["response"].get("output") or ()), *(data.get("input_items") or ())]

    # -- compaction

    async def compact(self, params: CreateParams, headers: Mapping[str, str]) -> dict[str, Any]:
        """``POST /v1/responses/compact``: the conversation (``previous_response_id``'s, then
        ``input``) as a shorter window. User and system messages are kept as they are (message
        items); everything else (assistant answers, tool calls and results, reasoning) is
        summarised by the route's model into one ``compaction`` item, which reads back as one
        assistant message. With nothing to summarise, no model is called (the item is empty).
        ``usage`` is the summary call's.

        Raises :class:`ApiError`: 404 no route, 400 a bad input or an unknown or unfinished
        ``previous_response_id``, and the upstream's error mapped when the summary call fails.
        """
        from ..api import agenerate

        re_ = self.route_for(params.model)
        core = Thread()
        if params.previous_response_id:
            core = await self.previous_core(params.previous_response_id)
        new = items_to_thread(await self.resolve_references(input_items(params)), self.input_item_types)
        thread = Thread((*core.messages, *new.messages))
        kept = [m for m in thread.messages if m.role in ("user", "system")]
        packed, usage = Thread(), None
        if len(kept) < len(thread.messages):
            req = Request((Message("system", COMPACT_INSTRUCTIONS), Message("user", transcript(thread))))
            if re_.route.model is None:
                req = attrs.evolve(req, model=params.model)
            options: dict[str, Any] = {}
            key = self._key(re_.route, headers)
            if key:
                options["api_key"] = key
            try:
                summary = await agenerate(re_.engine, req, **options)
            except AllmError as exc:
                raise error_from_allm(exc) from None
            failed = summary.metadata.get("error") if summary.finish_reason == "error" else None
            if isinstance(failed, AllmError):  # the stream failed part-way: no half summary
                raise error_from_allm(failed)
            usage = summary.usage
            packed = Thread((Message("assistant", SUMMARY_PREFIX + (summary.output_text or "").strip()),))
        output = [kept_item(m) for m in kept]
        output.append({"type": "compaction", "id": new_id("cmp"), "encrypted_content": encode_compaction(packed)})
        return {"id": new_id("resp"), "object": "response.compaction", "created_at": _now(), "output": output,
                "usage": usage_object(usage)}

    # -- creating responses

    async def create(
        self,
        params: CreateParams,
        headers: Mapping[str, str],
        *,
        cache: Mapping[str, Thread] | None = None,
        live: bool = False,
    ) -> Run:
        """Start a response; return its :class:`Run` once the upstream answered (at once for
        ``background``). ``live``: the caller sends the events on as they come whatever
        ``stream`` says (a WebSocket); a response that is neither ``live``, streamed nor in
        the background asks the provider for one JSON body (the same events).

        Raises :class:`ApiError`: 400 for a bad request or an unknown ``previous_response_id``,
        404 for no route, and the upstream's error mapped (429 rate limited, 502 upstream
        failure...) when the call failed before its first event.
        """
        if params.background and not params.store:
            raise invalid("background responses must be stored (store: true)", "background")
        re_ = self.route_for(params.model)
        core = Thread()
        if params.previous_response_id:
            core = await self.previous_core(params.previous_response_id, cache)
        response_id = new_id("resp")
        items = await self.resolve_references(input_items(params, response_id))
        for prepare in self.prepare_input:
            items = await prepare(params, items, core)
        new = items_to_thread(items, self.input_item_types)
        core = Thread((*core.messages, *new.messages))
        tools = client_tools(params, self.tool_types)
        names = {t.name for t in tools}
        tools += [t for t in re_.hosted if t.name not in names]
        thread, req, options = build_call(params, core, tools, instructions=re_.route.instructions)
        if re_.route.model is None:
            req = attrs.evolve(req, model=params.model)
        key = self._key(re_.route, headers)
        if key:
            options["api_key"] = key
        if not (live or params.stream or params.background):
            # Nobody can watch this response's events as they come (its id is known only
            # when it is done): ask the provider for one JSON body, decoded into the same
            # events. A background response keeps the provider's stream, which
            # GET /v1/responses/{id}?stream=true follows.
            options["http_streaming"] = False
        for hook in self.chat_options:
            options.update(hook(re_.route, params, headers))
        mapper = self.mapper_factory(params, response_id, _now(), self.item_rewriters)
        if params.reasoning:
            mapper.warnings.append("reasoning settings are not passed to the provider by this server")
        if params.top_logprobs:
            mapper.warnings.append("top_logprobs is not supported by this server")
        run = Run(self, params, mapper, core, items, re_.route, live=live)
        try:
            from ..driver import astream

            stream = astream(re_.engine, req, **options)
        except AllmError as exc:
            raise error_from_allm(exc) from None
        version: int | None = None
        if params.background:
            run._push(mapper.start("queued"))
            if self.shared:
                try:
                    version = await self._share(run, None)
                except StoreError as exc:  # it still runs, seen by this process only until it ends
                    log.warning("sharing response %s failed: %s", run.id, exc.message)
        self.runs[run.id] = run
        run.task = asyncio.create_task(self._execute(run, stream, len(thread.messages) - len(core.messages)))
        self._tasks.add(run.task)
        run.task.add_done_callback(lambda task: self._task_done(run, task))
        if params.background:
            if version is not None:
                run.sharer = asyncio.create_task(self._keep_sharing(run, version))
                self._tasks.add(run.sharer)
                run.sharer.add_done_callback(self._tasks.discard)
            return run
        try:
            await asyncio.shield(run.started)
        except ApiError:
            self.runs.pop(run.id, None)
            raise
        except asyncio.CancelledError:
            run.cancel()
            raise
        return run

    async def _share(self, run: Run, version: int | None) -> int:
        """Write ``run``'s new events and its running record (``version``: the record's last
        version, ``None`` for the first write); the new version. Raises
        :class:`~allm.errors.StoreError` ``version_conflict`` when another process deleted it."""
        n = len(run.events)
        if n > run.shared_events:
            await self.store.aappend(NAMESPACE, run.id, [orjson.dumps(e) for e in run.events[run.shared_events:n]])
            run.shared_events = n
        record = {"response": run.snapshot(), "input_items": run.items, "running": True}
        return await self.store.aput(NAMESPACE, run.id, orjson.dumps(record), expect=version if version is not None else 0)

    async def _keep_sharing(self, run: Run, version: int) -> None:
        """Every :data:`SHARE_EVERY` seconds until ``run`` concludes: a cancel asked by another
        process cancels it, a deleted record stops it unstored, else its record is rewritten."""
        while not run.concluding:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.stop_sharing.wait(), SHARE_EVERY)
            if run.concluding:
                return
            try:
                if await self.store.aget(CANCELS, run.id) is not None:
                    run.cancel("cancelled", "cancelled")
                    return
                if run.concluding:
                    return
                version = await self._share(run, version)
            except StoreError as exc:
                if exc.reason != "version_conflict":
                    log.warning("sharing response %s failed: %s", run.id, exc.message)
                    continue
                run.discard = True  # deleted by another process
                run.cancel("cancelled", "deleted")
                return

    def _task_done(self, run: Run, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a response task failed", exc_info=task.exception())
        if not run.done.is_set():  # cancelled before it ever ran: end it here
            mapper = run.mapper
            start = mapper.start() if not run.params.background else mapper.in_progress()
            terminal = [*start, *mapper.finish(run.cancel_status, run.cancel_reason, now=_now())]
            if not run.started.done():
                run.started.set_result(None)
            later = asyncio.ensure_future(self._conclude(run, terminal))
            self._tasks.add(later)
            later.add_done_callback(self._tasks.discard)

    @staticmethod
    def _key(route: Route, headers: Mapping[str, str]) -> str | None:
        if route.key_header:
            v = headers.get(route.key_header.lower())
            if v:
                return v[7:] if v.lower().startswith("bearer ") else v
        if route.api_key_env:
            return os.environ.get(route.api_key_env) or None
        return None

    async def _execute(self, run: Run, stream: Any, lead: int) -> None:
        mapper = run.mapper
        first = True
        terminal: list[dict[str, Any]] = []
        try:
            try:
                async for ev in stream:
                    if first:
                        if (stopped := first_event_error(ev)) is not None:
                            raise stopped
                        first = False
                        if run.params.background:
                            run._push(mapper.in_progress())
                        else:
                            run._push(mapper.start())
                        if not run.started.done():
                            run.started.set_result(None)
                    run._push(mapper.feed(ev))
                if first:  # no event at all
                    run._push(mapper.start() if not run.params.background else mapper.in_progress())
                    if not run.started.done():
                        run.started.set_result(None)
                terminal = mapper.finish(*outcome(mapper), now=_now())
            finally:
                await stream.aclose()
        except asyncio.CancelledError:
            if first and not run.started.done():
                run._push(mapper.start() if not run.params.background else mapper.in_progress())
                run.started.set_result(None)
            terminal = mapper.finish(run.cancel_status, run.cancel_reason, now=_now())
        except AllmError as exc:
            api = error_from_allm(exc)
            if first and not run.params.background:
                self.runs.pop(run.id, None)
                run.started.set_exception(api)
                run.started.exception()  # retrieved: the creator re-raises it
                run.done.set()
                return
            if first:
                run._push(mapper.in_progress())
            mapper.error = {"code": api.code or api.type, "message": api.message}
            terminal = [mapper.error_event(api), *mapper.finish("failed", now=_now())]
        except Exception as exc:  # never a hang: any bug ends the response failed
            log.exception("response %s failed", run.id)
            api = ApiError(500, "server_error", f"internal error: {type(exc).__name__}", code="server_error")
            if first and not run.params.background:
                self.runs.pop(run.id, None)
                run.started.set_exception(api)
                run.started.exception()
                run.done.set()
                return
            mapper.error = {"code": "server_error", "message": api.message}
            terminal = [mapper.error_event(api), *mapper.finish("failed", now=_now())]
        result = mapper.result
        if result is not None:
            run.after_core = Thread(result.thread.messages[lead:])
        await self._conclude(run, terminal)

    async def _conclude(self, run: Run, terminal: list[dict[str, Any]]) -> None:
        run.concluding = True
        if run.sharer is not None and not run.sharer.done():
            run.stop_sharing.set()
            await asyncio.wait([run.sharer])  # a visit under way ends first (its writes come before the last ones)
        if run.mapper.warnings:
            log.warning("response %s (route %s): %s", run.id, run.route.name, "; ".join(run.mapper.warnings))
        run._push(terminal[:-1])
        final = terminal[-1]["response"]
        try:
            if run.params.store and not run.discard:
                await self._persist(run, final, terminal[-1])
            elif run.sharer is not None:  # deleted while running: nothing of it outlives it
                await self.store.adelete(NAMESPACE, run.id)  # events a last visit appended
                await self.store.adelete(CANCELS, run.id)
        except AllmError:
            log.exception("storing response %s failed", run.id)
        run.final = final
        run._push(terminal[-1:])
        run.done.set()
        run._wake()
        self.runs.pop(run.id, None)

    async def aclose(self) -> None:
        """Cancel running responses and close the store."""
        for run in list(self.runs.values()):
            run.cancel("incomplete", "server_shutdown")
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.store.aclose()
