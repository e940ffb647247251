"""The flow of one change (DESIGN.md): claim, lock, read, plan, check, post, audit, update, answer.

Bad input (unknown group, a limit exceeded, nothing to change, a cluster someone else
holds) is found before anything is posted in the channel and answered only to the
person who asked; from the moment the root status message exists, every outcome is
answered in its thread and recorded in the audit log.

Exactly once: every request that may change a cluster carries a deduplication key
(the slash command's trigger_id, the event id, the button's change id, the draft key),
claimed in the store before anything is read: a redelivery, a double click or a second
replica receiving the same event finds it claimed and does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from slack_sdk.errors import SlackApiError

from bot.config import ClusterTarget
from bot.dispatch import CommandContext, describe_error
from bot.emr.changes import Plan, redact_secrets
from bot.emr.errors import EmrError
from bot.emr.models import ActionResponse, ClusterFields, RayCluster
from bot.errors import ClusterBusy, Denied
from bot.follow import Wanted, wanted_after_update
from bot.permissions import check_change
from bot.replay import planner
from bot.services import Services
from bot.slack import blocks
from bot.slack.conversation import Replies, StatusThread
from bot.store import ChangeRecord, LockBusy, NewChange

log = logging.getLogger("raybot.flow")


@dataclass(frozen=True)
class ChangeRequest:
    """A change asked for by a person: what to do to which cluster (`replay`, see bot.replay)."""

    alias: str
    action: str  # the permission action: resize, autoscale, edit, undo
    summary: str
    replay: dict[str, Any]
    dedup_key: str | None = None
    undo_of: int | None = None
    duration_seconds: int | None = None  # a temporary resize: reverted by itself after this long
    # Checked under the cluster's lock before the read (e.g. "already undone"); raises to refuse.
    precheck: Callable[[], Awaitable[None]] | None = None
    # Checked on the cluster as read, before planning (e.g. a modal's draft gone stale); raises to refuse.
    check_read: Callable[[RayCluster], None] | None = None


# What became of a request: applied (or failed, or unknown), waiting for approval, nothing to do, a duplicate.
Outcome = Literal["done", "failed", "unknown", "awaiting_approval", "unchanged", "duplicate"]


def cluster_key(target: ClusterTarget) -> str:
    return f"{target.region}/{target.workspace}/{target.cluster_id}"


async def run_change(ctx: CommandContext, request: ChangeRequest) -> Outcome:
    """Apply `request` by read-modify-write under the cluster's lock, answering in a thread of the channel."""
    services, subject = ctx.services, ctx.subject
    target = services.cluster(subject, request.alias)
    services.require(subject, request.action, request.alias)
    if request.dedup_key is not None and not await services.store.claim(request.dedup_key):
        log.info("duplicate delivery ignored", extra={"key": request.dedup_key, "cluster": request.alias})
        return "duplicate"
    make_plan = await planner(services.store, request.replay)
    async with hold(services, target, subject.user_id, request.summary):
        if request.precheck is not None:
            await request.precheck()
        cluster = await services.emr.get_cluster(target.workspace, target.cluster_id, region=target.region)
        if request.check_read is not None:
            request.check_read(cluster)
        result = make_plan(cluster)
        if not result.changed or result.body is None:
            await ctx.replies.ephemeral(*blocks.nothing_to_change(request.alias, request.summary))
            return "unchanged"
        before = cluster.editable()
        decision = check_change(
            services.config, subject, request.action, request.alias, ClusterFields.model_validate(before), result.body
        )
        if not decision.allowed:
            services.metrics.denial(decision.kind)  # type: ignore[arg-type]
            raise Denied(decision.reason)
        if decision.approval is not None:
            from bot.approvals import request_approval  # approvals build on this module

            await request_approval(ctx, request, target, before, result, decision)
            return "awaiting_approval"
        thread = await ctx.replies.open_thread(
            *blocks.change_root(subject.user_id, request.alias, request.summary, "pending")
        )
        record = await apply_plan(
            services,
            Applying(
                thread=thread,
                replies=ctx.replies,
                user_id=subject.user_id,
                team_id=ctx.invocation.team_id,
                target=target,
                action=request.action,
                summary=request.summary,
                undo_of=request.undo_of,
                duration_seconds=request.duration_seconds,
                state_before=cluster.state,
            ),
            before,
            result,
        )
    return record.outcome  # type: ignore[return-value]


@asynccontextmanager
async def hold(services: Services, target: ClusterTarget, user_id: str, summary: str) -> AsyncIterator[str]:
    """The cluster's lock, waited for a few seconds; ClusterBusy says who holds it when that is not enough."""
    try:
        lock = await services.store.acquire_lock(
            cluster_key(target), user_id=user_id, summary=summary, wait=services.lock_wait_seconds
        )
    except LockBusy as busy:
        holder = busy.holder
        raise ClusterBusy(target.alias, holder.user_id, holder.summary, holder.acquired_at) from None
    try:
        yield lock
    finally:
        await services.store.release_lock(cluster_key(target), lock)


@dataclass(frozen=True)
class Applying:
    """Where and for whom a planned change is applied."""

    thread: StatusThread
    replies: Replies | None  # the requester's ephemeral channel, when there is a requester to tell
    user_id: str
    team_id: str | None
    target: ClusterTarget
    action: str
    summary: str
    undo_of: int | None = None
    approval_id: int | None = None
    duration_seconds: int | None = None
    state_before: str | None = None  # the cluster's state when read: what "settled" means after an update


