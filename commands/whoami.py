"""/ray whoami — what you may do in this channel, and why."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.dispatch import CommandContext
from bot.grammar import WhoAmI
from bot.permissions import grants
from bot.services import Services
from bot.slack import blocks


async def handle(command: WhoAmI, ctx: CommandContext) -> None:
    subject = ctx.subject
    await ctx.replies.ephemeral(
        *blocks.whoami(subject.user_id, subject.channel_id, grants(ctx.services.config, subject))
    )


def register(app: AsyncApp, services: Services) -> None:
    services.commands.register(WhoAmI, handle)
