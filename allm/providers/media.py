"""Images going to a provider: pre-flight checks and multipart bodies. Pure: no I/O.

Every adapter calls :func:`check_images` from ``encode`` with its own
:class:`ImageRules`, so a request a provider would refuse because of an image is
refused here first, with a :class:`~allm.errors.ValidationError` (reason
``invalid_image``) that names the message and part and says why. The limits are
data, taken from each provider's documentation (see ``guides/vision.md``):

- OpenAI (https://platform.openai.com/docs/guides/images-vision, "Image input
  requirements"): PNG, JPEG, WEBP, non-animated GIF; up to 20 MB per image, 50 MB of
  image bytes and 500 images per request.
- Anthropic (https://docs.anthropic.com/en/docs/build-with-claude/vision): JPEG, PNG,
  GIF, WEBP; 5 MB per image, measured on the base64 text the API receives (its
  error reads ``image exceeds 5 MB maximum: N bytes > 5242880 bytes``); 100 images
  and 32 MB per request.
- Gemini API (https://ai.google.dev/gemini-api/docs/image-understanding): PNG, JPEG,
  WEBP, HEIC, HEIF; inline data only (no URLs) and a whole request under 20 MB.
  (Vertex AI documents 7 MB per inline file; this adapter speaks the Gemini API.)

:func:`multipart_body` builds a ``multipart/form-data`` body with a boundary derived
from the content, so the same input always gives the same bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import attrs

from ..errors import ValidationError
from ..types import CallWarning, Image, ImagePart, Message
from ._wire import dropped, note

__all__ = [
    "ANTHROPIC_IMAGES",
    "COMPATIBLE_IMAGES",
    "GEMINI_IMAGES",
    "IMAGE_MIME_TYPES",
    "MB",
    "OPENAI_IMAGES",
    "ImageRules",
    "check_image",
    "check_images",
    "check_request_size",
    "multipart_body",
    "sniff_mime_type",
]

MB = 1024 * 1024
"""A megabyte as the providers count it for these limits (5 MB = 5,242,880 bytes)."""

IMAGE_MIME_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
"""The image types every adapter accepts (Gemini: see :data:`GEMINI_IMAGES`)."""


@attrs.frozen
class ImageRules:
    """What one provider accepts as image input.

    - ``provider``: the name used in error messages.
    - ``mime_types``: accepted ``mime_type`` values.
    - ``max_image_bytes``: cap per inline image, ``None`` for none; measured on the
      raw bytes, or on the base64 text when ``measure="base64"``.
    - ``max_images``, ``max_total_bytes``: caps per request (count; raw bytes of all
      inline images).
    - ``urls``: whether remote ``http(s)`` URLs may be sent for the provider to fetch.
    - ``roles``: message roles that may carry images.
    - ``detail``: whether :attr:`ImagePart.detail` is sent (else dropped with a warning).
    - ``max_request_bytes``: cap on the whole encoded request body when it carries
      inline images (see :func:`check_request_size`).
    - ``source``: the document the numbers come from.
    """

    provider: str
    mime_types: frozenset[str] = IMAGE_MIME_TYPES
    max_image_bytes: int | None = None
    measure: str = "raw"
    max_images: int | None = None
    max_total_bytes: int | None = None
    urls: bool = True
    roles: frozenset[str] = frozenset({"user"})
    detail: bool = True
    max_request_bytes: int | None = None
    source: str = ""


OPENAI_IMAGES = ImageRules(
    "OpenAI",
    IMAGE_MIME_TYPES,
    max_image_bytes=20 * MB,
    max_images=500,
    max_total_bytes=50 * MB,
    source="https://platform.openai.com/docs/guides/images-vision",
)
COMPATIBLE_IMAGES = ImageRules("this server", IMAGE_MIME_TYPES)
"""OpenAI-compatible servers (llama.cpp, vLLM, Ollama...): the common types, no size caps."""
ANTHROPIC_IMAGES = ImageRules(
    "Anthropic",
    IMAGE_MIME_TYPES,
    max_image_bytes=5 * MB,
    measure="base64",
    max_images=100,
    roles=frozenset({"user", "tool"}),
    detail=False,
    max_request_bytes=32 * MB,
    source="https://docs.anthropic.com/en/docs/build-with-claude/vision",
)
GEMINI_IMAGES = ImageRules(
    "Gemini",
    frozenset({"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"}),
    max_image_bytes=20 * MB,
    urls=False,
    roles=frozenset({"user", "assistant"}),
    detail=False,
    max_request_bytes=20 * MB,
    source="https://ai.google.dev/gemini-api/docs/image-understanding",
)

_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png"}
_HEIF_BRANDS = {
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"heim": "image/heic",
    b"heis": "image/heic",
    b"hevc": "image/heic",
    b"hevx": "image/heic",
    b"mif1": "image/heif",
    b"msf1": "image/heif",
}


def sniff_mime_type(data: bytes) -> str | None:
    """The image type the bytes' signature shows (PNG, JPEG, GIF, WEBP, HEIC/HEIF), or ``None``."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if len(data) >= 12 and data[4:8] == b"ftyp":
        return _HEIF_BRANDS.get(data[8:12])
    return None


