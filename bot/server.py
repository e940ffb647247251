"""The process: Slack client, EMR client, services and Bolt app, served over HTTP or Socket Mode.

HTTP mode serves Slack's requests on `POST /slack/events`; both modes serve `GET /healthz`
(alive), `GET /readyz` (able to work) and `GET /metrics` (Prometheus) on RAYBOT_HTTP_PORT.
On SIGTERM raybot stops taking new work, lets what is in flight finish within
RAYBOT_SHUTDOWN_SECONDS, and exits 0.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
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
from bot.emr.errors import EmrError
from bot.emr.sts import RamRole, RoleCredentials, StsClient, check_names, regional_sts_endpoint
from bot.metrics import Metrics, SlackRateLimitObserver
from bot.scheduler import run_scheduler
from bot.services import Services, UsergroupDirectory
from bot.settings import Settings
from bot.slack import payloads
from bot.store import StoreError, open_store

log = logging.getLogger("raybot.server")

EVENTS_PATH = "/slack/events"
SIGNATURE_MAX_AGE_SECONDS = 300  # Slack's advice, and what Bolt allows: older signed requests may be replays
READY_CHECK_SECONDS = 5.0


class StartupError(RuntimeError):
    """raybot cannot start; the message says why and what to do."""


def slack_client(settings: Settings, metrics: Metrics) -> AsyncWebClient:
    """The Web API client: retries 429 (honouring Retry-After) and connection errors; counts every 429."""
    return AsyncWebClient(
        token=settings.bot_token,
        base_url=settings.slack_api_url,
        timeout=10,
        retry_handlers=[
            SlackRateLimitObserver(metrics),  # first: it only counts, the next one retries
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
    """Build everything the app needs, check the Slack token, start the scheduler (whose first pass
    reconciles what a previous process left unfinished), and close it all on exit."""
    metrics = Metrics()
    slack = slack_client(settings, metrics)
    try:
        auth = await slack.auth_test()
    except SlackApiError as error:
        raise StartupError(
            f"Slack rejected SLACK_BOT_TOKEN ({error.response.get('error')}); "
            "check the token and that the app is installed"
        ) from None
    except OSError as error:
        raise StartupError(f"cannot reach Slack at {settings.slack_api_url}: {error}") from None
    base = credentials or DefaultCredentials()
    emr = EmrClient(
        base,
        region=config.region or "cn-hangzhou",
        endpoint=settings.emr_endpoint,
        deadline=settings.emr_deadline_seconds,
        observe=metrics.cloud_call,
        roles=role_credentials(
            config,
            base,
            settings.sts_endpoint,
            clock=clock,
            observe=metrics.assume_role,
            deadline=settings.emr_deadline_seconds,
        ),
    )
    try:
        store = await open_store(
            settings.database,
            clock=clock,
            lock_ttl=settings.lock_ttl_seconds,
            pool_size=settings.database_pool_size,
        )
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
        metrics=metrics,
        clock=clock,
        bot_user_id=auth.get("user_id") or "",
        lock_wait_seconds=settings.lock_wait_seconds,
        follow_seconds=settings.follow_seconds,
    )
    stop_scheduler = asyncio.Event()
    scheduler: asyncio.Task | None = None
    try:
        app = build_app(settings, services, auth)
        # The scheduler's first pass reconciles what a previous run of this process left in flight.
        scheduler = asyncio.create_task(run_scheduler(services, stop_scheduler), name="raybot-scheduler")
        yield services, app
    finally:
        stop_scheduler.set()
        if scheduler is not None:
            await scheduler
        await store.close()
        await emr.aclose()


def role_credentials(
    config: Config,
    base: CredentialsProvider,
    endpoint: str | None = None,
    *,
    clock: Callable[[], float] = time.time,
    observe: Callable[[RamRole, str], None] | None = None,
    deadline: float = 5.0,
) -> RoleCredentials | None:
    """The cache of assumed RAM roles, when the config names any; STS at `endpoint` (RAYBOT_STS_ENDPOINT), else
    the config's `sts_endpoint`, else the regional endpoint of the default region (or of the first cluster).

    `deadline` bounds one AssumeRole; `raybot serve` gives it RAYBOT_EMR_DEADLINE_SECONDS, the deadline of the
    EMR call a command's AssumeRole comes before (which bounds the wait for it anyway)."""
    if not config.ram_roles():
        return None
    region = config.region or next(iter(config.clusters.values())).region or "cn-hangzhou"
    sts = StsClient(
        endpoint=endpoint or config.sts_endpoint or regional_sts_endpoint(region), clock=clock, deadline=deadline
    )
    return RoleCredentials(base, sts, clock=clock, observe=observe)


async def readiness(services: Services) -> dict[str, str]:
    """Each thing raybot needs to work, "ok" or what is wrong (never a secret)."""
    checks = {"config": "ok"}

    async def check(name: str, probe: Callable[[], object]) -> None:
        try:
            await asyncio.wait_for(probe(), READY_CHECK_SECONDS)  # type: ignore[arg-type]
            checks[name] = "ok"
        except SlackApiError as error:
            checks[name] = f"Slack said {error.response.get('error')}"
        except EmrError as error:
            checks[name] = error.code + (f" (RequestId {error.request_id})" if error.request_id else "")
        except StoreError as error:
            checks[name] = str(error)
        except TimeoutError:
            checks[name] = f"no answer within {READY_CHECK_SECONDS:g} s"
        except Exception as error:  # noqa: BLE001 - a probe reports, it does not crash
            checks[name] = type(error).__name__

    async def store() -> None:
        status = await services.store.schema_status()
        if not status.up_to_date:
            raise StoreError(status.describe())

    # Each configured RAM role is assumed afresh, apart from the commands' cache, at most once a minute
    # (RoleCredentials.check): a revoked trust policy shows here within that minute.
    roles = services.emr.roles
    names = check_names(services.config.ram_roles() if roles is not None else [])
    role_checks = [check(f"role {name}", lambda role=role: roles.check(role)) for role, name in names.items()]
    await asyncio.gather(
        check("store", store),
        check("slack", services.slack.auth_test),
        check("credentials", services.emr.check_credentials),
        *role_checks,
    )
    if services.work.draining:
        checks["accepting"] = "stopping"
    return checks


