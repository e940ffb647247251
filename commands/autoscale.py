"""/ray autoscale <cluster> on|off [idle=<seconds>] — the head's autoscaling switch."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.dispatch import CommandContext
from bot.emr.changes import SetAutoscaling
from bot.flow import run_change
from bot.grammar import Autoscale
from bot.services import Services


async def handle(command: Autoscale, ctx: CommandContext) -> None:
    change = SetAutoscaling(enabled=command.enabled, idle_timeout_seconds=command.idle_timeout_seconds)
    await run_change(ctx, command.cluster, "autoscale", [change])


def register(app: AsyncApp, services: Services) -> None:
    services.commands.register(Autoscale, handle)
