"""The two-person rule: a change that needs approval waits for someone else who may approve.

The request is posted with Approve and Reject buttons. Approve is taken only from
another person who holds `approve` in that channel, before the request expires, and
only once (a compare-and-set in the store: a double click or two approvers at once
apply it once). Before applying, the cluster is read again: if it changed since the
request, the approval is void and says what changed.
"""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError

from bot.config import ClusterTarget
from bot.dispatch import CommandContext
from bot.emr.changes import Plan, diff
from bot.errors import ActionRefused
from bot.flow import Applying, ChangeRequest, apply_plan, hold
from bot.permissions import Decision
from bot.replay import planner
from bot.services import Services
from bot.slack import blocks, mrkdwn
from bot.slack.conversation import StatusThread
from bot.store import Approval

log = logging.getLogger("raybot.approvals")

EXPIRED_TEXT = "⌛ The request expired before anyone approved it; nothing was changed."


async def expire_due(services: Services) -> None:
    """Close requests nobody decided before they expired: their buttons go, and they say so."""
    for approval in await services.store.expired_approvals(services.clock()):
        expired = await services.store.decide_approval(approval.id, "expired", by=None, reason="expired")
        if expired is not None:
            await close_request(services, expired, EXPIRED_TEXT)


async def request_approval(
    ctx: CommandContext,
    request: ChangeRequest,
    target: ClusterTarget,
    before: dict,
    result: Plan,
    decision: Decision,
) -> None:
    """Record the request and post it with Approve / Reject; nothing is sent to the cloud yet."""
    services = ctx.services
    expires_at = services.clock() + decision.approval_minutes * 60
    approval = await services.store.create_approval(
        requester_id=ctx.subject.user_id,
        channel_id=ctx.invocation.channel_id,
        alias=target.alias,
        action=request.action,
        summary=request.summary,
        request={
            "replay": request.replay,
            "undo_of": request.undo_of,
            "duration_seconds": request.duration_seconds,
            "team_id": ctx.invocation.team_id,
        },
        spec_before=before,
        expires_at=expires_at,
        thread_ts=ctx.invocation.thread_ts,
    )
    message = blocks.approval_request(
        ctx.subject.user_id,
        target.alias,
        request.summary,
        decision.approval or "",
        result.diff,
        approval.id,
        expires_at,
    )
    thread = await ctx.replies.open_thread(*message)
    await services.store.set_approval_message(approval.id, root_ts=thread.root_ts, thread_ts=thread.thread_ts)
    log.info(
        "approval requested", extra={"cluster": target.alias, "user": ctx.subject.user_id, "approval": approval.id}
    )


async def _approval(services: Services, approval_id: int, channel_id: str) -> Approval:
    approval = await services.store.get_approval(approval_id)
    if approval is None or approval.channel_id != channel_id:
        raise ActionRefused(f"approval request #{approval_id} is not from this channel")
    return approval


def _thread(services: Services, approval: Approval) -> StatusThread:
    root = approval.root_ts or ""
    return StatusThread(services.slack, approval.channel_id, root, approval.thread_ts or root)


async def close_request(services: Services, approval: Approval, outcome: str) -> None:
    """Replace the request's buttons by what happened to it (also used when it expires unanswered)."""
    try:
        await _thread(services, approval).set_status(
            *blocks.approval_closed(approval.requester_id, approval.alias, approval.summary, outcome)
        )
    except SlackApiError as error:
        log.error("could not update approval request #%s: %s", approval.id, error.response.get("error"))


async def approve(ctx: CommandContext, approval_id: int) -> None:
    """Approve and apply, if this person may, in time, once, and the cluster is as it was when asked."""
    services, subject = ctx.services, ctx.subject
    approval = await _approval(services, approval_id, ctx.invocation.channel_id)
    if subject.user_id == approval.requester_id:
        raise ActionRefused(
            "you asked for this change: the two-person rule needs someone else who may approve here to approve it"
        )
    services.require(subject, "approve", approval.alias)
    if approval.status != "pending":
        by = f" by {mrkdwn.user(approval.decided_by)}" if approval.decided_by else ""
        raise ActionRefused(f"this request is already {approval.status}{by}")
    if services.clock() > approval.expires_at:
        expired = await services.store.decide_approval(approval.id, "expired", by=None, reason="expired")
        if expired is not None:
            await close_request(services, expired, EXPIRED_TEXT)
        raise ActionRefused("this request has expired; ask for the change again")
    decided = await services.store.decide_approval(approval.id, "approved", by=subject.user_id)
    if decided is None:
        raise ActionRefused("someone else decided this request a moment ago")

    target = services.cluster(subject, approval.alias)
    make_plan = await planner(services.store, decided.request["replay"])
    async with hold(services, target, approval.requester_id, approval.summary):
        cluster = await services.emr.get_cluster(target.workspace, target.cluster_id, region=target.region)
        now = cluster.editable()
        changed = diff(decided.spec_before, now)
        if changed:
            lines = "; ".join(
                f"{d.path}: {mrkdwn.escape(str(d.before))} → {mrkdwn.escape(str(d.after))}" for d in changed[:10]
            )
            await services.store.decide_approval(
                approval.id, "void", by=None, reason="cluster changed", expected="approved"
            )
            await close_request(
                services,
                decided,
                f"🚫 Approved by {mrkdwn.user(subject.user_id)}, but void: *{mrkdwn.escape(approval.alias)}* changed "
                f"since the request ({lines}). Nothing was sent; ask again if it is still needed.",
            )
            return
        result = make_plan(cluster)
        if not result.changed or result.body is None:
            await services.store.decide_approval(
                approval.id, "void", by=None, reason="nothing to change", expected="approved"
            )
            await close_request(services, decided, "➖ Approved, but the cluster already matches: nothing was sent.")
            return
        request = decided.request
        await apply_plan(
            services,
            Applying(
                thread=_thread(services, decided),
                replies=ctx.replies,
                user_id=approval.requester_id,
                team_id=request.get("team_id"),
                target=target,
                action=approval.action,
                summary=f"{approval.summary} (approved by {subject.user_id})",
                undo_of=request.get("undo_of"),
                approval_id=approval.id,
                duration_seconds=request.get("duration_seconds"),
                state_before=cluster.state,
            ),
            now,
            result,
        )
    await services.store.decide_approval(approval.id, "applied", by=None, expected="approved")


async def reject(ctx: CommandContext, approval_id: int) -> None:
    """Reject (an approver) or withdraw (the requester); nothing is sent."""
    services, subject = ctx.services, ctx.subject
    approval = await _approval(services, approval_id, ctx.invocation.channel_id)
    if subject.user_id != approval.requester_id:
        services.require(subject, "approve", approval.alias)
    decided = await services.store.decide_approval(approval.id, "rejected", by=subject.user_id)
    if decided is None:
        raise ActionRefused("this request was already decided")
    verb = "withdrawn" if subject.user_id == approval.requester_id else "rejected"
    await close_request(
        services, decided, f"🚫 {verb.capitalize()} by {mrkdwn.user(subject.user_id)}; nothing was changed."
    )