def _size(n: int) -> str:
    return f"{n / MB:.1f} MB ({n:,} bytes)"


def _fail(where: str, why: str) -> ValidationError:
    return ValidationError(f"{where}: {why}", reason="invalid_image")


def check_image(image: Image, rules: ImageRules, where: str) -> int:
    """Check one image against ``rules``; return the inline bytes it adds (0 for a URL).

    Raises :class:`~allm.errors.ValidationError` (``invalid_image``) for a URL the
    provider cannot take, a non-``http(s)`` URL, a missing or unaccepted MIME type,
    bytes whose signature shows another image type, empty bytes, or an image over
    the provider's size cap.
    """
    accepted = ", ".join(sorted(rules.mime_types))
    if image.url is not None:
        if not rules.urls:
            raise _fail(
                where,
                f"{rules.provider} needs inline image bytes, and this image has only a URL ({image.url!r}); "
                "build it with ImagePart.from_file/from_bytes/from_base64, or download it first with "
                "allm.fetch_images(request) (an explicit opt-in that fetches the URL)",
            )
        scheme = image.url.split(":", 1)[0].lower() if ":" in image.url else ""
        if scheme not in ("http", "https"):
            raise _fail(where, f"an image URL must be http(s), not {image.url[:40]!r}")
        if image.mime_type is not None and image.mime_type not in rules.mime_types:
            raise _fail(where, f"{rules.provider} accepts images of type {accepted}, not {image.mime_type!r}")
        return 0
    data = image.data or b""
    mime = image.mime_type
    if not mime:
        raise _fail(where, "an inline image needs a mime_type")
    if mime not in rules.mime_types:
        hint = f" (did you mean {_ALIASES[mime]!r}?)" if mime in _ALIASES else ""
        raise _fail(where, f"{rules.provider} accepts images of type {accepted}, not {mime!r}{hint}")
    if not data:
        raise _fail(where, "the image has no bytes")
    seen = sniff_mime_type(data)
    if seen is not None and seen != mime:
        raise _fail(where, f"the image is declared {mime!r} but its bytes are {seen!r}")
    if rules.max_image_bytes is not None:
        measured = len(data) if rules.measure == "raw" else 4 * ((len(data) + 2) // 3)
        if measured > rules.max_image_bytes:
            what = "image" if rules.measure == "raw" else "image as base64"
            raise _fail(
                where,
                f"the {what} is {_size(measured)}; {rules.provider} accepts at most "
                f"{_size(rules.max_image_bytes)} per image",
            )
    return len(data)


def check_images(messages: Sequence[Message], rules: ImageRules, provider: str | None = None) -> list[CallWarning]:
    """Check every image of ``messages`` against ``rules`` before anything is sent.

    Returns the warnings to report (``detail`` dropped for a provider without it),
    naming ``provider`` (the adapter's provider name).
    Raises :class:`~allm.errors.ValidationError` (``invalid_image``): an image in a
    role the provider does not take images in (a system message is refused earlier, by
    :func:`~allm.providers._threads.check_thread`, for every provider); any
    failure of :func:`check_image`; more images, or more inline bytes, than the
    provider accepts in one request.
    """
    warnings: list[CallWarning] = []
    count = 0
    total = 0
    for i, m in enumerate(messages):
        if isinstance(m.content, str):
            continue
        for j, p in enumerate(m.content):
            if type(p) is not ImagePart:
                continue
            where = f"messages[{i}].content[{j}]"
            if m.role not in rules.roles:
                roles = " and ".join(sorted(rules.roles))
                article = "an" if m.role[0] in "aeiou" else "a"
                raise _fail(where, f"{rules.provider} takes images only in {roles} messages, not in {article} {m.role} message")
            total += check_image(p.image, rules, where)
            count += 1
            if p.detail is not None and not rules.detail:
                note(warnings, dropped("detail", provider, rules.provider, "unsupported_feature", "image detail"))
    if rules.max_images is not None and count > rules.max_images:
        raise ValidationError(
            f"the request has {count} images; {rules.provider} accepts at most {rules.max_images}",
            reason="invalid_image",
        )
    if rules.max_total_bytes is not None and total > rules.max_total_bytes:
        raise ValidationError(
            f"the request's images are {_size(total)} in all; {rules.provider} accepts at most "
            f"{_size(rules.max_total_bytes)} of images per request",
            reason="invalid_image",
        )
    return warnings


def _has_inline(messages: Iterable[Message]) -> bool:
    for m in messages:
        if not isinstance(m.content, str):
            for p in m.content:
                if type(p) is ImagePart and p.image.data is not None:
                    return True
    return False


def check_request_size(body_size: int, messages: Sequence[Message], rules: ImageRules) -> None:
    """Refuse an encoded body of ``body_size`` bytes over the provider's request cap when
    inline images make it so (a text-only request is left to the provider)."""
    cap = rules.max_request_bytes
    if cap is None or body_size <= cap or not _has_inline(messages):
        return
    raise ValidationError(
        f"the request with its inline images is {_size(body_size)}; {rules.provider} accepts at most "
        f"{_size(cap)} per request (send fewer or smaller images)",
        reason="invalid_image",
    )


# ------------------------------------------------------------------------------ multipart


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")


def multipart_body(
    fields: Sequence[tuple[str, str]],
    files: Sequence[tuple[str, str, str, bytes]],
) -> tuple[str, bytes]:
    """``(content_type, body)`` of a ``multipart/form-data`` request (RFC 7578).

    ``fields`` are ``(name, value)`` text parts; ``files`` are ``(name, filename,
    content_type, data)``. The boundary is derived from a SHA-256 of the content and
    checked not to occur in it, so equal input gives byte-identical bodies.
    """
    h = hashlib.sha256()
    for name, value in fields:
        h.update(name.encode() + b"\0" + value.encode() + b"\0")
    for name, filename, ctype, data in files:
        h.update(f"{name}\0{filename}\0{ctype}\0".encode() + hashlib.sha256(data).digest())
    digest = h.hexdigest()
    salt = 0
    while True:
        boundary = f"allm-{digest[:32]}" if salt == 0 else f"allm-{salt}-{digest[:32]}"
        marker = b"--" + boundary.encode()
        if not any(marker in v.encode() for _, v in fields) and not any(marker in f[3] for f in files):
            break
        salt += 1
    out: list[bytes] = []
    for name, value in fields:
        out.append(marker + b"\r\n")
        out.append(f'Content-Disposition: form-data; name="{_quote(name)}"\r\n\r\n'.encode())
        out.append(value.encode("utf-8") + b"\r\n")
    for name, filename, ctype, data in files:
        out.append(marker + b"\r\n")
        out.append(
            f'Content-Disposition: form-data; name="{_quote(name)}"; filename="{_quote(filename)}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n".encode()
        )
        out.append(data + b"\r\n")
    out.append(marker + b"--\r\n")
    return f"multipart/form-data; boundary={boundary}", b"".join(out)

