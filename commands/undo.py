"""The Undo button on a change's thread answer (action `undo`): put the changed fields back.

By read-modify-write, and only if those fields still hold what the change set
(bot.emr.changes.revert_plan); otherwise the conflict is explained and nothing is sent.
A double click cannot undo twice: the second click finds, under the cluster's lock,
that the change is already undone.
"""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.change_state import HOLDS_CLUSTER, TOOK_EFFECT
from bot.dispatch import CommandContext, serve
from bot.errors import ActionRefused
from bot.flow import ChangeRequest, run_change
from bot.replay import undo_replay
from bot.services import Services
from bot.slack import blocks, payloads
from bot.slack.blocks import UNDO_ACTION
from bot.slack.conversation import Invocation, invocation_or_none


async def undo(ctx: CommandContext, change_id: int) -> None:
    services = ctx.services
    record = await services.store.get_change(change_id)
    if record is None or record.channel_id != ctx.invocation.channel_id:
        raise ActionRefused(f"change #{change_id} was not made in this channel; nothing to undo here")
    target = services.cluster(ctx.subject, record.alias, "undo")
    if target.cluster_id != record.cluster_id:
        raise ActionRefused(blocks.alias_moved_reason(record.alias, change_id))

    async def not_undone_yet() -> None:
        # Under the cluster's lock: a change still being sent holds that lock, so it has its outcome by now.
        now = await services.store.get_change(change_id)
        if now is None or now.state not in TOOK_EFFECT:
            outcome = now.outcome if now is not None else "gone"
            raise ActionRefused(f"change #{change_id} was not applied ({outcome}), so there is nothing to undo")
        for later in await services.store.history(record.alias, 50):
            if later.undo_of == change_id and later.state in HOLDS_CLUSTER:
                raise ActionRefused(blocks.already_undone_reason(change_id, later.id, later.user_id))

    await run_change(
        ctx,
        ChangeRequest(
            alias=record.alias,
            action="undo",
            summary=f"undo #{change_id} ({record.summary})",
            replay=undo_replay(change_id),
            undo_of=change_id,
            precheck=not_undone_yet,
        ),
    )


def register(app: AsyncApp, services: Services) -> None:
    @app.action(UNDO_ACTION)
    async def on_undo(ack, body):  # noqa: ANN001 - Bolt injects by name
        await ack()
        if invocation := invocation_or_none(Invocation.from_block_action, body):
            await serve(services, invocation, lambda ctx: undo(ctx, payloads.button_value_id(body)))
