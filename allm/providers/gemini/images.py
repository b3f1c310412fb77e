"""Image output of the Gemini API: ``generateContent`` asking for ``IMAGE`` modalities.

Follows https://ai.google.dev/gemini-api/docs/image-generation. Generation and edits
(by instruction: the input images go in the prompt's parts; there is no mask).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from ...errors import AdapterError, ValidationError
from ...types import CallWarning, GeneratedImage, Image, ImageRequest, ImageResponse, Usage
from .._wire import SHAPE_ERRORS, dropped, load_json, shape_error
from ..base import HttpCall
from ..media import GEMINI_IMAGES, check_image
from .decode import map_finish_reason, map_usage
from .encode import merge
from .errors import PROVIDER, error_from_object

__all__ = ["decode_image_body", "encode_image_body"]

_IMAGE_SIZES = frozenset({"1K", "2K", "4K"})


def encode_image_body(operation: str, request: ImageRequest) -> tuple[dict[str, Any], list[CallWarning]]:
    """A ``generateContent`` body asking for image output
    (https://ai.google.dev/gemini-api/docs/image-generation): the prompt, then the input
    images as ``inlineData`` (edits), ``generationConfig.responseModalities =
    ["TEXT", "IMAGE"]``, ``aspect_ratio`` -> ``imageConfig.aspectRatio`` and a ``size``
    of ``1K``/``2K``/``4K`` -> ``imageConfig.imageSize``. Other OpenAI-style fields are
    dropped with a warning; ``options`` are deep-merged last.

    Raises :class:`~allm.errors.ValidationError`: no prompt, a mask (Gemini edits
    by instruction: describe the region in the prompt), or an input image Gemini
    cannot take (see :data:`~allm.providers.media.GEMINI_IMAGES`).
    """
    if not request.prompt:
        raise ValidationError(f"an image {operation} needs a prompt", reason="invalid_request")
    if request.mask is not None:
        raise ValidationError(
            "Gemini takes no mask; describe the part of the image to change in the prompt", reason="invalid_request"
        )
    if operation == "edit" and not request.images:
        raise ValidationError("an image edit needs at least one image", reason="invalid_request")
    if operation == "generate" and request.images:
        raise ValidationError("image generation takes no input images; use edit_image", reason="invalid_request")
    warnings: list[CallWarning] = []
    parts: list[dict[str, Any]] = [{"text": request.prompt}]
    for i, img in enumerate(request.images):
        check_image(img, GEMINI_IMAGES, f"images[{i}]")
        parts.append({"inlineData": {"mimeType": img.mime_type, "data": img.base64}})
    gc: dict[str, Any] = {"responseModalities": ["TEXT", "IMAGE"]}
    image_config: dict[str, Any] = {}
    if request.aspect_ratio is not None:
        image_config["aspectRatio"] = request.aspect_ratio
    if request.size is not None:
        if request.size.upper() in _IMAGE_SIZES:
            image_config["imageSize"] = request.size.upper()
        else:
            why = f"size {request.size!r} is not supported by Gemini (1K, 2K, 4K; or aspect_ratio=) and was not sent"
            warnings.append(CallWarning("dropped_setting", "size", PROVIDER, why))
    if image_config:
        gc["imageConfig"] = image_config
    for name in ("n", "quality", "style", "background", "output_format", "response_format"):
        if getattr(request, name) is not None:
            warnings.append(dropped(name, PROVIDER, "Gemini image output"))
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": parts}], "generationConfig": gc}
    if request.options:
        merge(body, request.options)
    return body, warnings


def decode_image_body(call: HttpCall, body: bytes) -> ImageResponse:
    """The images (``inlineData`` parts, thoughts skipped) and text of a ``generateContent`` body.

    Raises :class:`~allm.errors.AdapterError`: ``content_filter`` when the prompt
    was blocked or the only candidate stopped on a safety filter without an image;
    the error of an ``{"error": ...}`` body; ``malformed_response`` for any other shape.
    """
    provider = call.provider
    obj = load_json(provider, body, "the response body")
    if isinstance(obj, dict) and obj.get("error") is not None:
        raise error_from_object(provider, obj["error"])
    try:
        if not isinstance(obj, dict):
            raise TypeError("the response is not a JSON object")
        images: list[GeneratedImage] = []
        text: list[str] = []
        finish: str | None = None
        message: str | None = None
        for cand in obj.get("candidates") or ():
            for part in (cand.get("content") or {}).get("parts") or ():
                if part.get("thought"):
                    continue
                inline = part.get("inlineData") or part.get("inline_data")
                if inline:
                    mime = inline.get("mimeType") or inline.get("mime_type")
                    raw = base64.b64decode(inline["data"], validate=True)
                    images.append(GeneratedImage(Image(data=raw, mime_type=str(mime) if mime else None)))
                elif isinstance(part.get("text"), str):
                    text.append(part["text"])
            finish = cand.get("finishReason") or finish
            message = cand.get("finishMessage") or message
        block = (obj.get("promptFeedback") or {}).get("blockReason")
        usage = map_usage(obj["usageMetadata"]) if obj.get("usageMetadata") else Usage()
    except (binascii.Error, *SHAPE_ERRORS) as exc:
        raise shape_error(provider, "body", exc) from None
    if not images and (block or map_finish_reason(finish) == "content_filter"):
        why = f"blocked ({block})" if block else f"stopped by {finish}"
        raise AdapterError(
            f"no image: the request was {why}" + (f": {message}" if message else ""),
            reason="content_filter",
            provider=provider,
            metadata={"block_reason": block} if block else {"finish_reason": finish},
        )
    rid = obj.get("responseId")
    mv = obj.get("modelVersion")
    meta = {"finish_reason": finish} if finish else {}
    return ImageResponse(
        tuple(images),
        mv if isinstance(mv, str) else call.model,
        rid if isinstance(rid, str) else None,
        None,
        "".join(text),
        usage,
        call.warnings,
        meta,
    )
