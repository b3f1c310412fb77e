"""The pytest plugin, run the way users run it: inner pytest sessions under ``pytester``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator

import pytest

from allm.testing import allow_requests
from tests.loopback import LoopbackServer
from tests.testing.helpers import PLUGIN, ROOT, chat_server, plugin_installed, started

pytest_plugins = ["pytester"]

KEY = "sk-test-" + "Zq8" * 10


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    yield from started(chat_server)


@pytest.fixture(autouse=True)
def _no_guard_from_the_outer_run(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Inner runs (in this process) start from the plugin's defaults, whatever the outer run was given."""
    monkeypatch.delenv("ALLM_ALLOW_REQUESTS", raising=False)
    with allow_requests():
        yield


def printed(result: pytest.RunResult, tag: str) -> list[str]:
    """What the inner tests printed after ``tag`` (progress dots may precede it on a line)."""
    return [m.group(1) for m in re.finditer(rf"{tag}[: ]+(.*)", result.stdout.str())]


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*PLUGIN, "-p", "no:cacheprovider", "-o", "asyncio_default_fixture_loop_scope=function", *args)


# ------------------------------------------------------------------------------ the entry point


def test_the_plugin_is_declared_as_a_pytest11_entry_point() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["pytest11"] == {"allm": "allm.testing.pytest_plugin"}
    assert "pytest" not in " ".join(project["dependencies"])  # no dependency beyond pytest itself (which is the user's)


