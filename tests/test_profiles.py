"""Profiles: named models, prompts and cards from TOML; precedence; engines; errors with file, key, line."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import attrs
import httpx
import orjson
import pytest

import allm
from allm import codec
from allm.profiles import Card, ModelProfile, Profile, ProfileError, Profiles, Prompt
from allm.providers import Anthropic, Fake, OpenAICompatible
from tests.conftest import load_capture, load_case
from tests.loopback import Req, Writer, serve

HERE = Path(__file__).parent
FILE = HERE / "fixtures" / "profiles" / "profiles.toml"


@pytest.fixture(scope="module")
def profiles() -> Profiles:
    return Profiles.load(FILE)


# ------------------------------------------------------------------------------ loading


def test_a_file_loads_into_typed_values(profiles: Profiles) -> None:
    assert profiles.names() == {"models": ["claude", "echo", "smol"], "prompts": ["brief", "coder"], "cards": ["reviewer", "tutor"]}
    smol = profiles.model("smol")
    assert smol == ModelProfile(
        "smol", "local", "smollm2", None, "SmolLM2-135M on the local llama-server",
        temperature=0.0, top_k=40, min_p=0.05, repetition_penalty=1.1, max_tokens=64, seed=7,
    )
    assert isinstance(smol.temperature, float)
    assert profiles.model("claude").stop_sequences == ("\n\nHuman:",)
    assert profiles.model("claude").anthropic_beta == ("output-128k-2025-02-19",)
    assert profiles.prompt("brief") == Prompt("brief", "You are a helpful assistant. Be brief.")
    assert profiles.prompt("coder").description == "for code questions"
    assert profiles.card("reviewer") == Card("reviewer", "claude", None, "You review code. Point at one problem at a time.", ("read_file",))
    assert profiles.where["models.claude"] == (str(FILE), 14)
    assert pickle.loads(pickle.dumps(profiles)) == profiles


def test_a_directory_loads_files_and_one_entry_per_file(tmp_path: Path) -> None:
    (tmp_path / "base.toml").write_text('[prompts]\nbrief = "Be brief."\n')
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "smol.toml").write_text('provider = "local"\nmodel = "smollm2"\ntemperature = 0\n')
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "pirate.md").write_text("Talk like a pirate.\n")
    (tmp_path / "prompts" / "poet.toml").write_text('text = "Answer in verse."\n')
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "captain.toml").write_text('model = "smol"\nprompt = "pirate"\n')
    p = Profiles.load(tmp_path)
    assert p.names() == {"models": ["smol"], "prompts": ["brief", "pirate", "poet"], "cards": ["captain"]}
    assert p.prompt("pirate").text == "Talk like a pirate."
    assert p.resolve(card="captain").system == "Talk like a pirate."
    assert p.model("smol").temperature == 0.0


BAD = [
    ('[models.a]\nprovider = "nope"\n', "invalid_value", "models.a.provider", 2, "unknown provider 'nope'"),
    ('[models.a]\nprovider = "fake"\ntemperature = "hot"\n', "invalid_value", "models.a.temperature", 3, "a number >= 0"),
    ('[models.a]\nprovider = "fake"\ntemperature = true\n', "invalid_value", "models.a.temperature", 3, "got True"),
    ('[models.a]\nprovider = "fake"\n\n\ntop_k = 0\n', "invalid_value", "models.a.top_k", 5, "an integer >= 1"),
    ('[models.a]\nprovider = "fake"\nmin_p = 2\n', "invalid_value", "models.a.min_p", 3, "from 0 to 1"),
    ('[models.a]\nprovider = "fake"\nstop_sequences = "END"\n', "invalid_value", "models.a.stop_sequences", 3, "a list of strings"),
    ('[models.a]\nprovider = "fake"\ntemprature = 1\n', "invalid_value", "models.a.temprature", 3, "unknown key"),
    ('[models.a]\nmodel = "x"\n', "invalid_value", "models.a", 1, "needs provider"),
    ('[models.a]\nprovider = "fake"\nbase_url = "http://x"\n', "invalid_value", "models.a.base_url", 3, "takes no base_url"),
    ('[models.a]\nprovider = "compatible"\nmodel = "m"\n', "invalid_value", "models.a", 1, "needs base_url"),
    ('[models.a]\nprovider = "ollama"\n', "invalid_value", "models.a", 1, "no default model"),
    ('[models.a]\nprovider = "openai"\nanthropic_beta = ["x"]\n', "invalid_value", "models.a.anthropic_beta", 3, "for provider anthropic"),
    ('models.a = { provider = "fake", seed = 1.5 }\n', "invalid_value", "models.a.seed", 1, "an integer"),
    ('[models."a b"]\nprovider = "fake"\n', "invalid_value", "models.a b", 1, "not a usable name"),
    ('[prompts]\nbrief = 3\n', "invalid_value", "prompts.brief", 2, "a string, or a table with text"),
    ('[prompts.brief]\ntxt = "x"\n', "invalid_value", "prompts.brief.txt", 2, "unknown key"),
    ('[cards.c]\nprompt = "p"\n', "invalid_value", "cards.c", 1, "needs model"),
    ('[models.m]\nprovider = "fake"\n[cards.c]\nmodel = "m"\ntools = "grep"\n', "invalid_value", "cards.c.tools", 5, "a list of tool names"),
    ('[models.m]\nprovider = "fake"\n[prompts]\np = "x"\n[cards.c]\nmodel = "m"\nprompt = "p"\nsystem = "y"\n', "invalid_value", "cards.c.system", 8, "not both"),
    ('[cards.c]\nmodel = "ghost"\n', "unknown_name", "cards.c.model", 2, "no model profile named 'ghost'"),
    ('[models.m]\nprovider = "fake"\n[cards.c]\nmodel = "m"\nprompt = "ghost"\n', "unknown_name", "cards.c.prompt", 5, "no prompt named 'ghost'"),
    ('[model.m]\nprovider = "fake"\n', "invalid_value", "model", 1, "unknown table"),
    ('[models.m]\nprovider = "fake"\ntemperature = \n', "invalid_file", None, 3, "not valid TOML"),
    ('[models.m]\nprovider = "fake"\n[models.m]\nprovider = "fake"\n', "invalid_file", None, 3, "not valid TOML"),
]


@pytest.mark.parametrize(("text", "reason", "key", "line", "words"), BAD, ids=[b[3] and f"{b[2]}:{b[4][:20]}" for b in BAD])
def test_a_mistake_names_the_file_the_key_and_the_line(tmp_path: Path, text: str, reason: str, key: str | None, line: int, words: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as exc:
        Profiles.load(path)
    e = exc.value
    assert (e.reason, e.key, e.line, e.file) == (reason, key, line, str(path))
    assert words in e.message
    assert e.message.startswith(f"{path}:{line}: ")
    assert isinstance(e, allm.ValidationError)
    assert pickle.loads(pickle.dumps(e)).message == e.message


def test_the_same_name_in_two_files_is_a_duplicate(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('[prompts]\nbrief = "one"\n')
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "brief.txt").write_text("two")
    with pytest.raises(ProfileError) as exc:
        Profiles.load(tmp_path)
    assert exc.value.reason == "duplicate" and f"{tmp_path / 'a.toml'}:2" in exc.value.message
    assert exc.value.file == str(tmp_path / "prompts" / "brief.txt")


def test_a_bad_entry_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "x.toml").write_text('provider = "fake"\n\ntop_p = 7\n')
    with pytest.raises(ProfileError) as exc:
        Profiles.load(tmp_path)
    assert (exc.value.file, exc.value.key, exc.value.line) == (str(tmp_path / "models" / "x.toml"), "models.x.top_p", 3)


def test_missing_and_unreadable_paths(tmp_path: Path) -> None:
    with pytest.raises(ProfileError) as exc:
        Profiles.load(tmp_path / "nope.toml")
    assert exc.value.reason == "invalid_file" and "no such file" in exc.value.message
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[prompts]\nbrief = "caf\xe9"\n')
    with pytest.raises(ProfileError) as exc:
        Profiles.load(bad)
    assert exc.value.reason == "invalid_file"


# ------------------------------------------------------------------------------ resolving


def test_precedence_explicit_then_profile_then_omitted(profiles: Profiles) -> None:
    p = profiles.resolve("smol", "brief")
    assert p.sampler == {"temperature": 0.0, "top_k": 40, "min_p": 0.05, "max_tokens": 64, "repetition_penalty": 1.1, "seed": 7}
    assert p.system == "You are a helpful assistant. Be brief."
    p = profiles.resolve("smol", temperature=0.7, top_p=0.5, min_p=None, stop_sequences=["\n"])
    assert p.sampler["temperature"] == 0.7  # explicit wins
    assert p.sampler["top_p"] == 0.5  # explicit, profile had none
    assert p.sampler["min_p"] == 0.05  # None means "not given": the profile's stays
    assert p.sampler["stop_sequences"] == ("\n",)
    assert "frequency_penalty" not in p.sampler and p.system is None  # neither sets it: omitted


def test_a_card_overrides_model_and_prompt(profiles: Profiles) -> None:
    p = profiles.resolve("echo", "coder", card="tutor", temperature=1.0)
    assert (p.model.name, p.prompt, p.card) == ("smol", "brief", "tutor")
    assert p.system == "You are a helpful assistant. Be brief." and p.sampler["temperature"] == 1.0
    r = profiles.resolve(card="reviewer")
    assert r.system.startswith("You review code.") and r.tools == ("read_file",)


@pytest.mark.parametrize(
    ("kwargs", "reason", "words"),
    [
        ({"model": "gpt"}, "unknown_name", "no model named 'gpt'; known: claude, echo, smol"),
        ({"model": "smol", "prompt": "nope"}, "unknown_name", "no prompt named 'nope'"),
        ({"card": "nope"}, "unknown_name", "no card named 'nope'"),
        ({}, "unknown_name", "no model given"),
        ({"model": "smol", "temprature": 1}, "invalid_value", "unknown settings ['temprature']"),
        ({"model": "smol", "top_p": 3}, "invalid_value", "top_p: must be a number from 0 to 1"),
        ({"model": "smol", "anthropic_beta": ["x"]}, "invalid_value", "for provider anthropic, not 'local'"),
    ],
)
def test_resolving_errors(profiles: Profiles, kwargs: dict[str, object], reason: str, words: str) -> None:
    with pytest.raises(ProfileError) as exc:
        profiles.resolve(**kwargs)  # type: ignore[arg-type]
    assert exc.value.reason == reason and words in exc.value.message


# ------------------------------------------------------------------------------ engines


def test_the_engine_carries_the_sampler_defaults(profiles: Profiles) -> None:
    engine = profiles.resolve("smol").engine(base_url="http://127.0.0.1:8080/v1")
    assert engine.adapter == OpenAICompatible("http://127.0.0.1:8080/v1", "llama.cpp")
    assert engine.model == "smollm2"
    assert engine.defaults == {
        "temperature": 0.0, "top_k": 40, "max_tokens": 64, "seed": 7,
        "options": {"min_p": 0.05, "repetition_penalty": 1.1},
    }
    claude = profiles.resolve("claude", max_tokens=100).engine()
    assert isinstance(claude.adapter, Anthropic) and claude.model == "claude-sonnet-4-5"
    assert claude.defaults["max_tokens"] == 100 and claude.defaults["stop_sequences"] == ["\n\nHuman:"]
    assert claude.defaults["options"] == {"anthropic_beta": ["output-128k-2025-02-19"]}
    assert codec.loads(codec.dumps(claude), allm.Engine) == claude


def test_the_local_provider_needs_a_base_url(profiles: Profiles) -> None:
    with pytest.raises(allm.ValidationError) as exc:
        profiles.resolve("smol").engine()
    assert "needs a base_url" in exc.value.message


def test_a_call_through_a_profile_sends_its_settings(profiles: Profiles) -> None:
    p = profiles.resolve("echo", "brief", seed=3)
    engine = p.engine()
    resp = allm.generate(engine, p.request("Hello", max_tokens=5))
    assert resp.output_text == "(fake) you said: Hello"
    fake = engine.adapter
    assert isinstance(fake, Fake)
    sent = fake.requests[-1]
    assert [m.role for m in sent.messages] == ["system", "user"] and sent.messages[0].text == "You are a helpful assistant. Be brief."
    assert (sent.temperature, sent.top_p, sent.frequency_penalty, sent.presence_penalty, sent.seed, sent.max_tokens) == (0.5, 0.9, 0.2, -0.1, 3, 5)
    resp = allm.generate(engine, allm.request("Hi", temperature=0.0, options={"min_p": 0.2}))
    sent = fake.requests[-1]
    assert sent.temperature == 0.0 and sent.options == {"min_p": 0.2} and sent.messages[0].role == "user"


def test_engine_option_defaults_merge_under_the_request_options() -> None:
    fake = Fake(function=lambda r: "ok")
    engine = allm.Engine(adapter=fake, model="fake", defaults={"options": {"min_p": 0.05, "repetition_penalty": 1.1}})
    allm.generate(engine, allm.request("a", options={"min_p": 0.3, "x": 1}))
    assert fake.requests[-1].options == {"min_p": 0.3, "repetition_penalty": 1.1, "x": 1}
    allm.generate(engine, allm.request("b"))
    assert fake.requests[-1].options == {"min_p": 0.05, "repetition_penalty": 1.1}


def test_card_tools_are_picked_by_name(profiles: Profiles) -> None:
    read_file = allm.Tool("read_file", "Read a file")
    grep = allm.Tool("grep", "Search files")
    p = profiles.resolve(card="reviewer")
    assert p.engine(tools=[grep, read_file]).tools == (read_file,)
    with pytest.raises(ProfileError) as exc:
        p.engine(tools=[grep])
    assert exc.value.reason == "unknown_name" and exc.value.key == "cards.reviewer.tools" and "['read_file']" in exc.value.message
    assert profiles.resolve("echo").engine(tools=[grep]).tools == (grep,)


def test_threads_and_requests_start_with_the_prompt(profiles: Profiles) -> None:
    p = profiles.resolve(card="tutor")
    t = p.thread(allm.user("Hi"))
    assert [m.role for m in t.messages] == ["system", "user"]
    own = allm.Thread((allm.system("Mine."), allm.user("Hi")))
    assert p.request(own).messages == own.messages
    assert p.request([allm.user("x")]).messages[0].text == p.system
    assert Profile(profiles.model("echo")).request("x").messages == (allm.user("x"),)


def test_the_default_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLM_PROFILES", str(FILE))
    assert Profiles.load_default().names()["cards"] == ["reviewer", "tutor"]
    monkeypatch.setenv("ALLM_PROFILES", str(tmp_path / "missing.toml"))
    with pytest.raises(ProfileError) as exc:
        Profiles.load_default()
    assert exc.value.reason == "invalid_file" and exc.value.file == str(tmp_path / "missing.toml")
    monkeypatch.delenv("ALLM_PROFILES")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert Profiles.load_default() == Profiles()
    (tmp_path / "config" / "allm").mkdir(parents=True)
    (tmp_path / "config" / "allm" / "profiles.toml").write_text('[prompts]\nbrief = "Be brief."\n')
    assert Profiles.load_default().prompt("brief").text == "Be brief."


# ------------------------------------------------------------------------------ the wire

WIRE_STREAM = {
    "chat": load_capture("b1-chat-stream-usage").body,
    "responses": load_case("openai-responses", "stream-text").body,
    "anthropic": load_case("anthropic", "stream-text").body,
    "gemini": load_case("gemini", "stream-sse-text").body,
}
# provider -> (recorded stream, where the sampler fields sit in the body, what reaches the wire, settings dropped)
SAMPLERS = {
    "llama.cpp": ("chat", (), {"top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1}, ()),
    "vllm": ("chat", (), {"top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1}, ()),
    "openrouter": ("chat", (), {"top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1}, ()),
    "ollama": ("chat", (), {}, ("top_k", "min_p", "repetition_penalty")),
    "compatible": ("chat", (), {}, ("top_k", "min_p", "repetition_penalty")),
    "openai": ("chat", (), {}, ("top_k", "min_p", "repetition_penalty")),
    "responses": ("responses", (), {}, ("top_k", "min_p", "repetition_penalty")),
    "anthropic": ("anthropic", (), {"top_k": 40}, ("min_p", "repetition_penalty")),
    "gemini": ("gemini", ("generationConfig",), {"topK": 40}, ("min_p", "repetition_penalty")),
}
WIRE_NAMES_ALL = ("top_k", "topK", "min_p", "repetition_penalty", "repeat_penalty")


@pytest.mark.parametrize("provider", list(SAMPLERS))
def test_top_k_min_p_and_repetition_penalty_reach_the_servers_that_take_them(provider: str) -> None:
    """Through the public API: a profile's sampler settings in the body sent, or in Response.warnings."""
    stream_kind, where, sent, dropped = SAMPLERS[provider]
    body = WIRE_STREAM[stream_kind]

    async def answer(req: Req, w: Writer) -> None:
        await w.start_stream()
        await w.chunk(body)
        await w.end_stream()

    with serve(answer) as server:
        base = server.url + ("/v1beta" if provider == "gemini" else "/v1")
        model = {"gemini": "gemini-2.5-flash", "responses": "gpt-5-nano", "openai": "gpt-4.1-mini", "compatible": "m", "ollama": "m", "vllm": "m", "llama.cpp": "m"}.get(provider)
        mp = ModelProfile("m", provider, model, base_url=base, top_k=40, min_p=0.05, repetition_penalty=1.1)
        engine = Profile(mp).engine()
        resp = allm.generate(engine, allm.request("Hi"), api_key="sk-test-0000000000")
        assert resp.finish_reason != "error", resp.metadata
        sent_body = orjson.loads(server.requests[-1].body)
    for key in where:
        sent_body = sent_body.get(key, {})
    assert {k: sent_body[k] for k in WIRE_NAMES_ALL if k in sent_body} == sent
    warned = {w.setting for w in resp.warnings if w.kind == "dropped_setting"}
    assert warned == set(dropped), resp.warnings


