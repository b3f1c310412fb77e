"""allm's pytest plugin: Fake fixtures, a guard against real calls, record and replay, diffs.

Loaded automatically when allm is installed (entry point ``pytest11``: ``allm``; disable
it with ``-p no:allm``). It changes nothing until asked:

Fixtures
    ``allm_fake`` (a :class:`~allm.testing.ScriptedFake` playing the test's script:
    ``@pytest.mark.allm_script([...], [...])``, an overridden ``allm_script`` fixture, or
    :func:`~allm.testing.auto` when neither), ``allm_engine`` (an engine on it, model
    ``"fake"``), ``allm_requests`` (the requests it received, live), ``allm_events``
    (the events of its last call, live; ``.calls`` for every call),
    ``allm_recording`` (the test's :class:`~allm.testing.Recording`, active during the
    test), ``allm_deterministic_ids`` (seeded request and session ids).

Guard against real requests (off by default, as pydantic-ai's ``ALLOW_MODEL_REQUESTS``)
    On for a run with ``allm_allow_requests = false`` (ini), ``ALLM_ALLOW_REQUESTS=0``
    (environment) or ``--allm-block-requests``; per test with
    ``@pytest.mark.allm_block_requests``; off again per test with
    ``@pytest.mark.allm_allow_requests``. The marker wins over the command line, which
    wins over the environment, which wins over the ini file. Loopback servers, the Fake
    and replays always work; ``allm_allow_hosts`` (ini) lists more hosts to let through.

Record and replay
    ``@pytest.mark.allm_recording`` (or the ``allm_recording`` fixture) replays the test's
    HTTP traffic from ``<test dir>/<allm_recordings>/<module>/<test>/`` for the whole test
    (fixtures included). The mode is ``none`` (replay only: the default), ``once``,
    ``new_episodes`` or ``all``: ``--allm-record-mode`` wins over the marker's ``mode=``,
    which wins over the ini setting ``allm_record_mode``.

Assertion diffs
    ``assert a == b`` on allm values (threads, messages, requests, event lists, other
    allm values) shows a message-per-line diff (:func:`~allm.testing.explain`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from allm import Engine
    from allm.events import Event
    from allm.testing import Recording, ScriptedFake
    from allm.types import Request

__all__ = ["EventLog"]

_RECORDING = pytest.StashKey["Recording"]()
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("allm", "allm: Fake fixtures, request guard, record and replay")
    group.addoption(
        "--allm-block-requests",
        action="store_true",
        default=None,
        help="block real HTTP requests to LLM providers in every test (loopback, the Fake and replays still work)",
    )
    group.addoption(
        "--allm-record-mode",
        default=None,
        choices=("none", "once", "new_episodes", "all"),
        help="how allm_recording tests treat their recordings (default: none, replay only)",
    )
    parser.addini(
        "allm_allow_requests",
        "false: block real HTTP requests to LLM providers in every test (ALLM_ALLOW_REQUESTS overrides it)",
        type="bool",
        default=True,
    )
    parser.addini("allm_allow_hosts", "hosts let through while requests are blocked (loopback always is)", type="linelist", default=[])
    parser.addini("allm_record_mode", "recording mode of allm_recording tests: none, once, new_episodes or all", default="none")
    parser.addini("allm_recordings", "folder, beside each test module, that holds its recordings", default="recordings")


def pytest_configure(config: pytest.Config) -> None:
    for line in (
        "allm_script(*scripts, function=None): the scripts the allm_fake fixture plays, one per call",
        "allm_block_requests: block real HTTP requests to LLM providers in this test",
        "allm_allow_requests: let real HTTP requests through in this test, even when blocked for the run",
        "allm_recording(name=None, mode=None, match='body', ignore=(), chunks=256): "
        "record or replay this test's HTTP traffic (allm_recording fixture)",
    ):
        config.addinivalue_line("markers", line)
    env = os.environ.get("ALLM_ALLOW_REQUESTS", "").strip().lower()
    if env and env not in _TRUE + _FALSE:
        raise pytest.UsageError(f"ALLM_ALLOW_REQUESTS={env!r}: expected 0 or 1 (or true/false, yes/no)")


# ------------------------------------------------------------------------------ the guard and the recording per test


def _blocked(item: pytest.Item) -> tuple[bool, str]:
    """Whether real requests are blocked for ``item``, and what says so."""
    if item.get_closest_marker("allm_allow_requests") is not None:
        return False, ""
    if item.get_closest_marker("allm_block_requests") is not None:
        return True, "the test is marked @pytest.mark.allm_block_requests"
    if item.config.getoption("allm_block_requests"):
        return True, "the run was started with --allm-block-requests"
    env = os.environ.get("ALLM_ALLOW_REQUESTS", "").strip().lower()
    if env in _FALSE:
        return True, f"ALLM_ALLOW_REQUESTS={os.environ['ALLM_ALLOW_REQUESTS']} is set"
    if env in _TRUE:
        return False, ""
    if not item.config.getini("allm_allow_requests"):
        return True, "the ini setting allm_allow_requests is false"
    return False, ""


def _why(source: str) -> str:
    return (
        f"Real requests are blocked because {source}. Use a Fake (allm_fake, allm.testing.fake), replay a recording "
        "(@pytest.mark.allm_recording), or allow it with @pytest.mark.allm_allow_requests."
    )


def _recording_dir(item: pytest.Item, name: str | None) -> Path:
    folder = str(item.config.getini("allm_recordings"))
    module = Path(str(item.path))
    test = name or re.sub(r"[^A-Za-z0-9_.-]+", "-", item.name).strip("-")
    return module.parent / folder / module.stem / test


def _make_recording(item: pytest.Item) -> Recording:
    from allm.testing import Recording

    marker = item.get_closest_marker("allm_recording")
    kw: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    name = kw.pop("name", None) or (marker.args[0] if marker is not None and marker.args else None)
    mode = item.config.getoption("allm_record_mode") or kw.pop("mode", None) or item.config.getini("allm_record_mode")
    kw.pop("mode", None)
    return Recording(_recording_dir(item, name), mode=mode, test=item.nodeid, **kw)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    import contextlib

    with contextlib.ExitStack() as stack:
        blocked, source = _blocked(item)
        if blocked:
            from allm.testing.guard import block_requests

            hosts = item.config.getini("allm_allow_hosts")
            stack.enter_context(block_requests(allow_hosts=hosts, why=_why(source)))
        elif item.get_closest_marker("allm_allow_requests") is not None:
            from allm.testing.guard import allow_requests

            stack.enter_context(allow_requests())
        if item.get_closest_marker("allm_recording") is not None:
            rec = _make_recording(item)
            item.stash[_RECORDING] = rec
            stack.enter_context(rec)
        return (yield)


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture
def allm_script(request: pytest.FixtureRequest) -> Any:
    """The scripts ``allm_fake`` plays: the ``allm_script`` marker's arguments (one script per
    call) or its ``function=``; ``None`` (then :func:`allm.testing.auto` plays). Override
    this fixture (or parametrize it) to script many tests at once."""
    marker = request.node.get_closest_marker("allm_script")
    if marker is None:
        return None
    if "function" in marker.kwargs:
        if marker.args:
            raise pytest.UsageError("allm_script takes scripts or function=, not both")
        return marker.kwargs["function"]
    return list(marker.args)


@pytest.fixture
def allm_fake(allm_script: Any) -> ScriptedFake:
    """A :class:`~allm.testing.ScriptedFake` playing ``allm_script`` (a list of scripts, one
    per call; a function request -> entries; or ``None`` for :func:`~allm.testing.auto`)."""
    from allm.testing import fake

    if allm_script is None:
        return fake()
    if callable(allm_script):
        return fake(function=allm_script)
    if isinstance(allm_script, (str, bytes)) or not isinstance(allm_script, Sequence):
        raise pytest.UsageError("allm_script must be a list of scripts (one per call), a function, or None")
    return fake(*allm_script)


@pytest.fixture
def allm_engine(allm_fake: ScriptedFake) -> Engine:
    """An :class:`~allm.Engine` on ``allm_fake`` with model ``"fake"`` (add tools with
    ``allm_engine.with_tools(...)``)."""
    import allm

    return allm.Engine(adapter=allm_fake, model="fake")


@pytest.fixture
def allm_requests(allm_fake: ScriptedFake) -> list[Request]:
    """The :class:`~allm.Request` values ``allm_fake`` received, in call order (a live list)."""
    return allm_fake.requests


class EventLog(Sequence["Event"]):
    """The events ``allm_fake`` streamed in its latest call (a live view: it follows new
    calls). ``calls`` holds one list per call; ``types()`` names the latest call's events."""

    def __init__(self, fake: ScriptedFake) -> None:
        self._fake = fake

    @property
    def calls(self) -> list[list[Event]]:
        return self._fake.events

    def _last(self) -> list[Event]:
        return self._fake.last_events

    def __getitem__(self, index: Any) -> Any:
        return self._last()[index]

    def __len__(self) -> int:
        return len(self._last())

    def __eq__(self, other: object) -> bool:
        return list(self._last()) == (list(other) if isinstance(other, Sequence) and not isinstance(other, str) else other)

    __hash__ = None  # type: ignore[assignment]

    def types(self) -> list[str]:
        return [type(e).__name__ for e in self._last()]

    def __repr__(self) -> str:
        return f"EventLog(call {len(self.calls)}: {self.types()})"


