"""The Approve and Reject buttons of a change that needs a second person (action `approve`)."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.approvals import approve, reject
from bot.dispatch import serve
from bot.services import Services
from bot.slack.blocks import APPROVE_ACTION, REJECT_ACTION
from bot.slack.conversation import Invocation


def register(app: AsyncApp, services: Services) -> None:
    @app.action(APPROVE_ACTION)
    async def on_approve(ack, body):  # noqa: ANN001 - Bolt injects by name
        await ack()
        approval_id = int(body["actions"][0]["value"])
        await serve(services, Invocation.from_block_action(body), lambda ctx: approve(ctx, approval_id))

    @app.action(REJECT_ACTION)
    async def on_reject(ack, body):  # noqa: ANN001
        await ack()
        approval_id = int(body["actions"][0]["value"])
        await serve(services, Invocation.from_block_action(body), lambda ctx: reject(ctx, approval_id))
