"""/ray history <cluster> [n] — the last changes of a cluster, from the audit log."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.cost import rate_text
from bot.dispatch import CommandContext
from bot.flow import change_cost_of
from bot.grammar import History
from bot.services import Services
from bot.slack import blocks


async def handle(command: History, ctx: CommandContext) -> None:
    services = ctx.services
    services.cluster(ctx.subject, command.cluster, "history")
    services.require(ctx.subject, "history", command.cluster)
    records = await services.store.history(command.cluster, command.limit)
    costs = []
    for record in records:
        cost = change_cost_of(services, record.alias, record.action, record.spec_before, record.body)
        costs.append(rate_text(cost.now, signed=True) if cost is not None and not cost.neutral else None)
    await ctx.replies.ephemeral(*blocks.history(command.cluster, records, costs))


def register(app: AsyncApp, services: Services) -> None:
    services.commands.register(History, handle)
