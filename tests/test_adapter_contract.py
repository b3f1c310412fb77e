"""The adapter contract of ``allm.providers.base``: which adapter has which capability, the
token-count calls (encoded as each provider documents them), the provider table's lazy
names, and the import graph of ``allm.providers`` (no circles)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

import allm
from allm.errors import AdapterError
from allm.providers import Anthropic, Fake, Gemini, OpenAI, OpenAICompatible, OpenAIResponses, registry
from allm.providers.base import CountsTokens, Embeds, HttpAdapter, ListsModels, LocalAdapter, MakesImages

ROOT = Path(__file__).parent.parent
PROVIDERS = ROOT / "allm" / "providers"

ADAPTERS: dict[str, Any] = {
    "OpenAI": OpenAI(),
    "OpenAICompatible": OpenAICompatible.llama_cpp(),
    "OpenAIResponses": OpenAIResponses(),
    "Anthropic": Anthropic(),
    "Gemini": Gemini(),
    "Fake": Fake(["x"]),
}

# adapter -> (http, local, embeds, lists models, makes images, counts tokens)
CAPABILITIES = {
    "OpenAI": (True, False, True, True, True, True),
    "OpenAICompatible": (True, False, True, True, True, False),
    "OpenAIResponses": (True, False, True, True, True, True),
    "Anthropic": (True, False, False, True, False, True),
    "Gemini": (True, False, True, True, True, True),
    "Fake": (False, True, True, True, True, True),
}


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_capabilities_are_protocols_checked_with_isinstance(name: str) -> None:
    a = ADAPTERS[name]
    protocols = (HttpAdapter, LocalAdapter, Embeds, ListsModels, MakesImages, CountsTokens)
    assert tuple(isinstance(a, p) for p in protocols) == CAPABILITIES[name]


def test_every_registered_adapter_class_is_covered() -> None:
    assert set(ADAPTERS) == set(registry.ADAPTER_CLASSES)
    for tag, adapter in ADAPTERS.items():
        assert registry.class_for_tag(tag) is type(adapter) and registry.tag_of(adapter) == tag


def test_an_adapter_without_a_capability_is_refused_by_name() -> None:
    engine = allm.Engine(adapter=Anthropic(), model="claude-haiku-4-5")
    with pytest.raises(allm.EngineError) as info:
        allm.embed(engine, ["a"])
    assert info.value.reason == "unsupported_operation" and "Anthropic cannot embed" in info.value.message
    with pytest.raises(allm.EngineError) as info:
        allm.generate_image(engine, "a cat")
    assert info.value.reason == "unsupported_operation"


# ------------------------------------------------------------------------------ token counts

REQ = allm.request(
    [allm.system("Be brief."), allm.user("How many tokens is this?")],
    model="m",
    tools=[allm.Tool("lookup", "Find things", {"type": "object", "properties": {"q": {"type": "string"}}})],
    temperature=0.5,
    max_tokens=99,
)


def test_openai_responses_counts_at_input_tokens_with_the_fields_it_takes() -> None:
    call = OpenAIResponses(reasoning_effort="low").encode_count_tokens(REQ, "gpt-5-mini")
    assert (call.method, call.url, call.stream, call.model) == ("POST", "https://api.openai.com/v1/responses/input_tokens", False, "gpt-5-mini")
    body = orjson.loads(call.body or b"")
    # https://platform.openai.com/docs/api-reference/responses/input-tokens: no sampling,
    # no max_output_tokens, no store/include/stream.
    assert set(body) == {"model", "instructions", "input", "tools", "reasoning"}
    assert body["model"] == "gpt-5-mini" and body["instructions"] == "Be brief."
    assert body["input"] == [{"role": "user", "content": "How many tokens is this?"}]
    assert body["tools"][0]["name"] == "lookup" and body["reasoning"] == {"effort": "low"}
    opts = allm.request("x", model="m", options={"previous_response_id": "resp_1", "truncation": "auto", "user": "u"})
    assert {"previous_response_id", "truncation"} <= set(orjson.loads(OpenAIResponses().encode_count_tokens(opts).body or b""))
    # OpenAI counts there whatever API a model's calls use; headers match its other calls.
    routed = OpenAI(organization="org").encode_count_tokens(REQ, "gpt-4.1-mini")
    assert routed.url.endswith("/responses/input_tokens") and routed.headers["openai-organization"] == "org"
    assert OpenAI().decode_count_tokens(b'{"object": "response.input_tokens", "input_tokens": 37}') == 37
    assert OpenAIResponses().decode_count_tokens(b'{"object": "response.input_tokens", "input_tokens": 0}') == 0


def test_gemini_counts_the_whole_generate_content_request() -> None:
    call = Gemini(thinking_budget=0).encode_count_tokens(REQ, "models/gemini-2.5-flash")
    assert call.url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:countTokens"
    assert call.model == "gemini-2.5-flash" and "x-goog-api-key" not in call.headers
    inner = orjson.loads(call.body or b"")["generateContentRequest"]
    # https://ai.google.dev/api/tokens: the request names its model inside.
    generate = orjson.loads(Gemini(thinking_budget=0).encode(allm.request(REQ.messages, model="gemini-2.5-flash", tools=REQ.tools,
                                                                          temperature=0.5, max_tokens=99), stream=False).body or b"")
    assert inner == {"model": "models/gemini-2.5-flash", **generate}
    assert Gemini().decode_count_tokens(b'{"totalTokens": 31, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 31}]}') == 31
    with pytest.raises(allm.ValidationError):
        Gemini().encode_count_tokens(allm.request("x"))  # no model


def test_the_recorded_gemini_model_list_offers_count_tokens() -> None:
    from tests.conftest import load_case

    models = orjson.loads(load_case("gemini", "models-list").body)["models"]
    assert any("countTokens" in m.get("supportedGenerationMethods", ()) for m in models)


def test_anthropic_count_tokens_model_argument_wins() -> None:
    call = Anthropic().encode_count_tokens(REQ, "claude-haiku-4-5")
    body = orjson.loads(call.body or b"")
    assert call.url.endswith("/messages/count_tokens") and body["model"] == "claude-haiku-4-5"
    assert set(body) == {"model", "system", "messages", "tools"}


@pytest.mark.parametrize("body", [b"<html>", b"[]", b"{}", b'{"input_tokens": "3"}', b'{"totalTokens": true}', b'{"input_tokens": null}'])
@pytest.mark.parametrize("name", ["OpenAI", "OpenAIResponses", "Anthropic", "Gemini", "Fake"])
def test_a_malformed_token_count_is_a_typed_error(name: str, body: bytes) -> None:
    with pytest.raises(AdapterError) as info:
        ADAPTERS[name].decode_count_tokens(body)
    assert info.value.reason == "malformed_response"


# ------------------------------------------------------------------------------ layout


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Modules under allm.providers that ``path`` imports (at any depth, at run time or not)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        out.update(t for t in targets if t.startswith("allm.providers") and t in MODULES)
    out.discard(name)
    return out


MODULES = {_module_name(p): p for p in PROVIDERS.rglob("*.py")}


def test_no_import_circles_in_the_providers() -> None:
    graph = {m: _imports(p) for m, p in MODULES.items()}
    # A package's __init__ may re-export its modules; a module importing its own package
    # __init__ (or a sibling through it) would close a circle, so only __init__ edges
    # into the package's own modules are exempt.
    def edges(m: str) -> set[str]:
        return {t for t in graph[m] if not (MODULES[m].name == "__init__.py" and t.startswith(m + "."))}

    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in edges(m):
            if state.get(t) == 1:
                raise AssertionError("import circle: " + " -> ".join([*path, m, t]))
            if t not in state:
                visit(t, [*path, m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    # the openai modules no longer import each other both ways
    assert "allm.providers.openai.chat" not in graph["allm.providers.openai.responses"]
    assert "allm.providers.openai.responses" not in graph["allm.providers.openai.chat"]


def test_adapter_modules_stay_small() -> None:
    sizes = {m: len(p.read_text().splitlines()) for m, p in MODULES.items()}
    assert max(sizes.values()) < 500, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]


def test_the_codec_imports_nothing_above_the_values() -> None:
    tree = ast.parse((ROOT / "allm" / "codec.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1}
    assert imported <= {"errors", None}, imported  # `from . import types` has module None


def test_names_load_on_first_use_from_the_registry() -> None:
    code = (
        "import sys, allm.providers as p\n"
        "assert 'allm.codec' not in sys.modules and 'allm.providers.registry' not in sys.modules\n"
        "assert not any(m.startswith(('allm.providers.openai', 'allm.providers.gemini', 'allm.providers.anthropic')) for m in sys.modules)\n"
        "assert p.Gemini.__module__ == 'allm.providers.gemini.adapter'\n"
        "assert 'allm.providers.openai' not in sys.modules\n"
        "assert p.Dialect.__module__ == 'allm.providers.openai._shared'\n"
        "try:\n    p.Nope\nexcept AttributeError as e:\n    assert 'Nope' in str(e)\nelse:\n    raise SystemExit('no error')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def _guide_block(guide: str, marker: str) -> str:
    text = (ROOT / "guides" / guide).read_text()
    after = text.split(f"<!-- {marker}", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_capabilities_guide_block_runs() -> None:
    exec(compile(_guide_block("providers.md", "capabilities"), "guides/providers.md", "exec"), {})
