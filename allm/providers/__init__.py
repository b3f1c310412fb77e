"""Provider adapters. Each loads on first use, so ``import allm`` stays fast.

- :class:`OpenAI`: the OpenAI API (Chat Completions, or the Responses API for
  reasoning-first models).
- :class:`OpenAIResponses`: the Responses API (OpenAI, or a compatible server).
- :class:`Anthropic`: the Anthropic Messages API (or any ``/v1/messages`` server).
- :class:`OpenAICompatible`: any Chat Completions server (OpenRouter, Ollama,
  llama.cpp's ``llama-server``, vLLM) as a dialect.
- :class:`Gemini`: the Google Gemini API (``generateContent``).
- :class:`Fake`: a scripted provider for tests.

Where each name lives is the provider table's (:mod:`allm.providers.registry`); the
adapter contract is :mod:`allm.providers.base`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:
    from .anthropic import Anthropic
    from .fake import Fake
    from .gemini import Gemini
    from .openai import Dialect, OpenAI, OpenAICompatible, OpenAIResponses

__all__ = ["Anthropic", "Dialect", "Fake", "Gemini", "OpenAI", "OpenAICompatible", "OpenAIResponses"]


def _where(name: str) -> tuple[str, str] | None:
    registry = importlib.import_module(".registry", __name__)
    found: tuple[str, str] | None = registry.ADAPTER_CLASSES.get(name) or registry.VALUES.get(name)
    return found


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _where)
