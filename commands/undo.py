"""Undo (action `undo`): the Undo button on a change's thread answer, and `/ray undo <cluster> [#<n>]` for the
channel's latest change to the cluster that can be undone (or change #n): put the changed fields back.

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
from bot.grammar import HISTORY_MAX, Undo
from bot.replay import can_undo, undo_replay
from bot.services import Services
from bot.slack import blocks, payloads
from bot.slack.blocks import UNDO_ACTION
from bot.slack.conversation import Invocation, invocation_or_none
from bot.store import ChangeRecord


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


async def undo_command(command: Undo, ctx: CommandContext) -> None:
    """`/ray undo prod [#n]`: change #n, or the newest change to prod made in this channel that took effect and
    is not undone yet. Undos and automatic reverts are not counted, so asking again goes one change further back
    (and undoing an undo takes its number: `/ray undo prod #n`)."""
    services = ctx.services
    services.require(ctx.subject, "undo", command.cluster)
    if command.change_id is not None:
        record = await services.store.get_change(command.change_id)
        if record is not None and record.alias != command.cluster:
            raise ActionRefused(blocks.other_cluster_reason(command.change_id, record.alias, command.cluster))
        await undo(ctx, command.change_id)
        return
    latest = next(
        (
            r
            # As far back as `/ray history` can show: a change found here is one a person can look up.
            for r in await services.store.history(command.cluster, HISTORY_MAX)
            if r.channel_id == ctx.invocation.channel_id and _undoable(r)
        ),
        None,
    )
    if latest is None:
        raise ActionRefused(blocks.nothing_to_undo_reason(command.cluster))
    await undo(ctx, latest.id)


def _undoable(record: ChangeRecord) -> bool:
    """A change a person asked for (not an undo or a revert) that is not undone yet and whose undo can be planned."""
    return record.action not in ("undo", "revert") and record.undone_by_change is None and can_undo(record)


def register(app: AsyncApp, services: Services) -> None:
    services.commands.register(Undo, undo_command)

    @app.action(UNDO_ACTION)
    async def on_undo(ack, body):  # noqa: ANN001 - Bolt injects by name
        await ack()
        if invocation := invocation_or_none(Invocation.from_block_action, body):
            await serve(services, invocation, lambda ctx: undo(ctx, payloads.button_value_id(body)))
