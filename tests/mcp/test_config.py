"""Server configurations, tool names and values, without a server."""

from __future__ import annotations

import pickle
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

import allm
from allm import mcp
from allm.errors import MCPError

labels = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]|_[A-Za-z0-9-]){0,11}", fullmatch=True)
tool_names = st.text(min_size=1, max_size=130)


@given(labels, tool_names)
def test_qualified_names_are_valid_function_names_and_name_their_server(label: str, name: str) -> None:
    q = mcp.qualified_name(label, name)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", q)
    assert mcp.parse_name(q) is not None and mcp.parse_name(q)[0] == label  # type: ignore[index]
    allm.tool(q)  # providers' rule, as allm.tool checks it


@given(labels, tool_names, tool_names)
def test_distinct_tool_names_stay_distinct(label: str, a: str, b: str) -> None:
    if a != b:
        assert mcp.qualified_name(label, a) != mcp.qualified_name(label, b)


def test_names_that_fit_are_kept_as_they_are() -> None:
    assert mcp.qualified_name("weather", "get_weather") == "weather__get_weather"
    assert mcp.parse_name("weather__get_weather") == ("weather", "get_weather")
    assert mcp.parse_name("my_srv__a__b") == ("my_srv", "a__b")
    assert mcp.parse_name("my_srv___x") == ("my_srv", "_x")  # a label never ends with "_"
    for plain in ("get_weather", "__x", "weather__", "_a__b", "a b__c", "x" * 25 + "__y"):
        assert mcp.parse_name(plain) is None


@pytest.mark.parametrize("label", ["", "a__b", "a_", "_a", "-a", "a b", "a.b", "x" * 25, 3])
def test_bad_labels(label: object) -> None:
    with pytest.raises(MCPError) as ei:
        mcp.Server.stdio(label, ["server"])  # type: ignore[arg-type]
    assert ei.value.reason == "invalid_server"


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"command": ("a",), "url": "http://x/mcp"},
        {"command": ()},
        {"command": "python server.py"},
        {"command": ("a", 3)},
        {"url": "ftp://x"},
        {"url": "http://x/mcp", "env": {"A": "b"}},
        {"command": ("a",), "headers": {"A": "b"}},
        {"url": "http://x/mcp", "headers": {"A": 3}},
        {"command": ("a",), "allowed_tools": [1]},
        {"command": ("a",), "require_approval": "sometimes"},
        {"command": ("a",), "require_approval": {"often": ["x"]}},
        {"command": ("a",), "require_approval": {"always": "x"}},
        {"command": ("a",), "timeout": 0},
        {"command": ("a",), "timeout": True},
        {"command": ("a",), "connect_timeout": None},
    ],
)
def test_bad_configurations(kwargs: dict[str, object]) -> None:
    with pytest.raises(MCPError) as ei:
        mcp.Server("s", **kwargs)  # type: ignore[arg-type]
    assert ei.value.reason == "invalid_server" and ei.value.metadata["server_label"] == "s"


def test_secrets_are_masked_in_the_repr() -> None:
    s = mcp.Server.http("s", "https://mcp.example/mcp", headers={"Authorization": "Bearer tok-secret-123"})
    assert "tok-secret-123" not in repr(s) and "'Authorization': '***'" in repr(s)
    e = mcp.Server.stdio("s", ["srv"], env={"API_TOKEN": "tok-secret-456"})
    assert "tok-secret-456" not in repr(e) and "'API_TOKEN': '***'" in repr(e)
    assert mcp.Server.stdio("s", ["srv"]).transport == "stdio" and s.transport == "streamable_http"


def test_approval_rules() -> None:
    never = mcp.Server.stdio("s", ["srv"])
    always = mcp.Server.stdio("s", ["srv"], require_approval="always")
    mixed = mcp.Server.stdio("s", ["srv"], require_approval={"never": {"tool_names": ["read"]}, "always": ["write"]})
    assert not never.requires_approval("x") and always.requires_approval("x")
    assert not mixed.requires_approval("read") and mixed.requires_approval("write") and mixed.requires_approval("other")
    assert mixed.require_approval == {"never": ("read",), "always": ("write",)}


def test_results_render_and_pickle() -> None:
    r = mcp.CallResult(
        "s",
        "t",
        (
            allm.TextPart("hi"),
            allm.ImagePart(allm.Image.from_bytes(b"\x89PNG", "image/png")),
            mcp.Audio(b"RIFF", "audio/wav"),
            mcp.Resource("file:///a.bin", "application/pdf", data=b"%PDF"),
            mcp.Resource("file:///b.bin", data=b"x"),
            mcp.ResourceLink("file:///c", "c"),
        ),
    )
    assert r.text.splitlines() == [
        "hi",
        "[image: image/png, 4 bytes]",
        "[audio: audio/wav, 4 bytes]",
        "[resource: file:///a.bin, application/pdf, 4 bytes]",
        "[resource: file:///b.bin, application/octet-stream, 1 bytes]",
        "[resource link: c <file:///c>]",
    ]
    assert mcp.CallResult("s", "t").text == ""
    out = mcp.ToolOutput(r)
    assert out == r.text and out.result is r
    back = pickle.loads(pickle.dumps(out))
    assert back == out and back.result == r and type(back) is mcp.ToolOutput
    # The default encoder hands the loop a plain str.
    enc = allm.JsonResultEncoder().encode_result(out, allm.ToolCall("c", "t"))
    assert type(enc) is str and enc == r.text


def test_mcp_error_round_trips_typed() -> None:
    err = MCPError("gone", reason="connection_lost", metadata={"server_label": "s"})
    back = allm.AllmError.from_dict(err.to_dict())
    assert type(back) is MCPError and back == err
    assert type(pickle.loads(pickle.dumps(err))) is MCPError
    from allm import codec

    assert codec.loads(codec.dumps(allm.Thread((allm.Message("user", "x", metadata={"e": err}),))), allm.Thread) is not None


@pytest.mark.parametrize("interval", [0, -1, True, "1"])
def test_bad_ping_interval(interval: object) -> None:
    with pytest.raises(ValueError):
        mcp.Client(ping_interval=interval)  # type: ignore[arg-type]


def test_without_a_usable_mcp_package_the_import_says_what_to_install() -> None:
    import os
    import subprocess
    import sys

    code = "import sys; sys.modules['mcp.client.stdio'] = None; import allm.mcp"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert out.returncode == 1
    assert "ImportError: allm.mcp needs the mcp package, 1.24 or a later 1.x: pip install 'allm[mcp]' (found mcp 1." in out.stderr