@pytest.fixture
def allm_events(allm_fake: ScriptedFake) -> EventLog:
    """The events of ``allm_fake``'s latest call (:class:`EventLog`, a live view)."""
    return EventLog(allm_fake)


@pytest.fixture
def allm_recording(request: pytest.FixtureRequest) -> Iterator[Recording]:
    """The test's :class:`~allm.testing.Recording` (folder ``<test dir>/recordings/<module>/<test>``),
    active for the test. With the ``allm_recording`` marker it is active from the test's
    first fixture to its last; otherwise from this fixture on."""
    item = request.node
    rec = item.stash.get(_RECORDING, None)
    if rec is not None:
        yield rec
        return
    rec = _make_recording(item)
    with rec:
        yield rec


@pytest.fixture
def allm_deterministic_ids() -> Iterator[int]:
    """Request and session ids from a generator seeded with 0 for the test (yields the seed)."""
    from allm.testing import deterministic_ids

    with deterministic_ids(0):
        yield 0


# ------------------------------------------------------------------------------ assertion diffs


def _allm_value(v: Any) -> bool:
    if isinstance(v, (list, tuple)):
        return bool(v) and type(v[0]).__module__.startswith("allm.")
    return type(v).__module__.startswith("allm.")


def pytest_assertrepr_compare(config: pytest.Config, op: str, left: Any, right: Any) -> list[str] | None:
    if op != "==" or not (_allm_value(left) or _allm_value(right)):
        return None
    from allm.testing.asserts import explain

    return explain(left, right)
