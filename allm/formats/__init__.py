"""Conversation history in provider formats, and history files.

Plain functions on threads, one module per format; each returns its result and a
list of :class:`FormatWarning` for what the target could not keep (or raises
:class:`FormatError` at the first loss with ``strict=True``)::

    from allm import formats

    payload, warnings = formats.to_anthropic(thread)        # {"system": [...], "messages": [...]}
    thread, warnings = formats.from_gemini(request_body)    # reads systemInstruction + contents

    formats.export_history(thread, "work.json.gz", format="openai_chat")   # (bytes_written, message_count)
    thread, warnings = formats.import_history("work.json.gz")

=====================  =============================================  =============================
format                 payload                                        functions
=====================  =============================================  =============================
``openai_chat``        ``{"messages": [...]}``                        :func:`to_openai_chat`,
                                                                      :func:`from_openai_chat`
``openai_responses``   ``{"instructions": ..., "input": [...]}``      :func:`to_openai_responses`,
                                                                      :func:`from_openai_responses`
``anthropic``          ``{"system": [...], "messages": [...]}``       :func:`to_anthropic`,
                                                                      :func:`from_anthropic`
``gemini``             ``{"systemInstruction": ..., "contents": []}`` :func:`to_gemini`,
                                                                      :func:`from_gemini`
``allm``               the :mod:`allm.codec` envelope of the Thread   :func:`to_allm`,
                                                                      :func:`from_allm`
=====================  =============================================  =============================

See ``guides/history_formats.md`` for the mapping tables and the normalisations a
round trip applies.
"""

from __future__ import annotations

from ._base import FormatError, FormatWarning, WarningKind
from .anthropic import from_anthropic, to_anthropic
from .files import (
    FILE_VERSION,
    FORMATS,
    ExportInfo,
    ImportInfo,
    convert,
    export_history,
    from_payload,
    import_history,
    to_payload,
)
from .gemini import from_gemini, to_gemini
from .native import from_allm, to_allm
from .openai_chat import from_openai_chat, to_openai_chat
from .openai_responses import from_openai_responses, to_openai_responses

__all__ = [
    "FILE_VERSION",
    "FORMATS",
    "ExportInfo",
    "FormatError",
    "ImportInfo",
    "FormatWarning",
    "WarningKind",
    "convert",
    "export_history",
    "from_allm",
    "from_anthropic",
    "from_gemini",
    "from_openai_chat",
    "from_openai_responses",
    "from_payload",
    "import_history",
    "to_allm",
    "to_anthropic",
    "to_gemini",
    "to_openai_chat",
    "to_openai_responses",
    "to_payload",
]
