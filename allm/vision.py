"""Downloading image URLs into inline bytes: an explicit opt-in, in the I/O shell.

Some providers cannot take an image by URL (Gemini needs inline bytes; the OpenAI
image edit endpoints need an upload). Adapters never fetch anything: they refuse
such a request with a :class:`~allm.errors.ValidationError` (``invalid_image``).
A caller who wants the URLs fetched says so by calling :func:`fetch_images` (or
:func:`afetch_images`) on the request first::

    req = allm.fetch_images(req)          # every http(s) image URL -> inline bytes
    resp = allm.generate(gemini_engine, req)

Fetching goes through allm's transport (its timeouts and retry policy), only for
``http``/``https`` URLs, each distinct URL once. A fetched image must be one of
``accept`` (PNG, JPEG, GIF, WEBP by default) and at most ``max_bytes`` long; its
type comes from the image's own ``mime_type``, else the response's
``Content-Type``, else the bytes' signature.

Fetching a URL taken from untrusted input lets that input make this process send
requests (to internal addresses too): only opt in where the URLs are trusted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict, TypeVar, Unpack

import attrs

from .errors import AdapterError, ValidationError, from_status
from .plan import Exchanges, Plan, plan_call
from .policy import RetryPolicy, Timeouts
from .providers.base import HttpCall
from .providers.media import IMAGE_MIME_TYPES, MB, sniff_mime_type
from .types import Image, ImagePart, ImageRequest, Message, Request

__all__ = ["afetch_images", "fetch_images"]

R = TypeVar("R", Request, ImageRequest)

DEFAULT_MAX_BYTES = 20 * MB


class _Fetcher:
    """The error mapping the transport needs for a plain GET of an image."""

    provider = "image_fetch"

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> AdapterError:
        return from_status(status, f"fetching the image failed with HTTP {status}", provider=self.provider)


def _urls(request: Request | ImageRequest) -> list[str]:
    seen: list[str] = []
    for img in _images(request):
        if img.url is not None and img.url not in seen:
            seen.append(img.url)
    return seen


def _images(request: Request | ImageRequest) -> list[Image]:
    if isinstance(request, ImageRequest):
        out = list(request.images)
        if request.mask is not None:
            out.append(request.mask)
        return out
    return [p.image for m in request.messages if not isinstance(m.content, str) for p in m.content if type(p) is ImagePart]


def _plan(url: str, retry: RetryPolicy, timeouts: Timeouts) -> Plan:
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in ("http", "https"):
        raise ValidationError(f"only http(s) image URLs can be fetched, not {url[:40]!r}", reason="invalid_image")
    call = HttpCall("GET", url, {"accept": "image/*"}, None, False, _Fetcher.provider)
    return plan_call(None, call, adapter=_Fetcher(), retry=retry, timeouts=timeouts, once=True)


def _inline(url: str, declared: str | None, headers: Mapping[str, str], body: bytes, max_bytes: int, accept: frozenset[str]) -> Image:
    if len(body) > max_bytes:
        raise ValidationError(
            f"the image at {url!r} is {len(body):,} bytes; the limit is {max_bytes:,} (max_bytes=)",
            reason="invalid_image",
        )
    lower = {k.lower(): v for k, v in headers.items()}
    header = lower.get("content-type", "").split(";", 1)[0].strip().lower()
    mime = declared or (header if header.startswith("image/") else None) or sniff_mime_type(body)
    if mime is None or mime not in accept:
        raise ValidationError(
            f"the image at {url!r} is of type {mime or header or 'unknown'!r}; accepted: {', '.join(sorted(accept))}",
            reason="invalid_image",
        )
    return Image(data=body, mime_type=mime)


def _replace(request: R, fetched: Mapping[str, Image]) -> R:
    def swap(img: Image) -> Image:
        return fetched.get(img.url, img) if img.url is not None else img

    if isinstance(request, ImageRequest):
        mask = swap(request.mask) if request.mask is not None else None
        return attrs.evolve(request, images=tuple(swap(i) for i in request.images), mask=mask)
    msgs: list[Message] = []
    for m in request.messages:
        if isinstance(m.content, str) or not any(type(p) is ImagePart and p.image.url for p in m.content):
            msgs.append(m)
            continue
        parts = tuple(attrs.evolve(p, image=swap(p.image)) if type(p) is ImagePart else p for p in m.content)
        msgs.append(attrs.evolve(m, content=parts))
    return attrs.evolve(request, messages=tuple(msgs))


def _declared(request: Request | ImageRequest) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for img in _images(request):
        if img.url is not None and img.url not in out:
            out[img.url] = img.mime_type
    return out


class FetchOptions(TypedDict, total=False):
    """Keyword options of :func:`fetch_images`: ``max_bytes`` (per image, default 20 MB),
    ``accept`` (MIME types allowed), ``retry`` and ``timeouts`` of the downloads."""

    max_bytes: int
    accept: frozenset[str]
    retry: RetryPolicy | None
    timeouts: Timeouts | None


def fetch_images_op(request: R, **options: Unpack[FetchOptions]) -> Exchanges[R]:
    """:func:`fetch_images` as :class:`~allm.plan.Exchanges`: one GET per distinct URL."""
    urls = _urls(request)
    retry = options.get("retry") or RetryPolicy()
    timeouts = options.get("timeouts") or Timeouts()
    max_bytes = options.get("max_bytes", DEFAULT_MAX_BYTES)
    accept = options.get("accept", IMAGE_MIME_TYPES)
    declared = _declared(request)
    plans = [_plan(u, retry, timeouts) for u in urls]

    def finish(answers: list[tuple[int, Mapping[str, str], bytes]]) -> R:
        if not urls:
            return request
        fetched = {u: _inline(u, declared[u], a[1], a[2], max_bytes, accept) for u, a in zip(urls, answers, strict=True)}
        return _replace(request, fetched)

    return Exchanges(plans, finish)


def fetch_images(request: R, **options: Unpack[FetchOptions]) -> R:
    """A copy of ``request`` (a :class:`~allm.types.Request` or
    :class:`~allm.types.ImageRequest`) with every ``http(s)`` image URL downloaded
    into inline bytes. A request without URL images is returned as it is.

    ``options`` (:class:`FetchOptions`): ``max_bytes`` caps each image (default 20 MB);
    ``accept`` lists the MIME types allowed; ``retry``, ``timeouts`` for the downloads. Raises :class:`~allm.errors.ValidationError` (``invalid_image``) for a
    non-``http(s)`` URL, an image too large or of another type, and
    :class:`~allm.errors.AdapterError` when the download fails (after retries).
    """
    from .api import perform

    return perform(fetch_images_op(request, **options))


async def afetch_images(request: R, **options: Unpack[FetchOptions]) -> R:
    """The async twin of :func:`fetch_images` (the URLs are fetched concurrently)."""
    from .api import aperform

    return await aperform(fetch_images_op(request, **options))
