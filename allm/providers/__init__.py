"""Provider adapters. Each loads on first use, so ``import allm`` stays fast.

- :class:`OpenAI`: the OpenAI API (Chat Completions, or the Responses API for
  reasoning-first models).
- :class:`OpenAIResponses`: the Responses API (OpenAI, or a compatible server).
- :class:`Anthropic`: the Anthropic Messages API (or any ``/v1/messages`` server).
- :class:`OpenAICompatible`: any Chat Completions server (OpenRouter, Ollama,
  llama.cpp's ``llama-server``, vLLM) as a dialect.
- :class:`Gemini`: the Google Gemini API (``generateContent``).
- :class:`Fake`: a scripted provider for tests.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .anthropic import Anthropic
    from .fake import Fake
    from .gemini import Gemini
    from .openai_chat import Dialect, OpenAI, OpenAICompatible
    from .openai_responses import OpenAIResponses

__all__ = ["Anthropic", "Dialect", "Fake", "Gemini", "OpenAI", "OpenAICompatible", "OpenAIResponses"]

_WHERE = {
    "Anthropic": ".anthropic",
    "Fake": ".fake",
    "Gemini": ".gemini",
    "OpenAI": ".openai_chat",
    "OpenAICompatible": ".openai_chat",
    "Dialect": ".openai_chat",
    "OpenAIResponses": ".openai_responses",
}


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'allm.providers' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
