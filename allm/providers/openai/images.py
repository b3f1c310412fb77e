"""The OpenAI Images API, sans-IO: ``POST /images/generations`` (JSON), ``/images/edits`` and
``/images/variations`` (``multipart/form-data``).

Follows https://platform.openai.com/docs/api-reference/images (create, createEdit,
createVariation; the ``ImagesResponse`` object). Also used for OpenAI-compatible
servers that offer these endpoints.

Request mapping (:class:`~allm.types.ImageRequest`): ``model``, ``prompt``, ``n``,
``size``, ``quality``, ``style``, ``background``, ``output_format`` and
``response_format`` are sent where the endpoint has them; others are dropped with a
warning; ``options`` are added last. Edits upload ``image`` (one image) or
``image[]`` (several, GPT image models) and an optional PNG ``mask``; variations
upload one PNG ``image``. The multipart body is built here, purely, with a boundary
derived from its content (:func:`~allm.providers.media.multipart_body`).

Response mapping: each ``data`` item becomes a
:class:`~allm.types.GeneratedImage`: ``b64_json`` -> inline bytes (type from the
bytes' signature, else ``output_format``), ``url`` -> a URL image,
``revised_prompt`` kept; ``usage`` (GPT image models) -> :class:`~allm.types.Usage`.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

import orjson

from ...errors import AdapterError, ValidationError
from ...types import CallWarning, GeneratedImage, Image, ImageRequest, ImageResponse, Usage
from .._wire import SHAPE_ERRORS, copy_settings, join_url, json_body, json_or_none, malformed, usage_count
from ..base import HttpCall
from ..media import MB, ImageRules, check_image, multipart_body, sniff_mime_type

__all__ = ["OPERATIONS", "decode_images", "encode_image_call", "refine_error"]

OPERATIONS = frozenset({"generate", "edit", "variations"})

_PATHS = {"generate": "/images/generations", "edit": "/images/edits", "variations": "/images/variations"}
_FIELDS = {
    "generate": ("n", "size", "quality", "style", "background", "output_format", "response_format"),
    "edit": ("n", "size", "quality", "background", "output_format", "response_format"),
    "variations": ("n", "size", "response_format"),
}
_ALL_FIELDS = ("n", "size", "aspect_ratio", "quality", "style", "background", "output_format", "response_format")
# Edits: PNG, WEBP or JPG under 50 MB each (GPT image models; DALL-E 2 wants a square PNG under 4 MB).
_EDIT_RULES = ImageRules("OpenAI image edits", frozenset({"image/png", "image/jpeg", "image/webp"}), 50 * MB, urls=False)
_MASK_RULES = ImageRules("OpenAI image masks", frozenset({"image/png"}), 50 * MB, urls=False)
# Variations (DALL-E 2): one square PNG under 4 MB.
_VARIATION_RULES = ImageRules("OpenAI image variations", frozenset({"image/png"}), 4 * MB, urls=False)
_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
_FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp"}


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return str(value)


def _fields_of(operation: str, req: ImageRequest, provider: str, warnings: list[CallWarning]) -> dict[str, Any]:
    allowed = _FIELDS[operation]
    out: dict[str, Any] = {}
    if req.model:
        out["model"] = req.model
    if operation != "variations":
        if not req.prompt:
            raise ValidationError(f"an image {operation} needs a prompt", reason="invalid_request")
        out["prompt"] = req.prompt
    elif req.prompt:
        warnings.append(CallWarning("dropped_setting", "prompt", provider, "prompt is not used by image variations and was not sent"))
    copy_settings(req, _ALL_FIELDS, allowed, out, warnings, provider, f"OpenAI image {operation}")
    return out


def encode_image_call(
    base_url: str, headers: Mapping[str, str], provider: str, operation: str, req: ImageRequest
) -> HttpCall:
    """The :class:`~allm.providers.base.HttpCall` for one Images API operation (``generate``,
    ``edit`` or ``variations``).

    Raises :class:`~allm.errors.ValidationError`: no prompt (generate, edit); no
    image to edit, or not exactly one to vary; an input image given only by URL
    (fetch it first with ``allm.fetch_images``), of a type or size the endpoint does
    not take (edits: PNG/JPEG/WEBP under 50 MB; masks: PNG; variations: PNG under 4 MB).
    """
    if operation not in OPERATIONS:
        raise ValueError(f"unknown image operation {operation!r}; expected one of {sorted(OPERATIONS)}")
    warnings: list[CallWarning] = []
    fields = _fields_of(operation, req, provider, warnings)
    url = join_url(base_url, _PATHS[operation])
    h = {"accept": "application/json", **headers}
    if operation == "generate":
        if req.images or req.mask is not None:
            raise ValidationError("image generation takes no input images; use edit_image", reason="invalid_request")
        body = {**fields, **req.options}
        h["content-type"] = "application/json"
        return HttpCall("POST", url, h, json_body(body), False, provider, req.model, tuple(warnings))
    files: list[tuple[str, str, str, bytes]] = []
    if operation == "edit":
        if not req.images:
            raise ValidationError("an image edit needs at least one image", reason="invalid_request")
        name = "image" if len(req.images) == 1 else "image[]"
        for i, img in enumerate(req.images):
            check_image(img, _EDIT_RULES, f"images[{i}]")
            assert img.data is not None and img.mime_type is not None
            files.append((name, f"image{i}.{_EXT[img.mime_type]}", img.mime_type, img.data))
        if req.mask is not None:
            check_image(req.mask, _MASK_RULES, "mask")
            assert req.mask.data is not None
            files.append(("mask", "mask.png", "image/png", req.mask.data))
    else:
        if len(req.images) != 1:
            raise ValidationError(f"image variations take exactly one image, not {len(req.images)}", reason="invalid_request")
        if req.mask is not None:
            raise ValidationError("image variations take no mask", reason="invalid_request")
        img = req.images[0]
        check_image(img, _VARIATION_RULES, "images[0]")
        assert img.data is not None
        files.append(("image", "image.png", "image/png", img.data))
    form = [(k, _form_value(v)) for k, v in {**fields, **req.options}.items() if v is not None]
    ctype, data = multipart_body(form, files)
    h["content-type"] = ctype
    return HttpCall("POST", url, h, data, False, provider, req.model, tuple(warnings))


def _url_mime(url: str) -> str | None:
    mime, _ = mimetypes.guess_type(urlparse(url).path)
    return mime if mime and mime.startswith("image/") else None


def decode_images(call: HttpCall, body: bytes) -> ImageResponse:
    """An ``ImagesResponse`` body (``{"created", "data": [...], "usage"?}``) as an
    :class:`~allm.types.ImageResponse`. Raises :class:`~allm.errors.AdapterError`
    (``malformed_response``) for any other shape."""
    provider = call.provider
    try:
        data = orjson.loads(body)
        items = data["data"]
        if not isinstance(items, list):
            raise TypeError("data is not a list")
        fmt = _FORMATS.get(str(data.get("output_format") or "").lower())
        images: list[GeneratedImage] = []
        for it in items:
            revised = it.get("revised_prompt")
            b64 = it.get("b64_json")
            if isinstance(b64, str):
                raw = base64.b64decode(b64, validate=True)
                img = Image(data=raw, mime_type=sniff_mime_type(raw) or fmt or "image/png")
            elif isinstance(it.get("url"), str):
                img = Image(url=it["url"], mime_type=fmt or _url_mime(it["url"]))
            else:
                raise ValueError("an image item has neither b64_json nor url")
            images.append(GeneratedImage(img, revised if isinstance(revised, str) else None))
        u = data.get("usage") or {}
        u = u if isinstance(u, dict) else {}
        usage = Usage(
            input_tokens=usage_count(u, "input_tokens"),
            output_tokens=usage_count(u, "output_tokens"),
            total_tokens=usage_count(u, "total_tokens"),
        )
        created = data.get("created")
        meta = {k: data[k] for k in ("background", "output_format", "quality", "size") if isinstance(data.get(k), str)}
    except (orjson.JSONDecodeError, binascii.Error, *SHAPE_ERRORS) as exc:
        raise malformed(provider, f"unexpected images body ({type(exc).__name__}: {exc})") from None
    return ImageResponse(
        tuple(images),
        call.model,
        None,
        created if isinstance(created, int) and not isinstance(created, bool) else None,
        "",
        usage,
        call.warnings,
        meta,
    )


def refine_error(err: AdapterError, body: bytes) -> AdapterError:
    """An image refused by moderation (error code ``content_policy_violation`` or
    ``moderation_blocked``) as reason ``content_filter``; other errors unchanged."""
    data = json_or_none(body)
    detail = data.get("error") if isinstance(data, dict) else None
    code = f"{detail.get('code') or ''} {detail.get('type') or ''}".lower() if isinstance(detail, dict) else ""
    if err.status == 400 and ("content_policy" in code or "moderation_blocked" in code):
        return AdapterError(
            err.message, reason="content_filter", provider=err.provider, status=err.status, request_id=err.request_id
        )
    return err
