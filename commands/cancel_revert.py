"""The "Keep it" button of a temporary resize: cancel its automatic revert (action `resize`)."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.dispatch import CommandContext, serve
from bot.errors import ActionRefused
from bot.scheduler import cancel_revert
from bot.services import Services
from bot.slack import mrkdwn, payloads
from bot.slack.blocks import CANCEL_REVERT_ACTION
from bot.slack.conversation import Invocation, StatusThread, invocation_or_none


async def keep(ctx: CommandContext, schedule_id: int) -> None:
    services = ctx.services
    schedule = await services.store.get_schedule(schedule_id)
    if schedule is None or schedule.channel_id != ctx.invocation.channel_id:
        raise ActionRefused("that automatic revert is not from this channel")
    services.require(ctx.subject, "resize", schedule.alias)
    cancelled = await cancel_revert(services, schedule_id, ctx.subject.user_id)
    if cancelled is None:
        raise ActionRefused(f"the automatic revert is already {schedule.status}; nothing to cancel")
    thread_ts = schedule.thread_ts or ""
    await StatusThread(services.slack, schedule.channel_id, thread_ts, thread_ts).reply(
        f"⏲️ {mrkdwn.user(ctx.subject.user_id)} cancelled the automatic revert of change #{schedule.change_id}: "
        "the change stays."
    )


def register(app: AsyncApp, services: Services) -> None:
    @app.action(CANCEL_REVERT_ACTION)
    async def on_keep(ack, body):  # noqa: ANN001 - Bolt injects by name
        await ack()
        if invocation := invocation_or_none(Invocation.from_block_action, body):
            await serve(services, invocation, lambda ctx: keep(ctx, payloads.button_value_id(body)))
