"""Work raybot does on its own, as one level-triggered reconcile of wanted against observed state.

Each pass asks the store what is due (`due_changes`, `due_reverts`) and moves each change one step
towards the truth, by compare-and-set, so a pass that runs twice (or on two replicas) moves nothing
twice and tells each thread once:

- a change in flight whose process is gone: "applying" → cancelled (nothing was sent), "sending" →
  unknown (it may have been sent);
- an unknown outcome: read the cluster; it holds the change → applied (Undo offered, a temporary
  revert scheduled); it does not, and the dead call's deadline and a grace have passed → failed
  ("did not take effect"); else look again shortly;
- an applied change: follow it until it settles (bot/follow.py);
- an approval request past its expiry: closed as expired;
- a temporary change whose time is up: reverted, as a change of its own in the same thread.

Failures of background work back off (bounded, exponential), are recorded on the change, are told
once in its thread, and never make the loop spin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from slack_sdk.errors import SlackApiError

from bot.approvals import expire
from bot.change_state import TOOK_EFFECT, backoff
from bot.emr.changes import RevertConflict, holds_change, revert_plan
from bot.emr.errors import EmrError
from bot.emr.models import RayCluster
from bot.errors import ClusterBusy
from bot.flow import (
    CHECK_GRACE_SECONDS,
    acting_target_of,
    became_unknown,
    cost_text,
    hold,
    open_root,
    planned,
    send,
    show_card,
    show_took_effect,
    tell,
    thread_of,
    took_effect,
)
from bot.follow import Progress, Wanted, next_step, progress
from bot.services import Services
from bot.slack import blocks
from bot.slack.words import change_record_in_words
from bot.store import STALE_SENDING_SECONDS, ChangeRecord, NewChange, StoreError, superseded_reason

log = logging.getLogger("raybot.scheduler")

# Even with nothing due, look again this often (and at least once a lock TTL): another replica may have
# scheduled something, or died.
IDLE_POLL_SECONDS = 60.0
# How often an unknown outcome is read again while the call may still land.
CHECK_INTERVAL_SECONDS = 2.0
# The least pause between passes after a pass that failed: a broken store or bug never spins the loop.
FAILED_PASS_PAUSE_SECONDS = 1.0
# The least pause when what is due is being handled by another replica (leased to it): look again this soon.
LEASED_ELSEWHERE_PAUSE_SECONDS = 1.0
REVERT_MAX_ATTEMPTS = 8  # then the automatic revert gives up, and says so
CARD_MAX_ATTEMPTS = 8  # a root message Slack refused this many times is left as it is (and logged)
BUSY_RETRY_SECONDS = 15.0
# How long a replica holds a due change it is working on before another may take it over.
LEASE_SECONDS = 60.0  # a revert that finds the cluster locked by a person's change looks again this soon


async def run_scheduler(services: Services, stop: asyncio.Event) -> None:
    """Reconcile until `stop`: each pass handles what is due, then sleeps until the next thing is."""
    while not stop.is_set():
        failures, taken = await reconcile(services)
        try:
            due = await services.store.next_due_at()
        except StoreError as error:
            log.warning("cannot read what is due next: %s", error)
            due, failures = None, failures + 1
        # Another replica's work may become due at any time (it scheduled a revert, or it died with a change in
        # flight, whose lock and lease then run out after the lock's TTL): look at least once a TTL.
        idle = min(IDLE_POLL_SECONDS, services.store.lock_ttl)
        delay = idle if due is None else min(idle, max(0.0, due - services.clock()))
        if failures:
            delay = max(delay, FAILED_PASS_PAUSE_SECONDS)
        elif not taken and delay <= 0:
            # Due now, yet nothing could be taken: another replica holds its lease and is working on it.
            delay = LEASED_ELSEWHERE_PAUSE_SECONDS
        services.metrics.scheduler_pass(failures)
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(services.scheduler_woken())]
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting


async def reconcile(services: Services) -> tuple[int, int]:
    """One pass over everything due now, leased to this run; returns how many items failed (each deferred) and
    how many were taken."""
    failures = 0
    now = services.clock()
    try:
        due = await services.store.claim_due(now, lease=LEASE_SECONDS)
    except StoreError as error:
        log.warning("cannot read due work: %s", error)
        return 1, 0
    for record, change_is_due, revert_is_due in due:
        if change_is_due:
            try:
                await reconcile_change(services, record)
            except Exception as error:  # noqa: BLE001 - one bad change must not stop the others
                failures += 1
                log.error("reconciling change #%s failed: %s", record.id, _why(error))
                await _defer(services, record)
        if revert_is_due:
            try:
                await revert_due(services, record)
            except Exception as error:  # noqa: BLE001
                failures += 1
                log.error("the automatic revert of change #%s failed: %s", record.id, _why(error))
                with contextlib.suppress(Exception):
                    await revert_failed(services, record, _why(error))
    failures += await refresh_cards(services, now)
    return failures, len(due)


async def refresh_cards(services: Services, now: float) -> int:
    """Render again the root messages whose mark is due (a move not rendered since: Slack refused, or the process
    died first; bot.flow.show_card); returns how many failures. One that Slack keeps refusing is given up after
    CARD_MAX_ATTEMPTS, and logged."""
    try:
        due = await services.store.cards_due(now)
    except StoreError as error:
        log.warning("cannot read the status messages to render again: %s", error)
        return 1
    failures = 0
    for record in due:
        if record.card_attempts >= CARD_MAX_ATTEMPTS:
            log.error("gave up updating the status message of change #%s", record.id)
            with contextlib.suppress(StoreError):
                await services.store.card_given_up(record.id)
            continue
        try:
            await show_card(services, record.id)
        except Exception as error:  # noqa: BLE001 - one root message must not stop the loop
            failures += 1
            log.error("rendering the status message of change #%s failed: %s", record.id, _why(error))
    return failures


def _why(error: BaseException) -> str:
    if isinstance(error, EmrError):
        return f"{error.code}: {error.message}"
    if isinstance(error, SlackApiError):
        return f"Slack refused ({error.response.get('error')})"
    return str(error) or type(error).__name__


async def _defer(services: Services, record: ChangeRecord) -> None:
    """Look at a change again later, after a failure: bounded exponential backoff, counted on the change."""
    if record.state not in ("unknown", "applied", "awaiting_approval"):
        return
    attempts = record.attempts + 1
    with contextlib.suppress(StoreError):
        await services.store.touch(
            record.id, state=record.state, attempts=attempts, next_at=services.clock() + backoff(attempts, first=5.0)
        )


async def reconcile_change(services: Services, record: ChangeRecord) -> None:
    """Move one due change a step towards the truth."""
    state = record.state
    if state == "applying":
        # Its process died after recording it and before sending: nothing reached the cloud.
        cancelled = await services.store.move(
            record.id, "cancelled", from_="applying", error_message="raybot stopped before sending it"
        )
        if cancelled is None:
            return
        thread = thread_of(services, record)
        if thread is not None:
            await tell(
                thread, None, blocks.change_cancelled(record.alias, record.id, "raybot stopped before sending it")
            )
            await show_card(services, record.id)
        else:
            # It may have died between Slack posting its status message and recording where: that message
            # cannot be found again (raybot cannot read the channel), so the truth is posted beside it.
            unposted = blocks.change_cancelled_unposted(
                record.user_id, record.alias, record.id, change_record_in_words(record)
            )
            await _post_quietly(services, record, unposted)
    elif state == "sending":
        deadline = record.call_deadline_at
        stale = deadline is not None and deadline <= services.clock() - STALE_SENDING_SECONDS
        # Its process died during the call, or (still "sending" long after the call's deadline) it could not
        # record what the cloud answered.
        reason = (
            "raybot could not record what the cloud answered"
            if stale
            else "raybot stopped while the cloud call was in flight"
        )
        await became_unknown(services, record, thread_of(services, record), None, reason)
    elif state == "awaiting_approval":
        if record.root_ts is None:
            await services.store.move(
                record.id, "void", from_="awaiting_approval", next_at=None, error_message="request never posted"
            )
        else:
            await expire(services, record)
    elif state == "unknown":
        await check_unknown(services, record)
    elif state == "applied":
        await look(services, record)


def holds(record: ChangeRecord, cluster: RayCluster) -> bool:
    """Does the cluster as read show that the change took effect?"""
    state = (cluster.state or "").casefold()
    if record.action == "start":
        return state not in ("stopped", "")
    if record.action == "stop":
        return state not in ("running", "")
    if record.spec_before is None or record.body is None:
        return False
    return holds_change(cluster, record.spec_before, record.body)


async def check_unknown(services: Services, record: ChangeRecord) -> None:
    """Read the cluster and decide an unknown outcome, or look again while the call may still land."""
    store, now = services.store, services.clock()
    target = await acting_target_of(services, record)
    call_deadline = record.call_deadline_at or (record.updated_at + services.emr.deadline)
    decide_at = call_deadline + CHECK_GRACE_SECONDS
    try:
        cluster = await services.emr.get_cluster(
            target.workspace, target.cluster_id, region=target.region, acting=target.acting
        )
    except EmrError as error:
        attempts = record.attempts + 1
        log.info("checking change #%s: read failed (%s)", record.id, error.code)
        await store.touch(
            record.id,
            state="unknown",
            attempts=attempts,
            next_at=now + backoff(attempts, first=CHECK_INTERVAL_SECONDS, cap=300.0),
        )
        return
    thread = thread_of(services, record)
    if holds(record, cluster):
        log.info("change took effect", extra={"change_id": record.id, "cluster": record.alias})
        # Told first, then moved (as in bot.flow): the follower's answers come after this one.
        if thread is not None:
            await tell(
                thread,
                None,
                blocks.outcome_known(
                    record.alias,
                    record.id,
                    change_record_in_words(record),
                    True,
                    undo=record.action not in ("start", "stop"),
                    cost=cost_text(
                        services, record.alias, record.action, record.spec_before, record.body, record.duration_seconds
                    ),
                ),
            )
        if await took_effect(services, record, from_="unknown") is not None:
            await show_took_effect(services, record)
        services.wake_scheduler()
    elif now >= decide_at:
        # Its reason is the verdict now, not the transport error that made it unknown (a timeout is not a failure).
        failed = await store.move(
            record.id, "failed", from_="unknown", next_at=None, error_code=None, error_message="it did not take effect"
        )
        if failed is None:
            return
        log.info("change did not take effect", extra={"change_id": record.id, "cluster": record.alias})
        if thread is not None:
            await tell(
                thread,
                None,
                blocks.outcome_known(
                    record.alias, record.id, change_record_in_words(record), False, request_id=record.request_id
                ),
            )
        await show_card(services, record.id)
    else:
        await store.touch(record.id, state="unknown", next_at=min(decide_at, now + CHECK_INTERVAL_SECONDS))


# How many of a cluster's latest changes are looked through for one that supersedes a change being followed.
SUPERSEDED_LOOKBACK = 20


async def superseded_by(services: Services, record: ChangeRecord, wanted: Wanted) -> ChangeRecord | None:
    """A later change to the same cluster that took effect and asks something else of what `record` waits for:
    the same worker groups, or the cluster's state (a stop, a start). None when there is none."""
    for later in await services.store.history(record.alias, SUPERSEDED_LOOKBACK):
        if later.id <= record.id or later.cluster_id != record.cluster_id or later.state not in TOOK_EFFECT:
            continue
        if later.wanted is None:
            continue
        theirs = Wanted.model_validate(later.wanted)
        if theirs.state != wanted.state or set(theirs.groups) & set(wanted.groups):
            return later
    return None


