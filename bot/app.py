"""build_app(...) → AsyncApp: Bolt wiring only — listeners, the error handler, command registration."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.error import BoltUnhandledRequestError
from slack_sdk.web.async_slack_response import AsyncSlackResponse

import commands.approve
import commands.autoscale
import commands.cancel_revert
import commands.edit
import commands.help
import commands.history
import commands.lifecycle
import commands.list
import commands.message_action
import commands.resize
import commands.show
import commands.undo
import commands.whoami
from bot import grammar
from bot.dispatch import report
from bot.logs import log_context
from bot.services import Services
from bot.settings import Settings
from bot.slack import blocks, payloads
from bot.slack.conversation import Invocation, Replies, invocation_or_none

log = logging.getLogger("raybot.app")

COMMAND_MODULES = (
    commands.help,
    commands.whoami,
    commands.list,
    commands.show,
    commands.resize,
    commands.autoscale,
    commands.history,
    commands.edit,
    commands.lifecycle,
    commands.undo,
    commands.approve,
    commands.cancel_revert,
    commands.message_action,
)
SLASH_COMMAND = "/ray"
_MENTION = re.compile(r"<@[UW][A-Z0-9]+(?:\|[^>]*)?>")


def build_app(settings: Settings, services: Services, auth_test: AsyncSlackResponse) -> AsyncApp:
    """The Bolt app for one workspace; `auth_test` is the bot token's auth.test answer, asked once at start."""
    authorization = AuthorizeResult.from_auth_test_response(bot_token=settings.bot_token, auth_test_response=auth_test)

    async def authorize(**_: Any) -> AuthorizeResult:
        return authorization

    app = AsyncApp(
        client=services.slack,
        signing_secret=settings.signing_secret or "",
        # bot.server checks the signature of every HTTP request on its raw bytes before anything parses them, then
        # hands Bolt the payload it checked; Socket Mode requests arrive over the app-token WebSocket, unsigned.
        request_verification_enabled=False,
        authorize=authorize,
        logger=logging.getLogger("raybot.bolt"),
        # A request no listener takes goes to on_error (one line) instead of Bolt's warning, which quotes the body.
        raise_error_for_unhandled_request=True,
    )

    @app.middleware
    async def observe(req, resp, next):  # noqa: ANN001 - Bolt middleware signature
        # `next()` returns once the listener has acknowledged: this is the acknowledgement latency.
        started = time.perf_counter()
        body = req.body
        fields = {
            "team": payloads.loggable_id(req.context.team_id),
            "channel": payloads.loggable_id(req.context.channel_id),
            "user": payloads.loggable_id(req.context.user_id),
        }
        with log_context(**{k: v for k, v in fields.items() if v}):
            response = await next()
        services.metrics.ack(time.perf_counter() - started, _kind(body))
        return response

    for module in COMMAND_MODULES:
        module.register(app, services)

    @app.command(SLASH_COMMAND)
    async def on_ray(ack, body):  # noqa: ANN001 - Bolt injects by name
        invocation = invocation_or_none(Invocation.from_slash_command, body)
        if invocation is None:
            await ack()
            return
        try:
            command = grammar.parse(invocation.text)
        except grammar.UsageError as error:
            # Syntax errors need no I/O: answer in the acknowledgement itself.
            text, usage_blocks = blocks.usage_error(error.message, error.usage)
            await ack(text=text, blocks=usage_blocks, response_type="ephemeral")
            return
        await ack()
        await services.commands.run(command, invocation, services)

    @app.event("app_mention")
    async def on_mention(event, body, context):  # noqa: ANN001
        # Bolt acknowledges events itself, before this runs.
        text = _MENTION.sub(" ", payloads.optional_text(event, "text") or "", count=1).strip()
        invocation = invocation_or_none(
            lambda e: Invocation.from_mention(e, text, context.team_id, body.get("event_id")), event
        )
        if invocation is None:
            return
        try:
            command = grammar.parse(text)
        except grammar.UsageError as error:
            await report(Replies(services.slack, invocation), error)
            return
        await services.commands.run(command, invocation, services)

    @app.error
    async def on_error(error, body):  # noqa: ANN001
        if isinstance(error, BoltUnhandledRequestError):
            # Signed, well-formed, and for nobody here (an action id or event raybot never registered).
            log.warning("no listener for a Slack %s request; answered 404", _kind(body))
            return
        # Listeners answer their own failures (bot.dispatch); reaching here means a bug in wiring.
        log.error("unhandled error in a Slack listener (%s)", type(error).__name__, exc_info=error)

    return app


def _kind(body: dict[str, Any]) -> str:
    """What Slack sent, as the ack-latency label."""
    if "command" in body:
        return "command"
    kind = body.get("type")
    return {
        "block_actions": "action",
        "view_submission": "view_submission",
        "view_closed": "view_submission",
        "message_action": "shortcut",
        "shortcut": "shortcut",
    }.get(kind, "event")
