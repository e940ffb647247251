"""/ray start <cluster> and /ray stop <cluster> (actions `start` and `stop`).

StartRayCluster and StopRayCluster carry a clientToken derived from the request's
deduplication key, so a redelivered request is the same request to the cloud too.
Stop asks first, with a button that says what stops. Both are audited, answered in
a thread with the requestId, and followed until the cluster settles.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from typing import Literal

from slack_bolt.async_app import AsyncApp

from bot.dispatch import CommandContext, serve
from bot.errors import ActionRefused
from bot.flow import Applying, call_audited, follow, hold
from bot.follow import wanted_after_start, wanted_after_stop
from bot.grammar import Start, Stop
from bot.services import Services
from bot.slack import blocks, payloads
from bot.slack.blocks import STOP_ACTION
from bot.slack.conversation import Invocation, Replies, invocation_or_none

Verb = Literal["start", "stop"]
NEEDED_STATE = {"start": "Stopped", "stop": "Running"}


def client_token(dedup_key: str | None) -> str:
    """The same token for every delivery of one request (a random one when there is no key)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"raybot:{dedup_key}").hex if dedup_key else uuid.uuid4().hex


async def run_lifecycle(ctx: CommandContext, alias: str, verb: Verb, dedup_key: str | None) -> None:
    """Start or stop `alias` under its lock: audited, answered in a thread, then followed."""
    services, subject = ctx.services, ctx.subject
    target = services.cluster(subject, alias)
    services.require(subject, verb, alias)
    if dedup_key is not None and not await services.store.claim(dedup_key):
        return
    async with hold(services, target, subject.user_id, verb):
        cluster = await services.emr.get_cluster(target.workspace, target.cluster_id, region=target.region)
        if cluster.state != NEEDED_STATE[verb]:
            raise ActionRefused(
                f"`{alias}` is {cluster.state or 'in an unknown state'}: only a {NEEDED_STATE[verb]} cluster can {verb}"
            )
        thread = await ctx.replies.open_thread(*blocks.change_root(subject.user_id, alias, verb, "pending"))
        applying = Applying(
            thread=thread,
            replies=ctx.replies,
            user_id=subject.user_id,
            team_id=ctx.invocation.team_id,
            target=target,
            action=verb,
            summary=verb,
        )
        token = client_token(dedup_key)
        if verb == "start":
            call = lambda: services.emr.start_cluster(  # noqa: E731
                target.workspace, target.cluster_id, client_token=token, region=target.region
            )
            body, wanted = {"clientToken": token}, wanted_after_start(cluster)
        else:
            call = lambda: services.emr.stop_cluster(target.workspace, target.cluster_id, region=target.region)  # noqa: E731
            body, wanted = {}, wanted_after_stop()
        record, response = await call_audited(
            services, applying, before=cluster.editable(), body=body, diff=[], call=call
        )
        if response is None:
            return
        await thread.reply(
            *blocks.lifecycle_accepted(alias, verb, response.cluster_id or target.cluster_id, response.request_id)
        )
        await follow(services, applying, record, wanted)


async def start(command: Start, ctx: CommandContext) -> None:
    await run_lifecycle(ctx, command.cluster, "start", ctx.invocation.dedup_key)


async def ask_to_stop(command: Stop, ctx: CommandContext) -> None:
    """Say what stops, with a button to confirm; nothing is sent yet."""
    services, subject = ctx.services, ctx.subject
    target = services.cluster(subject, command.cluster)
    services.require(subject, "stop", command.cluster)
    cluster = await services.emr.get_cluster(target.workspace, target.cluster_id, region=target.region)
    if cluster.state != NEEDED_STATE["stop"]:
        raise ActionRefused(f"`{command.cluster}` is {cluster.state}: only a Running cluster can stop")
    value = json.dumps({"alias": command.cluster, "thread_ts": ctx.invocation.thread_ts})
    await ctx.replies.ephemeral(*blocks.stop_confirmation(command.cluster, cluster, value))


def register(app: AsyncApp, services: Services) -> None:
    services.commands.register(Start, start)
    services.commands.register(Stop, ask_to_stop)

    @app.action(STOP_ACTION)
    async def on_stop(ack, body):  # noqa: ANN001 - Bolt injects by name
        await ack()
        clicked = invocation_or_none(Invocation.from_block_action, body)
        if clicked is None:
            return

        async def confirmed(ctx: CommandContext) -> None:
            value = payloads.json_button_value(body)
            alias = payloads.text(value, "alias", "button", field="value.alias")
            # The confirmation is ephemeral: the change goes to the thread the command came from, if any.
            invocation = replace(ctx.invocation, thread_ts=payloads.optional_ts(value, "thread_ts"), trigger_id=None)
            # One stop per confirmation message, however often its button is clicked.
            clicked_at = payloads.optional_text(body.get("container"), "message_ts") or payloads.optional_text(
                payloads.first_action(body), "action_ts"
            )
            key = f"stop:{clicked.channel_id}:{clicked_at}" if clicked_at else None
            await run_lifecycle(
                replace(ctx, invocation=invocation, replies=Replies(services.slack, invocation)), alias, "stop", key
            )

        await serve(services, clicked, confirmed)
