"""A stdio MCP server that breaks the rules in ways a real server can: it finishes the
handshake, lists a tool whose input schema is not an object, and answers every tools/call
with a JSON-RPC error. Written without the SDK, line by line, so it can misbehave."""

from __future__ import annotations

import json
import sys


def reply(id_: object, result: object = None, error: object = None) -> None:
    msg = {"jsonrpc": "2.0", "id": id_, **({"error": error} if error is not None else {"result": result})}
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


for line in sys.stdin:
    req = json.loads(line)
    method, id_ = req.get("method"), req.get("id")
    if id_ is None:  # a notification
        continue
    if method == "initialize":
        reply(
            id_,
            {
                "protocolVersion": req["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "broken", "version": "0"},
            },
        )
    elif method == "tools/list":
        reply(id_, {"tools": [{"name": "listy", "description": "Arguments as a list.", "inputSchema": {"type": "array"}}]})
    elif method == "tools/call":
        reply(id_, error={"code": -32602, "message": f"no such arguments for {req['params']['name']}"})
    else:
        reply(id_, error={"code": -32601, "message": f"method not found: {method}"})
