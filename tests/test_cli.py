from __future__ import annotations

import io
import subprocess
import sys
from typing import Any

import orjson
import pytest

import allm
from allm import cli, codec


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli.main(list(argv), out=out)
    return code, out.getvalue()


def test_chat_streams_on_the_fake() -> None:
    code, out = run("chat", "--provider", "fake", "hello", "there")
    assert code == 0 and out == "(fake) you said: hello there\n"


def test_chat_json_output_is_an_allm_response() -> None:
    code, out = run("chat", "--provider", "fake", "--json", "hi")
    resp = codec.loads(out.strip(), allm.Response)
    assert code == 0 and resp.output_text == "(fake) you said: hi" and resp.finish_reason == "stop"


def test_no_stream_and_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("from stdin"))
    code, out = run("chat", "--provider", "fake", "--no-stream", "-")
    assert code == 0 and out == "(fake) you said: from stdin\n"


def test_nothing_configured_is_a_clear_message(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ALLM_PROVIDER", raising=False)
    monkeypatch.setenv("ALLM_LLAMA_SERVER", "/nonexistent/llama-server")
    code, _ = run("chat", "hi")
    err = capsys.readouterr().err
    assert code == 2
    assert "no provider is configured" in err and "OPENAI_API_KEY" in err and "--base-url" in err and "--provider local" in err


def test_missing_key_and_bad_options(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert run("chat", "--provider", "openai", "hi")[0] == 1
    assert "OPENAI_API_KEY" in capsys.readouterr().err
    assert run("chat", "--provider", "compatible", "hi")[0] == 2
    assert "--base-url" in capsys.readouterr().err
    monkeypatch.setenv("ALLM_PROVIDER", "nonsense")
    assert run("chat", "hi")[0] == 2
    assert "ALLM_PROVIDER" in capsys.readouterr().err
    assert run("chat", "--provider", "fake", "   ")[0] == 2


def test_provider_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    ns = argparse.Namespace(provider=None, base_url="http://h/v1")
    assert cli._pick_provider(ns) == "compatible"
    ns = argparse.Namespace(provider=None, base_url=None)
    monkeypatch.delenv("ALLM_PROVIDER", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    assert cli._pick_provider(ns) == "openai"
    monkeypatch.setenv("ALLM_PROVIDER", "fake")
    assert cli._pick_provider(ns) == "fake"


def test_models_on_the_fake() -> None:
    assert run("models", "--provider", "fake") == (0, "fake\n")


@pytest.mark.live
def test_chat_against_a_compatible_server(llama_server: Any) -> None:
    code, out = run("chat", "--base-url", llama_server.base_url, "--model", "smollm2", "--temperature", "0", "--max-tokens", "40", "--system", "Be brief.", "What is the capital of France?")
    assert code == 0 and "Paris" in out
    code, out = run("models", "--base-url", llama_server.base_url)
    assert code == 0 and "smollm2" in out.split()


@pytest.mark.live
def test_python_m_allm_with_the_local_provider(llama_server: Any) -> None:
    # The local provider starts (and stops) its own server: the one-step path a newcomer uses.
    proc = subprocess.run(
        [sys.executable, "-m", "allm", "chat", "--provider", "local", "--json", "What is the capital of France?"],
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    resp = orjson.loads(proc.stdout)
    assert "Paris" in resp["value"]["output_text"]
