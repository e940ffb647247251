"""/ray resize <cluster> … [for <duration>] — set replicas (and bounds) of worker groups."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.dispatch import CommandContext
from bot.emr.changes import summarize
from bot.flow import ChangeRequest, run_change
from bot.grammar import Resize
from bot.replay import changes_replay
from bot.services import Services


async def handle(command: Resize, ctx: CommandContext) -> None:
    summary = summarize(command.changes)
    if command.duration_seconds is not None:
        summary += f" for {_duration_text(command.duration_seconds)}"
    await run_change(
        ctx,
        ChangeRequest(
            alias=command.cluster,
            action="resize",
            summary=summary,
            replay=changes_replay(command.changes),
            dedup_key=ctx.invocation.dedup_key,
            duration_seconds=command.duration_seconds,
        ),
    )


def _duration_text(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def register(app: AsyncApp, services: Services) -> None:
    services.commands.register(Resize, handle)
