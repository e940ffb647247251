"""A change as data: what a ChangeRequest does, kept so it can be planned again later.

An approval is applied minutes after it was asked for, from the cluster as read then;
so what is stored is not the body but what was asked (the changes, or "undo #N"), and
it is planned again against the fresh read. Nothing secret is in it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter

from bot.emr.changes import Change, ChangeError, Plan, plan, revert_plan
from bot.emr.models import RayCluster
from bot.store import ChangeRecord, Store

_CHANGES = TypeAdapter(list[Change])


def changes_replay(changes: list[Change] | tuple[Change, ...]) -> dict[str, Any]:
    return {"kind": "changes", "changes": _CHANGES.dump_python(list(changes), mode="json")}


def undo_replay(change_id: int) -> dict[str, Any]:
    return {"kind": "undo", "change_id": change_id}


def can_undo(record: ChangeRecord) -> bool:
    """Whether an undo of `record` can be planned: it took effect, and its spec before and body sent are kept."""
    return record.outcome == "done" and record.spec_before is not None and record.body is not None


async def planner(store: Store, replay: dict[str, Any]) -> Callable[[RayCluster], Plan]:
    """The function that plans `replay` against a cluster as read."""
    if replay.get("kind") == "changes":
        changes = _CHANGES.validate_python(replay["changes"])
        return lambda cluster: plan(cluster, changes)
    if replay.get("kind") == "undo":
        record = await store.get_change(int(replay["change_id"]))
        if record is None or not can_undo(record):
            raise ChangeError(f"change #{replay['change_id']} was not applied, so there is nothing to undo")
        before, applied = record.spec_before, record.body
        return lambda cluster: revert_plan(cluster, before, applied, change_id=record.id)
    raise ValueError(f"unknown replay kind {replay.get('kind')!r}")
