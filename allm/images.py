"""Image generation, editing and variations: ``generate_image``, ``edit_image``,
``image_variations`` and their async twins.

::

    engine = allm.Engine(adapter=OpenAI(), model="gpt-image-1")
    out = allm.generate_image(engine, "a lighthouse at dawn", size="1024x1024")
    open("lighthouse.png", "wb").write(out.image.data)

Which providers do what:

- OpenAI (and OpenAI-compatible servers with these endpoints): all three, through
  the Images API (``/images/generations``, ``/images/edits``,
  ``/images/variations``; see :mod:`allm.providers.openai.images`).
- Gemini: ``generate`` and ``edit`` through ``generateContent`` with image output
  (``responseModalities``), on image models such as ``gemini-2.5-flash-image``.
- The Fake: all three, from its image scripts (``Fake(images=[image(png)])``).

Other adapters raise :class:`~allm.errors.EngineError` (``unsupported_operation``).
Preparing a call is pure and raises at once (bad input, no model, no key); the
HTTP call itself goes through allm's transport, with the engine's retry policy and
timeouts. The model is the request's, else the engine's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict, Unpack

import attrs

from . import telemetry as _tel
from .api import aperform, perform
from .engine import Engine
from .errors import AdapterError, EngineError, ValidationError
from .plan import Exchanges, plan_call
from .providers.base import HttpAdapter, HttpCall, LocalAdapter, MakesImages
from .types import Image, ImagePart, ImageRequest, ImageResponse

__all__ = ["aedit_image", "agenerate_image", "aimage_variations", "edit_image", "generate_image", "image_variations"]

ImageLike = Image | ImagePart


class ImageFields(TypedDict, total=False):
    """Keyword options of the image calls: ``api_key``, and :class:`~allm.types.ImageRequest`
    fields (``model``, ``n``, ``size``, ``aspect_ratio``, ``quality``, ``style``,
    ``background``, ``output_format``, ``response_format``, ``options``, ``metadata``)."""

    api_key: str | None
    model: str | None
    n: int | None
    size: str | None
    aspect_ratio: str | None
    quality: str | None
    style: str | None
    background: str | None
    output_format: str | None
    response_format: Literal["url", "b64_json"] | None
    options: Mapping[str, Any]
    metadata: Mapping[str, Any]


class EditFields(ImageFields, total=False):
    """:class:`ImageFields` plus ``mask`` (OpenAI: a PNG whose transparent pixels mark where to paint)."""

    mask: ImageLike | None
_VERBS = {"generate": "generate", "edit": "edit", "variations": "make variations of"}


class _ImageErrors:
    """The adapter as the transport sees it for an image call: its ``image_error`` mapping."""

    __slots__ = ("_adapter",)

    def __init__(self, adapter: Any) -> None:
        self._adapter = adapter

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> AdapterError:
        mapped: AdapterError = self._adapter.image_error(status, headers, body)
        return mapped


def _as_image(value: Any, where: str) -> Image:
    if isinstance(value, ImagePart):
        return value.image
    if isinstance(value, Image):
        return value
    raise TypeError(f"{where} must be an allm.Image or ImagePart, not {type(value).__name__}")


def _build(prompt_or_request: Any, fields: Mapping[str, Any]) -> ImageRequest:
    if isinstance(prompt_or_request, ImageRequest):
        return attrs.evolve(prompt_or_request, **fields) if fields else prompt_or_request
    if isinstance(prompt_or_request, str):
        return ImageRequest(prompt=prompt_or_request, **fields)
    raise TypeError(f"expected a prompt string or an allm.ImageRequest, not {type(prompt_or_request).__name__}")


def image_op(engine: Engine, operation: str, request: ImageRequest, api_key: str | None = None) -> Exchanges[ImageResponse]:
    """One image operation (``generate``, ``edit``, ``variations``) as :class:`~allm.plan.Exchanges`.
    Raises its pre-flight errors at once (see :func:`generate_image`)."""
    if not isinstance(engine, Engine):
        raise TypeError(f"expected an allm.Engine, got {type(engine).__name__}")
    adapter = engine.adapter
    if not isinstance(adapter, MakesImages) or operation not in adapter.image_operations:
        raise EngineError(f"{type(adapter).__name__} cannot {_VERBS[operation]} images", reason="unsupported_operation")
    if request.model is None and engine.model is not None:
        request = attrs.evolve(request, model=engine.model)
    if not isinstance(adapter, HttpAdapter | LocalAdapter):
        raise EngineError(f"{type(adapter).__name__} is not an allm adapter", reason="missing_adapter")
    if not request.model and not isinstance(adapter, LocalAdapter):
        raise EngineError("no image model: set the request's model= or Engine(model=...)", reason="missing_model")
    call: HttpCall = adapter.encode_image(operation, request)
    plan = plan_call(engine, call, api_key=api_key, errors=_ImageErrors(adapter), once=True)
    return Exchanges([plan], lambda answers: adapter.decode_image(call, answers[0][2]))


def _op(operation: str, engine: Engine, subject: Any, image: Any, fields: Mapping[str, Any]) -> Exchanges[ImageResponse]:
    f = dict(fields)
    api_key = f.pop("api_key", None)
    if operation == "generate":
        req = _build(subject, f)
    elif operation == "edit":
        req = _edit_request(subject, image, f.pop("mask", None), f)
    else:
        req = _variation_request(subject, f)
    return image_op(engine, operation, req, api_key)


def _edit_request(prompt_or_request: Any, image: ImageLike | Sequence[ImageLike] | None, mask: ImageLike | None, fields: Mapping[str, Any]) -> ImageRequest:
    req = _build(prompt_or_request, fields)
    extra: list[Image] = []
    if image is not None:
        items = list(image) if isinstance(image, Sequence) and not isinstance(image, (str, bytes)) else [image]
        extra = [_as_image(x, f"image[{i}]") for i, x in enumerate(items)]
    changes: dict[str, Any] = {}
    if extra:
        changes["images"] = (*req.images, *extra)
    if mask is not None:
        changes["mask"] = _as_image(mask, "mask")
    req = attrs.evolve(req, **changes) if changes else req
    if not req.images:
        raise ValidationError("edit_image needs an image to edit (image=...)", reason="invalid_request")
    return req


def _variation_request(image_or_request: Any, fields: Mapping[str, Any]) -> ImageRequest:
    if isinstance(image_or_request, ImageRequest):
        req = attrs.evolve(image_or_request, **fields) if fields else image_or_request
    else:
        req = ImageRequest(images=(_as_image(image_or_request, "image"),), **fields)
    if len(req.images) != 1:
        raise ValidationError(f"image_variations takes exactly one image, not {len(req.images)}", reason="invalid_request")
    return req


@_tel.exchange("image", "generate")
def generate_image(engine: Engine, prompt_or_request: str | ImageRequest, **fields: Unpack[ImageFields]) -> ImageResponse:
    """Images drawn from a prompt.

    - ``prompt_or_request``: the prompt, or an :class:`~allm.types.ImageRequest`.
    - ``fields``: :class:`~allm.types.ImageRequest` fields (``model``, ``n``,
      ``size``, ``quality``, ``aspect_ratio``, ``output_format``, ``options``...).

    Returns an :class:`~allm.types.ImageResponse` (``.image`` is the first image:
    inline bytes or a URL; ``.revised_prompt``; ``.usage``; ``.warnings`` for
    fields the provider does not have). Raises :class:`~allm.errors.EngineError`
    (``unsupported_operation``, ``missing_model``, ``missing_key``),
    :class:`~allm.errors.ValidationError` for bad input, and
    :class:`~allm.errors.AdapterError` when the provider refuses or fails
    (``content_filter`` when moderation refused the image), after retries.
    """
    return perform(_op("generate", engine, prompt_or_request, None, fields))


@_tel.exchange("image", "edit")
def edit_image(engine: Engine, prompt_or_request: str | ImageRequest, image: ImageLike | Sequence[ImageLike] | None = None, **fields: Unpack[EditFields]) -> ImageResponse:
    """Images made by changing ``image`` (one :class:`~allm.types.Image` /
    :class:`~allm.types.ImagePart`, or several) as the prompt says.

    ``mask`` (OpenAI): a PNG whose transparent pixels mark where to paint. Input
    images must be inline bytes (``Image.from_file``...; a URL image needs
    :func:`allm.fetch_images` first). OpenAI uploads them as ``multipart/form-data``;
    Gemini sends them as ``inlineData`` parts. Returns and raises as
    :func:`generate_image`.
    """
    return perform(_op("edit", engine, prompt_or_request, image, fields))


@_tel.exchange("image", "variations")
def image_variations(engine: Engine, image_or_request: ImageLike | ImageRequest, **fields: Unpack[ImageFields]) -> ImageResponse:
    """Variations of one image (OpenAI ``/images/variations``, DALL-E 2: a square PNG
    under 4 MB); ``n`` sets how many. Returns and raises as :func:`generate_image`."""
    return perform(_op("variations", engine, image_or_request, None, fields))


@_tel.exchange("image", "generate")
async def agenerate_image(engine: Engine, prompt_or_request: str | ImageRequest, **fields: Unpack[ImageFields]) -> ImageResponse:
    """The async twin of :func:`generate_image`."""
    return await aperform(_op("generate", engine, prompt_or_request, None, fields))


@_tel.exchange("image", "edit")
async def aedit_image(engine: Engine, prompt_or_request: str | ImageRequest, image: ImageLike | Sequence[ImageLike] | None = None, **fields: Unpack[EditFields]) -> ImageResponse:
    """The async twin of :func:`edit_image`."""
    return await aperform(_op("edit", engine, prompt_or_request, image, fields))


@_tel.exchange("image", "variations")
async def aimage_variations(engine: Engine, image_or_request: ImageLike | ImageRequest, **fields: Unpack[ImageFields]) -> ImageResponse:
    """The async twin of :func:`image_variations`."""
    return await aperform(_op("variations", engine, image_or_request, None, fields))
