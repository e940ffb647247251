"""The flow of one change (DESIGN.md): read, apply, check, post, update, answer in the thread.

Bad input (unknown group, a limit exceeded, nothing to change) is found before
anything is posted in the channel and answered ephemerally by the router; from
the moment the root status message exists, every outcome is answered in its thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from slack_sdk.errors import SlackApiError

from bot.dispatch import CommandContext, describe_error
from bot.emr.changes import Change, DiffEntry, plan, summarize
from bot.emr.errors import EmrError
from bot.emr.models import ActionResponse, ClusterFields
from bot.errors import Denied
from bot.permissions import check_change
from bot.slack import blocks
from bot.slack.conversation import StatusThread

log = logging.getLogger("raybot.flow")


async def run_change(ctx: CommandContext, alias: str, action: str, changes: Sequence[Change]) -> None:
    """Apply `changes` to the cluster `alias` by read-modify-write, answering in a thread of the channel."""
    services, subject = ctx.services, ctx.subject
    target = services.cluster(subject, alias)
    services.require(subject, action, alias)
    cluster = await services.emr.get_cluster(target.workspace, target.cluster_id, region=target.region)
    result = plan(cluster, changes)
    summary = summarize(changes)
    if not result.changed or result.body is None:
        await ctx.replies.ephemeral(*blocks.nothing_to_change(alias, summary))
        return
    before = ClusterFields.model_validate(cluster.editable())
    decision = check_change(services.config, subject, action, alias, before, result.body)
    if not decision.allowed:
        raise Denied(decision.reason)

    user = ctx.invocation.user_id
    thread = await ctx.replies.open_thread(*blocks.change_root(user, alias, summary, "pending"))
    log.info(
        "change requested",
        extra={"user": user, "channel": ctx.invocation.channel_id, "cluster": alias, "action": action},
    )
    try:
        response = await services.emr.update_cluster(
            target.workspace, target.cluster_id, result.body, region=target.region
        )
    except EmrError as error:
        await _answer(thread, ctx, blocks.change_failed(alias, error.code, error.message, error.request_id))
        await thread.set_status(*blocks.change_root(user, alias, summary, "failed"))
        return
    except Exception as error:
        await _answer(thread, ctx, describe_error(error))
        await thread.set_status(*blocks.change_root(user, alias, summary, "failed"))
        return
    await _report_success(ctx, thread, alias, summary, response, target.cluster_id, result.diff)


async def _report_success(
    ctx: CommandContext,
    thread: StatusThread,
    alias: str,
    summary: str,
    response: ActionResponse,
    cluster_id: str,
    diff: list[DiffEntry],
) -> None:
    done = blocks.change_succeeded(alias, response.cluster_id or cluster_id, response.request_id, diff)
    log.info("change applied", extra={"cluster": alias, "request_id": response.request_id})
    try:
        await thread.reply(*done)
        await thread.set_status(*blocks.change_root(ctx.invocation.user_id, alias, summary, "done"))
    except SlackApiError:
        # The cluster did change: the requester must learn that, even if the thread could not be written.
        await ctx.replies.ephemeral(*done)
        raise


async def _answer(thread: StatusThread, ctx: CommandContext, message: tuple[str, list]) -> None:
    try:
        await thread.reply(*message)
    except SlackApiError:
        await ctx.replies.ephemeral(*message)
        raise
