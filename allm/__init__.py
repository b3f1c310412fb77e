"""allm: one call surface for LLM providers, with streaming as the primitive.

::

    import allm
    from allm.providers import Fake

    engine = allm.Engine(adapter=Fake(script=["Hello!"]), model="fake")
    resp = allm.generate(engine, allm.request([allm.user("Hi")]))
    assert resp.output_text == "Hello!"

See ``guides/getting_started.md``.
"""

from . import events, keys
from .api import (
    AsyncEventStream,
    EventStream,
    aembed,
    agenerate,
    alist_models,
    astream_generate,
    embed,
    generate,
    list_models,
    stream_generate,
)
from .chat import ChatOptions, achat, astep, astream, astream_step, chat, step, stream, stream_step
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
from .images import aedit_image, agenerate_image, aimage_variations, edit_image, generate_image, image_variations
from .loop import ChatCollector, StepCollector
from .policy import RetryInfo, RetryPolicy, Timeouts
from .session import AsyncSessionStream, Session, SessionReducer, SessionStream
from .structured import ObjectResult, agenerate_object, generate_object, schema_for
from .tools import AskUser, Halt, JsonResultEncoder, ToolContext, function_tool, tool
from .types import (
    ChatResult,
    Embeddings,
    GeneratedImage,
    Image,
    ImagePart,
    ImageRequest,
    ImageResponse,
    Message,
    ReasoningPart,
    Request,
    Response,
    ResponseFormat,
    Step,
    TextPart,
    Thread,
    Tool,
    ToolCall,
    Usage,
    assistant,
    json_schema,
    request,
    system,
    tool_result,
    user,
)
from .vision import afetch_images, fetch_images

__version__ = "0.1.0"

__all__ = [
    "AdapterError",
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
    "ToolContext",
    "ToolError",
    "Usage",
    "ValidationError",
    "achat",
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
