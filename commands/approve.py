"""The Approve and Reject buttons of a change that needs a second person (action `approve`)."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.approvals import approve, reject
from bot.dispatch import serve
from bot.services import Services
from bot.slack import payloads
from bot.slack.blocks import APPROVE_ACTION, REJECT_ACTION
from bot.slack.conversation import Invocation, invocation_or_none


def register(app: AsyncApp, services: Services) -> None:
    # The button's value (the approval id) is read inside serve: a forged one is answered like any refusal.
    @app.action(APPROVE_ACTION)
    async def on_approve(ack, body):  # noqa: ANN001 - Bolt injects by name
        await ack()
        if invocation := invocation_or_none(Invocation.from_block_action, body):
            await serve(services, invocation, lambda ctx: approve(ctx, payloads.button_value_id(body)))

    @app.action(REJECT_ACTION)
    async def on_reject(ack, body):  # noqa: ANN001
        await ack()
        if invocation := invocation_or_none(Invocation.from_block_action, body):
            await serve(services, invocation, lambda ctx: reject(ctx, payloads.button_value_id(body)))
