"""A scriptable MCP client for hark's black-box tests, built on the official MCP Python SDK.

It connects to hark over stdio (launching `hark mcp ...`) or over streamable HTTP (`/mcp` with a
bearer token), then reads one JSON command per line on stdin and answers one JSON line on stdout:

    {"op": "list_tools"}                          -> {"tools": [{"name", "description", "input_schema", "output_schema"}]}
    {"op": "call", "tool": "append", "args": {}}  -> {"is_error", "text", "structured"}
        (optional "read_timeout_seconds": the client gives up on the call after that long)
    {"op": "close"}                               -> exits

The first line it writes is {"ready": true, "protocol_version": "..."} once the client is
connected. An exception while serving a command is answered {"exception": "..."}. Logs go to
stderr; stdout carries only these lines.

Usage: driver.py http URL TOKEN [auto|legacy]
       driver.py stdio [auto|legacy] -- COMMAND ARG...
"""

import json
import sys

import anyio
import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client


def target_from_argv(argv):
    if argv[0] == "http":
        url, token = argv[1], argv[2]
        mode = argv[3] if len(argv) > 3 else "auto"
        http = httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx2.Timeout(30, read=300),
        )
        return streamable_http_client(url, http_client=http), mode
    if argv[0] == "stdio":
        rest = argv[1:]
        mode = "auto"
        if rest and rest[0] != "--":
            mode, rest = rest[0], rest[1:]
        assert rest and rest[0] == "--", "stdio needs -- COMMAND ARG..."
        command, *args = rest[1:]
        return StdioServerParameters(command=command, args=args), mode
    raise SystemExit(f"unknown transport {argv[0]!r}")


def answer(value):
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


async def serve_commands(client):
    while True:
        line = await anyio.to_thread.run_sync(sys.stdin.readline)
        if not line:
            return
        command = json.loads(line)
        op = command["op"]
        if op == "close":
            return
        try:
            if op == "list_tools":
                listed = await client.list_tools()
                answer(
                    {
                        "tools": [
                            {
                                "name": t.name,
                                "description": t.description,
                                "input_schema": t.input_schema,
                                "output_schema": t.output_schema,
                            }
                            for t in listed.tools
                        ]
                    }
                )
            elif op == "call":
                result = await client.call_tool(
                    command["tool"],
                    command.get("args", {}),
                    read_timeout_seconds=command.get("read_timeout_seconds"),
                )
                if result.is_error and result.structured_content is not None:
                    # The SDK validates successful results against the tool's outputSchema;
                    # clients such as the TypeScript SDK validate error results too.
                    await client.session.validate_tool_result(command["tool"], result)
                texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
                answer(
                    {
                        "is_error": bool(result.is_error),
                        "text": "\n".join(texts),
                        "structured": result.structured_content,
                    }
                )
            else:
                answer({"exception": f"unknown op {op!r}"})
        except Exception as error:  # noqa: BLE001 - the test reads what went wrong
            answer({"exception": repr(error)})


async def main():
    target, mode = target_from_argv(sys.argv[1:])
    async with Client(target, mode=mode) as client:
        answer({"ready": True, "protocol_version": client.protocol_version})
        await serve_commands(client)


if __name__ == "__main__":
    anyio.run(main)
