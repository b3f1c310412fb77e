"""allm: one call surface for LLM providers, with streaming as the primitive.

::

    import allm
    from allm.providers import Fake

    engine = allm.Engine(adapter=Fake(script=["Hello!"]), model="fake")
    resp = allm.generate(engine, allm.request([allm.user("Hi")]))
    assert resp.output_text == "Hello!"

See ``guides/getting_started.md``.
"""

from typing import TYPE_CHECKING

from . import events, keys
from ._lazy import lazy_attributes
from .api import (
    AsyncEventStream,
    EventStream,
    acount_tokens,
    aembed,
    agenerate,
    alist_models,
    astream_generate,
    count_tokens,
    embed,
    generate,
    list_models,
    stream_generate,
)
from .engine import Engine
from .errors import (
    AdapterError,
    AllmError,
    EngineError,
    InvalidOutputError,
    SessionError,
    ToolError,
    ValidationError,
)
from .fold import Collector
from .policy import RetryInfo, RetryPolicy, Timeouts
from .types import (
    CallWarning,
    ChatResult,
    Embeddings,
    GeneratedImage,
    Image,
    ImagePart,
    ImageRequest,
    ImageResponse,
    Message,
    PromptCache,
    ReasoningPart,
    Request,
    Response,
    ResponseFormat,
    Step,
    TextPart,
    Thread,
    Tool,
    ToolCall,
    ToolChoice,
    Usage,
    assistant,
    json_schema,
    request,
    system,
    tool_result,
    user,
)

if TYPE_CHECKING:
    from .driver import ChatOptions, achat, astep, astream, astream_step, chat, step, stream, stream_step
    from .images import aedit_image, agenerate_image, aimage_variations, edit_image, generate_image, image_variations
    from .loop import ChatCollector, StepCollector
    from .session import AsyncSessionStream, Session, SessionReducer, SessionStream
    from .structured import ObjectResult, agenerate_object, generate_object, schema_for
    from .tools import AskUser, Halt, JsonResultEncoder, ToolContext, function_tool, tool
    from .vision import afetch_images, fetch_images

__version__ = "0.1.0"

# The tool loop, sessions, structured output, images and vision load on first use,
# so ``import allm`` stays close to ``import httpx, orjson``.
_LAZY = {
    "ChatOptions": ".driver",
    "achat": ".driver",
    "astep": ".driver",
    "astream": ".driver",
    "astream_step": ".driver",
    "chat": ".driver",
    "step": ".driver",
    "stream": ".driver",
    "stream_step": ".driver",
    "aedit_image": ".images",
    "agenerate_image": ".images",
    "aimage_variations": ".images",
    "edit_image": ".images",
    "generate_image": ".images",
    "image_variations": ".images",
    "ChatCollector": ".loop",
    "StepCollector": ".loop",
    "AsyncSessionStream": ".session",
    "Session": ".session",
    "SessionReducer": ".session",
    "SessionStream": ".session",
    "ObjectResult": ".structured",
    "agenerate_object": ".structured",
    "generate_object": ".structured",
    "schema_for": ".structured",
    "AskUser": ".tools",
    "Halt": ".tools",
    "JsonResultEncoder": ".tools",
    "ToolContext": ".tools",
    "function_tool": ".tools",
    "tool": ".tools",
    "afetch_images": ".vision",
    "fetch_images": ".vision",
}


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY)

__all__ = [
    "AdapterError",
    "CallWarning",
    "AllmError",
    "AskUser",
    "AsyncEventStream",
    "AsyncSessionStream",
    "ChatCollector",
    "ChatOptions",
    "ChatResult",
    "Collector",
    "Embeddings",
    "Engine",
    "EngineError",
    "EventStream",
    "GeneratedImage",
    "Halt",
    "Image",
    "ImagePart",
    "ImageRequest",
    "ImageResponse",
    "InvalidOutputError",
    "JsonResultEncoder",
    "Message",
    "ObjectResult",
    "PromptCache",
    "ReasoningPart",
    "Request",
    "Response",
    "ResponseFormat",
    "RetryInfo",
    "RetryPolicy",
    "Session",
    "SessionError",
    "SessionReducer",
    "SessionStream",
    "Step",
    "StepCollector",
    "TextPart",
    "Thread",
    "Timeouts",
    "Tool",
    "ToolCall",
    "ToolChoice",
    "ToolContext",
    "ToolError",
    "Usage",
    "ValidationError",
    "achat",
    "acount_tokens",
    "aedit_image",
    "aembed",
    "afetch_images",
    "agenerate",
    "agenerate_image",
    "agenerate_object",
    "aimage_variations",
    "alist_models",
    "assistant",
    "astep",
    "astream",
    "astream_generate",
    "astream_step",
    "chat",
    "count_tokens",
    "edit_image",
    "embed",
    "events",
    "fetch_images",
    "function_tool",
    "generate",
    "generate_image",
    "generate_object",
    "image_variations",
    "json_schema",
    "keys",
    "list_models",
    "request",
    "schema_for",
    "step",
    "stream",
    "stream_generate",
    "stream_step",
    "system",
    "tool",
    "tool_result",
    "user",
]
