"""/ray show <cluster> — the current spec: status, head, every worker group."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.cost import cluster_text
from bot.dispatch import CommandContext
from bot.grammar import Show
from bot.services import Services
from bot.slack import blocks


async def handle(command: Show, ctx: CommandContext) -> None:
    services = ctx.services
    target = services.cluster(ctx.subject, command.cluster, "show")
    services.require(ctx.subject, "show", command.cluster)
    cluster = await services.emr.get_cluster(
        target.workspace, target.cluster_id, region=target.region, acting=target.acting
    )
    cost = cluster_text(cluster, services.config.price(command.cluster), cluster.state)
    await ctx.replies.ephemeral(*blocks.cluster_detail(command.cluster, cluster, cost))


def register(app: AsyncApp, services: Services) -> None:
    services.commands.register(Show, handle)
