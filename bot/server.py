"""The process: Slack client, EMR client, services and Bolt app, served over HTTP or Socket Mode."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
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
from bot.emr.credentials import CredentialsProvider, DefaultCredentials
from bot.scheduler import reconcile, run_scheduler
from bot.services import Services, UsergroupDirectory
from bot.settings import Settings
from bot.store import StoreError, open_store

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
async def running_services(
    settings: Settings,
    config: Config,
    *,
    clock: Callable[[], float] = time.time,
    credentials: CredentialsProvider | None = None,
) -> AsyncIterator[tuple[Services, AsyncApp]]:
    """Build everything the app needs, check the Slack token, reconcile what a previous process left
    unfinished, start the scheduler, and close it all on exit."""
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
        credentials or DefaultCredentials(),
        region=config.region or "cn-hangzhou",
        endpoint=settings.emr_endpoint,
        deadline=settings.emr_deadline_seconds,
    )
    try:
        store = await open_store(settings.database, clock=clock)
    except StoreError as error:
        await emr.aclose()
        raise StartupError(f"cannot open RAYBOT_DATABASE: {error}") from None
    services = Services(
        config=config,
        emr=emr,
        slack=slack,
        usergroups=UsergroupDirectory(slack, ttl=settings.usergroup_cache_seconds),
        commands=CommandRouter(),
        store=store,
        clock=clock,
        bot_user_id=auth.get("user_id") or "",
        lock_wait_seconds=settings.lock_wait_seconds,
    )
    stop_scheduler = asyncio.Event()
    scheduler: asyncio.Task | None = None
    try:
        app = build_app(settings, services, auth)
        await reconcile(services)
        scheduler = asyncio.create_task(run_scheduler(services, stop_scheduler), name="raybot-scheduler")
        yield services, app
    finally:
        stop_scheduler.set()
        if scheduler is not None:
            await scheduler
        await store.close()
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


async def start_http(app: AsyncApp, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Listen for Slack (and probes) on host:port; returns the runner and the base URL actually bound."""
    runner = web.AppRunner(http_app(app), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        raise StartupError(
            f"cannot listen on {host}:{port} ({error.strerror}); set RAYBOT_HTTP_HOST / RAYBOT_HTTP_PORT"
        ) from None
    bound_host, bound_port = runner.addresses[0][:2]
    return runner, f"http://{bound_host}:{bound_port}"


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
        runner, url = await start_http(app, settings.http_host, settings.http_port)
        log.info("listening on %s%s", url, EVENTS_PATH)
        # Tests and scripts read this line to learn the port when RAYBOT_HTTP_PORT=0.
        print(f"raybot: listening on {url}{EVENTS_PATH}", flush=True)
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
