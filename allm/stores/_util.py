"""Argument checks and error builders every store shares (same messages, same rules)."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

from ..errors import StoreError, redact

__all__ = [
    "check_bytes",
    "check_expect",
    "check_items",
    "check_name",
    "check_prune",
    "closed",
    "conflict",
    "safe_url",
    "slice_bounds",
]


def check_name(namespace: str, key: str) -> None:
    """``namespace`` and ``key`` are strings (TypeError otherwise)."""
    if not isinstance(namespace, str) or not isinstance(key, str):
        raise TypeError(f"namespace and key must be str, not {type(namespace).__name__} and {type(key).__name__}")


def check_bytes(value: object) -> bytes:
    """``value`` as ``bytes`` (``bytes``, ``bytearray`` or ``memoryview``; TypeError otherwise)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"stored values and log items must be bytes, not {type(value).__name__}")


def check_items(items: Sequence[bytes]) -> list[bytes]:
    """The log items as a list of ``bytes`` (a lone bytes value is refused: pass ``[value]``)."""
    if isinstance(items, bytes | bytearray | memoryview | str):
        raise TypeError("append takes a sequence of items (bytes); wrap a single item in a list")
    return [check_bytes(i) for i in items]


def check_expect(expect: int | None) -> None:
    """``expect`` is ``None`` or a version number >= 0."""
    if expect is None:
        return
    if isinstance(expect, bool) or not isinstance(expect, int):
        raise TypeError(f"expect must be None or an int version, not {type(expect).__name__}")
    if expect < 0:
        raise ValueError(f"expect must be >= 0 (0: the key must be absent), not {expect}")


def check_prune(max_age: float | None, max_count: int | None) -> None:
    """Retention limits are non-negative (``max_age`` seconds, ``max_count`` records)."""
    if max_age is not None and (isinstance(max_age, bool) or not isinstance(max_age, int | float) or max_age < 0):
        raise ValueError(f"max_age must be a number of seconds >= 0, not {max_age!r}")
    if max_count is not None and (isinstance(max_count, bool) or not isinstance(max_count, int) or max_count < 0):
        raise ValueError(f"max_count must be an int >= 0, not {max_count!r}")


def slice_bounds(start: int, stop: int | None, length: int) -> tuple[int, int]:
    """``[start:stop]`` of a list of ``length`` items as ``(first, end)`` indices (Python slice
    rules: negative counts from the end, out of range clamps); ``end <= first`` means empty."""
    first, end, _ = slice(start, stop).indices(length)
    return first, max(first, end)


def conflict(namespace: str, key: str, expect: int, found: int) -> StoreError:
    return StoreError(f"{namespace}/{key}: expected version {expect}, found {found}", reason="version_conflict")


def closed() -> StoreError:
    return StoreError("the store is closed", reason="closed")


def safe_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and reprs)."""
    try:
        parts = urlsplit(url)
        if parts.password is not None:
            user = parts.username or ""
            host = parts.hostname or ""
            if ":" in host:
                host = f"[{host}]"
            port = f":{parts.port}" if parts.port is not None else ""
            url = urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))
    except ValueError:
        # A netloc urlsplit cannot read: drop everything between '//' and '@'.
        head, sep, rest = url.partition("://")
        netloc, slash, path = rest.partition("/")
        if sep and "@" in netloc:
            url = f"{head}://***@{netloc.rsplit('@', 1)[1]}{slash}{path}"
    return redact(url)