async def look(services: Services, record: ChangeRecord) -> None:
    """One look at an applied change: update its status message, or answer its thread once when it settles."""
    store = services.store
    thread = thread_of(services, record)
    if record.wanted is None or record.follow_deadline_at is None:
        if await store.move(record.id, "settled", from_="applied", next_at=None) is not None:
            await show_card(services, record.id)
        return
    if record.undone_by_change is not None:
        # Undone (or reverted) before it settled: what it wanted is wanted no more, and the undo is followed on its
        # own. Ended here without a word in the thread: an autoscaling group inside the old bounds would otherwise
        # read as "settled" at a count nobody wants now. The card says undone.
        if await store.move(record.id, "not_settled", from_="applied", next_at=None) is not None:
            await show_card(services, record.id)
        return
    wanted = Wanted.model_validate(record.wanted)
    later = await superseded_by(services, record, wanted)
    if later is not None:
        # A later change to the same groups took effect: this one's counts are wanted no more, and waiting for them
        # would show ⏳ until the follow times out. That change is followed on its own.
        superseded = superseded_reason(later.id)
        if (
            await store.move(record.id, "not_settled", from_="applied", next_at=None, error_message=superseded)
            is not None
        ):
            if thread is not None:
                await tell(thread, None, blocks.change_superseded(record.alias, record.id, later.id, later.user_id))
            await show_card(services, record.id)
        return
    target = await acting_target_of(services, record)
    try:
        cluster = await services.emr.get_cluster(
            target.workspace, target.cluster_id, region=target.region, acting=target.acting
        )
        seen: Progress | None = progress(cluster, wanted)
    except EmrError as error:
        log.info("following change #%s: read failed (%s)", record.id, error.code)
        seen = None
    step = next_step(
        seen, now=services.clock(), deadline_at=record.follow_deadline_at, attempt=record.attempts, draw=random.random()
    )
    summary = seen.summary() if seen is not None else None
    if step.outcome == "again":
        await store.touch(
            record.id,
            state="applied",
            next_at=step.next_at or services.clock(),
            attempts=step.attempt,
            last_summary=summary or record.last_summary,
        )
        if summary is not None and summary != record.last_summary:
            await show_card(services, record.id)
        return
    to = {"done": "settled", "failed": "broken"}.get(step.outcome, "not_settled")
    finished = await store.move(record.id, to, from_="applied", next_at=None, last_summary=summary)
    if finished is None:
        return  # another replica answered it
    if step.outcome == "done" and seen is not None:
        answer = blocks.follow_done(record.alias, record.cluster_id, seen)
    elif step.outcome == "failed":
        answer = blocks.follow_failed(record.alias, seen.message if seen else None, record.request_id)
    else:
        minutes = (record.follow_deadline_at - (record.follow_started_at or record.follow_deadline_at)) / 60
        answer = blocks.follow_timeout(record.alias, minutes, seen)
    log.info("change #%s settled: %s", record.id, to, extra={"change_id": record.id, "cluster": record.alias})
    if thread is not None:
        await tell(thread, None, answer)
    await show_card(services, record.id)


