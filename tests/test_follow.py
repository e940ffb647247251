"""bot/follow.py (pure): what a change wants, how far a cluster got, when to look again; and the follow builders.

The last tests read clusters from the EMR emulator's in-memory model (no server) under a fake clock,
so the core is checked against the very shapes the emulator produces over time.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.emr.models import RayCluster
from bot.follow import (
    ALL_WORKERS,
    MAX_DELAY,
    SUMMARY_GROUPS_MAX,
    GroupProgress,
    Progress,
    Wanted,
    followed_groups,
    next_delay,
    next_step,
    progress,
    wanted_after_start,
    wanted_after_stop,
    wanted_after_update,
)
from bot.sandbox.emr_server import SEED_FILE, ClusterStore
from bot.slack import blocks
from tests.test_blocks import EVIL, assert_fits, assert_no_raw_markup, rendered

CID = "rc-abc"
TWO = Wanted(state="Running", groups={"WorkerGroup1": 3, "WorkerGroup2": 1})


def head(phase: str = "Running") -> dict[str, Any]:
    return {"instanceId": f"{CID}-head-0", "type": "Head", "phase": phase}


def worker(group: str, index: int, phase: str = "Running", *, listed: bool = True, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"instanceId": f"{CID}-{group.lower()}-worker-{index}", "type": "Worker", "phase": phase}
    if listed:
        out["groupName"] = group
    return out | extra


def read(
    state: str | None = "Running", modified: bool | None = False, instances: Any = (), **fields: Any
) -> RayCluster:
    body: dict[str, Any] = {"clusterId": CID, "state": state, "modified": modified, **fields}
    if instances is not None:
        body["instances"] = list(instances)
    return RayCluster.model_validate(body)


def counts(p: Progress) -> dict[str, tuple[int | None, int]]:
    return {g.name: (g.up, g.wanted) for g in p.groups}


# --- what a change wants ----------------------------------------------------------------------------


def test_wanted_after_update_takes_each_groups_replica_from_the_body_sent() -> None:
    body = {
        "name": "x",
        "workerSpec": [
            {"groupName": "WorkerGroup1", "replica": 10, "minReplica": 1},
            {"groupName": "WorkerGroup2", "replica": 1},
            {"groupName": "no-count"},  # nothing to wait for: not followed
            {"replica": 3},  # no name: cannot be matched to instances
        ],
    }
    assert wanted_after_update(body) == Wanted(state="Running", groups={"WorkerGroup1": 10, "WorkerGroup2": 1})
    assert wanted_after_update({"description": "only text"}) == Wanted(state="Running", groups={})
    # A stopped cluster only takes the new spec: the follow waits for it to stay Stopped.
    assert wanted_after_update(body, state_before="Stopped") == wanted_after_stop()
    assert wanted_after_update(body, state_before="STOPPING").state == "Stopped"
    assert wanted_after_update(body, state_before="Running").groups == {"WorkerGroup1": 10, "WorkerGroup2": 1}


def test_wanted_after_start_and_stop() -> None:
    cluster = RayCluster.model_validate(
        {"state": "Stopped", "workerSpec": [{"groupName": "g1", "replica": 4}, {"groupName": "g2", "replica": 2}]}
    )
    assert wanted_after_start(cluster) == Wanted(state="Running", groups={"g1": 4, "g2": 2})
    assert wanted_after_stop() == Wanted(state="Stopped", groups={})
    # It goes to the store as JSON and comes back the same.
    assert Wanted.model_validate(json.loads(json.dumps(TWO.model_dump()))) == TWO


# --- how far the cluster got ------------------------------------------------------------------------


def test_updating_with_some_workers_up_is_applying() -> None:
    cluster = read(
        "Updating",
        True,
        [
            head(),
            worker("WorkerGroup1", 0),
            worker("WorkerGroup1", 1),
            worker("WorkerGroup1", 2, "Pending"),  # listed, not up yet
            worker("WorkerGroup2", 0),
        ],
    )
    p = progress(cluster, TWO)
    assert (p.phase, p.state, p.modified, p.message) == ("applying", "Updating", True, None)
    assert counts(p) == {"WorkerGroup1": (2, 3), "WorkerGroup2": (1, 1)}
    assert p.summary() == (
        "cluster Updating, still updating · WorkerGroup1: 2 of 3 workers up · WorkerGroup2: 1 of 1 worker up"
    )


def test_done_needs_the_state_all_counts_and_modified_cleared() -> None:
    settled = [head(), *(worker("WorkerGroup1", i) for i in range(3)), worker("WorkerGroup2", 0)]
    done = progress(read("Running", False, settled), TWO)
    assert (
        done.phase == "done"
        and done.summary() == "cluster Running · WorkerGroup1: 3 of 3 workers up · WorkerGroup2: 1 of 1 worker up"
    )
    # The API still says modified: not done, even with every worker up.
    assert progress(read("Running", True, settled), TWO).phase == "applying"
    # One worker short.
    assert progress(read("Running", False, settled[:-1]), TWO).phase == "applying"
    # modified not reported at all counts as not modified.
    assert progress(read("Running", None, settled), TWO).phase == "done"
    # The wanted state, compared without regard to case.
    assert progress(read("RUNNING", False, settled), TWO).phase == "done"
    assert progress(read("Starting", False, settled), TWO).phase == "applying"


def test_type_and_phase_are_compared_without_regard_to_case() -> None:
    shouting = [
        {
            "instanceId": f"{CID}-workergroup1-worker-{i}",
            "type": "WORKER",
            "phase": "RUNNING",
            "groupName": "WorkerGroup1",
        }
        for i in range(3)
    ] + [{"instanceId": "x", "type": "worker", "phase": "running", "groupName": "WorkerGroup2"}]
    assert counts(progress(read(instances=shouting), TWO)) == {"WorkerGroup1": (3, 3), "WorkerGroup2": (1, 1)}


def test_error_is_failed_with_the_apis_message() -> None:
    cluster = read("Error", True, [head(), worker("WorkerGroup1", 0)], message="quota exceeded: <@U1>")
    p = progress(cluster, TWO)
    assert (p.phase, p.message, p.modified) == ("failed", "quota exceeded: <@U1>", True)
    assert p.summary().startswith("cluster Error, still updating · WorkerGroup1: 1 of 3 workers up")
    assert progress(read("error", False, []), TWO).phase == "failed"
    # The message of a cluster that is not in Error is not an error message.
    assert progress(read("Running", True, [], message="starting workers"), TWO).message is None


def test_a_stop_is_done_when_stopped() -> None:
    stop = wanted_after_stop()
    stopping = progress(read("Stopping", False, [head(), worker("WorkerGroup1", 0)]), stop)
    assert stopping.phase == "applying"
    assert counts(stopping) == {"WorkerGroup1": (1, 0)}  # workers still up, none wanted
    assert stopping.summary() == "cluster Stopping · WorkerGroup1: 1 worker still up"
    assert progress(read("Running", False, [head()]), stop).phase == "applying"
    done = progress(read("Stopped", False, []), stop)
    assert done.phase == "done" and done.groups == [] and done.summary() == "cluster Stopped"
    # Stopped is Stopped, whatever `modified` or a stale instance list says.
    assert progress(read("STOPPED", True, [worker("WorkerGroup1", 0)]), stop).phase == "done"
    assert progress(read("Error", False, [], message="stuck"), stop).phase == "failed"


def test_groups_are_matched_by_the_name_pattern_when_no_group_is_listed() -> None:
    instances = [
        head(),
        worker("WorkerGroup1", 0, listed=False),
        worker("WorkerGroup1", 1, listed=False),
        worker("WorkerGroup2", 0, listed=False),
    ]
    assert counts(progress(read(instances=instances), TWO)) == {"WorkerGroup1": (2, 3), "WorkerGroup2": (1, 1)}


def test_the_longest_group_name_wins_a_name_pattern_match() -> None:
    wanted = Wanted(state="Running", groups={"gpu": 1, "big-gpu": 2})
    instances = [
        {"instanceId": f"{CID}-big-gpu-worker-0", "type": "Worker", "phase": "Running"},
        {"instanceId": f"{CID}-big-gpu-worker-1", "type": "Worker", "phase": "Running"},
        {"instanceId": f"{CID}-gpu-worker-0", "type": "Worker", "phase": "Running"},
    ]
    p = progress(read(instances=instances), wanted)
    assert counts(p) == {"gpu": (1, 1), "big-gpu": (2, 2)} and p.phase == "done"


def test_a_listed_group_name_beats_the_name_pattern() -> None:
    # The id says WorkerGroup1, the API says WorkerGroup2: the API's field is the truth.
    instances = [worker("WorkerGroup1", 0, groupName="WorkerGroup2")]
    assert counts(progress(read(instances=instances), TWO)) == {"WorkerGroup1": (0, 3), "WorkerGroup2": (1, 1)}


def test_workers_that_cannot_be_told_apart_are_counted_against_the_total() -> None:
    anonymous = [{"instanceId": f"node-{i}", "type": "Worker", "phase": "Running"} for i in range(3)]
    anonymous.append({"instanceId": "node-9", "type": "Worker", "phase": "Pending"})
    p = progress(read(instances=[head(), *anonymous]), TWO)
    assert p.groups == [GroupProgress(name=ALL_WORKERS, up=3, wanted=4)] and p.phase == "applying"
    assert p.summary() == "cluster Running · all groups: 3 of 4 workers up"
    # One unattributable worker among named ones is enough: per-group counts would be wrong.
    mixed = [worker("WorkerGroup1", i) for i in range(3)] + [
        {"instanceId": "odd", "type": "Worker", "phase": "Running"}
    ]
    done = progress(read(instances=mixed), TWO)
    assert done.groups == [GroupProgress(name=ALL_WORKERS, up=4, wanted=4)] and done.phase == "done"


def test_workers_of_a_removed_group_must_go_before_it_is_done() -> None:
    one = Wanted(state="Running", groups={"WorkerGroup1": 1})
    lingering = [worker("WorkerGroup1", 0), worker("Old", 0), worker("Old", 1, "Pending")]
    p = progress(read(instances=lingering), one)
    assert counts(p) == {"WorkerGroup1": (1, 1), "Old": (1, 0)} and p.phase == "applying"
    assert progress(read(instances=lingering[:1]), one).phase == "done"


def test_without_listed_instances_the_state_decides_and_counts_are_unknown() -> None:
    p = progress(read("Running", False, instances=None), TWO)
    assert p.phase == "done" and counts(p) == {"WorkerGroup1": (None, 3), "WorkerGroup2": (None, 1)}
    assert (
        p.summary() == "cluster Running · WorkerGroup1: 3 workers wanted, none listed yet · "
        "WorkerGroup2: 1 worker wanted, none listed yet"
    )
    assert progress(read("Running", True, instances=None), TWO).phase == "applying"
    # An empty list is a real answer: no worker is up.
    assert progress(read("Running", False, instances=[]), TWO).phase == "applying"


def test_summary_of_fifty_groups_stays_one_short_line() -> None:
    names = [f"group-{i:02d}-" + "x" * 200 for i in range(50)]
    wanted = Wanted(state="Running", groups={name: 2 for name in names})
    # The first 40 groups are complete, the last 10 are not.
    instances = [worker(name, j) for name in names[:40] for j in range(2)] + [worker(name, 0) for name in names[40:]]
    p = progress(read("Running", True, instances), wanted)
    line = p.summary()
    assert "\n" not in line and len(line) < 600
    assert line.count(" of 2 workers up") == SUMMARY_GROUPS_MAX  # only incomplete groups are named, at most 8
    assert "group-40-" in line and "group-39-" not in line
    assert "and 2 more ·" in line and "40 of 50 groups complete" in line
    assert line.startswith("cluster Running, still updating · ")

    settled = progress(read("Running", False, [worker(n, j) for n in names for j in range(2)]), wanted)
    assert settled.phase == "done"
    assert settled.summary() == "cluster Running · all 50 groups complete"


def test_a_summary_with_few_groups_names_them_all() -> None:
    wanted = Wanted(state="Running", groups={f"g{i}": 1 for i in range(SUMMARY_GROUPS_MAX)})
    p = progress(read(instances=[worker(f"g{i}", 0) for i in range(SUMMARY_GROUPS_MAX)]), wanted)
    groups = " · ".join(f"g{i}: 1 of 1 worker up" for i in range(SUMMARY_GROUPS_MAX))
    assert p.summary() == "cluster Running · " + groups


# --- when to look again -----------------------------------------------------------------------------


def test_next_delay_backs_off_to_a_cap_with_jitter() -> None:
    assert [next_delay(attempt, 0.5) for attempt in range(6)] == [5.0, 10.0, 20.0, 30.0, 30.0, 30.0]
    assert next_delay(0, 0.0) == pytest.approx(4.0)
    assert next_delay(1, 0.999999) == pytest.approx(12.0, abs=1e-4)
    assert next_delay(2, 0.0) == pytest.approx(16.0)
    assert next_delay(3, 0.0) == pytest.approx(24.0)
    assert next_delay(10**6, 0.999999) == MAX_DELAY  # the cap holds with jitter
    with pytest.raises(ValueError):
        next_delay(-1, 0.5)
    for draw in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError):
            next_delay(0, draw)


@given(st.integers(min_value=0, max_value=10**9), st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_next_delay_is_always_within_bounds(attempt: int, draw: float) -> None:
    assert 4.0 <= next_delay(attempt, draw) <= MAX_DELAY


def test_next_step_ends_settled_follows_and_times_out_at_the_deadline() -> None:
    applying = Progress(phase="applying", state="Running", modified=True)
    done = Progress(phase="done", state="Running", modified=False)
    failed = Progress(phase="failed", state="Error", modified=True, message="boom")

    step = next_step(applying, now=100.0, deadline_at=1000.0, attempt=0, draw=0.5)
    assert (step.outcome, step.next_at, step.attempt) == ("again", 110.0, 1)  # after the 1st look: 10 s
    step = next_step(applying, now=200.0, deadline_at=1000.0, attempt=5, draw=0.5)
    assert (step.outcome, step.next_at, step.attempt) == ("again", 230.0, 6)
    # The next look is never after the deadline: the last one happens right at it.
    assert next_step(applying, now=990.0, deadline_at=1000.0, attempt=5, draw=0.5).next_at == 1000.0
    assert next_step(applying, now=1000.0, deadline_at=1000.0, attempt=6, draw=0.5).outcome == "timeout"
    # A failed read is retried like an unsettled cluster.
    assert next_step(None, now=100.0, deadline_at=1000.0, attempt=0, draw=0.5).outcome == "again"
    assert next_step(None, now=1001.0, deadline_at=1000.0, attempt=0, draw=0.5).outcome == "timeout"
    # Settled wins over the deadline: the answer that arrived is the answer.
    assert next_step(done, now=5000.0, deadline_at=1000.0, attempt=3, draw=0.5).outcome == "done"
    failing = next_step(failed, now=100.0, deadline_at=1000.0, attempt=3, draw=0.5)
    assert (failing.outcome, failing.next_at, failing.attempt) == ("failed", None, 4)


# --- Block Kit ----------------------------------------------------------------------------------------


def hostile_progress(groups: int, phase: str = "applying") -> Progress:
    long = "&<>`" * 300
    return Progress(
        phase=phase,  # type: ignore[arg-type]
        state=EVIL + long,
        modified=True,
        groups=[GroupProgress(name=f"{i}{EVIL}{long}", up=i % 3, wanted=2) for i in range(groups)],
        message=EVIL + long,
    )


def test_follow_done_shows_final_counts() -> None:
    settled = Progress(
        phase="done",
        state="Running",
        modified=False,
        groups=[GroupProgress(name="WorkerGroup1", up=3, wanted=3), GroupProgress(name="WorkerGroup2", up=1, wanted=1)],
    )
    message = blocks.follow_done("prod", "rc-1", settled)
    assert_fits(message)
    text = rendered(message)
    assert message.text.startswith(
        "✅ *prod* settled · clusterId `rc-1` · cluster Running · WorkerGroup1: 3 of 3 workers up"
    )
    assert "• *WorkerGroup1*: 3 of 3 workers up" in text and "• *WorkerGroup2*: 1 of 1 worker up" in text


def test_follow_done_of_a_hostile_cluster_with_fifty_groups_fits_and_lists_them_all() -> None:
    message = blocks.follow_done(EVIL * 20, EVIL + "`" * 100, hostile_progress(50, "done"))
    assert_fits(message)
    assert_no_raw_markup(message)
    # Names are cut short, so every one of the 50 groups still gets its line.
    assert sum(line.rstrip().endswith(" of 2 workers up") for line in rendered(message).splitlines()) == 50
    # More lines than five sections hold (far beyond 50 groups): what does not fit is counted, not dropped silently.
    crowded = blocks.follow_timeout("prod", 15, hostile_progress(900))
    assert_fits(crowded)
    assert "more groups" in rendered(crowded)


def test_follow_failed_shows_the_apis_message_escaped() -> None:
    message = blocks.follow_failed("prod", "quota exceeded <!channel> & more", "REQ-1")
    assert_fits(message)
    assert_no_raw_markup(message)
    assert "ended in `Error`" in message.text and "`REQ-1`" in message.text
    assert "quota exceeded &lt;!channel&gt; &amp; more" in message.text
    unknown = blocks.follow_failed(EVIL, EVIL * 1000, None)
    assert_fits(unknown)
    assert_no_raw_markup(unknown)
    assert "RequestId" not in unknown.text and "none" not in unknown.text and unknown.text.endswith("…")
    assert "no message" in blocks.follow_failed("prod", None, None).text


def test_follow_timeout_says_how_long_and_where_the_cluster_is() -> None:
    stuck = Progress(
        phase="applying",
        state="Running",
        modified=True,
        groups=[GroupProgress(name="WorkerGroup1", up=2, wanted=3), GroupProgress(name="WorkerGroup2", up=1, wanted=1)],
    )
    message = blocks.follow_timeout("prod", 15, stuck)
    assert_fits(message)
    text = rendered(message)
    assert message.text.startswith("⌛ *prod* still not settled after 15 min")
    assert (
        "Now: cluster Running, still updating · WorkerGroup1: 2 of 3 workers up · WorkerGroup2: 1 of 1 worker up"
        in message.text
    )
    assert (
        "• *WorkerGroup1*: 2 of 3 workers up" in text and "*WorkerGroup2*" not in text
    )  # only what is missing is listed
    assert "`/ray show prod`" in message.text
    unread = blocks.follow_timeout(EVIL, 7.5, None)
    assert "after 7.5 min" in unread.text and "unknown" in unread.text
    assert_no_raw_markup(unread)
    hostile = blocks.follow_timeout(EVIL * 20, 15, hostile_progress(50))
    assert_fits(hostile)
    assert_no_raw_markup(hostile)


# --- against the emulator's model of a cluster over time -----------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def seeded(settle_seconds: float, **options: Any) -> tuple[ClusterStore, Clock, str, str, RayCluster]:
    clock = Clock()
    emulator = ClusterStore(clock, settle_seconds=settle_seconds, **options)
    seed = json.loads(SEED_FILE.read_text())
    emulator.seed(seed)
    first = seed[0]
    workspace, cluster_id = first["workspaceId"], first["clusterId"]
    return emulator, clock, workspace, cluster_id, RayCluster.model_validate(emulator.snapshot(workspace, cluster_id))


def grow_first_group(cluster: RayCluster, to: int) -> dict[str, Any]:
    body = cluster.editable()
    body["workerSpec"] = copy.deepcopy(body["workerSpec"])
    body["workerSpec"][0]["replica"] = to
    body["workerSpec"][0]["maxReplica"] = max(to, body["workerSpec"][0]["maxReplica"])
    return body


def test_an_update_in_the_emulator_goes_from_applying_to_done() -> None:
    emulator, clock, ws, cid, before = seeded(60.0, updating_state="Updating")
    first, second = (g.group_name for g in before.worker_spec or [])
    assert first is not None and second is not None
    body = grow_first_group(before, 6)
    emulator.update(ws, cid, body)
    wanted = wanted_after_update(body, state_before=before.state)

    def look() -> Progress:
        return progress(RayCluster.model_validate(emulator.snapshot(ws, cid)), wanted)

    now = look()
    assert (now.phase, now.state, now.modified) == ("applying", "Updating", True)
    assert counts(now)[first] == (2, 6)
    clock.now += 30
    half = look()
    assert half.phase == "applying" and counts(half)[first] == (4, 6) and counts(half)[second] == (1, 1)
    clock.now += 30
    done = look()
    assert done.phase == "done" and counts(done) == {first: (6, 6), second: (1, 1)}
    assert done.summary() == f"cluster Running · {first}: 6 of 6 workers up · {second}: 1 of 1 worker up"


def test_the_name_pattern_alone_follows_the_emulators_instances() -> None:
    emulator, clock, ws, cid, before = seeded(60.0)
    body = grow_first_group(before, 4)
    emulator.update(ws, cid, body)
    clock.now += 60
    raw = emulator.snapshot(ws, cid)
    for instance in raw["instances"]:
        instance.pop("groupName", None)  # as the real API lists them
    p = progress(RayCluster.model_validate(raw), wanted_after_update(body))
    assert p.phase == "done" and [g.up for g in p.groups] == [4, 1]


def test_an_update_the_emulator_ends_in_error_fails_with_its_message() -> None:
    emulator, clock, ws, cid, before = seeded(60.0)
    body = grow_first_group(before, 6)
    emulator.update(ws, cid, body)
    emulator.end_in_error(ws, cid, "insufficient quota in queue root_queue")
    wanted = wanted_after_update(body)
    clock.now += 30
    assert progress(RayCluster.model_validate(emulator.snapshot(ws, cid)), wanted).phase == "applying"
    clock.now += 30
    failed = progress(RayCluster.model_validate(emulator.snapshot(ws, cid)), wanted)
    assert (failed.phase, failed.message) == ("failed", "insufficient quota in queue root_queue")


def test_a_stop_then_start_in_the_emulator() -> None:
    emulator, clock, ws, cid, before = seeded(60.0)
    emulator.stop(ws, cid, None)
    stopping = progress(RayCluster.model_validate(emulator.snapshot(ws, cid)), wanted_after_stop())
    assert stopping.phase == "applying" and stopping.state == "Stopping"
    clock.now += 60
    stopped = RayCluster.model_validate(emulator.snapshot(ws, cid))
    assert progress(stopped, wanted_after_stop()).phase == "done"

    wanted = wanted_after_start(stopped)
    emulator.start(ws, cid, "key", None, "REQ-1")
    starting = progress(RayCluster.model_validate(emulator.snapshot(ws, cid)), wanted)
    assert starting.phase == "applying" and starting.state == "Starting"
    clock.now += 60
    assert progress(RayCluster.model_validate(emulator.snapshot(ws, cid)), wanted).phase == "done"


# --- autoscaling: settled anywhere within [minReplica, maxReplica] --------------------------------


AUTOSCALING_BODY = {
    "headSpec": {"enableAutoScaling": True},
    "workerSpec": [
        {"groupName": "WorkerGroup1", "replica": 3, "minReplica": 1, "maxReplica": 4},
        {"groupName": "WorkerGroup2", "replica": 1},  # no bounds: held to its replica
        {"groupName": "inverted", "replica": 2, "minReplica": 5, "maxReplica": 1},  # no range: held to replica
    ],
}


def test_wanted_of_an_autoscaling_cluster_carries_each_groups_range() -> None:
    wanted = wanted_after_update(AUTOSCALING_BODY)
    assert wanted.groups == {"WorkerGroup1": 3, "WorkerGroup2": 1, "inverted": 2}
    assert wanted.ranges == {"WorkerGroup1": (1, 4)}
    # Autoscaling off (or not said): exact counts, as before.
    off = AUTOSCALING_BODY | {"headSpec": {"enableAutoScaling": False}}
    assert wanted_after_update(off).ranges == {}
    assert wanted_after_update({"workerSpec": AUTOSCALING_BODY["workerSpec"]}).ranges == {}
    # A start reads the same from the cluster as read.
    cluster = RayCluster.model_validate({"state": "Stopped", **AUTOSCALING_BODY})
    assert wanted_after_start(cluster).ranges == {"WorkerGroup1": (1, 4)}
    # It goes to the store as JSON and comes back the same; a row stored before ranges existed means exact counts.
    assert Wanted.model_validate(json.loads(json.dumps(wanted.model_dump()))) == wanted
    assert Wanted.model_validate({"state": "Running", "groups": {"g": 2}}).ranges == {}


@pytest.mark.parametrize(
    ("up", "phase"), [(0, "applying"), (1, "done"), (2, "done"), (3, "done"), (4, "done"), (5, "applying")]
)
def test_an_autoscaling_group_is_settled_anywhere_within_its_range(up: int, phase: str) -> None:
    wanted = wanted_after_update(AUTOSCALING_BODY)
    instances = [head(), *(worker("WorkerGroup1", i) for i in range(up)), worker("WorkerGroup2", 0)]
    instances += [worker("inverted", 0), worker("inverted", 1)]
    p = progress(read("Running", False, instances), wanted)
    assert p.phase == phase
    # Only once Running and no longer modified, as for exact counts.
    assert progress(read("Running", True, instances), wanted).phase == "applying"
    assert progress(read("Starting", False, instances), wanted).phase == "applying"


def test_a_group_without_a_range_is_still_held_to_its_replica() -> None:
    wanted = wanted_after_update(AUTOSCALING_BODY)
    instances = [head(), worker("WorkerGroup1", 0), worker("WorkerGroup2", 0), worker("WorkerGroup2", 1)]
    instances += [worker("inverted", 0), worker("inverted", 1)]
    assert progress(read("Running", False, instances), wanted).phase == "applying"  # WorkerGroup2 2/1


def test_an_autoscaled_count_says_its_range_in_the_summary_and_the_answer() -> None:
    wanted = wanted_after_update(AUTOSCALING_BODY)
    instances = [head(), worker("WorkerGroup1", 0), worker("WorkerGroup1", 1), worker("WorkerGroup2", 0)]
    instances += [worker("inverted", 0), worker("inverted", 1)]
    done = progress(read("Running", False, instances), wanted)
    assert done.phase == "done"
    assert done.summary() == (
        "cluster Running · WorkerGroup1: 2 of 3 workers up (autoscaling: min 1, max 4) · WorkerGroup2: 1 of 1 worker up"
        " · inverted: 2 of 2 workers up"
    )
    text = rendered(blocks.follow_done("prod", CID, done))
    assert "WorkerGroup1*: 2 of 3 workers up (autoscaling: min 1, max 4)" in text
    # At its replica, the count reads as any other.
    assert GroupProgress(name="g", up=3, wanted=3, within=(1, 4)).brief() == "g: 3 of 3 workers up"


def test_autoscaling_workers_that_cannot_be_told_apart_are_held_to_the_summed_range() -> None:
    wanted = Wanted(state="Running", groups={"a": 3, "b": 2}, ranges={"a": (1, 4)})
    unlisted = [worker("zz", i, listed=False) for i in range(3)]  # matches no group: counted together
    p = progress(read("Running", False, [head(), *unlisted]), wanted)
    assert [(g.name, g.up, g.within) for g in p.groups] == [(ALL_WORKERS, 3, (3, 6))]
    assert p.phase == "done"
    assert progress(read("Running", False, [head(), *unlisted[:2]]), wanted).phase == "applying"


def test_an_autoscaling_cluster_in_the_emulator_settles_where_its_autoscaler_keeps_it() -> None:
    emulator, clock, ws, cid, before = seeded(60.0)
    assert before.head_spec is not None and before.head_spec.enable_auto_scaling  # the seed autoscales
    first = before.worker_spec[0].group_name  # replica 2 within [1, 4]
    emulator.autoscaler_holds(ws, cid, {first: 1})
    body = grow_first_group(before, 3)
    emulator.update(ws, cid, body)
    wanted = wanted_after_update(body, state_before=before.state)
    assert progress(RayCluster.model_validate(emulator.snapshot(ws, cid)), wanted).phase == "applying"
    emulator.advance(60)
    done = progress(RayCluster.model_validate(emulator.snapshot(ws, cid)), wanted)
    assert done.phase == "done" and counts(done)[first] == (1, 3)
    # The same counts held to the replica (autoscaling off) would never settle.
    exact = Wanted(state="Running", groups=wanted.groups)
    assert progress(RayCluster.model_validate(emulator.snapshot(ws, cid)), exact).phase == "applying"


def test_a_start_without_a_settle_model_brings_every_groups_workers_up_at_once() -> None:
    emulator, _clock, ws, cid, _before = seeded(0.0)
    emulator.stop(ws, cid, None)
    stopped = RayCluster.model_validate(emulator.snapshot(ws, cid))
    emulator.start(ws, cid, "key", None, "REQ-1")
    done = progress(RayCluster.model_validate(emulator.snapshot(ws, cid)), wanted_after_start(stopped))
    assert done.phase == "done" and all(g.up == g.wanted for g in done.groups)


def test_a_change_is_followed_for_the_groups_it_changed() -> None:
    """A later change of another group (WorkerGroup2) does not keep a WorkerGroup1 change from settling."""
    from bot.emr.changes import DiffEntry

    wanted = Wanted(state="Running", groups={"WorkerGroup1": 3, "WorkerGroup2": 1})
    one = [DiffEntry(path="workerSpec[WorkerGroup1].replica", before=2, after=3)]
    followed = followed_groups(wanted, one)
    assert (followed.groups, followed.ignored) == ({"WorkerGroup1": 3}, ["WorkerGroup2"])
    # WorkerGroup2 runs 5 workers now (a later change): not waited for, not taken for a removed group.
    later = RayCluster.model_validate(
        {
            "state": "Running",
            "instances": [
                *(
                    {"instanceId": f"i-{n}", "type": "Worker", "phase": "Running", "groupName": "WorkerGroup1"}
                    for n in range(3)
                ),
                *(
                    {"instanceId": f"j-{n}", "type": "Worker", "phase": "Running", "groupName": "WorkerGroup2"}
                    for n in range(5)
                ),
            ],
        }
    )
    seen = progress(later, followed)
    assert seen.phase == "done" and [g.name for g in seen.groups] == ["WorkerGroup1"]
    assert progress(later, wanted).phase == "applying"  # every group followed: WorkerGroup2 is not as sent
    head_only = [DiffEntry(path="headSpec.idleTimeoutSeconds", before=900, after=600)]
    assert followed_groups(wanted, head_only) == wanted
    added = [DiffEntry(path="workerSpec[WorkerGroup2]", before=None, after={"groupName": "WorkerGroup2"})]
    assert followed_groups(wanted, added).groups == {"WorkerGroup2": 1}
