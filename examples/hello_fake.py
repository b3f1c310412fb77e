"""Hello, allm: one call on the deterministic Fake provider, folded and streamed. No key needed."""

import allm
from allm.providers import Fake
from allm.testing import text, usage

engine = allm.Engine(adapter=Fake(scripts=[[text("Hello"), text(", world!"), usage(5, 3)]] * 2), model="fake")
req = allm.request([allm.system("Be brief."), allm.user("Say hello.")], max_tokens=64)

# generate = fold(stream_generate)
resp = allm.generate(engine, req)
print(resp.output_text, resp.finish_reason, resp.usage)
assert resp.output_text == "Hello, world!"
assert resp.finish_reason == "stop"
assert (resp.usage.input_tokens, resp.usage.output_tokens, resp.usage.total_tokens) == (5, 3, 8)

# The same call as a stream of frozen events.
pieces = []
for event in allm.stream_generate(engine, req):
    match event:
        case allm.events.TextDelta(delta=d):
            pieces.append(d)
        case allm.events.MessageCompleted(finish_reason=reason):
            assert reason == "stop"
assert "".join(pieces) == "Hello, world!"

# The Fake recorded what it was asked.
assert engine.adapter.requests[0].max_tokens == 64
print("ok")