@pytest.mark.live
def test_the_local_llama_server_samples_with_the_profile_settings(llama_server: Any) -> None:
    """The real llama-server reports the sampler settings of each slot's last request (GET /slots)."""
    p = Profiles.load(FILE).resolve(card="tutor", max_tokens=9)  # 9: this test's request, among others
    engine = p.engine(base_url=llama_server.base_url)
    resp = allm.generate(engine, p.request("What is the capital of France?"))
    assert resp.finish_reason in ("stop", "length") and resp.output_text and resp.warnings == ()
    root = llama_server.base_url.rsplit("/v1", 1)[0]
    slots = httpx.get(root + "/slots", timeout=30).json()
    mine = [s["params"] for s in slots if s.get("params", {}).get("n_predict") == 9]
    assert mine, slots
    params = mine[0]
    assert params["top_k"] == 40
    assert params["min_p"] == pytest.approx(0.05)
    assert params["repeat_penalty"] == pytest.approx(1.1)
    assert params["temperature"] == 0.0 and params["seed"] == 7


# ------------------------------------------------------------------------------ the guide's table

TABLE_PROVIDERS = ("openai", "responses", "anthropic", "gemini", "llama.cpp", "vllm", "openrouter", "ollama", "compatible")
TABLE_SETTINGS = {
    "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1, "max_tokens": 64,
    "seed": 7, "frequency_penalty": 0.2, "presence_penalty": 0.2, "stop_sequences": ["END"],
}


