"""/ray history <cluster> [n] — the last changes of a cluster, from the audit log."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.dispatch import CommandContext
from bot.grammar import History
from bot.services import Services
from bot.slack import blocks


async def handle(command: History, ctx: CommandContext) -> None:
    services = ctx.services
    services.cluster(ctx.subject, command.cluster, "history")
    services.require(ctx.subject, "history", command.cluster)
    records = await services.store.history(command.cluster, command.limit)
    await ctx.replies.ephemeral(*blocks.history(command.cluster, records))


def register(app: AsyncApp, services: Services) -> None:
    services.commands.register(History, handle)
