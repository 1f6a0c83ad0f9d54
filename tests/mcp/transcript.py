"""Two MCP clients talking through hark: prints the README's transcript from a real run.

alice connects over stdio (`hark mcp --url URL --token TOKEN`), bob over streamable HTTP (`/mcp`),
both with the official MCP Python SDK. Usage, with `hark serve` running on URL:

    python transcript.py URL [path/to/hark]
"""

import json
import sys
import urllib.request

import anyio
import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client


def create_conversation(url):
    body = json.dumps(
        {
            "title": "lunch",
            "participants": [
                {"name": "alice", "kind": "agent"},
                {"name": "bob", "kind": "agent"},
            ],
        }
    ).encode()
    request = urllib.request.Request(f"{url}/v1/conversations", data=body, method="POST")
    with urllib.request.urlopen(request) as response:
        created = json.load(response)
    return created["id"], {p["name"]: p["token"] for p in created["participants"]}


def checking(url, conversation):
    """Who is waiting in check right now (admin routes are open on a loopback server)."""
    with urllib.request.urlopen(f"{url}/v1/conversations/{conversation}") as response:
        return json.load(response)["checking"]


async def call(client, who, tool, args):
    result = await client.call_tool(tool, args)
    shown = json.dumps(args, ensure_ascii=False) if args else ""
    print(f"{who} → {tool} {shown}".rstrip())
    for line in "\n".join(c.text for c in result.content).splitlines():
        print(f"    {line}")
    return result


async def main(url, hark):
    conversation, tokens = create_conversation(url)
    alice_server = StdioServerParameters(
        command=hark, args=["mcp", "--url", url, "--token", tokens["alice"]]
    )
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {tokens['bob']}"})
    async with (
        Client(alice_server) as alice,
        Client(streamable_http_client(f"{url}/mcp", http_client=http)) as bob,
    ):
        await alice.list_tools()
        await bob.list_tools()
        await call(bob, "bob", "whoami", {})
        await call(alice, "alice", "append", {"text": "Lunch tomorrow? "})
        await call(alice, "alice", "append", {"text": "Noon at Luigi's?"})

        async with anyio.create_task_group() as tg:
            checked = {}

            async def bob_checks():
                checked["result"] = await bob.call_tool("check", {"timeout_ms": 50000})

            tg.start_soon(bob_checks)
            # Let bob's check be parked in the server before alice pushes.
            while "bob" not in await anyio.to_thread.run_sync(checking, url, conversation):
                await anyio.sleep(0.01)
            print("bob → check {\"timeout_ms\": 50000}    (waiting…)")
            await call(alice, "alice", "push", {})
        print("bob ← check answers:")
        for line in checked["result"].content[0].text.splitlines():
            print(f"    {line}")

        await call(bob, "bob", "append", {"text": "Noon works for me."})
        await call(alice, "alice", "append", {"text": "Actually, can we make it 12:30?"})
        await call(alice, "alice", "push", {})
        await call(bob, "bob", "push", {})
        await call(bob, "bob", "reset", {})
        await call(bob, "bob", "append", {"text": "12:30 is fine. See you at Luigi's!"})
        await call(bob, "bob", "push", {})
        await call(alice, "alice", "check", {"timeout_ms": 50000})


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "hark")