def _flat(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, **{f"generationConfig.{k}": v for k, v in body.get("generationConfig", {}).items()}}


def _wire_name(provider: str, setting: str, value: Any) -> str:
    """Where ``setting`` lands in the body ``provider``'s adapter sends, or ``—`` when it is
    dropped with a warning."""
    model = {"gemini": "gemini-2.5-flash", "responses": "gpt-5-nano", "openai": "gpt-4.1-mini"}.get(provider, "m")
    base_url = None if provider in ("openai", "anthropic", "gemini", "responses") else "http://127.0.0.1:9/v1"
    engine = Profile(ModelProfile("m", provider, model, base_url=base_url), sampler={setting: value}).engine()
    plain = allm.Request(messages=(allm.user("hi"),), model=model)
    fields = {k: v for k, v in engine.defaults.items() if k != "options"}
    call = engine.adapter.encode(attrs.evolve(plain, options=engine.defaults.get("options", {}), **fields), stream=False)
    if any(w.setting == setting for w in call.warnings):
        return "—"
    sent, before = _flat(orjson.loads(call.body)), _flat(orjson.loads(engine.adapter.encode(plain, stream=False).body))
    names = [k for k, v in sent.items() if k != "generationConfig" and (k not in before or before[k] != v)]
    assert len(names) == 1, (provider, setting, names)
    return f"`{names[0]}`"


