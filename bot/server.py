"""The process: Slack client, EMR client, services and Bolt app, served over HTTP or Socket Mode."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.app import build_app
from bot.config import Config
from bot.dispatch import CommandRouter
from bot.emr.client import EmrClient
from bot.emr.credentials import DefaultCredentials
from bot.services import Services, UsergroupDirectory
from bot.settings import Settings

log = logging.getLogger("raybot.server")

EVENTS_PATH = "/slack/events"


class StartupError(RuntimeError):
    """raybot cannot start; the message says why and what to do."""


def slack_client(settings: Settings) -> AsyncWebClient:
    """The Web API client: retries 429 (honouring Retry-After) and connection errors."""
    return AsyncWebClient(
        token=settings.bot_token,
        base_url=settings.slack_api_url,
        timeout=10,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=3),
        ],
    )


@asynccontextmanager
async def running_services(settings: Settings, config: Config) -> AsyncIterator[tuple[Services, AsyncApp]]:
    """Build everything the app needs, check the Slack token, and close it all on exit."""
    slack = slack_client(settings)
    try:
        auth = await slack.auth_test()
    except SlackApiError as error:
        raise StartupError(
            f"Slack rejected SLACK_BOT_TOKEN ({error.response.get('error')}); "
            "check the token and that the app is installed"
        ) from None
    except OSError as error:
        raise StartupError(f"cannot reach Slack at {settings.slack_api_url}: {error}") from None
    emr = EmrClient(
        DefaultCredentials(),
        region=config.region or "cn-hangzhou",
        endpoint=settings.emr_endpoint,
        deadline=settings.emr_deadline_seconds,
    )
    services = Services(
        config=config, emr=emr, slack=slack, usergroups=UsergroupDirectory(slack), commands=CommandRouter()
    )
    try:
        yield services, build_app(settings, services, auth)
    finally:
        await emr.aclose()


def http_app(app: AsyncApp) -> web.Application:
    """aiohttp: Slack posts commands, interactivity and events to /slack/events; probes use /healthz."""

    async def events(request: web.Request) -> web.Response:
        bolt_response = await app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_response)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    web_app = web.Application()
    web_app.add_routes([web.post(EVENTS_PATH, events), web.get("/healthz", healthz)])
    return web_app


async def serve(settings: Settings, config: Config, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set (SIGINT/SIGTERM set it when not given)."""
    stop = stop or _stop_on_signals()
    async with running_services(settings, config) as (_, app):
        if settings.socket_mode:
            handler = AsyncSocketModeHandler(app, settings.app_token)
            await handler.connect_async()
            log.info("connected to Slack in Socket Mode")
            print("raybot: connected to Slack in Socket Mode", flush=True)
            try:
                await stop.wait()
            finally:
                await handler.close_async()
            return
        runner = web.AppRunner(http_app(app), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.http_host, settings.http_port)
        try:
            await site.start()
        except OSError as error:
            await runner.cleanup()
            raise StartupError(
                f"cannot listen on {settings.http_host}:{settings.http_port} ({error.strerror}); "
                "set RAYBOT_HTTP_HOST / RAYBOT_HTTP_PORT"
            ) from None
        host, port = runner.addresses[0][:2]
        log.info("listening on http://%s:%s%s", host, port, EVENTS_PATH)
        # Tests and scripts read this line to learn the port when RAYBOT_HTTP_PORT=0.
        print(f"raybot: listening on http://{host}:{port}{EVENTS_PATH}", flush=True)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
