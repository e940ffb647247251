"""Following a change until the cluster settles, the pure core: what was asked, how far it got, when to look again.

UpdateRayCluster (and Start/Stop) answer at once; the cluster then moves over minutes. After
every applied change raybot reads the cluster now and then (GetRayCluster) and compares it with
what the change asked for (`Wanted`), which gives a `Progress`: still applying, done, or failed.
Nothing here does I/O: the scheduler reads the cluster, calls `progress` and `next_step`, and
keeps the follow in the store so it survives a restart.

What "up" means: worker instances whose phase is Running. The API documents no group of an
instance, so an instance is put in its group by the `groupName` field when the API (or the
emulator) lists one, else by the name pattern `<clusterId>-<group lower-case>-worker-<n>`, else
all workers are counted together against the total wanted. When the API lists no instances at
all (`instances` absent), counts are unknown and the state and `modified` flag decide alone.

Autoscaling: with the head's `enableAutoScaling` on, the Ray autoscaler, not `replica`, decides how
many workers a group runs once the cluster is Running, anywhere within its [minReplica, maxReplica].
A change to such a cluster is settled when every group's Running workers are inside its range (a
group without both bounds is still held to its `replica`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from bot.emr.changes import DiffEntry
from bot.emr.models import Instance, RayCluster
from bot.slack.words import workers_up

DEFAULT_FOLLOW_SECONDS = 15 * 60.0  # how long raybot follows a change before it says "still not settled"
DELAYS = (5.0, 10.0, 20.0, 30.0)  # seconds before the 1st, 2nd, 3rd, and every later look
MAX_DELAY = DELAYS[-1]
JITTER = 0.2  # ± this fraction of the delay, so replicas and many follows do not look in lockstep
SUMMARY_GROUPS_MAX = 8  # groups a one-line summary names before it says "and N more"
SUMMARY_NAME_MAX = 40  # characters of a group name in a summary
ALL_WORKERS = "all groups"  # the one line reported when workers cannot be told apart by group

Phase = Literal["applying", "done", "failed"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Wanted(_Frozen):
    """What a change asked the cluster to become: its state, and the replicas wanted per worker group.

    `ranges`: the groups of an autoscaling cluster, each with its [minReplica, maxReplica]; their workers may be
    anywhere within it (stored with the follow: rows written before it existed have none, and mean exact counts).
    """

    state: str
    groups: dict[str, int] = {}
    ranges: dict[str, tuple[int, int]] = {}
    # Groups the change left as they were: their workers are neither waited for nor taken for a removed group's.
    ignored: list[str] = []


class GroupProgress(_Frozen):
    """Running workers of one group versus wanted; `up` is None when the API lists no instances.

    `within` is the [low, high] an autoscaling group's workers may settle anywhere in; None: exactly `wanted`.
    """

    name: str
    up: int | None
    wanted: int
    within: tuple[int, int] | None = None

    @property
    def complete(self) -> bool:
        if self.within is not None and self.up is not None:
            return self.within[0] <= self.up <= self.within[1]
        return self.up == self.wanted

    def counts(self) -> str:
        """ "2 of 3 workers up"; for an autoscaling group not at its replica, the range it may settle in:
        "1 of 3 workers up (autoscaling: min 1, max 4)"."""
        text = workers_up(self.up, self.wanted)
        if self.within is not None and self.up != self.wanted:
            return f"{text} (autoscaling: min {self.within[0]}, max {self.within[1]})"
        return text

    def brief(self) -> str:
        name = self.name if len(self.name) <= SUMMARY_NAME_MAX else self.name[: SUMMARY_NAME_MAX - 1] + "…"
        return f"{name}: {self.counts()}"


class Progress(_Frozen):
    """How far a cluster has got towards a `Wanted`, as read at one moment."""

    phase: Phase
    state: str | None
    modified: bool | None
    groups: list[GroupProgress] = []
    message: str | None = None  # the API's message when the cluster ended in Error

    def summary(self) -> str:
        """One short line: "cluster Running, still updating · WorkerGroup1: 2 of 3 workers up" (plain text, not
        escaped): the cluster's state first, said to be the cluster's, then the groups.

        With more than SUMMARY_GROUPS_MAX groups only the incomplete ones are named (at most
        SUMMARY_GROUPS_MAX, then "and N more"), so 50 groups still make one line.
        """
        parts = [f"cluster {self.state or 'in an unknown state'}" + (", still updating" if self.modified else "")]
        if len(self.groups) <= SUMMARY_GROUPS_MAX:
            parts += [g.brief() for g in self.groups]
        else:
            incomplete = [g for g in self.groups if not g.complete]
            parts += [g.brief() for g in incomplete[:SUMMARY_GROUPS_MAX]]
            if len(incomplete) > SUMMARY_GROUPS_MAX:
                parts.append(f"and {len(incomplete) - SUMMARY_GROUPS_MAX} more")
            complete = len(self.groups) - len(incomplete)
            if complete == len(self.groups):
                parts.append(f"all {complete} groups complete")
            else:
                parts.append(f"{complete} of {len(self.groups)} groups complete")
        return " · ".join(parts)


# --- what a change asks for -------------------------------------------------------------------------


def _replicas(worker_spec: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for group in worker_spec or []:
        if isinstance(group, BaseModel):
            group = group.model_dump(by_alias=True)
        if not isinstance(group, Mapping):
            continue
        name, replica = group.get("groupName"), group.get("replica")
        # A group sent without a replica count has no number to wait for; it is not followed.
        if isinstance(name, str) and isinstance(replica, int) and not isinstance(replica, bool):
            out[name] = replica
    return out


def _is(state: str | None, word: str) -> bool:
    return (state or "").casefold() == word.casefold()


def _ranges(head_spec: Any, worker_spec: Any) -> dict[str, tuple[int, int]]:
    """[minReplica, maxReplica] per group when the head's autoscaling is on; empty when it is off or unknown."""
    if isinstance(head_spec, BaseModel):
        head_spec = head_spec.model_dump(by_alias=True)
    if not isinstance(head_spec, Mapping) or head_spec.get("enableAutoScaling") is not True:
        return {}
    out: dict[str, tuple[int, int]] = {}
    for group in worker_spec or []:
        if isinstance(group, BaseModel):
            group = group.model_dump(by_alias=True)
        if not isinstance(group, Mapping):
            continue
        name, low, high = group.get("groupName"), group.get("minReplica"), group.get("maxReplica")
        bounds = (low, high)
        if isinstance(name, str) and all(isinstance(b, int) and not isinstance(b, bool) for b in bounds):
            if low <= high:  # an inverted range holds no count: the group is held to its replica
                out[name] = (low, high)
    return out


