"""/ray start <cluster> and /ray stop <cluster> (actions `start` and `stop`).

Both are changes like any other (bot/flow.py): claimed once, locked, checked against the cluster's
state and the channel's roles — the two-person rule included — recorded, then sent with a
clientToken derived from the recorded change, answered in a thread with the requestId, and
followed until the cluster settles. Stop asks first, with a button that says what stops; the
confirmation is good for a few minutes only.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Literal

from slack_bolt.async_app import AsyncApp

from bot.dispatch import CommandContext, serve
from bot.errors import ActionRefused
from bot.flow import NEEDED_STATE, ChangeRequest, lifecycle_replay, run_change
from bot.grammar import Start, Stop
from bot.services import Services
from bot.slack import blocks, payloads
from bot.slack.blocks import STOP_ACTION
from bot.slack.conversation import Invocation, Replies, invocation_or_none
from bot.slack.mrkdwn import escape

Verb = Literal["start", "stop"]
# A stop confirmation older than this is refused: its exactly-once key lives 10 minutes, and a click
# long after the question was asked is not the decision it was.
CONFIRMATION_SECONDS = 300.0


async def run_lifecycle(
    ctx: CommandContext, alias: str, verb: Verb, dedup_key: str | None, duplicate_note: str | None = None
) -> None:
    """Start or stop `alias` as a change: locked, checked, maybe approved, recorded, sent, followed."""
    await run_change(
        ctx,
        ChangeRequest(
            alias=alias,
            action=verb,
            summary=verb,
            replay=lifecycle_replay(verb),
            dedup_key=dedup_key,
            duplicate_note=duplicate_note,
        ),
    )


async def start(command: Start, ctx: CommandContext) -> None:
    await run_lifecycle(ctx, command.cluster, "start", ctx.invocation.dedup_key)


async def ask_to_stop(command: Stop, ctx: CommandContext) -> None:
    """Say what stops, with a button to confirm; nothing is sent yet."""
    services, subject = ctx.services, ctx.subject
    target = services.cluster(subject, command.cluster, "stop")
    services.require(subject, "stop", command.cluster)
    cluster = await services.emr.get_cluster(
        target.workspace, target.cluster_id, region=target.region, acting=target.acting
    )
    if cluster.state != NEEDED_STATE["stop"]:
        raise ActionRefused(blocks.wrong_state_reason(command.cluster, cluster.state, NEEDED_STATE["stop"], "stop"))
    value = json.dumps({"alias": command.cluster, "thread_ts": ctx.invocation.thread_ts, "at": services.clock()})
    await ctx.replies.ephemeral(*blocks.stop_confirmation(command.cluster, cluster, value))


async def confirm_stop(ctx: CommandContext, alias: str, asked_at: object, key: str | None) -> None:
    """The stop confirmation was clicked: stop, unless the confirmation is too old (or carries no time)."""
    if not isinstance(asked_at, int | float) or ctx.services.clock() - asked_at > CONFIRMATION_SECONDS:
        raise ActionRefused(
            f"this confirmation is more than {CONFIRMATION_SECONDS / 60:.0f} minutes old: run `/ray stop` again"
        )
    used = (
        f"this confirmation was used already: the stop of {escape(alias)} is in its thread; "
        "run `/ray stop` again to ask anew"
    )
    await run_lifecycle(ctx, alias, "stop", key, duplicate_note=used)


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
            await confirm_stop(
                replace(ctx, invocation=invocation, replies=Replies(services.slack, invocation)),
                alias,
                value.get("at"),
                key,
            )

        await serve(services, clicked, confirmed)