def sampler_table() -> str:
    head = "| setting | " + " | ".join(TABLE_PROVIDERS) + " |"
    rows = [head, "|" + "---|" * (len(TABLE_PROVIDERS) + 1)]
    for setting, value in TABLE_SETTINGS.items():
        rows.append(f"| `{setting}` | " + " | ".join(_wire_name(p, setting, value) for p in TABLE_PROVIDERS) + " |")
    return "\n".join(rows)


def test_the_guide_says_which_provider_takes_which_setting() -> None:
    guide = (HERE.parent / "guides" / "profiles.md").read_text()
    assert sampler_table() in guide, "guides/profiles.md: replace the table with\n" + sampler_table()


def test_a_registry_never_holds_a_key(tmp_path: Path) -> None:
    secret = "sk-proj-SECRETKEY0123456789abcdef"
    path = tmp_path / "keys.toml"
    path.write_text(f'[models.gpt]\nprovider = "openai"\napi_key = "{secret}"\n')
    with pytest.raises(ProfileError) as exc:
        Profiles.load(path)
    assert exc.value.key == "models.gpt.api_key" and exc.value.line == 3
    assert secret not in str(exc.value) and secret not in repr(exc.value) and "SECRETKEY" not in exc.value.message


def test_allm_chat_takes_a_profile_or_a_card(capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from allm import cli

    out = io.StringIO()
    assert cli.main(["chat", "--profiles", str(FILE), "--profile", "echo", "--prompt", "brief", "Hello there"], out=out) == 0
    assert out.getvalue() == "(fake) you said: Hello there\n"
    assert cli.main(["chat", "--profiles", str(FILE), "--prompt", "brief", "--provider", "fake", "Hi"], out=io.StringIO()) == 1
    assert "--prompt needs --profile" in capsys.readouterr().err
    assert cli.main(["chat", "--profiles", str(FILE), "--card", "nope", "Hi"], out=io.StringIO()) == 1
    assert "no card named 'nope'; known: reviewer, tutor" in capsys.readouterr().err


@pytest.mark.live
def test_the_profiles_example_runs_against_the_local_model(llama_server: Any) -> None:
    """examples/profiles.py: a registry directory, a card, the settings each dialect takes, and
    SmolLM2 answering through the card (it starts its own llama-server)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).parent.parent
    out = subprocess.run(
        [sys.executable, str(root / "examples" / "profiles.py")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.rstrip().endswith("ok")
    assert "not sent: ['min_p', 'repetition_penalty', 'top_k']" in out.stdout
