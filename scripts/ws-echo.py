#!/usr/bin/env python3
"""A WebSocket echo server for trying config/websocket.json: `scripts/ws-echo.py [PORT]`
(default 9000) with the project's virtualenv (`.venv/bin/python scripts/ws-echo.py`)."""

import asyncio
import sys

from websockets.asyncio.server import serve


async def echo(ws) -> None:  # type: ignore[no-untyped-def]
    async for message in ws:
        await ws.send(message)


async def main(port: int) -> None:
    async with serve(echo, "127.0.0.1", port, max_size=None):
        print(f"echoing WebSocket messages on ws://127.0.0.1:{port}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 9000))
