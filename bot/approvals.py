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
from bot.flow import acting_target_of, decide, hold, prepare, send, thread_of
from bot.services import Services
from bot.slack import blocks, mrkdwn
from bot.slack.words import change_record_in_words
from bot.store import ChangeRecord

log = logging.getLogger("raybot.approvals")

EXPIRED_TEXT = "⌛ The request expired before anyone approved it; nothing was changed."


async def expire(services: Services, record: ChangeRecord) -> None:
    """Close a request nobody decided before it expired: its buttons go, and it says so."""
    expired = await services.store.move(record.id, "expired", from_="awaiting_approval", next_at=None)
    if expired is not None:
        await close_request(services, expired, EXPIRED_TEXT)


async def close_request(services: Services, record: ChangeRecord, outcome: str | tuple[str, list]) -> None:
    """Replace the request's buttons by what happened to it (also used when it expires unanswered)."""
    thread = thread_of(services, record)
    if thread is None:
        return
    text = outcome if isinstance(outcome, str) else outcome[0]
    try:
        await thread.set_status(
            *blocks.approval_closed(record.user_id, record.alias, change_record_in_words(record), text)
        )
    except SlackApiError as error:
        log.error("could not update approval request #%s: %s", record.id, error.response.get("error"))


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
                record.id, "void", from_="awaiting_approval", next_at=None, error_message="the cluster changed"
            )
            if voided is not None:
                await close_request(services, voided, blocks.approval_void(subject.user_id, record.alias, changed))
            return
        prepared = await prepare(services, target, record.action, record.replay or {}, cluster)
        if prepared is None:
            voided = await services.store.move(
                record.id, "void", from_="awaiting_approval", next_at=None, error_message="nothing to change"
            )
            if voided is not None:
                await close_request(services, voided, "➖ Approved, but the cluster already matches: nothing was sent.")
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
        try:
            await thread.set_status(
                *blocks.change_root(
                    applying.user_id, applying.alias, f"{applying.summary} (approved by {subject.user_id})", "pending"
                )
            )
        except SlackApiError as error:
            log.error("could not update approval request #%s: %s", record.id, error.response.get("error"))
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
    verb = "withdrawn" if subject.user_id == record.user_id else "rejected"
    await close_request(
        services, decided, f"🚫 {verb.capitalize()} by {mrkdwn.user(subject.user_id)}; nothing was changed."
    )
