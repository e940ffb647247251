"""/ray list — the clusters this channel may see: status and workers per group.

One ListRayCluster per (workspace, region) rather than one GetRayCluster per alias:
a channel that sees twenty clusters in one workspace costs one paged call.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from slack_bolt.async_app import AsyncApp

from bot.cost import cluster_rate, rate_text
from bot.dispatch import CommandContext
from bot.emr.errors import EmrError
from bot.emr.models import RayCluster
from bot.emr.sts import Acting
from bot.grammar import ListClusters
from bot.permissions import visible_aliases
from bot.services import Services
from bot.slack import blocks


async def handle(command: ListClusters, ctx: CommandContext) -> None:
    services = ctx.services
    services.require(ctx.subject, "list")
    aliases = visible_aliases(services.config, ctx.subject, "list")
    targets = {alias: services.cluster(ctx.subject, alias, "list") for alias in aliases}
    # One listing per workspace and region, and per RAM role: aliases read through different roles are read apart.
    by_location: dict[tuple[str, str, Acting | None], list[str]] = defaultdict(list)
    for alias, target in targets.items():
        by_location[(target.workspace, target.region, target.acting)].append(alias)

    async def read(workspace: str, region: str, acting: Acting | None) -> list[RayCluster] | EmrError:
        try:
            return await services.emr.list_clusters(workspace, region=region, acting=acting)
        except EmrError as error:
            return error

    locations = list(by_location)
    results = await asyncio.gather(*(read(*location) for location in locations))
    rows: dict[str, RayCluster | EmrError] = {}
    for (workspace, region, acting), result in zip(locations, results, strict=True):
        found = {c.cluster_id: c for c in result} if isinstance(result, list) else {}
        for alias in by_location[(workspace, region, acting)]:
            cluster_id = targets[alias].cluster_id
            if isinstance(result, EmrError):
                rows[alias] = result
            elif cluster_id in found:
                rows[alias] = found[cluster_id]
            else:
                rows[alias] = EmrError(
                    action="ListRayCluster",
                    code="RayClusterNotFound",
                    message=f"{cluster_id} is not in workspace {workspace} ({region}); check the config",
                )
    costs = {
        alias: rate_text(cluster_rate(row, services.config.price(alias)))
        for alias, row in rows.items()
        if isinstance(row, RayCluster) and row.state != "Stopped"
    }
    await ctx.replies.ephemeral(*blocks.cluster_list([(alias, rows[alias]) for alias in aliases], costs))


def register(app: AsyncApp, services: Services) -> None:
    services.commands.register(ListClusters, handle)
