"""The message shortcut "Ray cluster action": edit a cluster from a message (an alert).

It opens the same editor as `/ray edit` (with a cluster picker first when the channel may edit
several clusters), and the result is posted in that message's thread.
"""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.services import Services
from commands.edit import open_from_shortcut

CALLBACK_ID = "raybot_message_action"


def register(app: AsyncApp, services: Services) -> None:
    @app.shortcut(CALLBACK_ID)
    async def on_message_action(ack, body):  # noqa: ANN001 - Bolt injects by name
        await ack()
        await open_from_shortcut(services, body)
