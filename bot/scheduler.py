"""Work raybot does on its own: reverting temporary resizes when they expire, and reconciling
changes a previous process left "pending" when it stopped.

Both read their work from the store, so it survives a restart: a temporary resize that
expired while raybot was stopped is reverted right after it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from slack_sdk.errors import SlackApiError

from bot.emr.changes import RevertConflict, holds_change, revert_plan
from bot.emr.errors import EmrError
from bot.emr.models import RayCluster
from bot.flow import Applying, apply_plan, hold
from bot.services import Services
from bot.slack import blocks
from bot.slack.conversation import StatusThread
from bot.store import ChangeRecord, Schedule

log = logging.getLogger("raybot.scheduler")

# Even with nothing due, look again this often: another replica may have scheduled something.
IDLE_POLL_SECONDS = 60.0


async def run_scheduler(services: Services, stop: asyncio.Event) -> None:
    """Revert due temporary resizes until `stop` is set."""
    while not stop.is_set():
        for schedule in await services.store.due_schedules(services.clock()):
            try:
                await revert_due(services, schedule)
            except Exception:  # noqa: BLE001 - one bad schedule must not stop the others
                log.exception("scheduled revert #%s failed", schedule.id)
        next_due = await services.store.next_due_at()
        delay = IDLE_POLL_SECONDS if next_due is None else min(IDLE_POLL_SECONDS, max(0.0, next_due - services.clock()))
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(services.scheduler_woken())]
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting


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
