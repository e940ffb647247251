"""The peer of benchmarks/ack_latency.py: a bare Bolt AsyncApp whose /ray listener only acknowledges.

Run as a process of its own, like `raybot serve`, with the same environment contract:
SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, RAYBOT_SLACK_API_URL, RAYBOT_HTTP_HOST, RAYBOT_HTTP_PORT.
"""

from __future__ import annotations

import asyncio
import os

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient


async def main() -> None:
    client = AsyncWebClient(token=os.environ["SLACK_BOT_TOKEN"], base_url=os.environ["RAYBOT_SLACK_API_URL"])
    app = AsyncApp(client=client, signing_secret=os.environ["SLACK_SIGNING_SECRET"])

    @app.command("/ray")
    async def only_ack(ack):  # noqa: ANN001
        await ack()

    async def events(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    web_app = web.Application()
    web_app.add_routes([web.post("/slack/events", events)])
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    site = web.TCPSite(
        runner, os.environ.get("RAYBOT_HTTP_HOST", "127.0.0.1"), int(os.environ.get("RAYBOT_HTTP_PORT", "0"))
    )
    await site.start()
    host, port = runner.addresses[0][:2]
    print(f"raybot: listening on http://{host}:{port}/slack/events", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
