"""The flow of one change: claim, lock, read, plan, check, record, post, send, answer (bot/change_state.py).

Bad input (unknown group, a limit exceeded, nothing to change, a cluster someone else holds) is
found before anything is recorded or posted, and answered only to the person who asked; the
request's exactly-once key is then given back, so the same click may be tried again.

From the moment a change is recorded ("applying", under the cluster's lock) the store owns its
truth: the root status message is posted only after the record exists, the cloud call happens only
while the lock is still held (a fenced move to "sending"), and every outcome — applied, refused by
the cloud, or unknown and then checked by the reconciler (bot/scheduler.py) — is told in its thread.

Exactly once: every request that may change a cluster carries a deduplication key (the slash
command's trigger_id, the event id, the draft key, the confirmation's message), claimed in the
store before anything is read; a button on a change acts on the change's row by compare-and-set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from slack_sdk.errors import SlackApiError

from bot.change_state import TOOK_EFFECT, backoff
from bot.config import ClusterTarget, UnknownClusterError
from bot.cost import ChangeCost, change_text, recorded_change_cost
from bot.dispatch import CommandContext
from bot.emr.changes import ChangeError, DiffEntry, Plan
from bot.emr.errors import EmrError
from bot.emr.models import ActionResponse, ClusterFields, RayCluster
from bot.errors import ActionRefused, ClusterBusy, Denied, OutcomeNotRecorded
from bot.follow import Wanted, followed_groups, wanted_after_start, wanted_after_stop, wanted_after_update
from bot.permissions import Decision, Subject, approvers_here, check_change, check_lifecycle, replica_cap
from bot.replay import planner
from bot.services import Services
from bot.slack import blocks
from bot.slack.conversation import Replies, StatusThread
from bot.slack.words import change_record_in_words, diff_in_words
from bot.store import ChangeRecord, Fence, LockBusy, LockLost, NewChange, StoreError, StoreUnavailable

log = logging.getLogger("raybot.flow")

T = TypeVar("T")

# How long the outcome of a cloud call is retried when the database does not answer (a failover, cut
# connections) before it is left to the reconciler (bot.store.STALE_SENDING_SECONDS).
RECORD_RETRY_SECONDS = 10.0
# How often a change waiting for an earlier one to be decided looks again.
UNRESOLVED_RECHECK_SECONDS = 0.5
# After a cloud call's deadline, how long the service may still apply what it received: an unknown outcome is
# decided "did not take effect" only after this.
CHECK_GRACE_SECONDS = 5.0
# The longest a change waits for an earlier change's verdict before it is told the cluster is busy.
UNRESOLVED_WAIT_MAX_SECONDS = 30.0
# A root message re-rendered this many times at most in one go when its row keeps moving meanwhile.
CARD_RENDERS_MAX = 3
# The first retry of a root message Slack refused to update (then backing off, bot.change_state.backoff).
CARD_RETRY_SECONDS = 5.0
# What a start or stop needs the cluster to be in.
NEEDED_STATE = {"start": "Stopped", "stop": "Running"}
LIFECYCLE = frozenset(NEEDED_STATE)


@dataclass(frozen=True)
class ChangeRequest:
    """A change asked for by a person: what to do to which cluster (`replay`, see bot.replay)."""

    alias: str
    action: str  # the permission action: resize, autoscale, edit, undo, start, stop
    summary: str
    replay: dict[str, Any]
    dedup_key: str | None = None
    undo_of: int | None = None
    duration_seconds: int | None = None  # a temporary resize: reverted by itself after this long
    # Checked under the cluster's lock before the read (e.g. "already undone"); raises to refuse.
    precheck: Callable[[], Awaitable[None]] | None = None
    # Checked on the cluster as read, before planning (e.g. a modal's draft gone stale); raises to refuse.
    check_read: Callable[[RayCluster], None] | None = None
    # Told to the person when `dedup_key` was claimed already and the duplicate is theirs (a button clicked again),
    # not a redelivery whose first delivery was answered: said, never silence.
    duplicate_note: str | None = None


# What became of a request: applied, failed, unknown (being checked), waiting for approval, nothing to do,
# a duplicate delivery, or stopped before anything was sent.
Outcome = Literal["done", "failed", "unknown", "awaiting_approval", "unchanged", "duplicate", "cancelled"]


def cluster_key(target: ClusterTarget) -> str:
    return f"{target.region}/{target.workspace}/{target.cluster_id}"


def target_of(record: ChangeRecord) -> ClusterTarget:
    """The cluster a recorded change was made on (not whatever its alias points at now)."""
    return ClusterTarget(
        alias=record.alias, workspace=record.workspace, cluster_id=record.cluster_id, region=record.region
    )


async def acting_target_of(services: Services, record: ChangeRecord) -> ClusterTarget:
    """`target_of(record)`, its cloud calls made for the change's requester through the RAM role of the binding
    that granted the change in its channel (or the cluster's): approvals, reverts, follows and checks all act
    on behalf of whoever asked for the change. An automatic revert (recorded as raybot's) acts for the person
    whose temporary change it reverts."""
    asked = record
    if record.action == "revert" and record.undo_of is not None:
        asked = await services.store.get_change(record.undo_of) or record
    return await services.acting_target(target_of(record), asked.user_id, asked.channel_id, asked.action)


def lifecycle_replay(verb: str) -> dict[str, Any]:
    return {"kind": "lifecycle", "verb": verb}


@dataclass(frozen=True)
class Prepared:
    """A change planned against a fresh read, ready to record and send.

    `body` is the complete UpdateRayCluster body (unmasked: it is only ever held in memory and sent);
    `send` makes the cloud call for the recorded change.
    """

    before: dict[str, Any]
    body: dict[str, Any] | None
    diff: list[dict[str, Any]]
    wanted: Wanted
    send: Callable[[ChangeRecord], Awaitable[ActionResponse]]
    plan: Plan | None = None


def client_token(record: ChangeRecord) -> str:
    """StartRayCluster's idempotency token: the same for every attempt of the call that sends a recorded change.

    Not the change id alone: ids start at 1 in every database, and another raybot (or this one after its database
    was recreated) starting with the same access key would send the same token, which the cloud takes as a repeat
    and does nothing. The run that sends it (`run_id`, random per process) makes it unique; a change is sent by one
    run only (after a restart the reconciler reads the cluster, it never sends again).
    """
    key = f"raybot:change:{record.id}:{record.run_id}:{record.workspace}/{record.cluster_id}"
    return uuid.uuid5(uuid.NAMESPACE_URL, key).hex


async def prepare(
    services: Services, target: ClusterTarget, action: str, replay: dict[str, Any], cluster: RayCluster
) -> Prepared | None:
    """Plan `replay` against `cluster` as read: None when there is nothing to change.

    A start or stop needs the cluster Stopped or Running (ActionRefused otherwise); any other change is
    planned by read-modify-write (bot.replay, bot.emr.changes), sending the complete spec.
    """
    emr = services.emr
    before = cluster.editable()
    if replay.get("kind") == "lifecycle":
        verb = replay["verb"]
        if cluster.state != NEEDED_STATE[verb]:
            raise ActionRefused(blocks.wrong_state_reason(target.alias, cluster.state, NEEDED_STATE[verb], verb))
        if verb == "start":

            async def start(record: ChangeRecord) -> ActionResponse:
                return await emr.start_cluster(
                    target.workspace,
                    target.cluster_id,
                    client_token=client_token(record),
                    region=target.region,
                    acting=target.acting,
                )

            return Prepared(before, None, [], wanted_after_start(cluster), start)

        async def stop(_: ChangeRecord) -> ActionResponse:
            return await emr.stop_cluster(
                target.workspace, target.cluster_id, region=target.region, acting=target.acting
            )

        return Prepared(before, None, [], wanted_after_stop(), stop)
    return planned(services, target, cluster, (await planner(services.store, replay))(cluster))


def planned(services: Services, target: ClusterTarget, cluster: RayCluster, result: Plan) -> Prepared | None:
    """A read-modify-write plan as a Prepared UpdateRayCluster; None when it changes nothing.

    The plan never holds a mask (bot.emr.changes.plan takes it from the fresh read, or refuses).
    """
    if not result.changed or result.body is None:
        return None
    body = result.body
    emr = services.emr

    async def update(_: ChangeRecord) -> ActionResponse:
        return await emr.update_cluster(
            target.workspace, target.cluster_id, body, region=target.region, acting=target.acting
        )

    wire = body.wire()
    return Prepared(
        cluster.editable(),
        wire,
        [d.model_dump(mode="json") for d in result.diff],
        followed_groups(wanted_after_update(wire, state_before=cluster.state), result.diff),
        update,
        result,
    )


def decide(services: Services, subject: Subject, action: str, alias: str, prepared: Prepared) -> Decision:
    """The policy's word on a planned change (limits, approval); Denied when it says no."""
    before = ClusterFields.model_validate(prepared.before)
    if action in LIFECYCLE:
        decision = check_lifecycle(services.config, subject, action, alias, before)  # type: ignore[arg-type]
    else:
        assert prepared.plan is not None and prepared.plan.body is not None
        decision = check_change(services.config, subject, action, alias, before, prepared.plan.body)
    if not decision.allowed:
        services.metrics.denial(decision.kind)  # type: ignore[arg-type]
        raise Denied(decision.reason)
    return decision


async def run_change(ctx: CommandContext, request: ChangeRequest) -> Outcome:
    """Apply `request` by read-modify-write under the cluster's lock, answering in a thread of the channel."""
    services, subject = ctx.services, ctx.subject
    target = services.cluster(subject, request.alias, request.action)
    services.require(subject, request.action, request.alias)
    if request.dedup_key is not None and not await services.store.claim(request.dedup_key):
        log.info("duplicate delivery ignored", extra={"key": request.dedup_key, "cluster": request.alias})
        if request.duplicate_note is not None:
            await ctx.replies.ephemeral(*blocks.refused(request.duplicate_note))
        return "duplicate"
    recorded = False
    try:
        async with hold(services, target, subject.user_id, request.summary) as fence:
            if request.precheck is not None:
                await request.precheck()
            cluster = await services.emr.get_cluster(
                target.workspace, target.cluster_id, region=target.region, acting=target.acting
            )
            if request.check_read is not None:
                request.check_read(cluster)
            try:
                prepared = await prepare(services, target, request.action, request.replay, cluster)
            except ChangeError as error:
                # Advice to raise a max is no help when the asker's role would refuse that max.
                before = ClusterFields.model_validate(cluster.editable())
                raise error.within_cap(
                    lambda group: replica_cap(services.config, subject, request.action, request.alias, before, group)
                ) from None
            if prepared is None:
                await ctx.replies.ephemeral(*blocks.nothing_to_change(request.alias, request.summary))
                return "unchanged"
            decision = decide(services, subject, request.action, request.alias, prepared)
            new = NewChange(
                user_id=subject.user_id,
                team_id=ctx.invocation.team_id,
                channel_id=ctx.invocation.channel_id,
                thread_ts=ctx.invocation.thread_ts,
                alias=target.alias,
                workspace=target.workspace,
                cluster_id=target.cluster_id,
                region=target.region,
                action=request.action,
                summary=request.summary,
                spec_before=prepared.before,
                body=prepared.body,
                diff=prepared.diff,
                replay=request.replay,
                undo_of=request.undo_of,
                duration_seconds=request.duration_seconds,
            )
            if decision.approval is not None:
                recorded = True
                await request_approval(ctx, new, decision)
                return "awaiting_approval"
            record = await services.store.create_change(new, state="applying", fence=fence)
            recorded = True
            thread = await open_root(services, record, ctx.replies)
            final = await send(services, record, thread, ctx.replies, fence, prepared)
    except BaseException:
        if not recorded and request.dedup_key is not None:
            # Nothing was recorded or sent: the same request may be made again (a second click after "busy").
            await services.store.release_claim(request.dedup_key)
        raise
    return _outcome(final)


def _outcome(record: ChangeRecord) -> Outcome:
    if record.state == "cancelled":
        return "cancelled"
    return record.outcome  # type: ignore[return-value]


@asynccontextmanager
async def hold(services: Services, target: ClusterTarget, user_id: str, summary: str) -> AsyncIterator[Fence]:
    """The cluster's lock, waited for a few seconds; ClusterBusy says who holds it when that is not enough.

    The cluster is not free while an earlier change to it may still land — its call in flight in a process
    that died, or its outcome unknown — until the reconciler has decided it: a change sent meanwhile could be
    overwritten by the late call, and would make the earlier one look as if it had not taken effect. So the
    lock is taken, and given back to wait, until no such change is left.

    The store's heartbeat renews it while it is held; writes fenced by it stop if it was lost anyway.
    """
    store = services.store
    loop = asyncio.get_running_loop()
    deadline = loop.time() + services.lock_wait_seconds
    while True:
        try:
            fence = await store.acquire_lock(
                cluster_key(target), user_id=user_id, summary=summary, wait=max(0.0, deadline - loop.time())
            )
        except LockBusy as busy:
            holder = busy.holder
            raise ClusterBusy(target.alias, holder.user_id, holder.summary, holder.acquired_at) from None
        try:
            pending = await store.unresolved(target.workspace, target.cluster_id, target.region)
        except BaseException:
            await store.release_lock(fence)
            raise
        if pending is None:
            break
        await store.release_lock(fence)
        if pending.call_deadline_at is not None:
            # Its verdict comes once its call's deadline and the grace have passed: worth waiting for (bounded),
            # rather than turning the person away while the answer is seconds off.
            decided_in = pending.call_deadline_at + CHECK_GRACE_SECONDS + 1.0 - services.clock()
            deadline = max(deadline, loop.time() + min(decided_in, UNRESOLVED_WAIT_MAX_SECONDS))
        left = deadline - loop.time()
        if left <= 0:
            raise ClusterBusy(target.alias, pending.user_id, pending.summary, pending.created_at)
        await asyncio.sleep(min(left, UNRESOLVED_RECHECK_SECONDS))
    try:
        yield fence
    finally:
        try:
            await store.release_lock(fence)
        except StoreError as error:
            # What the body did is told already; the lock is no longer renewed and runs out after its TTL.
            log.warning("could not release the lock of %s: %s", target.alias, error)


async def request_approval(ctx: CommandContext, new: NewChange, decision: Decision) -> None:
    """Record the change as awaiting approval and post its root message with Approve / Reject; nothing is sent."""
    services = ctx.services
    expires_at = services.clock() + decision.approval_minutes * 60
    record = await services.store.create_change(
        new.model_copy(update={"expires_at": expires_at, "approval_reason": decision.approval}),
        state="awaiting_approval",
    )
    try:
        thread = await ctx.replies.open_thread(*card(services, record), broadcast=await broadcasts(services, record))
    except BaseException:
        await services.store.move(record.id, "void", from_="awaiting_approval", error_message="request not posted")
        raise
    await services.store.set_thread(record.id, root_ts=thread.root_ts, thread_ts=thread.thread_ts)
    services.wake_scheduler()  # its expiry is due from now on
    diff = _diff_entries(record)
    if len(diff_in_words(diff)) > 1:
        try:
            await thread.reply(*blocks.approval_detail(diff))
        except SlackApiError as error:  # the root message still says what is asked, shortened
            log.error("could not post the detail of approval request #%s: %s", record.id, error.response.get("error"))
    log.info("approval requested", extra={"cluster": new.alias, "user": new.user_id, "change_id": record.id})


def thread_of(services: Services, record: ChangeRecord) -> StatusThread | None:
    """The status message and thread of a recorded change; None when its root was never posted."""
    if record.root_ts is None:
        return None
    return StatusThread(services.slack, record.channel_id, record.root_ts, record.thread_ts or record.root_ts)


async def broadcasts(services: Services, record: ChangeRecord) -> bool:
    """Whether a change's root message, posted in a thread, is also shown in the channel (reply_broadcast).

    A change asked for in a thread that is not raybot's (an alert's, a person's mention) would otherwise show
    nothing in the channel; in the thread of one of raybot's own changes (an Undo, a revert) the parent's root
    message already says what happened at root level.
    """
    if record.thread_ts is None:
        return False
    return not await services.store.is_change_root(record.channel_id, record.thread_ts)


async def open_root(services: Services, record: ChangeRecord, replies: Replies | None) -> StatusThread:
    """Post the root status message of a recorded change and remember it on the record.

    If Slack refuses, the change is cancelled (nothing was sent) and the error goes to the requester.
    """
    message = card(services, record)
    try:
        broadcast = await broadcasts(services, record)
        if replies is not None:
            thread = await replies.open_thread(*message, broadcast=broadcast)
        else:
            resp = await services.slack.chat_postMessage(
                channel=record.channel_id,
                thread_ts=record.thread_ts,
                reply_broadcast=broadcast or None,
                text=message[0],
                blocks=message[1],
            )
            thread = StatusThread(services.slack, record.channel_id, resp["ts"], record.thread_ts or resp["ts"])
        await services.store.set_thread(record.id, root_ts=thread.root_ts, thread_ts=thread.thread_ts)
    except BaseException:
        await services.store.move(
            record.id, "cancelled", from_="applying", error_message="the status message could not be posted"
        )
        raise
    return thread


async def send(
    services: Services,
    record: ChangeRecord,
    thread: StatusThread,
    replies: Replies | None,
    fence: Fence,
    prepared: Prepared,
) -> ChangeRecord:
    """Send a recorded change ("applying") while its lock is held, and tell its thread what became of it.

    The fenced move to "sending" is the last check that this process still holds the cluster: a lock
    lost meanwhile (a stall past its TTL) cancels the change with nothing sent. After the call the
    change is "applied" (then followed), "failed" (the cloud said no) or "unknown" (it may have been
    applied: the reconciler reads the cluster and tells the truth).
    """
    store = services.store
    fields = {"change_id": record.id, "cluster": record.alias, "user": record.user_id, "action": record.action}
    try:
        sending = await store.move(
            record.id,
            "sending",
            from_="applying",
            fence=fence,
            call_deadline_at=services.clock() + services.emr.deadline,
            wanted=prepared.wanted.model_dump(mode="json"),
        )
    except LockLost:
        cancelled = await store.move(
            record.id, "cancelled", from_="applying", error_message="the cluster's lock was lost before sending"
        )
        log.warning("change cancelled: lock lost before sending", extra=fields)
        await tell(thread, replies, blocks.change_cancelled(record.alias, record.id, "its lock on the cluster ran out"))
        await show_card(services, record.id)
        return cancelled or record
    except BaseException:
        await store.move(record.id, "cancelled", from_="applying", error_message="stopped before sending")
        raise
    assert sending is not None
    log.info("change requested", extra=fields)
    return await _call_and_tell(services, sending, thread, replies, prepared, fields)


async def _call_and_tell(
    services: Services,
    sending: ChangeRecord,
    thread: StatusThread,
    replies: Replies | None,
    prepared: Prepared,
    fields: dict[str, Any],
) -> ChangeRecord:
    """The cloud call of a change in "sending", the move its answer decides, and telling the thread."""
    store, record = services.store, sending
    with services.metrics.change_in_flight():
        try:
            response = await prepared.send(sending)
        except EmrError as error:
            if error.maybe_applied:
                return await became_unknown(services, sending, thread, replies, error.code, error)
            refused = {"request_id": error.request_id, "error_code": error.code, "error_message": error.message}
            failed = await recorded(record, lambda: store.move(record.id, "failed", from_="sending", **refused))
            log.warning("change failed", extra=fields | {"request_id": error.request_id, "code": error.code})
            failure = blocks.change_failed(
                record.alias,
                error.code,
                error.message,
                error.request_id,
                what=change_record_in_words(record),
                cluster_id=record.cluster_id,
                action=error.action,
                attempts=error.attempts,
            )
            await tell(thread, replies, failure)
            await show_card(services, record.id)
            return failed or sending
        except BaseException as error:
            # Cancelled by a drain, or a bug: sent or not, nobody knows. The reconciler finds out.
            await store.move(
                record.id, "unknown", from_="sending", next_at=services.clock(), error_message=type(error).__name__
            )
            services.wake_scheduler()
            raise
    log.info("change applied", extra=fields | {"request_id": response.request_id})
    # Told first, then moved: once "applied", the follower may answer at once, and its answer must come last.
    # A crash in between leaves "sending", which the reconciler checks and tells again, truthfully.
    await tell(
        thread,
        replies,
        blocks.change_succeeded(
            record.alias,
            response.cluster_id or record.cluster_id,
            response.request_id,
            _diff_entries(record),
            change_id=record.id,
            cost=cost_text(
                services, record.alias, record.action, record.spec_before, record.body, record.duration_seconds
            ),
        )
        if record.action not in LIFECYCLE
        else blocks.lifecycle_accepted(
            record.alias, record.action, response.cluster_id or record.cluster_id, response.request_id
        ),
    )
    applied = await recorded(
        record, lambda: took_effect(services, sending, from_="sending", request_id=response.request_id)
    )
    services.wake_scheduler()
    await show_took_effect(services, record)
    if applied is None:
        current = await store.get_change(record.id)
        ours = response.request_id is not None and current is not None and current.request_id == response.request_id
        if not ours or current is None or current.state not in TOOK_EFFECT:
            return current or sending  # the reconciler decided it, and told the thread
        applied = current  # an earlier try was written, though its connection was cut before the answer
    return applied


def change_cost_of(
    services: Services, alias: str, action: str, spec_before: dict[str, Any] | None, body: dict[str, Any] | None
) -> ChangeCost | None:
    """What a change does to its cluster's cost per hour, at the prices the config gives it now (None: unknown)."""
    try:
        price = services.config.price(alias)
    except UnknownClusterError:  # an alias since removed from the config: CU only
        price = None
    return recorded_change_cost(action, spec_before, body, price)


def cost_text(
    services: Services,
    alias: str,
    action: str,
    spec_before: dict[str, Any] | None,
    body: dict[str, Any] | None,
    duration_seconds: int | None = None,
) -> str | None:
    """The cost line of a change for a message (bot.cost.change_text), None when there is nothing to tell."""
    cost = change_cost_of(services, alias, action, spec_before, body)
    if cost is None or cost.neutral:
        return None
    return change_text(cost, duration_seconds=duration_seconds)


async def took_effect(
    services: Services, record: ChangeRecord, *, from_: str, request_id: str | None = None
) -> ChangeRecord | None:
    """Move a change to "applied" and start following it (its temporary revert is scheduled with it).

    What it added to the cluster's cost per hour is counted in the metrics once, by the caller whose move it was.
    """
    now = services.clock()
    applied = await services.store.move(
        record.id,
        "applied",
        from_=from_,
        request_id=request_id or record.request_id,
        next_at=now,
        attempts=0,
        follow_started_at=now,
        follow_deadline_at=now + services.follow_seconds,
    )
    if applied is not None:
        cost = change_cost_of(services, record.alias, record.action, record.spec_before, record.body)
        if cost is not None:
            services.metrics.cost_added(record.alias, cost.now)
    return applied


async def became_unknown(
    services: Services,
    record: ChangeRecord,
    thread: StatusThread | None,
    replies: Replies | None,
    reason: str,
    error: EmrError | None = None,
) -> ChangeRecord:
    """The change may have been applied: say so, record "unknown", and have the reconciler check at once.

    Told before the move, so the reconciler's verdict comes after "checking"; a crash in between leaves
    the change "sending", and the next pass says it again.
    """
    log.warning("change outcome unknown", extra={"change_id": record.id, "cluster": record.alias, "code": reason})
    if thread is not None:
        await tell(
            thread,
            replies,
            blocks.outcome_checking(
                record.alias, record.id, change_record_in_words(record), reason, error.request_id if error else None
            ),
        )
    unknown = await recorded(
        record,
        lambda: services.store.move(
            record.id,
            "unknown",
            from_="sending",
            next_at=services.clock(),
            attempts=0,
            request_id=error.request_id if error else None,
            error_code=error.code if error else None,
            error_message=error.message if error else reason,
        ),
    )
    services.wake_scheduler()
    await show_card(services, record.id)
    return unknown or await services.store.get_change(record.id) or record


async def recorded(record: ChangeRecord, write: Callable[[], Awaitable[T]]) -> T:
    """Write what became of a change whose cloud call has ended: raybot knows the truth now and the database
    may be back in a moment, so a write it refuses is tried again for up to RECORD_RETRY_SECONDS. Then
    OutcomeNotRecorded: the change stays "sending", and the reconciler reads the cluster and tells its thread."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECORD_RETRY_SECONDS
    pause = 0.1
    while True:
        try:
            return await write()
        except StoreUnavailable as error:
            if loop.time() + pause > deadline:
                log.error("the outcome of change #%s could not be recorded: %s", record.id, error)
                raise OutcomeNotRecorded(record.alias, record.id, record.summary) from None
            log.warning("recording the outcome of change #%s again: %s", record.id, error)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)


def _diff_entries(record: ChangeRecord) -> list[DiffEntry]:
    return [DiffEntry.model_validate(d) for d in record.diff]


# States in which a change's cost is a fact or about to be one; a change that failed, was refused or never sent
# costs nothing, and an undone one costs nothing any more.
COSTED_STATES = frozenset({"awaiting_approval", "applying", "sending", "unknown", "applied", "settled", "not_settled"})


def card(services: Services, record: ChangeRecord) -> blocks.SlackMessage:
    """The root status message of a change as its row says now, with what it costs per hour (blocks.change_card).

    The total for a temporary change's duration is told only while its revert is still to come: once kept, the
    change is permanent and its cost per hour is what matters.
    """
    cost = None
    if record.state in COSTED_STATES and record.undone_by_change is None:
        temporary = record.duration_seconds is not None and record.revert_state in (None, "scheduled", "running")
        duration = record.duration_seconds if temporary else None
        cost = cost_text(services, record.alias, record.action, record.spec_before, record.body, duration)
    approvers = None
    if record.state == "awaiting_approval":
        approvers = approvers_here(services.config, record.channel_id, record.alias, record.user_id)
    return blocks.change_card(record, cost, approvers)


async def show_card(services: Services, change_id: int) -> None:
    """Render a change's root message from its row as it is now (blocks.change_card) — level-triggered.

    Whoever moves a row that changes what its root says calls this afterwards. It reads the row again after
    updating and renders once more if the row moved meanwhile, so of two renders racing, the later never leaves
    an older state standing. Every move marks the row (`card_due_at`, bot.store) and only a confirmed render
    clears the mark; if Slack refuses, or the process dies before rendering, the reconciler renders the root
    from the row later (bot.scheduler.refresh_cards): the root never keeps telling a state the row has left.
    """
    store = services.store
    shown: blocks.SlackMessage | None = None
    for _ in range(CARD_RENDERS_MAX):
        try:
            record = await store.get_change(change_id)
        except StoreError as error:
            log.warning("could not read change #%s to update its status message: %s", change_id, error)
            return
        if record is None or record.root_ts is None:
            return
        message = card(services, record)
        if message == shown:
            # The row as it is now is what the root shows: its mark (the move's, bot.store) is done with.
            if record.card_due_at is not None:
                with contextlib.suppress(StoreError):
                    await store.card_shown(change_id, due_at=record.card_due_at)
            return
        try:
            await services.slack.chat_update(
                channel=record.channel_id, ts=record.root_ts, text=message.text, blocks=message.blocks
            )
        except Exception as error:  # noqa: BLE001 - Slack refused, or never answered: the row stays the truth
            retry_at = services.clock() + backoff(record.card_attempts + 1, first=CARD_RETRY_SECONDS, cap=300.0)
            why = error.response.get("error") if isinstance(error, SlackApiError) else type(error).__name__
            log.error("could not update the status message of change #%s: %s", change_id, why)
            with contextlib.suppress(StoreError):
                await store.card_failed(change_id, retry_at=retry_at)
                services.wake_scheduler()
            return
        shown = message
    # Still moving after CARD_RENDERS_MAX renders: its mark stays, and the reconciler renders it once more.


async def show_took_effect(services: Services, record: ChangeRecord) -> None:
    """The root messages to render once `record` took effect: its own, and that of the change it put back."""
    await show_card(services, record.id)
    if record.undo_of is not None and record.action in ("undo", "revert"):
        await show_card(services, record.undo_of)


async def tell(thread: StatusThread, replies: Replies | None, message: tuple[str, list]) -> None:
    """Reply in the thread; if Slack refuses, the requester still learns the outcome (ephemerally).

    The outcome is already recorded: a refused reply is logged, never turned into a second outcome.
    """
    try:
        await thread.reply(*message)
    except SlackApiError as error:
        log.error("could not answer in the thread of %s: %s", thread.channel_id, error.response.get("error"))
        if replies is not None:
            try:
                await replies.ephemeral(*message)
            except Exception as again:  # noqa: BLE001 - the outcome is recorded; nobody else to tell
                log.error("could not tell the requester either: %s", type(again).__name__)
