"""/ray help — the grammar, from the one parser's table."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.dispatch import CommandContext
from bot.grammar import Help
from bot.services import Services
from bot.slack import blocks


async def handle(command: Help, ctx: CommandContext) -> None:
    await ctx.replies.ephemeral(*blocks.help_message(command.topic))


def register(app: AsyncApp, services: Services) -> None:
    services.commands.register(Help, handle)
