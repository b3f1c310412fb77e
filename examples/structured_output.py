"""Structured output: a typed value from a model, validated against a JSON Schema. No key needed.

First on the Fake (the schema allm derives, an invalid answer as a typed error, the re-ask),
then on a real local model (llama-server with SmolLM2-135M) when it is installed
(./scripts/setup); without it, this example says how and exits 0.
"""

import dataclasses
import sys

import allm
from allm.local import LocalServer, LocalServerError
from allm.providers import Fake, OpenAICompatible


@dataclasses.dataclass
class Capital:
    city: str
    country: str


QUESTION = "What is the capital of France? Answer as JSON with city and country."

# 1. The JSON Schema allm derives from the dataclass and sends as the response format.
schema = allm.schema_for(Capital)
print("schema:", schema)
assert schema == {
    "type": "object",
    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
    "required": ["city", "country"],
    "additionalProperties": False,
}

# 2. On the Fake: an answer missing a field is a typed error carrying the raw text and why.
fake = Fake(scripts=[['{"city": "Paris"}'], ['{"city": "Paris"}'], ['{"city": "Paris", "country": "France"}']])
engine = allm.Engine(adapter=fake, model="fake")
try:
    allm.generate_object(engine, QUESTION, Capital)
    raise AssertionError("expected an InvalidOutputError")
except allm.InvalidOutputError as err:
    print("refused:", err.raw_text, err.errors)
    assert err.reason == "invalid_output" and err.errors == ("$: 'country' is a required property",)

# With reask=True the errors go back to the model once; its second answer is used.
result = allm.generate_object(engine, QUESTION, Capital, reask=True, return_response=True)
print("after a re-ask:", result.value)
assert result.value == Capital("Paris", "France") and len(result.responses) == 2
assert fake.requests[1].response_format == allm.json_schema("Capital", schema)  # what every adapter maps natively

# 3. On a real model: llama-server turns the schema into a grammar, so the answer always parses.
try:
    server = LocalServer()
except LocalServerError as exc:
    print(f"local model skipped: {exc}")
    print("ok")
    sys.exit(0)

with server:
    local = allm.Engine(
        adapter=OpenAICompatible.llama_cpp(server.base_url),
        model="smollm2",
        defaults={"temperature": 0.0, "max_tokens": 60},
    )
    capital = allm.generate_object(local, QUESTION, Capital)
    print("SmolLM2 says:", capital)
    assert isinstance(capital, Capital) and isinstance(capital.city, str) and isinstance(capital.country, str)
    assert "paris" in capital.city.lower(), capital
print("ok")