def slack_signature_ok(
    secret: str, timestamp: str | None, signature: str | None, raw: bytes, *, now: float | None = None
) -> bool:
    """Whether `signature` is Slack's `v0=HMAC-SHA256(secret, "v0:<timestamp>:<raw body>")` of a fresh request.

    Checked on the raw bytes, before anything parses them. A timestamp that is absent, not ASCII digits, or more
    than SIGNATURE_MAX_AGE_SECONDS away from now (a replay) fails like a wrong signature: nothing here raises.
    """
    if not timestamp or not signature or len(timestamp) > 12 or not (timestamp.isascii() and timestamp.isdigit()):
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > SIGNATURE_MAX_AGE_SECONDS:
        return False
    base = b"v0:" + timestamp.encode("ascii") + b":" + raw
    expected = b"v0=" + hmac.new(secret.encode("utf-8"), base, hashlib.sha256).hexdigest().encode("ascii")
    return hmac.compare_digest(expected, signature.encode("utf-8", "replace"))


def http_app(app: AsyncApp | None, services: Services, signing_secret: str | None = None) -> web.Application:
    """Probes and metrics; with `app` (HTTP mode, which needs `signing_secret`) also Slack's `POST /slack/events`."""
    if app is not None and not signing_secret:
        raise ValueError("serving Slack's requests over HTTP needs the signing secret")

    async def events(request: web.Request) -> web.Response:
        if services.work.draining:
            # Slack retries events elsewhere; a slash command shows its own error and can be run again.
            return web.json_response({"error": "raybot is stopping"}, status=503)
        assert app is not None and signing_secret is not None
        raw = await request.read()  # aiohttp refuses bodies over client_max_size (1 MiB) with a 413
        headers = request.headers
        if not slack_signature_ok(
            signing_secret, headers.get("X-Slack-Request-Timestamp"), headers.get("X-Slack-Signature"), raw
        ):
            # Not from Slack: no log line, or anyone who can reach this port could fill the log.
            return web.Response(status=401, text="invalid or missing Slack signature")
        try:
            payload = payloads.read_request(raw, headers.get("Content-Type"))
        except payloads.UnreadableRequest as error:
            log.warning("refused a signed Slack request: %s", error.reason)
            return web.Response(status=400, text=error.reason)
        # Bolt gets exactly the payload checked above, as JSON (its own verification is off: done here).
        bolt_request = AsyncBoltRequest(
            body=json.dumps(payload),
            query=request.query_string,
            headers={**{k.lower(): v for k, v in headers.items()}, "content-type": payloads.JSON_TYPE},
        )
        async with services.work.admit():
            bolt_response = await app.async_dispatch(bolt_request)
        return await to_aiohttp_response(bolt_response)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        checks = await readiness(services)
        ready = all(value == "ok" for value in checks.values())
        body = {"ready": ready, "checks": checks, "store": services.store.description}
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(_: web.Request) -> web.Response:
        body, content_type = services.metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    web_app = web.Application()
    routes = [web.get("/healthz", healthz), web.get("/readyz", readyz), web.get("/metrics", metrics)]
    if app is not None:
        routes.append(web.post(EVENTS_PATH, events))
    web_app.add_routes(routes)
    return web_app


async def start_http(
    app: AsyncApp | None, services: Services, host: str, port: int, *, signing_secret: str | None = None
) -> tuple[web.AppRunner, str]:
    """Listen on host:port; returns the runner and the base URL actually bound."""
    runner = web.AppRunner(http_app(app, services, signing_secret), access_log=None)
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
    """Run until `stop` is set (SIGINT/SIGTERM set it when not given), then stop gracefully."""
    stop = stop or _stop_on_signals()
    async with running_services(settings, config) as (services, app):
        handler: AsyncSocketModeHandler | None = None
        if settings.socket_mode:
            runner, url = await start_http(None, services, settings.http_host, settings.http_port)
            print(f"raybot: probes on {url} (/healthz, /readyz, /metrics)", flush=True)
            handler = AsyncSocketModeHandler(app, settings.app_token)
            await handler.connect_async()
            log.info("connected to Slack in Socket Mode")
            print("raybot: connected to Slack in Socket Mode", flush=True)
        else:
            runner, url = await start_http(
                app, services, settings.http_host, settings.http_port, signing_secret=settings.signing_secret
            )
            log.info("listening on %s%s", url, EVENTS_PATH)
            # Tests and scripts read this line to learn the port when RAYBOT_HTTP_PORT=0.
            print(f"raybot: listening on {url}{EVENTS_PATH}", flush=True)
        try:
            await stop.wait()
            log.info("stopping: no new work; waiting for %d request(s) in flight", services.work.busy)
            if handler is not None:
                await handler.close_async()  # Slack delivers new envelopes to other connections
                handler = None
            cut = await services.work.drain(settings.shutdown_seconds)
            if cut:
                log.warning("stopped with %d request(s) cut off; their changes are checked by the next start", cut)
            print("raybot: stopped", flush=True)
        finally:
            if handler is not None:
                await handler.close_async()
            await runner.cleanup()


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
