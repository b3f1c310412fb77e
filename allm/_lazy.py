"""Lazy module attributes: a package names what it offers, and each name's module loads on first use
(``import allm`` stays close to ``import httpx, orjson``; see the cold-import benchmark)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(
    package: str, namespace: dict[str, Any], where: Mapping[str, str] | Callable[[str], tuple[str, str] | None]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module's ``__getattr__`` and ``__dir__``: ``where`` maps a name to its module (relative to
    ``package``), or is a function ``name -> (module, attribute)``. A loaded value is cached in
    ``namespace``; an unknown name raises ``AttributeError``."""

    def find(name: str) -> tuple[str, str] | None:
        if callable(where):
            return where(name)
        module = where.get(name)
        return (module, name) if module is not None else None

    def __getattr__(name: str) -> Any:
        found = find(name)
        if found is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(found[0], package), found[1])
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(namespace.get("__all__", ()))

    return __getattr__, __dir__
