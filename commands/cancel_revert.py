"""The "Keep it" button on the root message of a temporary resize: cancel its automatic revert (action `resize`).

The revert is a track of the change's own row: Keep it moves it "scheduled" → "cancelled" by
compare-and-set, the automatic revert moves it "scheduled" → "running" (under the cluster's lock)
before it reads anything. Whichever comes first wins; the other is told so, and "the change stays"
is said only when it does. Kept, the root message says "kept by @x" and loses the button (bot.flow.show_card).
"""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.dispatch import CommandContext, serve
from bot.errors import ActionRefused
from bot.flow import show_card
from bot.services import Services
from bot.slack import blocks, payloads
from bot.slack.blocks import CANCEL_REVERT_ACTION
from bot.slack.conversation import Invocation, StatusThread, invocation_or_none

REVERT_WORDS = {
    "running": "running right now",
    "done": "done",
    "cancelled": "cancelled already",
    "failed": "given up",
}


async def keep(ctx: CommandContext, change_id: int) -> None:
    services = ctx.services
    record = await services.store.get_change(change_id)
    if record is None or record.channel_id != ctx.invocation.channel_id or record.duration_seconds is None:
        raise ActionRefused("that automatic revert is not from this channel")
    services.require(ctx.subject, "resize", record.alias)
    kept = await services.store.cancel_revert(
        change_id, note=f"kept by {ctx.subject.user_id}", kept_by=ctx.subject.user_id
    )
    if kept is None:
        now = await services.store.get_change(change_id)
        state = now.revert_state if now is not None else record.revert_state
        raise ActionRefused(f"the automatic revert is {REVERT_WORDS.get(state or '', state)}; nothing to cancel")
    thread_ts = record.thread_ts or record.root_ts or ""
    # The root message first: it says "kept by" and its Keep it button goes, wherever the reply lands.
    await show_card(services, record.id)
    await StatusThread(services.slack, record.channel_id, thread_ts, thread_ts).reply(
        *blocks.revert_cancelled(ctx.subject.user_id, record.id)
    )


def register(app: AsyncApp, services: Services) -> None:
    @app.action(CANCEL_REVERT_ACTION)
    async def on_keep(ack, body):  # noqa: ANN001 - Bolt injects by name
        await ack()
        if invocation := invocation_or_none(Invocation.from_block_action, body):
            await serve(services, invocation, lambda ctx: keep(ctx, payloads.button_value_id(body)))
