"""An incremental Server-Sent Events decoder: bytes in, ``(event, data)`` pairs out.

Pure: no I/O, no clocks. Follows the WHATWG SSE parsing rules that matter for LLM
APIs: ``\\n``, ``\\r\\n`` and ``\\r`` line ends (Gemini sends CRLF), ``data:`` with an
optional single leading space, multi-line data joined by ``\\n``, ``event:`` names,
``:`` comment lines (keep-alives) ignored, dispatch on a blank line. Fed arbitrary
byte boundaries it yields identical pairs.

``data`` is returned as ``bytes`` so it can go straight to ``orjson.loads``.
"""

from __future__ import annotations

__all__ = ["SSEDecoder"]


class SSEDecoder:
    """Feed bytes with :meth:`feed`; call :meth:`close` at end of stream.

    Each returned item is ``(event_name_or_None, data_bytes)``. An event still
    being assembled when :meth:`close` is called is dispatched (servers often omit
    the final blank line); a partial line is treated as complete.
    """

    __slots__ = ("_buf", "_data", "_event", "bytes_seen")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] = []
        self._event: str | None = None
        self.bytes_seen = 0

    def feed(self, chunk: bytes) -> list[tuple[str | None, bytes]]:
        self.bytes_seen += len(chunk)
        buf = self._buf + chunk if self._buf else chunk
        if not buf:
            return []
        # ``bytes.splitlines`` splits on exactly the SSE line ends: \r\n, \n and \r.
        lines = buf.splitlines()
        last = buf[-1]
        if last == 10:  # b"\n": every line is complete
            self._buf = b""
            # Hot path: the usual chunk is one whole event, ``data: X`` (after ``event: N``
            # for some providers) and its blank line: the line loop's answer for it, direct.
            n = len(lines)
            if n == 2 and not lines[1] and not self._data and lines[0].startswith(b"data: "):
                event, self._event = self._event, None
                return [(event, lines[0][6:])]
            if n == 3 and not lines[2] and not self._data and lines[0].startswith(b"event: ") and lines[1].startswith(b"data: "):
                self._event = None
                return [(lines[0][7:].decode("utf-8", "replace"), lines[1][6:])]
        elif last == 13:  # b"\r": complete, but it may be the first half of a CRLF
            self._buf = lines.pop() + b"\r"
        else:
            self._buf = lines.pop()
        return self._lines(lines) if lines else []

    def close(self) -> list[tuple[str | None, bytes]]:
        rest = self._buf
        self._buf = b""
        out = self._lines(rest.splitlines()) if rest else []
        if self._data:
            out.append(self._dispatch())
        return out

    def _dispatch(self) -> tuple[str | None, bytes]:
        data = self._data
        item = (self._event, data[0] if len(data) == 1 else b"\n".join(data))
        self._data = []
        self._event = None
        return item

    def _lines(self, lines: list[bytes]) -> list[tuple[str | None, bytes]]:
        out: list[tuple[str | None, bytes]] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    out.append((self._event, data[0] if len(data) == 1 else b"\n".join(data)))
                    data = self._data = []
                self._event = None
            elif line[:5] == b"data:":
                data.append(line[6:] if line[5:6] == b" " else line[5:])
            elif line[:1] == b":":
                continue
            else:
                name, _, value = line.partition(b":")
                if value[:1] == b" ":
                    value = value[1:]
                if name == b"event":
                    self._event = value.decode("utf-8", "replace")
                elif name == b"data":  # "data" with no colon: empty data line
                    data.append(b"")
                # "id" and "retry" fields are not used by any LLM API; ignore them.
        return out
