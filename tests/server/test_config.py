"""The server's TOML configuration: what it reads and the errors that name the bad key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from allm.server import ConfigError, ServerConfig, create_app, load_config, parse_config
from allm.stores import MemoryStore

GOOD = """
[server]
store = "sqlite:///tmp/x.db"
max_body_bytes = 1000
retention_max_age = 3600
retention_max_count = 50
access_log = true

[auth]
tokens = ["a-token"]

[tools]
add = "tests.server.tools:add"

[[routes]]
match = "^claude-"
provider = "anthropic"
api_key_env = "ANTHROPIC_API_KEY"

[[routes]]
match = "."                          # everything else
provider = "compatible"
base_url = "http://127.0.0.1:8080/v1"
model = "smollm2"
key_header = "x-provider-key"
tools = ["add"]
defaults = {temperature = 0}
retry = {max_attempts = 1}
timeouts = {idle = 5}
middleware = [{use = "content_filter", deny = ["(?i)password"]}]
"""


def test_the_documented_spelling() -> None:
    c = parse_config(GOOD)
    assert c.store == "sqlite:///tmp/x.db" and c.max_body_bytes == 1000
    assert c.retention_max_age == 3600.0 and c.retention_max_count == 50
    assert c.access_log is True and ServerConfig().access_log is False
    assert c.auth_tokens == ("a-token",)
    assert c.tools == {"add": "tests.server.tools:add"}
    r0, r1 = c.routes
    assert (r0.match, r0.provider, r0.api_key_env) == ("^claude-", "anthropic", "ANTHROPIC_API_KEY")
    assert r0.pattern.search("claude-3") and not r0.pattern.search("gpt-claude")
    assert (r1.provider, r1.base_url, r1.model, r1.key_header, r1.tools) == (
        "compatible", "http://127.0.0.1:8080/v1", "smollm2", "x-provider-key", ("add",))
    app = create_app(c, store=MemoryStore())
    service = app.state.responses
    assert service.route_for("claude-x").route is r0 and service.route_for("gpt-4").route is r1
    assert [t.name for t in service.routes[1].hosted] == ["add"]
    assert service.routes[1].engine.retry.max_attempts == 1


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    p = tmp_path / "s.toml"
    p.write_text(GOOD)
    assert load_config(p) == parse_config(GOOD)


@pytest.mark.parametrize(("text", "key", "line"), [
    ('[[routes]]\nmatch = "."\nprovider = "nope"\n', "routes[0].provider", 3),
    ('[[routes]]\nmatch = "."\nprovider = "fake"\n\n[[routes]]\nmatch = "("\nprovider = "fake"\n', "routes[1].match", 6),
    ('[[routes]]\nmatch = "."\nprovider = "compatible"\n', "routes[0].provider", 3),
    ('[[routes]]\nprovider = "fake"\n', "routes[0]", 1),
    ('[[routes]]\nmatch = "."\nprovider = "fake"\nadapter = "x:y"\n', "routes[0].provider", 3),
    ('[[routes]]\nmatch = "."\nprovider = "fake"\ncolour = "red"\n', "routes[0].colour", 4),
    ('[[routes]]\nmatch = "."\nprovider = "fake"\ntools = ["missing"]\n', "routes[0].tools", 4),
    ('[[routes]]\nmatch = "."\nprovider = "fake"\ndefaults = {temperature = "hot"}\n', "routes[0].defaults", 4),
    ('[[routes]]\nmatch = "."\nprovider = "fake"\nretry = {tries = 2}\n', "routes[0].retry", 4),
    ('[[routes]]\nmatch = "."\nprovider = "fake"\nmiddleware = [{use = "nope", x = 1}]\n', "routes[0].middleware", 4),
    ('[[routes]]\nmatch = "."\nprovider = "fake"\nbase_url = "http://x"\n', "routes[0].base_url", 4),
    ('[server]\n\nmax_body_bytes = -1\n', "server.max_body_bytes", 3),
    ('[server]\nstore = "ftp://x"\n', "server.store", 2),
    ('[server]\naccess_log = "yes"\n', "server.access_log", 2),
    ('[server]\nport = 1\n', "server.port", 2),
    ('[auth]\ntokens = "abc"\n', "auth.tokens", 2),
    ('[tools]\nadd = "no_colon"\n', "tools.add", 2),
    ('colour = "red"\n', "colour", 1),
])
def test_errors_name_the_key_and_line(text: str, key: str, line: int) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert info.value.key == key
    assert info.value.line == line
    assert info.value.message.startswith(f"{key} (line {line}): ")


def test_bad_toml_names_its_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config('[server]\nstore = \n')
    assert info.value.line == 2


def test_tools_and_adapters_that_cannot_be_loaded() -> None:
    with pytest.raises(ConfigError) as info:
        create_app(parse_config('[tools]\nx = "tests.server.tools:missing"\n'), store=MemoryStore())
    assert info.value.key == "tools.x"
    with pytest.raises(ConfigError) as info:
        create_app(parse_config('[[routes]]\nmatch = "."\nadapter = "no.such.module:f"\n'), store=MemoryStore())
    assert info.value.key == "routes[0].adapter"


def test_auth_is_needed_off_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    ServerConfig().check_bind("127.0.0.1")
    with pytest.raises(ConfigError) as info:
        ServerConfig().check_bind("0.0.0.0")
    assert info.value.key == "auth.tokens"
    ServerConfig(auth_tokens=("t",)).check_bind("0.0.0.0")
    monkeypatch.setenv("SERVER_TOKENS_TEST", "one, two")
    assert parse_config('[auth]\ntokens_env = "SERVER_TOKENS_TEST"\n').auth_tokens == ("one", "two")


def test_default_store_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    url = ServerConfig(data_dir=str(tmp_path / "d")).store_url()
    assert url == f"sqlite:///{tmp_path / 'd' / 'responses.db'}"
    assert (tmp_path / "d").is_dir()


def test_serve_refuses_a_public_host_without_auth(tmp_path: Path) -> None:
    from allm.cli import main

    p = tmp_path / "s.toml"
    p.write_text('[server]\nstore = "memory://"\n')
    assert main(["serve", "--config", str(p), "--host", "0.0.0.0", "--port", "1"]) == 1


def test_serve_reports_a_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from allm.cli import main

    assert main(["serve", "--config", str(tmp_path / "nope.toml"), "--port", "1"]) == 2
    assert "nope.toml" in capsys.readouterr().err


def test_serve_reports_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from allm.cli import main

    p = tmp_path / "s.toml"
    p.write_text('[[routes]]\nmatch = "."\nprovider = "nope"\n')
    assert main(["serve", "--config", str(p), "--port", "1"]) == 1
    assert "routes[0].provider (line 3)" in capsys.readouterr().err
