"""/ray autoscale <cluster> on|off [idle=<seconds>] — the head's autoscaling switch."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.dispatch import CommandContext
from bot.emr.changes import SetAutoscaling, summarize
from bot.flow import ChangeRequest, run_change
from bot.grammar import Autoscale
from bot.replay import changes_replay
from bot.services import Services


async def handle(command: Autoscale, ctx: CommandContext) -> None:
    changes = [SetAutoscaling(enabled=command.enabled, idle_timeout_seconds=command.idle_timeout_seconds)]
    await run_change(
        ctx,
        ChangeRequest(
            alias=command.cluster,
            action="autoscale",
            summary=summarize(changes),
            replay=changes_replay(changes),
            dedup_key=ctx.invocation.dedup_key,
        ),
    )


def register(app: AsyncApp, services: Services) -> None:
    services.commands.register(Autoscale, handle)
