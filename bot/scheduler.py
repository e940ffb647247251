"""Work raybot does on its own: reverting temporary resizes when they expire, and reconciling
changes a previous process left "pending" when it stopped.

Both read their work from the store, so it survives a restart: a temporary resize that
expired while raybot was stopped is reverted right after it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable

from slack_sdk.errors import SlackApiError

from bot.approvals import expire_due
from bot.emr.changes import RevertConflict, holds_change, revert_plan
from bot.emr.errors import EmrError
from bot.emr.models import RayCluster
from bot.flow import Applying, apply_plan, hold
from bot.follow import Progress, Wanted, next_step, progress
from bot.services import Services
from bot.slack import blocks
from bot.slack.conversation import StatusThread
from bot.store import ChangeRecord, Follow, Schedule

log = logging.getLogger("raybot.scheduler")

# Even with nothing due, look again this often: another replica may have scheduled something.
IDLE_POLL_SECONDS = 60.0


async def run_scheduler(services: Services, stop: asyncio.Event) -> None:
    """Follow applied changes, revert due temporary resizes, close expired approval requests; until `stop`."""
    while not stop.is_set():
        for followed in await services.store.due_follows(services.clock()):
            try:
                await look(services, followed)
            except Exception:  # noqa: BLE001 - one bad follow must not stop the others
                log.exception("following change #%s failed", followed.change_id)
        for schedule in await services.store.due_schedules(services.clock()):
            try:
                await revert_due(services, schedule)
            except Exception:  # noqa: BLE001 - one bad schedule must not stop the others
                log.exception("scheduled revert #%s failed", schedule.id)
        try:
            await expire_due(services)
        except Exception:  # noqa: BLE001 - closing stale requests must not stop the loop
            log.exception("closing expired approval requests failed")
        nexts = (
            await services.store.next_due_at(),
            await services.store.next_follow_at(),
            await services.store.next_approval_expiry(),
        )
        due = [t for t in nexts if t is not None]
        delay = IDLE_POLL_SECONDS if not due else min(IDLE_POLL_SECONDS, max(0.0, min(due) - services.clock()))
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(services.scheduler_woken())]
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting


async def look(services: Services, followed: Follow) -> None:
    """One look at a followed change: update its status message, or answer its thread once when it settles."""
    record = await services.store.get_change(followed.change_id)
    if record is None or followed.alias not in services.config.clusters:
        await services.store.finish_follow(followed.id, "cancelled", last_summary="no longer in the config")
        return
    target = services.config.cluster(followed.alias)
    wanted = Wanted.model_validate(followed.wanted)
    try:
        cluster = await services.emr.get_cluster(target.workspace, target.cluster_id, region=target.region)
        seen: Progress | None = progress(cluster, wanted)
    except EmrError as error:
        log.info("following change #%s: read failed (%s)", record.id, error.code)
        seen = None
    step = next_step(
        seen, now=services.clock(), deadline_at=followed.deadline_at, attempt=followed.attempt, draw=random.random()
    )
    summary = seen.summary() if seen is not None else None
    thread = StatusThread(services.slack, followed.channel_id, followed.root_ts or "", followed.thread_ts or "")
    if step.outcome == "again":
        await services.store.reschedule_follow(
            followed.id, next_at=step.next_at or services.clock(), attempt=step.attempt, last_summary=summary
        )
        if summary is not None and summary != followed.last_summary and followed.root_ts:
            await _quietly(
                thread.set_status(
                    *blocks.follow_status(record.user_id, record.alias, record.summary, summary, "applying")
                )
            )
        return
    finished = await services.store.finish_follow(followed.id, step.outcome, last_summary=summary)
    if finished is None:
        return  # another replica answered it
    if step.outcome == "done" and seen is not None:
        answer = blocks.follow_done(record.alias, record.cluster_id, seen)
    elif step.outcome == "failed":
        answer = blocks.follow_failed(record.alias, seen.message if seen else None, record.request_id)
    else:
        minutes = (followed.deadline_at - followed.started_at) / 60
        answer = blocks.follow_timeout(record.alias, minutes, seen)
    log.info("change #%s settled: %s", record.id, step.outcome, extra={"change_id": record.id, "cluster": record.alias})
    if followed.thread_ts:
        await _quietly(thread.reply(*answer))
    if followed.root_ts:
        phase = {"done": "done", "failed": "failed"}.get(step.outcome, "timeout")
        await _quietly(
            thread.set_status(*blocks.follow_status(record.user_id, record.alias, record.summary, summary or "", phase))
        )


async def _quietly(call: Awaitable[object]) -> None:
    """A Slack call whose failure has nobody to tell: logged."""
    try:
        await call
    except SlackApiError as error:
        log.error("Slack refused a follow update: %s", error.response.get("error"))


async def _post(services: Services, channel_id: str, thread_ts: str | None, message: tuple[str, list]) -> StatusThread:
    text, body = message
    resp = await services.slack.chat_postMessage(channel=channel_id, thread_ts=thread_ts, text=text, blocks=body)
    return StatusThread(services.slack, channel_id, resp["ts"], thread_ts or resp["ts"])


async def revert_due(services: Services, schedule: Schedule) -> None:
    """Revert the change of an expired temporary resize, as a change of its own in the same thread."""
    if not await services.store.claim(f"revert:{schedule.id}"):
        return  # another replica (or an earlier pass) has it
    record = await services.store.get_change(schedule.change_id)
    if record is None or record.spec_before is None or record.body is None:
        await services.store.finish_schedule(schedule.id, "failed", note="the change is not in the audit log")
        return
    if schedule.alias not in services.config.clusters:
        await services.store.finish_schedule(schedule.id, "failed", note="the alias is no longer in the config")
        await _post(
            services,
            schedule.channel_id,
            schedule.thread_ts,
            blocks.refused(f"`{schedule.alias}` is no longer in raybot's config: change #{record.id} was not reverted"),
        )
        return
    target = services.config.cluster(schedule.alias)
    me = services.bot_user_id
    summary = f"revert #{record.id} (temporary: {record.summary})"
    thread = await _post(
        services, schedule.channel_id, schedule.thread_ts, blocks.change_root(me, target.alias, summary, "pending")
    )
    async with hold(services, target, me, summary):
        try:
            cluster = await services.emr.get_cluster(target.workspace, target.cluster_id, region=target.region)
            result = revert_plan(cluster, record.spec_before, record.body)
        except (RevertConflict, EmrError) as error:
            text = str(error) if isinstance(error, RevertConflict) else f"{error.code}: {error.message}"
            await thread.reply(*blocks.refused(f"The automatic revert of change #{record.id} did not run: {text}"))
            await thread.set_status(*blocks.change_root(me, target.alias, summary, "failed"))
            await services.store.finish_schedule(schedule.id, "failed", note=text[:500])
            return
        if not result.changed:
            await thread.set_status(*blocks.change_root(me, target.alias, summary, "unchanged"))
            await services.store.finish_schedule(schedule.id, "done", note="nothing to revert")
            return
        applied = await apply_plan(
            services,
            Applying(
                thread=thread,
                replies=None,
                user_id=me,
                team_id=record.team_id,
                target=target,
                action="revert",
                summary=summary,
                undo_of=record.id,
                state_before=cluster.state,
            ),
            cluster.editable(),
            result,
        )
    await services.store.finish_schedule(schedule.id, "done" if applied.outcome == "done" else "failed")


async def cancel_revert(services: Services, schedule_id: int, user_id: str) -> Schedule | None:
    """Cancel a scheduled revert (the change stays); None when it already ran or was cancelled."""
    return await services.store.finish_schedule(schedule_id, "cancelled", note=f"cancelled by {user_id}")


async def reconcile(services: Services) -> list[ChangeRecord]:
    """Changes a previous process left pending: mark them "unknown" and say so in their threads.

    Run once at start, before taking new work. Each is told with the cluster's actual state
    and whether it holds what the change set.
    """
    handled = []
    for record in await services.store.pending_changes():
        record = await services.store.record_outcome(
            record.id, "unknown", error_message="raybot stopped before the cloud API answered"
        )
        handled.append(record)
        state, holds = "unreadable", None
        try:
            target = services.config.cluster(record.alias)
            cluster: RayCluster = await services.emr.get_cluster(
                record.workspace, record.cluster_id, region=target.region
            )
            state = cluster.state or "unknown"
            if record.spec_before is not None and record.body is not None:
                holds = holds_change(cluster, record.spec_before, record.body)
        except (EmrError, KeyError, LookupError) as error:
            state = f"unreadable ({getattr(error, 'code', type(error).__name__)})"
        log.warning("change outcome unknown after a restart", extra={"change_id": record.id, "cluster": record.alias})
        if record.thread_ts is None:
            continue
        try:
            thread = StatusThread(
                services.slack, record.channel_id, record.root_ts or record.thread_ts, record.thread_ts
            )
            await thread.reply(*blocks.outcome_unknown(record.alias, record.id, record.summary, state, holds))
            if record.root_ts:
                await thread.set_status(*blocks.change_root(record.user_id, record.alias, record.summary, "unknown"))
        except SlackApiError as error:
            log.error("could not report change #%s: %s", record.id, error.response.get("error"))
    return handled
