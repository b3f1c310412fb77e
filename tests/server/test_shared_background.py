"""Background responses running in one server process, seen, followed, cancelled, deleted and
continued from another process sharing the store (SQLite or Redis)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.redis_server import redis_server  # noqa: F401  (the session-scoped fixture)

from .conftest import ServeProcess
from .test_app import parse_sse

WORDS = "".join(f"w{i} " for i in range(20))


def _config(store: str) -> str:
    return f"""
[server]
store = "{store}"

[[routes]]
match = "^tick"
adapter = "tests.server.fakes:ticker"

[[routes]]
match = "^slow"
adapter = "tests.server.fakes:slow"

[[routes]]
match = "."
adapter = "tests.server.fakes:echo"
"""


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'r.db'}"
    server = request.getfixturevalue("redis_server")
    return f"{server.url}?prefix=shared{time.monotonic_ns()}:"


@pytest.fixture
def pair(store_url: str, tmp_path: Path) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Two ``allm serve`` processes on one store: A runs the responses, B is the other process."""
    store = store_url
    path = tmp_path / "server.toml"
    path.write_text(_config(store))
    a, b = ServeProcess(path), ServeProcess(path)
    try:
        with httpx.Client(base_url=a.url, timeout=30) as ha, httpx.Client(base_url=b.url, timeout=30) as hb:
            yield ha, hb
    finally:
        a.stop()
        b.stop()


def _start(http: httpx.Client, model: str, text: str = "go") -> str:
    r = http.post("/v1/responses", json={"model": model, "input": text, "background": True})
    assert r.status_code == 200, r.text
    assert r.json()["status"] in ("queued", "in_progress")
    return str(r.json()["id"])


