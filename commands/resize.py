"""/ray resize <cluster> … — set replicas (and bounds) of worker groups."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.dispatch import CommandContext
from bot.flow import run_change
from bot.grammar import Resize
from bot.services import Services


async def handle(command: Resize, ctx: CommandContext) -> None:
    await run_change(ctx, command.cluster, "resize", command.changes)


def register(app: AsyncApp, services: Services) -> None:
    services.commands.register(Resize, handle)
