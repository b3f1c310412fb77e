"""What a worker process of the queue tests runs (imported by ``celery_app`` and ``arq_app``).

Configuration comes from the environment the test gives the process:

- ``ALLM_TEST_REDIS``: the Redis database (store, broker, counters);
- ``ALLM_TEST_KEYS``: a JSON file ``{key_ref: key}``, the worker's secrets (a mounted file,
  say); the broker never sees a key, only the reference;
- ``ALLM_TEST_MODEL_DELAY``: seconds each model call takes.

Counters, shared by every worker process, in Redis hashes: ``test:model`` (model calls by
``<session marker>:<messages sent>``), ``test:tool`` (handler runs by tool call id),
``test:keyref`` (key resolutions by reference).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import redis

import allm
from allm.providers import OpenAICompatible
from allm.stores import open_store
from allm.workers import Worker
from tests.workers.scenario import build_engine

URL = os.environ.get("ALLM_TEST_REDIS", "redis://127.0.0.1:6379/15")
DELAY = float(os.environ.get("ALLM_TEST_MODEL_DELAY", "0.005"))
_counters = redis.Redis.from_url(URL)


def on_model(mark: str, n: int) -> None:
    _counters.hincrby("test:model", f"{mark}:{n}", 1)


def on_tool(name: str, call_id: str) -> None:
    _counters.hincrby("test:tool", call_id, 1)


_ENGINES: dict[str, allm.Engine] = {}


def engines(name: str) -> allm.Engine:
    """The engine factory (each built once per process): ``agent``, the scripted Fake; ``smollm2``,
    the local model behind ``ALLM_TEST_LLAMA_URL`` (an OpenAI-compatible base URL)."""
    if name not in _ENGINES:
        if name == "agent":
            _ENGINES[name] = build_engine(on_model, on_tool, model_delay=DELAY)
        elif name == "smollm2" and "ALLM_TEST_LLAMA_URL" in os.environ:
            adapter = OpenAICompatible.llama_cpp(os.environ["ALLM_TEST_LLAMA_URL"])
            _ENGINES[name] = allm.Engine(adapter=adapter, model="smollm2", defaults={"temperature": 0, "max_tokens": 48})
        else:
            raise KeyError(name)
    return _ENGINES[name]


def keys(key_ref: str) -> Any:
    _counters.hincrby("test:keyref", key_ref, 1)
    return orjson.loads(Path(os.environ["ALLM_TEST_KEYS"]).read_bytes()).get(key_ref)


def build_worker() -> Worker:
    return Worker(open_store(URL), engines, keys=keys, claim_timeout=3.0, conflict_retry=0.2)