def _until(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def _events(http: httpx.Client, rid: str, after: int = -1) -> list[dict[str, Any]]:
    r = http.get(f"/v1/responses/{rid}", params={"stream": "true", "starting_after": str(after)})
    assert r.status_code == 200
    return parse_sse(r.content)[0]


def test_another_process_sees_it_running_and_follows_its_events(pair: tuple[httpx.Client, httpx.Client]) -> None:
    a, b = pair
    rid = _start(a, "tick")
    seen = b.get(f"/v1/responses/{rid}")  # at once: written before create answered
    assert seen.status_code == 200, seen.text
    assert seen.json()["id"] == rid and seen.json()["status"] in ("queued", "in_progress")
    assert b.get(f"/v1/responses/{rid}/input_items").json()["data"][0]["content"][0]["text"] == "go"
    events = _events(b, rid)  # followed from B while A produces them
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == WORDS
    assert events == _events(a, rid)  # the same log as the owner's
    tail = _events(b, rid, after=events[-4]["sequence_number"])
    assert tail == events[-3:]
    done = b.get(f"/v1/responses/{rid}").json()
    assert done["status"] == "completed" and done["output"][0]["content"][0]["text"] == WORDS
    assert done == a.get(f"/v1/responses/{rid}").json()


def test_a_continuation_waits_for_the_end(pair: tuple[httpx.Client, httpx.Client]) -> None:
    a, b = pair
    rid = _start(a, "tick")
    early = b.post("/v1/responses", json={"model": "echo", "input": "next", "previous_response_id": rid})
    assert early.status_code == 400 and early.json()["error"]["code"] == "previous_response_not_finished"
    assert _until(lambda: b.get(f"/v1/responses/{rid}").json()["status"] == "completed")
    later = b.post("/v1/responses", json={"model": "echo", "input": "next", "previous_response_id": rid})
    assert later.status_code == 200 and later.json()["output"][0]["content"][0]["text"] == "go | next"


def test_another_process_cancels_it(pair: tuple[httpx.Client, httpx.Client]) -> None:
    a, b = pair
    rid = _start(a, "slow")
    assert _until(lambda: b.get(f"/v1/responses/{rid}").json()["status"] == "in_progress")
    started = time.monotonic()
    r = b.post(f"/v1/responses/{rid}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert time.monotonic() - started < 5  # the owner reads the request on its next visit
    assert a.get(f"/v1/responses/{rid}").json()["status"] == "cancelled"
    events = _events(b, rid)
    assert events[-1]["type"] == "response.incomplete" and events[-1]["response"]["status"] == "cancelled"
    assert b.post(f"/v1/responses/{rid}/cancel").json()["status"] == "cancelled"  # ended: as it is


def test_another_process_deletes_it_and_it_stays_deleted(pair: tuple[httpx.Client, httpx.Client]) -> None:
    a, b = pair
    rid = _start(a, "slow")
    assert _until(lambda: b.get(f"/v1/responses/{rid}").json()["status"] == "in_progress")
    r = b.delete(f"/v1/responses/{rid}")
    assert r.status_code == 200 and r.json()["deleted"] is True
    # The owner notices on its next visit and stops the response without storing it.
    assert _until(lambda: a.get(f"/v1/responses/{rid}").status_code == 404)
    time.sleep(1.0)
    for http in (a, b):
        assert http.get(f"/v1/responses/{rid}").status_code == 404
    assert b.post(f"/v1/responses/{rid}/cancel").status_code == 404


def test_a_response_deleted_elsewhere_leaves_nothing_stored(pair: tuple[httpx.Client, httpx.Client], store_url: str) -> None:
    from allm.stores import open_store

    a, b = pair
    store = open_store(store_url)
    try:
        rid = _start(a, "tick")  # events keep coming: the owner appends some on each visit
        assert _until(lambda: store.length("responses", rid) > 3)
        assert b.delete(f"/v1/responses/{rid}").json()["deleted"] is True
        assert _until(lambda: a.get(f"/v1/responses/{rid}").status_code == 404)
        time.sleep(1.5)  # past the end the response would have had
        assert store.get("responses", rid) is None
        assert store.length("responses", rid) == 0  # no events a last visit appended
        assert store.get("responses.cancel", rid) is None
    finally:
        store.close()


async def _completed(c: httpx.AsyncClient, rid: str) -> dict[str, Any]:
    """The response once completed (polled for at most 10 s; as it is then)."""
    import asyncio

    for _ in range(200):
        done: dict[str, Any] = (await c.get(f"/v1/responses/{rid}")).json()
        if done["status"] == "completed":
            break
        await asyncio.sleep(0.05)
    return done


class _FlakyStore:
    """A SQLite store whose rewrites of a running record fail ``fails`` times (``unavailable``)."""

    def __init__(self, path: Path, fails: int, first: bool = False) -> None:
        from allm.stores.sqlite import SQLiteStore

        self.inner = SQLiteStore(str(path))
        self.fails = fails
        self.first = first  # fail the first write of a running record instead

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def aput(self, namespace: str, key: str, value: bytes, *, expect: int | None = None) -> int:
        from allm.errors import StoreError

        if namespace == "responses" and self.fails > 0 and (expect == 0 if self.first else expect not in (None, 0)):
            self.fails -= 1
            raise StoreError("the store is away", reason="unavailable")
        return await self.inner.aput(namespace, key, value, expect=expect)


async def test_a_failed_visit_is_logged_and_the_response_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:

    from .conftest import app_client

    store = _FlakyStore(tmp_path / "r.db", fails=2)
    async with app_client(_config("memory://"), store=store) as c:
        r = await c.post("/v1/responses", json={"model": "tick", "input": "go", "background": True})
        rid = r.json()["id"]
        done = await _completed(c, rid)
    assert done["output"][0]["content"][0]["text"] == WORDS
    assert store.fails == 0
    assert [m for m in caplog.messages if f"sharing response {rid} failed" in m and "the store is away" in m]
    from allm.stores.sqlite import SQLiteStore

    again = SQLiteStore(str(tmp_path / "r.db"))  # the server closed its own at shutdown
    record = again.get("responses", rid)
    again.close()
    assert record is not None
    stored = json.loads(record.value)
    assert stored["response"]["status"] == "completed" and "running" not in stored and "core" in stored


def test_a_response_whose_process_died_is_answered_failed(tmp_path: Path) -> None:
    import signal

    path = tmp_path / "server.toml"
    path.write_text(_config(f"sqlite:///{tmp_path / 'r.db'}"))
    a, b = ServeProcess(path), ServeProcess(path)
    try:
        with httpx.Client(base_url=a.url, timeout=30) as ha, httpx.Client(base_url=b.url, timeout=30) as hb:
            rid = _start(ha, "slow")
            assert _until(lambda: hb.get(f"/v1/responses/{rid}").json()["status"] == "in_progress")
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait(10)
            killed = time.monotonic()
            assert hb.get(f"/v1/responses/{rid}").json()["status"] == "in_progress"  # not yet: 10 s of grace
            events = _events(hb, rid)  # the follower's stream ends once the record is stale
            assert 8 < time.monotonic() - killed < 20
            assert events and events[-1]["type"] != "response.completed"
            got = hb.get(f"/v1/responses/{rid}").json()
            assert got["status"] == "failed" and got["error"]["code"] == "server_error"
            assert hb.post(f"/v1/responses/{rid}/cancel").json()["status"] == "failed"  # at once: nothing to stop
    finally:
        a.stop()
        b.stop()


async def test_a_response_whose_first_visit_fails_runs_unshared(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:

    from allm.stores.sqlite import SQLiteStore

    from .conftest import app_client

    store = _FlakyStore(tmp_path / "r.db", fails=1, first=True)
    async with app_client(_config("memory://"), store=store) as c:
        r = await c.post("/v1/responses", json={"model": "tick", "input": "go", "background": True})
        assert r.status_code == 200, r.text
        rid = r.json()["id"]
        assert store.inner.get("responses", rid) is None  # not shared: only this process sees it run
        done = await _completed(c, rid)
    assert done["output"][0]["content"][0]["text"] == WORDS
    assert [m for m in caplog.messages if f"sharing response {rid} failed" in m]
    again = SQLiteStore(str(tmp_path / "r.db"))
    record = again.get("responses", rid)
    events = again.read("responses", rid)
    again.close()
    assert record is not None and json.loads(record.value)["response"]["status"] == "completed"
    assert [json.loads(e)["sequence_number"] for e in events] == list(range(len(events)))


async def test_a_cancel_request_for_a_response_that_ended_meanwhile_is_removed(tmp_path: Path) -> None:
    # The race: another process saw the response running, and it ended before the request was
    # written, so its owner never reads the request.
    from allm.stores.sqlite import SQLiteStore

    from .conftest import app_client

    store = SQLiteStore(str(tmp_path / "r.db"))
    async with app_client(_config("memory://"), store=store) as c:
        rid = (await c.post("/v1/responses", json={"model": "echo", "input": "done"})).json()["id"]
        service = c.app.state.responses  # type: ignore[attr-defined]
        data = await service.cancel_elsewhere(rid)
        assert data is not None and data["response"]["status"] == "completed"
        assert store.get("responses.cancel", rid) is None
        assert await service.cancel_elsewhere("resp_" + "0" * 32) is None  # deleted meanwhile
        assert store.get("responses.cancel", "resp_" + "0" * 32) is None