def wanted_after_update(body: Mapping[str, Any], *, state_before: str | None = None) -> Wanted:
    """What an UpdateRayCluster `body` (wire form, as sent) asks for: Running with each group's `replica`.

    A Stopped (or Stopping) cluster only takes the new spec and stays stopped: pass the state read
    before the change as `state_before`, and the follow then waits for Stopped instead.
    """
    if _is(state_before, "Stopped") or _is(state_before, "Stopping"):
        return wanted_after_stop()
    groups = _replicas(body.get("workerSpec"))
    ranges = _ranges(body.get("headSpec"), body.get("workerSpec"))
    return Wanted(state="Running", groups=groups, ranges={g: r for g, r in ranges.items() if g in groups})


def wanted_after_start(cluster_as_read: RayCluster) -> Wanted:
    """A start asks for Running with every group at the `replica` of the spec as read (within its range when
    the cluster autoscales)."""
    groups = _replicas(cluster_as_read.worker_spec)
    ranges = _ranges(cluster_as_read.head_spec, cluster_as_read.worker_spec)
    return Wanted(state="Running", groups=groups, ranges={g: r for g, r in ranges.items() if g in groups})


def wanted_after_stop() -> Wanted:
    """A stop asks for Stopped; no worker is wanted."""
    return Wanted(state="Stopped")


# --- how far the cluster got ------------------------------------------------------------------------


def _group_of(instance: Instance, names: list[str]) -> str | None:
    """The group `instance` belongs to: its `groupName` if listed, else the longest group name its id carries."""
    listed = (instance.model_extra or {}).get("groupName")
    if isinstance(listed, str) and listed:
        return listed
    ids = [instance.instance_id or "", str((instance.model_extra or {}).get("name") or "")]
    # Longest first: "-a-b-worker-" must not be counted for group "b" when a group "a-b" exists.
    for name in sorted(names, key=len, reverse=True):
        pattern = f"-{name.lower()}-worker-"
        if any(pattern in text.lower() for text in ids):
            return name
    return None