async def _post_quietly(services: Services, record: ChangeRecord, message: tuple[str, list]) -> None:
    """A message in the change's channel (and the thread it was asked in); a refusal is logged."""
    try:
        await services.slack.chat_postMessage(
            channel=record.channel_id, thread_ts=record.thread_ts, text=message[0], blocks=message[1]
        )
    except SlackApiError as error:
        log.error("could not tell %s about change #%s: %s", record.channel_id, record.id, error.response.get("error"))


class RevertNotApplied(Exception):
    """The revert was recorded and sent, and the cloud refused it (or it was cancelled)."""


async def revert_due(services: Services, record: ChangeRecord) -> None:
    """Revert a temporary change whose time is up, as a change of its own in the same thread.

    Claimed under the cluster's lock by moving its revert "scheduled" → "running", so "Keep it" and an
    Undo (which move it to "cancelled") either win before it or find it running — never both.
    """
    store = services.store
    if record.revert_state == "running":
        # The run that was reverting it is gone: hand it back, due at once.
        await store.move_revert(record.id, "scheduled", from_="running", revert_run_id=None)
        services.wake_scheduler()
        await show_card(services, record.id)
        return
    target = await acting_target_of(services, record)
    me = services.bot_user_id
    summary = f"revert #{record.id} (temporary: {record.summary})"
    try:
        async with hold(services, target, me, summary) as fence:
            claimed = await store.move_revert(record.id, "running", from_="scheduled", revert_run_id=store.run_id)
            if claimed is None:
                return  # kept, undone, or another worker has it
            await show_card(services, record.id)  # "reverting now"
            if record.spec_before is None or record.body is None:
                await _give_up(services, claimed, "the change is not complete in the audit log")
                return
            cluster = await services.emr.get_cluster(
                target.workspace, target.cluster_id, region=target.region, acting=target.acting
            )
            try:
                result = revert_plan(cluster, record.spec_before, record.body, change_id=record.id)
            except RevertConflict as conflict:
                await _give_up(services, claimed, str(conflict))
                return
            prepared = planned(services, target, cluster, result)
            if prepared is None:
                await store.move_revert(record.id, "done", from_="running", revert_note="nothing to revert")
                await show_card(services, record.id)
                return
            reverting = await store.create_change(
                NewChange(
                    user_id=me,
                    team_id=record.team_id,
                    channel_id=record.channel_id,
                    thread_ts=record.thread_ts,
                    alias=record.alias,
                    workspace=record.workspace,
                    cluster_id=record.cluster_id,
                    region=record.region,
                    action="revert",
                    summary=summary,
                    spec_before=prepared.before,
                    body=prepared.body,
                    diff=prepared.diff,
                    undo_of=record.id,
                ),
                state="applying",
                fence=fence,
            )
            thread = await open_root(services, reverting, None)
            final = await send(services, reverting, thread, None, fence, prepared)
            if final.state in ("failed", "cancelled"):
                raise RevertNotApplied(final.error_message or final.state)
            await store.move_revert(record.id, "done", from_="running", revert_note=f"change #{final.id}")
            await show_card(services, record.id)
    except ClusterBusy:
        await store.move_revert(
            record.id, "scheduled", from_=("scheduled", "running"), revert_at=services.clock() + BUSY_RETRY_SECONDS
        )
        await show_card(services, record.id)


