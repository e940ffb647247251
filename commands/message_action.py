"""The message shortcut "Ray cluster action": act from a message (an alert), answered in its thread.

Until the modal editor exists, the shortcut tells the person, in that message's thread,
what they may do there and how to do it with an @mention, which answers in the thread.
"""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.dispatch import report
from bot.permissions import grants
from bot.services import Services
from bot.slack import blocks
from bot.slack.conversation import Invocation, Replies

CALLBACK_ID = "raybot_message_action"
HINT = (
    "Mention raybot in this thread to act here, e.g. `@raybot resize <cluster> <group>=<n>`; `@raybot help` lists all."
)


def invocation_from_message_action(body: dict[str, Any]) -> Invocation:
    """The thread of the message the shortcut was used on: its own thread if it is a reply, else its ts."""
    message = body.get("message") or {}
    return Invocation(
        user_id=body["user"]["id"],
        channel_id=body["channel"]["id"],
        text="",
        team_id=(body.get("team") or {}).get("id"),
        thread_ts=message.get("thread_ts") or message.get("ts"),
        trigger_id=body.get("trigger_id"),
    )


def register(app: AsyncApp, services: Services) -> None:
    @app.shortcut(CALLBACK_ID)
    async def on_message_action(ack, body):  # noqa: ANN001 - Bolt injects by name
        await ack()
        invocation = invocation_from_message_action(body)
        replies = Replies(services.slack, invocation)
        try:
            subject = await services.subject(invocation.user_id, invocation.channel_id)
            text, message_blocks = blocks.whoami(subject.user_id, subject.channel_id, grants(services.config, subject))
            await replies.ephemeral(text, [*message_blocks, *blocks.hint(HINT)])
        except Exception as error:  # noqa: BLE001 - answered like every command failure
            await report(replies, error)
