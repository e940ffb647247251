"""From a parsed command to its handler, and from any error to the message the person sees.

Every `/ray` subcommand and every @mention goes through `CommandRouter.run`: it
resolves who is asking, runs the handler the command's module registered, and
turns whatever the handler raises into one ephemeral answer. Errors that happen
inside a change thread are answered in that thread by `bot.flow` instead.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError

from bot.emr.changes import ChangeError
from bot.emr.errors import EmrError
from bot.errors import ActionRefused, ClusterBusy, Denied, MalformedPayload, OutcomeNotRecorded, UnknownCluster
from bot.grammar import PREFIX, UsageError
from bot.permissions import Subject
from bot.services import Services
from bot.slack import blocks, mrkdwn
from bot.slack.conversation import Invocation, Replies, ResponseUrlError, slack_error_text
from bot.store import StoreUnavailable

log = logging.getLogger("raybot.dispatch")


@dataclass
class CommandContext:
    """What a handler gets: the request, how to answer it, the services, and who is asking."""

    invocation: Invocation
    replies: Replies
    services: Services
    subject: Subject


Handler = Callable[[Any, CommandContext], Awaitable[None]]


def describe_error(error: BaseException) -> tuple[str, list[dict[str, Any]]]:
    """The message a person sees for `error`: what went wrong and what to do."""
    if isinstance(error, UsageError):
        return blocks.usage_error(error.message, error.usage)
    if isinstance(error, UnknownCluster):
        return blocks.usage_error(str(error), f"{PREFIX} list")
    if isinstance(error, ChangeError):
        return blocks.usage_error(str(error), f"{PREFIX} show <cluster>")
    if isinstance(error, Denied):
        return blocks.denied(error.reason)
    if isinstance(error, ClusterBusy):
        return blocks.cluster_busy(error.alias, error.user_id, error.summary)
    if isinstance(error, ActionRefused):
        return blocks.refused(error.reason)
    if isinstance(error, EmrError):
        return blocks.cloud_error(
            error.action,
            error.code,
            error.message,
            error.request_id,
            cluster_id=error.cluster_id,
            alias=error.alias,
            attempts=error.attempts,
            may_have_changed=error.maybe_applied and not error.action.startswith(("Get", "List")),
        )
    if isinstance(error, SlackApiError):
        return blocks.slack_error(_method(error), slack_error_text(error))
    if isinstance(error, MalformedPayload):
        # Forged or corrupted input, not a bug in raybot: said plainly, no reference, no traceback in the log.
        value = f" ({mrkdwn.code(error.shown, 40)})" if error.shown is not None else ""
        return blocks.refused(
            f"raybot could not read that {mrkdwn.escape(error.what)}: {mrkdwn.escape(error.field)} "
            f"{mrkdwn.escape(error.problem)}{value}. Nothing was changed."
        )
    if isinstance(error, ResponseUrlError):
        return blocks.slack_error("response_url", str(error))
    if isinstance(error, StoreUnavailable):
        log.warning("request refused: %s", error)
        return blocks.refused(STORE_DOWN_TEXT)
    if isinstance(error, OutcomeNotRecorded):
        # Something was sent: never "nothing was sent". The reconciler reads the cluster and answers the thread.
        return blocks.outcome_checking(error.alias, error.change_id, error.summary, "its database is not answering")
    reference = uuid.uuid4().hex[:12]
    log.error("unexpected error, reference %s", reference, exc_info=error)
    return blocks.internal_error(reference)


class CommandRouter:
    """Maps each command type to the handler its module registered."""

    def __init__(self) -> None:
        self._handlers: dict[type, Handler] = {}

    def register(self, command_type: type, handler: Handler) -> None:
        if command_type in self._handlers:
            raise ValueError(f"a handler for {command_type.__name__} is registered twice")
        self._handlers[command_type] = handler

    async def run(self, command: Any, invocation: Invocation, services: Services) -> None:
        """Run one command for one invocation; every failure ends in a message to the requester."""
        handler = self._handlers[type(command)]
        await serve(services, invocation, lambda ctx: handler(command, ctx), command=type(command).__name__.lower())


STORE_DOWN_TEXT = (
    "raybot cannot record this change right now; nothing was sent. Its database is not answering: "
    "try again in a minute, and tell whoever runs raybot if it lasts."
)
DRAINING_TEXT = "raybot is restarting and takes no new work for a moment; try again in a minute. Nothing was sent."


def outcome_of(error: BaseException | None) -> str:
    """How a request ended, as a metrics outcome."""
    if error is None:
        return "ok"
    if isinstance(error, Denied):
        return "denied"
    if isinstance(error, UsageError | UnknownCluster | ChangeError | ActionRefused | MalformedPayload):
        return "invalid"
    if isinstance(
        error, EmrError | SlackApiError | ClusterBusy | ResponseUrlError | StoreUnavailable | OutcomeNotRecorded
    ):
        return "failed"
    return "error"


async def serve(
    services: Services,
    invocation: Invocation,
    handler: Callable[[CommandContext], Awaitable[None]],
    *,
    command: str | None = None,
) -> str:
    """Run `handler` for one request (a command, a button click); every failure ends in a message to the requester.

    Returns the outcome ("ok", "denied", "invalid", "failed", "error"), counted for `command` when named —
    before the person is told, so whoever reads /metrics after the answer finds it counted. While raybot
    drains for a stop, new requests are turned away with a message rather than started — except one the HTTP
    endpoint let in before the stop began: Slack was told 200 for it, so it is handled (the drain waits for it).
    """
    replies = Replies(services.slack, invocation)
    if services.work.draining and not services.work.admitted:
        _count(services, command, "failed")
        await replies.ephemeral(DRAINING_TEXT)
        return "failed"
    async with services.work.track():
        try:
            subject = await services.subject(invocation.user_id, invocation.channel_id)
            await handler(CommandContext(invocation, replies, services, subject))
        except Exception as error:  # noqa: BLE001 - this is the one place errors become messages
            if isinstance(error, SlackApiError):
                services.metrics.slack_error(_method(error), error.response.get("error"))
            outcome = outcome_of(error)
            _count(services, command, outcome)
            if isinstance(error, EmrError) and error.alias is None and error.cluster_id:
                error.alias = services.config.alias_of(error.cluster_id)
            await report(replies, error)
            return outcome
    _count(services, command, "ok")
    return "ok"


def _count(services: Services, command: str | None, outcome: str) -> None:
    if command is not None:
        services.metrics.command(command, outcome)  # type: ignore[arg-type]


def _method(error: SlackApiError) -> str:
    return getattr(error.response, "api_url", "").rsplit("/", 1)[-1] or "unknown"


async def report(replies: Replies, error: BaseException) -> None:
    """Tell the requester about `error`; if even that fails, log it (there is nobody else to tell).

    A response_url that fails (expired, used up, or not a URL at all) is one log line, and the answer goes through
    chat.postEphemeral instead: the invocation always knows the user and the channel.
    """
    text, body = describe_error(error)
    try:
        await replies.ephemeral(text, body)
        return
    except ResponseUrlError as failure:
        log.warning(
            "could not tell %s in %s about %s through response_url (%s); using chat.postEphemeral",
            replies.invocation.user_id,
            replies.invocation.channel_id,
            type(error).__name__,
            failure,
        )
    except SlackApiError as failure:
        _unanswered(replies, error, failure)
        return
    try:
        await replies.without_response_url().ephemeral(text, body)
    except SlackApiError as failure:
        _unanswered(replies, error, failure)


def _unanswered(replies: Replies, error: BaseException, failure: Exception) -> None:
    log.error(
        "could not tell %s in %s about %s: %s",
        replies.invocation.user_id,
        replies.invocation.channel_id,
        type(error).__name__,
        failure,
    )