async def _give_up(services: Services, record: ChangeRecord, reason: str) -> None:
    failed = await services.store.move_revert(record.id, "failed", from_="running", revert_note=reason[:500])
    thread = thread_of(services, record)
    if failed is not None and thread is not None:
        await tell(thread, None, blocks.revert_failed(record.id, record.alias, reason))
    if failed is not None:
        await show_card(services, record.id)


async def revert_failed(services: Services, record: ChangeRecord, reason: str) -> None:
    """A revert attempt failed: try again later (told once, at the first failure), or give up after the last."""
    attempts = record.revert_attempts + 1
    now = services.clock()
    thread = thread_of(services, record)
    if attempts >= REVERT_MAX_ATTEMPTS:
        moved = await services.store.move_revert(
            record.id, "failed", from_=("scheduled", "running"), revert_attempts=attempts, revert_note=reason[:500]
        )
        if moved is not None and thread is not None:
            await tell(
                thread,
                None,
                blocks.revert_failed(record.id, record.alias, f"{reason} (gave up after {attempts} tries)"),
            )
        if moved is not None:
            await show_card(services, record.id)
        return
    retry_at = now + backoff(attempts)
    moved = await services.store.move_revert(
        record.id,
        "scheduled",
        from_=("scheduled", "running"),
        revert_at=retry_at,
        revert_attempts=attempts,
        revert_note=reason[:500],
        revert_run_id=None,
    )
    if moved is not None and attempts == 1 and thread is not None:
        await tell(
            thread,
            None,
            blocks.revert_failed(
                record.id,
                record.alias,
                f"{reason}. raybot tries again in {round(retry_at - now)} s, up to {REVERT_MAX_ATTEMPTS} times "
                "in all; Keep it stops that",
            ),
        )
    if moved is not None:
        await show_card(services, record.id)