def _group_counts(instances: list[Instance], wanted: Wanted) -> list[GroupProgress]:
    # A Pending worker is not up yet.
    running = [i for i in instances if _is(i.type, "Worker") and _is(i.phase, "Running")]
    names = list(wanted.groups) + [name for name in wanted.ignored if name not in wanted.groups]
    owners = [_group_of(i, names) for i in running]
    if any(owner is None for owner in owners):
        total = sum(wanted.groups.values())
        within = None
        if wanted.ranges:
            bounds = [wanted.ranges.get(name, (count, count)) for name, count in wanted.groups.items()]
            within = (sum(low for low, _ in bounds), sum(high for _, high in bounds))
        return [GroupProgress(name=ALL_WORKERS, up=len(running), wanted=total, within=within)]
    up: dict[str, int] = {}
    for owner in owners:
        assert owner is not None
        up[owner] = up.get(owner, 0) + 1
    out = [
        GroupProgress(name=name, up=up.get(name, 0), wanted=count, within=wanted.ranges.get(name))
        for name, count in wanted.groups.items()
    ]
    # Workers of a group the change removed (or a stop) still running: wanted 0 until they are gone.
    out += [
        GroupProgress(name=name, up=count, wanted=0)
        for name, count in up.items()
        if name not in wanted.groups and name not in wanted.ignored
    ]
    return out


def progress(cluster: RayCluster, wanted: Wanted) -> Progress:
    """How far `cluster` (as GetRayCluster read it) has got towards `wanted`.

    failed: the state is Error (with the API's `message`). done: for a stop, the state is Stopped;
    otherwise the state is the wanted one, `modified` is not true, and every group has as many
    Running workers as wanted — an autoscaling group: any count within its range — (when instances
    are listed). Anything else is still applying.
    """
    if cluster.instances is None:
        groups = [
            GroupProgress(name=name, up=None, wanted=count, within=wanted.ranges.get(name))
            for name, count in wanted.groups.items()
        ]
    else:
        groups = _group_counts(cluster.instances, wanted)
    if _is(cluster.state, "Error"):
        phase: Phase = "failed"
    elif _is(wanted.state, "Stopped"):
        phase = "done" if _is(cluster.state, "Stopped") else "applying"
    elif (
        _is(cluster.state, wanted.state)
        and not cluster.modified
        and (cluster.instances is None or all(g.complete for g in groups))
    ):
        phase = "done"
    else:
        phase = "applying"
    return Progress(
        phase=phase,
        state=cluster.state,
        modified=cluster.modified,
        groups=groups,
        message=cluster.message if phase == "failed" else None,
    )


# --- when to look again -----------------------------------------------------------------------------


def next_delay(attempt: int, draw: float) -> float:
    """Seconds to wait when `attempt` looks were made so far: 5, 10, 20, then 30, each ±20% by `draw`.

    `draw` is a uniform random number in [0, 1) (injected, so tests are deterministic); the
    result never exceeds MAX_DELAY, so a capped delay is jittered downwards only.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be ≥ 0, not {attempt}")
    if not 0.0 <= draw < 1.0:
        raise ValueError(f"draw must be in [0, 1), not {draw}")
    base = DELAYS[min(attempt, len(DELAYS) - 1)]
    return min(MAX_DELAY, base * (1.0 + JITTER * (2.0 * draw - 1.0)))


class Step(_Frozen):
    """What to do after one look: finish the follow with `outcome`, or look again at `next_at`."""

    outcome: Literal["again", "done", "failed", "timeout"]
    next_at: float | None = None
    attempt: int


def next_step(progress: Progress | None, *, now: float, deadline_at: float, attempt: int, draw: float) -> Step:
    """What comes after a look gave `progress` (None: the read failed); `attempt` looks were made before it.

    The step's `attempt` counts this look too (store it with the follow). Settled (done or failed)
    ends the follow whatever the time; otherwise past the deadline it times out, and before it the
    next look is backed off but never later than the deadline, so the last look happens right at it.
    """
    looks = attempt + 1
    if progress is not None and progress.phase != "applying":
        return Step(outcome=progress.phase, attempt=looks)
    if now >= deadline_at:
        return Step(outcome="timeout", attempt=looks)
    return Step(outcome="again", next_at=min(now + next_delay(looks, draw), deadline_at), attempt=looks)


_GROUP_PATH = re.compile(r"^workerSpec\[(?P<group>.*)\](?:\.|$)")


def followed_groups(wanted: Wanted, diff: Sequence[DiffEntry]) -> Wanted:
    """A change is followed until the groups it changed run as asked, not every group it sent.

    The body carries every group (read-modify-write); waiting for the untouched ones too would make a change
    that a later change of another group superseded (resize WorkerGroup1, then WorkerGroup2) never settle, and
    its root message say "applying" until the follow gives up. A change of no group follows them all.
    """
    touched = {m["group"] for d in diff if (m := _GROUP_PATH.match(d.path))}
    if not touched:
        return wanted
    return wanted.model_copy(
        update={
            "groups": {g: n for g, n in wanted.groups.items() if g in touched},
            "ignored": [g for g in wanted.groups if g not in touched],
        }
    )