def test_an_installed_allm_loads_the_plugin_by_itself(pytester: pytest.Pytester) -> None:
    if not plugin_installed():
        reason = "this environment's allm was installed before the entry point existed (scripts/setup reinstalls it)"
        if os.environ.get("ALLM_REQUIRE_LIVE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    pytester.makepyfile("def test_it(allm_engine):\n    assert allm_engine.model == 'fake'\n")
    quiet = ("-p", "no:cacheprovider", "-o", "asyncio_default_fixture_loop_scope=function")
    pytester.runpytest(*quiet).assert_outcomes(passed=1)
    pytester.runpytest(*quiet, "-p", "no:allm").assert_outcomes(errors=1)


# ------------------------------------------------------------------------------ fixtures


def test_fake_fixtures_follow_the_script_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import allm, pytest
        from allm.testing import text, tool_call, usage, event_types

        @pytest.mark.allm_script([tool_call("add", {"a": 2, "b": 3})], [text("5"), usage(10, 1)])
        def test_agent(allm_engine, allm_requests, allm_events, allm_fake):
            add = allm.tool(name="add", handler=lambda a: a["a"] + a["b"],
                            schema={"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}})
            result = allm.chat(allm_engine.with_tools(add), "2+3?")
            assert result.final_response.output_text == "5"
            assert len(allm_requests) == 2 and allm_requests is allm_fake.requests
            assert allm_requests[1].messages[-1].text == "5"           # the tool's result went back
            assert allm_events.types() == ["MessageStarted", "TextDelta", "RawChunk", "TextCompleted", "MessageCompleted"]
            assert event_types(allm_events.calls[0])[1] == "ToolCallStarted"
            assert allm_events[-1].usage.input_tokens == 10

        @pytest.mark.allm_script(function=lambda request: "echo: " + request.messages[-1].text)
        def test_function(allm_engine):
            assert allm.generate(allm_engine, "hi").output_text == "echo: hi"

        def test_no_script_is_auto(allm_engine, allm_requests):
            assert allm.generate(allm_engine, "hi").output_text == "success (no tool calls)"
            assert allm_requests[0].messages[-1].text == "hi"
        """
    )
    run(pytester, "-q").assert_outcomes(passed=3)


def test_the_script_fixture_can_be_overridden_and_parametrized(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def allm_script():
            return [["from conftest"]]
        """
    )
    pytester.makepyfile(
        """
        import allm, pytest

        def test_overridden(allm_engine):
            assert allm.generate(allm_engine, "x").output_text == "from conftest"

        @pytest.mark.parametrize("allm_script", [[["one"]], [["two"]]])
        def test_parametrized(allm_engine, allm_script):
            assert allm.generate(allm_engine, "x").output_text == allm_script[0][0]
        """
    )
    run(pytester, "-q").assert_outcomes(passed=3)


def test_a_script_past_its_end_fails_with_the_fakes_typed_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import allm, pytest

        @pytest.mark.allm_script(["only one"])
        def test_two_calls(allm_engine):
            allm.generate(allm_engine, "a")
            allm.generate(allm_engine, "b")
        """
    )
    result = run(pytester, "-q")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no_scripted_response*Fake has no scripted response for call 2: 1 call(s) were scripted*"])


def test_deterministic_ids_fixture_gives_the_same_ids_every_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import allm

        def test_ids(allm_engine, allm_deterministic_ids):
            a = allm.generate(allm_engine, "x").request_id
            b = allm.generate(allm_engine, "y").request_id
            session, _ = allm.Session.start(allm_engine, "z")
            assert a != b and len(a) == 22 and session.id.startswith("ses_")
            print("IDS", a, b, session.id)
        """
    )
    first = run(pytester, "-q", "-s")
    second = run(pytester, "-q", "-s")
    first.assert_outcomes(passed=1)
    ids = printed(first, "IDS")
    assert len(ids) == 1 and ids == printed(second, "IDS")


# ------------------------------------------------------------------------------ the guard


GUARDED = """
import allm, pytest
from allm.providers import OpenAI, OpenAICompatible
from allm.testing import RequestBlocked, requests_blocked

def test_real(allm_engine):
    with pytest.raises(RequestBlocked) as info:
        allm.generate(allm.Engine(adapter=OpenAI(), model="gpt-4.1-mini"), "hi", api_key="{key}")
    print("BLOCKED:", info.value)
    assert info.value.provider == "openai" and info.value.url == "https://api.openai.com/v1/chat/completions"
    assert allm.generate(allm_engine, "the Fake still works").output_text

def test_loopback():
    engine = allm.Engine(adapter=OpenAICompatible.llama_cpp("{base}/v1"), model="m")
    assert allm.generate(engine, "olleh").output_text.strip() == "hello"

def test_state():
    print("STATE:", requests_blocked())

@pytest.mark.allm_allow_requests
def test_allowed_by_marker():
    print("STATE:", requests_blocked())
"""


def test_off_by_default(pytester: pytest.Pytester, server: LoopbackServer) -> None:
    pytester.makepyfile(GUARDED.format(key=KEY, base=server.url))
    result = run(pytester, "-q", "-s", "-k", "not real")
    result.assert_outcomes(passed=3)
    assert printed(result, "STATE") == ["False", "False"]


@pytest.mark.parametrize(
    "how",
    ["ini", "env", "cli", "marker"],
)
def test_blocked_real_call_fails_fast_with_provider_and_url_and_no_key(
    pytester: pytest.Pytester, server: LoopbackServer, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    source = GUARDED.format(key=KEY, base=server.url)
    args: list[str] = []
    if how == "ini":
        pytester.makeini("[pytest]\nallm_allow_requests = false\n")
    elif how == "env":
        monkeypatch.setenv("ALLM_ALLOW_REQUESTS", "0")
    elif how == "cli":
        args.append("--allm-block-requests")
    else:
        source = "import pytest\npytestmark = pytest.mark.allm_block_requests\n" + source
    pytester.makepyfile(source)
    result = run(pytester, "-q", "-s", *args)
    result.assert_outcomes(passed=4)
    text = result.stdout.str()
    assert "BLOCKED: a real request to openai was blocked: POST https://api.openai.com/v1/chat/completions" in text
    why = {
        "ini": "the ini setting allm_allow_requests is false",
        "env": "ALLM_ALLOW_REQUESTS=0 is set",
        "cli": "the run was started with --allm-block-requests",
        "marker": "the test is marked @pytest.mark.allm_block_requests",
    }[how]
    assert f"Real requests are blocked because {why}" in text
    assert sorted(printed(result, "STATE")) == ["False", "True"]
    assert KEY not in text and KEY[8:20] not in text
    assert server.requests and all(r.path == "/v1/chat/completions" for r in server.requests)  # loopback went through


def test_precedence_marker_then_cli_then_env_then_ini(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(
        """
        import pytest
        from allm.testing import requests_blocked

        def test_plain():
            print("PLAIN:", requests_blocked())

        @pytest.mark.allm_allow_requests
        def test_allow():
            print("ALLOW:", requests_blocked())

        @pytest.mark.allm_block_requests
        def test_block():
            print("BLOCK:", requests_blocked())
        """
    )
    pytester.makeini("[pytest]\nallm_allow_requests = false\n")

    def states(*args: str) -> list[str]:
        result = run(pytester, "-q", "-s", *args)
        result.assert_outcomes(passed=3)
        return sorted(f"{tag}: {printed(result, tag)[0]}" for tag in ("PLAIN", "ALLOW", "BLOCK"))

    assert states() == ["ALLOW: False", "BLOCK: True", "PLAIN: True"]  # the ini blocks
    monkeypatch.setenv("ALLM_ALLOW_REQUESTS", "1")
    assert states() == ["ALLOW: False", "BLOCK: True", "PLAIN: False"]  # the environment beats the ini
    assert states("--allm-block-requests") == ["ALLOW: False", "BLOCK: True", "PLAIN: True"]  # the CLI beats both
    monkeypatch.setenv("ALLM_ALLOW_REQUESTS", "maybe")
    result = run(pytester, "-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "ALLM_ALLOW_REQUESTS='maybe': expected 0 or 1" in result.stderr.str()


def test_a_swallowed_block_still_names_itself(pytester: pytest.Pytester) -> None:
    """Code that catches allm's errors (a fallback) does not catch the guard's: it is no AllmError."""
    pytester.makepyfile(
        f"""
        import allm, pytest
        from allm.providers import Anthropic

        KEY = "{KEY}"

        @pytest.mark.allm_block_requests
        def test_fallback(allm_engine):
            try:
                allm.generate(allm.Engine(adapter=Anthropic(), model="claude-sonnet-4-5"), "hi", api_key=KEY)
            except allm.AllmError:
                pass
        """
    )
    result = run(pytester, "-q")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*allm.testing.RequestBlocked: a real request to anthropic was blocked: POST https://api.anthropic.com/v1/messages*"])
    assert KEY not in result.stdout.str()


def test_allms_own_loopback_tests_pass_under_the_guard() -> None:
    """The transport tests (every one talks to a loopback server) pass with requests blocked."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ALLM_ALLOW_REQUESTS": "0"}
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *PLUGIN, "tests/test_transport.py", "-x"]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


# ------------------------------------------------------------------------------ assertion diffs


def test_assertion_diffs_show_threads_message_by_message(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import allm, pytest
        from allm.testing import assert_sent, tool_call

        @pytest.mark.allm_script([tool_call("search", {"q": "allm"}, id="c1")], ["done"])
        def test_thread(allm_engine, allm_requests):
            search = allm.tool(name="search", handler=lambda a: "found")
            allm.chat(allm_engine.with_tools(search), [allm.system("Be brief."), allm.user("Find allm")])
            assert allm_requests[1].thread == allm.Thread([allm.system("Be brief."), allm.user("Find allm")])

        def test_message(allm_engine, allm_requests):
            allm.generate(allm_engine, "Hello there")
            assert allm_requests[0].messages[0] == allm.user("Hello")

        def test_request(allm_engine, allm_requests):
            allm.generate(allm_engine, allm.request("Hi", temperature=0.7, max_tokens=5))
            assert allm_requests[0] == allm.request("Hi", model="fake", temperature=0, max_tokens=5)

        def test_assert_sent(allm_engine, allm_requests):
            allm.generate(allm_engine, allm.request([allm.user("Hi")], temperature=0.7))
            assert_sent(allm_requests, thread=["Hello"], tools=["search"], temperature=0)
        """
    )
    result = run(pytester, "-q")
    result.assert_outcomes(failed=4)
    out = result.stdout.str()
    thread_diff = """\
E       assert Thread == Thread failed
E         messages (- left, + right):
E             [0] system: 'Be brief.'
E             [1] user: 'Find allm'
E           - [2] assistant: search#c1({"q":"allm"})
E           - [3] tool search#c1: 'found'
"""
    assert thread_diff in out
    assert "E       AssertionError: assert Message == Message failed\nE         - user: 'Hello there'\nE         + user: 'Hello'\n" in out
    assert "E       assert Request == Request failed\nE         temperature: left 0.7, right 0\n" in out
    sent_diff = """\
E       AssertionError: the model was not sent what was expected (call 1 of 1):
E         thread (- expected, + sent):
E             - [0] user: 'Hello'
E             + [0] user: 'Hi'
E         tools: missing ['search']
E         temperature: expected 0, sent 0.7
"""
    assert sent_diff in out
    assert "def assert_sent(" not in out  # the helper's own frame is hidden


def test_event_list_diffs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import allm
        from allm.events import MessageStarted, TextDelta

        def test_events(allm_engine, allm_events):
            allm.generate(allm_engine, "x")
            assert list(allm_events) == [MessageStarted(id="fake-1", model="fake"), TextDelta("nope")]
        """
    )
    result = run(pytester, "-q")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*4 events == 2 events failed*", "*event types (- left, + right):*", "*- TextCompleted*"])


# ------------------------------------------------------------------------------ record and replay


REPLAYED = """
import allm, pytest
from allm.providers import OpenAICompatible

BASE = "{base}"
KEY = "{key}"

@pytest.mark.allm_recording
def test_agent(allm_recording):
    engine = allm.Engine(adapter=OpenAICompatible.llama_cpp(BASE + "/v1"), model="m")
    first = allm.generate(engine, "{said}", api_key=KEY)
    second = allm.generate(engine, "ti od", api_key=KEY, http_streaming=False)
    assert first.output_text.strip() == "{said}"[::-1] and second.output_text == "do it"
    print("MODE", allm_recording.effective_mode, len(allm_recording.played), len(allm_recording.recorded))
"""


def test_recording_marker_records_once_then_replays_with_the_server_gone(pytester: pytest.Pytester) -> None:
    server = LoopbackServer().start()
    server.handler = chat_server
    try:
        pytester.makepyfile(test_rec=REPLAYED.format(base=server.url, said="olleh", key=KEY))
        recorded = run(pytester, "-q", "-s", "--allm-record-mode=once")
        recorded.assert_outcomes(passed=1)
        assert printed(recorded, "MODE") == ["all 0 2"]
        assert len(server.requests) == 2
    finally:
        server.stop()
    folder = pytester.path / "recordings" / "test_rec" / "test_agent"
    cases = sorted(p.name for p in folder.iterdir())
    assert cases == ["01-post-v1-chat-completions", "02-post-v1-chat-completions"]
    written = b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())
    assert KEY.encode() not in written and KEY[8:16].encode() not in written
    assert all("authorization" not in p.read_text().lower() for p in folder.glob("*/request_headers.txt"))
    # The server is gone: the default mode (none) replays.
    replayed = run(pytester, "-q", "-s")
    replayed.assert_outcomes(passed=1)
    assert printed(replayed, "MODE") == ["none 2 0"]
    # A changed request has no recording: the error shows the body diff against the nearest one.
    pytester.makepyfile(test_rec=REPLAYED.format(base="http://127.0.0.1:9", said="olleH", key=KEY))
    changed = run(pytester, "-q")
    changed.assert_outcomes(failed=1)
    changed.stdout.fnmatch_lines(
        [
            "*NoRecording: no recording matches POST /v1/chat/completions*mode none; 2 recorded, 0 replayed*",
            "*nearest: 01-post-v1-chat-completions (body differs)*",
            '*-      "content": "olleh",*',
            '*+      "content": "olleH",*',
        ]
    )
    assert KEY not in changed.stdout.str()