async def apply_plan(services: Services, applying: Applying, before: dict, result: Plan) -> ChangeRecord:
    """Audit "pending", send the complete body, audit the outcome, answer in the thread, then follow the cluster.

    The caller holds the cluster's lock and has posted the root status message.
    """
    body = result.body
    assert body is not None
    target = applying.target
    record, response = await call_audited(
        services,
        applying,
        before=before,
        body=body.wire(),
        diff=[d.model_dump(mode="json") for d in result.diff],
        call=lambda: services.emr.update_cluster(target.workspace, target.cluster_id, body, region=target.region),
    )
    if response is None:
        return record
    thread = applying.thread
    revert_at = schedule_id = None
    if applying.duration_seconds is not None:
        revert_at = services.clock() + applying.duration_seconds
        schedule = await services.store.schedule(
            change_id=record.id,
            due_at=revert_at,
            alias=target.alias,
            channel_id=thread.channel_id,
            thread_ts=thread.thread_ts,
        )
        schedule_id = schedule.id
    done = blocks.change_succeeded(
        target.alias,
        response.cluster_id or target.cluster_id,
        response.request_id,
        result.diff,
        change_id=record.id,
        revert_at=revert_at,
        schedule_id=schedule_id,
    )
    await _answer(thread, applying, done)
    await follow(services, applying, record, wanted_after_update(body.wire(), state_before=applying.state_before))
    return record


async def call_audited(
    services: Services,
    applying: Applying,
    *,
    before: dict,
    body: dict | None,
    diff: list[dict],
    call: Callable[[], Awaitable[ActionResponse]],
) -> tuple[ChangeRecord, ActionResponse | None]:
    """One cloud call that changes a cluster, between its two audit writes.

    A failure is answered in the thread (Code, Message, RequestId) and the root turns ❌; the response is
    None then. A process that dies inside leaves the record "pending" for the next start to reconcile.
    """
    target, thread = applying.target, applying.thread
    record = await services.store.record_pending(
        NewChange(
            user_id=applying.user_id,
            team_id=applying.team_id,
            channel_id=thread.channel_id,
            thread_ts=thread.thread_ts,
            root_ts=thread.root_ts,
            alias=target.alias,
            workspace=target.workspace,
            cluster_id=target.cluster_id,
            region=target.region,
            action=applying.action,
            summary=applying.summary,
            spec_before=redact_secrets(before),
            body=redact_secrets(body),
            diff=diff,
            undo_of=applying.undo_of,
            approval_id=applying.approval_id,
        )
    )
    fields = {"change_id": record.id, "cluster": target.alias, "user": applying.user_id, "action": applying.action}
    log.info("change requested", extra=fields)
    with services.metrics.change_in_flight():
        try:
            response = await call()
        except EmrError as error:
            record = await services.store.record_outcome(
                record.id, "failed", request_id=error.request_id, error_code=error.code, error_message=error.message
            )
            log.warning("change failed", extra=fields | {"request_id": error.request_id, "code": error.code})
            await _answer(
                thread, applying, blocks.change_failed(target.alias, error.code, error.message, error.request_id)
            )
            await _set_status(thread, applying, "failed")
            return record, None
        except BaseException as error:
            # Sent or not, nobody knows: "unknown" is what the next start reconciles and reports.
            await services.store.record_outcome(record.id, "unknown", error_message=type(error).__name__)
            if isinstance(error, Exception):
                await _answer(thread, applying, describe_error(error))
                await _set_status(thread, applying, "unknown")
            raise
    record = await services.store.record_outcome(record.id, "done", request_id=response.request_id)
    log.info("change applied", extra=fields | {"request_id": response.request_id})
    return record, response


async def follow(services: Services, applying: Applying, record: ChangeRecord, wanted: Wanted) -> None:
    """Hand the change to the follower: it reads the cluster until it settles and keeps the root status current."""
    thread = applying.thread
    now = services.clock()
    await services.store.start_follow(
        change_id=record.id,
        alias=applying.target.alias,
        channel_id=thread.channel_id,
        thread_ts=thread.thread_ts,
        root_ts=thread.root_ts,
        wanted=wanted.model_dump(mode="json"),
        deadline_at=now + services.follow_seconds,
        next_at=now,
    )
    try:
        await thread.set_status(
            *blocks.follow_status(applying.user_id, applying.target.alias, applying.summary, "", "applying")
        )
    except SlackApiError as error:
        log.error("could not update the status message of %s: %s", applying.target.alias, error.response.get("error"))
    services.wake_scheduler()


async def _set_status(thread: StatusThread, applying: Applying, status: str) -> None:
    try:
        await thread.set_status(*blocks.change_root(applying.user_id, applying.target.alias, applying.summary, status))
    except SlackApiError as error:
        log.error("could not update the status message of %s: %s", applying.target.alias, error.response.get("error"))


async def _answer(thread: StatusThread, applying: Applying, message: tuple[str, list]) -> None:
    """Reply in the thread; if Slack refuses, the requester still learns the outcome (ephemerally)."""
    try:
        await thread.reply(*message)
    except SlackApiError:
        if applying.replies is None:
            raise
        await applying.replies.ephemeral(*message)
        raise
