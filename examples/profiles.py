"""Named models, prompts and a character card from a profile directory, used for real.

Writes a small registry (a directory: one TOML file per model and card, a prompt as plain
text), resolves a card with one explicit override, and shows where each sampler setting goes
on the wire for two providers. Then, when the local model is installed (./scripts/setup),
asks SmolLM2 through the card and reads back from llama-server the settings it sampled with::

    PYTHONPATH=. python examples/profiles.py
"""

from __future__ import annotations

import json
import tempfile
import urllib.request
from pathlib import Path

import orjson

import allm
from allm.local import LocalServer, LocalServerError
from allm.profiles import ModelProfile, Profile, Profiles

with tempfile.TemporaryDirectory() as tmp:
    root = Path(tmp)
    (root / "models").mkdir()
    (root / "models" / "smol.toml").write_text(
        'provider = "local"\nmodel = "smollm2"\ntemperature = 0.0\ntop_k = 40\nmin_p = 0.05\n'
        "repetition_penalty = 1.1\nmax_tokens = 64\nseed = 7\n"
    )
    (root / "models" / "gpt.toml").write_text('provider = "openai"\nmodel = "gpt-4.1-mini"\ntemperature = 0.2\n')
    (root / "prompts").mkdir()
    (root / "prompts" / "brief.txt").write_text("You are a helpful assistant. Be brief.\n")
    (root / "cards").mkdir()
    (root / "cards" / "tutor.toml").write_text('model = "smol"\nprompt = "brief"\n')
    profiles = Profiles.load(root)

print("registry:", profiles.names())
tutor = profiles.resolve(card="tutor", max_tokens=32)  # explicit > the model's profile > omitted
assert tutor.sampler == {"temperature": 0.0, "top_k": 40, "min_p": 0.05, "max_tokens": 32, "repetition_penalty": 1.1, "seed": 7}
assert tutor.system == "You are a helpful assistant. Be brief."

# The same settings on two providers: llama.cpp takes them all (as repeat_penalty), OpenAI
# takes three and the response lists the rest as dropped.
for provider, base_url in (("llama.cpp", "http://127.0.0.1:8080/v1"), ("openai", None)):
    engine = Profile(ModelProfile("m", provider, "some-model", base_url), sampler=dict(tutor.sampler)).engine()
    req = allm.Request(
        messages=(allm.user("hi"),),
        model="some-model",
        options=engine.defaults.get("options", {}),
        **{k: v for k, v in engine.defaults.items() if k != "options"},
    )
    call = engine.adapter.encode(req, stream=False)
    body = orjson.loads(call.body)
    sent = {k: body[k] for k in ("temperature", "top_k", "min_p", "repeat_penalty", "seed", "max_tokens", "max_completion_tokens") if k in body}
    dropped = sorted(w.setting for w in call.warnings if w.setting)
    print(f"{provider:10} sends {sent}; not sent: {dropped}")
    if provider == "llama.cpp":
        assert sent == {"temperature": 0.0, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1, "seed": 7, "max_tokens": 32}
    else:
        assert dropped == ["min_p", "repetition_penalty", "top_k"]

try:
    server = LocalServer()
except LocalServerError as exc:
    print(f"skipped the local model: {exc}")
else:
    with server:
        engine = tutor.engine(base_url=server.base_url)
        reply = allm.generate(engine, tutor.request("What is the capital of France?"))
        print("tutor:", reply.output_text)
        assert "Paris" in reply.output_text and reply.warnings == ()
        with urllib.request.urlopen(server.url + "/slots", timeout=30) as r:
            slots = json.load(r)
        used = next(s["params"] for s in slots if s.get("params", {}).get("n_predict") == 32)
        print("llama-server sampled with:", {k: round(used[k], 3) for k in ("temperature", "top_k", "min_p", "repeat_penalty")})
        assert used["top_k"] == 40 and round(used["min_p"], 3) == 0.05 and round(used["repeat_penalty"], 3) == 1.1
print("ok")
