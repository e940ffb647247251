"""The two-person rule: a change that needs approval waits, as a recorded change, for someone else who may approve.

The request is a change in state "awaiting_approval", posted with Approve and Reject buttons whose
value is the change's id. Approve is taken only from another person who holds `approve` in that
channel, before the request expires, and only once: the move out of "awaiting_approval" is a
compare-and-set. The cluster is locked and read again *before* that move, so a busy cluster or a
failed read leaves the request open for another click; if the cluster changed since the request,
the approval is void and says what changed.
"""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError

from bot.dispatch import CommandContext
from bot.emr.changes import diff, redact_secrets
from bot.errors import ActionRefused
from bot.flow import acting_target_of, decide, hold, prepare, send, show_card, thread_of
from bot.services import Services
from bot.slack import blocks, mrkdwn
from bot.store import ChangeRecord

log = logging.getLogger("raybot.approvals")


async def expire(services: Services, record: ChangeRecord) -> None:
    """Close a request nobody decided before it expired: its root message says so, and its buttons go."""
    expired = await services.store.move(record.id, "expired", from_="awaiting_approval", next_at=None)
    if expired is not None:
        await show_card(services, expired.id)


async def _tell_quietly(services: Services, record: ChangeRecord, message: tuple[str, list]) -> None:
    """A detail in the request's thread (its root message says the outcome); a refusal is logged."""
    thread = thread_of(services, record)
    if thread is None:
        return
    try:
        await thread.reply(*message)
    except SlackApiError as error:
        log.error("could not answer in the thread of request #%s: %s", record.id, error.response.get("error"))


async def _request(services: Services, change_id: int, channel_id: str) -> ChangeRecord:
    record = await services.store.get_change(change_id)
    if record is None or record.channel_id != channel_id or record.expires_at is None:
        raise ActionRefused(f"approval request #{change_id} is not from this channel")
    return record


async def approve(ctx: CommandContext, change_id: int) -> None:
    """Approve and apply, if this person may, in time, once, and the cluster is as it was when asked."""
    services, subject = ctx.services, ctx.subject
    record = await _request(services, change_id, ctx.invocation.channel_id)
    if subject.user_id == record.user_id:
        raise ActionRefused(
            "you asked for this change: the two-person rule needs someone else who may approve here to approve it"
        )
    services.require(subject, "approve", record.alias)
    _still_open(record)
    if services.clock() > (record.expires_at or 0):
        await expire(services, record)
        raise ActionRefused("this request has expired; ask for the change again")
    target = await acting_target_of(services, record)
    async with hold(services, target, record.user_id, record.summary) as fence:
        cluster = await services.emr.get_cluster(
            target.workspace, target.cluster_id, region=target.region, acting=target.acting
        )
        fresh = cluster.editable()
        changed = diff(redact_secrets(record.spec_before) or {}, redact_secrets(fresh) or {})
        if changed:
            voided = await services.store.move(
                record.id,
                "void",
                from_="awaiting_approval",
                next_at=None,
                error_message="the cluster changed since the request",
            )
            if voided is not None:
                await _tell_quietly(services, voided, blocks.approval_void(subject.user_id, record.alias, changed))
                await show_card(services, voided.id)
            return
        prepared = await prepare(services, target, record.action, record.replay or {}, cluster)
        if prepared is None:
            voided = await services.store.move(
                record.id,
                "void",
                from_="awaiting_approval",
                next_at=None,
                error_message="approved, but the cluster already matches the request",
            )
            if voided is not None:
                await show_card(services, voided.id)
            return
        # The role's limits still hold for the requester; only the approval itself is what this click gives.
        decide(
            services, await services.subject(record.user_id, record.channel_id), record.action, record.alias, prepared
        )
        applying = await services.store.move(
            record.id,
            "applying",
            from_="awaiting_approval",
            fence=fence,
            decided_by=subject.user_id,
            decided_at=services.clock(),
            run_id=services.store.run_id,
            next_at=None,
            spec_before=prepared.before,
            body=prepared.body,
            diff=prepared.diff,
        )
        if applying is None:
            raise ActionRefused("someone else decided this request a moment ago")
        thread = thread_of(services, applying)
        assert thread is not None  # a request is posted before it can be approved
        await show_card(services, applying.id)
        await send(services, applying, thread, ctx.replies, fence, prepared)


def _still_open(record: ChangeRecord) -> None:
    if record.state != "awaiting_approval":
        word = {"applying": "being applied", "sending": "being applied"}.get(record.state, record.outcome)
        by = f" by {mrkdwn.user(record.decided_by)}" if record.decided_by else ""
        raise ActionRefused(f"this request is already {word}{by}")


async def reject(ctx: CommandContext, change_id: int) -> None:
    """Reject (an approver) or withdraw (the requester); nothing is sent."""
    services, subject = ctx.services, ctx.subject
    record = await _request(services, change_id, ctx.invocation.channel_id)
    if subject.user_id != record.user_id:
        services.require(subject, "approve", record.alias)
    decided = await services.store.move(
        record.id,
        "rejected",
        from_="awaiting_approval",
        decided_by=subject.user_id,
        decided_at=services.clock(),
        next_at=None,
    )
    if decided is None:
        raise ActionRefused("this request was already decided")
    await show_card(services, decided.id)
