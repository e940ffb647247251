"""The read-modify-write core: plan, diff and summarize, over clusters as GetRayCluster returns them."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.emr.changes import (
    MASK,
    AddGroup,
    ChangeError,
    DiffEntry,
    Plan,
    RemoveGroup,
    ReplaceGroup,
    RevertConflict,
    SecretNotKept,
    SetAutoscaling,
    SetFields,
    SetReplicas,
    diff,
    holds_change,
    mask_secrets,
    plan,
    redact_secrets,
    revert_plan,
    summarize,
)
from bot.emr.models import RayCluster, WorkerGroup, dumps_body


def group(name: str, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "groupName": name,
        "workerType": "cpu",
        "replica": 2,
        "minReplica": 1,
        "maxReplica": 4,
        "queueName": "dev_queue",
        "cpu": "4",
        "memory": "16Gi",
    }
    out.update(fields)
    return out


def read(**overrides: Any) -> dict[str, Any]:
    """A GetRayCluster answer: read-only attributes, editable fields, unknown fields inside the specs."""
    out: dict[str, Any] = {
        "clusterId": "rc-123",
        "state": "Running",
        "createTime": 1700000000000,
        "dashboardUrl": "https://example.invalid/dash",
        "requestId": "REQ-1",
        "name": "prod",
        "description": "the production cluster",
        "displayReleaseVersion": "esr-ray-1.0",
        "networkServiceName": "vpc-net",
        "volumeIds": ["vol-1", "vol-2"],
        "headSpec": {
            "queueName": "dev_queue",
            "cpu": "8",
            "memory": "32Gi",
            "enableAutoScaling": False,
            "idleTimeoutSeconds": 300,
            "futureHeadField": {"nested": [1, 2]},
        },
        "workerSpec": [group("WorkerGroup1"), group("WorkerGroup2", futureGroupField="keep me")],
    }
    out.update(overrides)
    return out


def cluster(**overrides: Any) -> RayCluster:
    return RayCluster.model_validate(read(**overrides))


def body(result: Plan) -> dict[str, Any]:
    assert result.body is not None
    return result.body.wire()


def groups_by_name(wire: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["groupName"]: g for g in wire["workerSpec"]}


# --- each change kind -------------------------------------------------------------------------------------------


def test_set_replicas_changes_only_that_group_and_sends_everything_else_as_read():
    c = cluster()
    result = plan(c, [SetReplicas(group="WorkerGroup1", replica=3)])

    sent = body(result)
    expected = c.editable()
    expected["workerSpec"][0]["replica"] = 3
    assert sent == expected
    assert result.diff == [DiffEntry(path="workerSpec[WorkerGroup1].replica", before=2, after=3)]
    assert result.changed


def test_set_replicas_bounds_together():
    result = plan(cluster(), [SetReplicas(group="WorkerGroup2", replica=10, min_replica=2, max_replica=10)])

    g2 = groups_by_name(body(result))["WorkerGroup2"]
    assert (g2["replica"], g2["minReplica"], g2["maxReplica"]) == (10, 2, 10)
    assert [e.path for e in result.diff] == [
        "workerSpec[WorkerGroup2].replica",
        "workerSpec[WorkerGroup2].minReplica",
        "workerSpec[WorkerGroup2].maxReplica",
    ]


def test_set_autoscaling_sets_flag_and_idle_timeout():
    result = plan(cluster(), [SetAutoscaling(enabled=True, idle_timeout_seconds=600)])

    head = body(result)["headSpec"]
    assert head["enableAutoScaling"] is True
    assert head["idleTimeoutSeconds"] == 600
    assert head["futureHeadField"] == {"nested": [1, 2]}
    assert result.diff == [
        DiffEntry(path="headSpec.enableAutoScaling", before=False, after=True),
        DiffEntry(path="headSpec.idleTimeoutSeconds", before=300, after=600),
    ]


def test_set_autoscaling_without_idle_leaves_the_idle_timeout_as_read():
    result = plan(cluster(), [SetAutoscaling(enabled=True)])

    assert body(result)["headSpec"]["idleTimeoutSeconds"] == 300
    assert [e.path for e in result.diff] == ["headSpec.enableAutoScaling"]


def test_set_autoscaling_creates_a_head_spec_when_the_cluster_had_none():
    raw = read()
    del raw["headSpec"]
    result = plan(RayCluster.model_validate(raw), [SetAutoscaling(enabled=False)])

    assert body(result)["headSpec"] == {"enableAutoScaling": False}
    assert result.diff == [DiffEntry(path="headSpec.enableAutoScaling", before=None, after=False)]


def test_set_autoscaling_rejects_a_negative_idle_timeout():
    with pytest.raises(ChangeError, match="0 or more"):
        plan(cluster(), [SetAutoscaling(enabled=True, idle_timeout_seconds=-1)])


def test_set_fields_top_level_and_head():
    result = plan(
        cluster(),
        [SetFields(values={"name": "prod-2", "description": "renamed", "headSpec.cpu": 16, "volumeIds": ["vol-3"]})],
    )

    sent = body(result)
    assert sent["name"] == "prod-2"
    assert sent["description"] == "renamed"
    assert sent["headSpec"]["cpu"] == "16"  # normalized to the wire's string, as the diff shows it
    assert sent["volumeIds"] == ["vol-3"]
    assert result.diff == [
        DiffEntry(path="name", before="prod", after="prod-2"),
        DiffEntry(path="description", before="the production cluster", after="renamed"),
        DiffEntry(path="volumeIds", before=["vol-1", "vol-2"], after=["vol-3"]),
        DiffEntry(path="headSpec.cpu", before="8", after="16"),
    ]


def test_set_fields_none_removes_the_field_from_the_body():
    result = plan(cluster(), [SetFields(values={"description": None, "headSpec.queueName": None})])

    sent = body(result)
    assert "description" not in sent
    assert "queueName" not in sent["headSpec"]
    assert result.diff == [
        DiffEntry(path="description", before="the production cluster", after=None),
        DiffEntry(path="headSpec.queueName", before="dev_queue", after=None),
    ]


def test_set_fields_none_on_an_absent_field_is_a_no_op():
    raw = read()
    del raw["headSpec"]
    result = plan(RayCluster.model_validate(raw), [SetFields(values={"extraParam": None, "headSpec.env": None})])

    assert result == Plan(body=None, diff=[])


def test_replace_group_keeps_unset_and_unknown_fields_and_position():
    spec = WorkerGroup(group_name="WorkerGroup2", memory="64Gi", cpu=16)
    result = plan(cluster(), [ReplaceGroup(group="WorkerGroup2", spec=spec)])

    sent = body(result)
    assert [g["groupName"] for g in sent["workerSpec"]] == ["WorkerGroup1", "WorkerGroup2"]
    assert sent["workerSpec"][1] == group("WorkerGroup2", futureGroupField="keep me", memory="64Gi", cpu="16")
    assert [e.path for e in result.diff] == ["workerSpec[WorkerGroup2].cpu", "workerSpec[WorkerGroup2].memory"]


def test_replace_group_can_rename_in_place():
    result = plan(cluster(), [ReplaceGroup(group="WorkerGroup1", spec=WorkerGroup(group_name="gpu-pool"))])

    sent = body(result)
    assert [g["groupName"] for g in sent["workerSpec"]] == ["gpu-pool", "WorkerGroup2"]
    assert sent["workerSpec"][0] == group("gpu-pool")
    assert result.diff == [
        DiffEntry(path="workerSpec[WorkerGroup1]", before=group("WorkerGroup1"), after=None),
        DiffEntry(path="workerSpec[gpu-pool]", before=None, after=group("gpu-pool")),
    ]


def test_replace_group_explicit_none_removes_the_field():
    spec = WorkerGroup(group_name="WorkerGroup1", queue_name=None)
    sent = body(plan(cluster(), [ReplaceGroup(group="WorkerGroup1", spec=spec)]))

    assert "queueName" not in sent["workerSpec"][0]


def test_add_group_appends_and_keeps_the_others():
    spec = WorkerGroup(group_name="g3", worker_type="gpu", replica=1, min_replica=1, max_replica=2)
    c = cluster()
    result = plan(c, [AddGroup(spec=spec)])

    sent = body(result)
    assert sent["workerSpec"][:2] == c.editable()["workerSpec"]
    assert sent["workerSpec"][2] == {
        "groupName": "g3",
        "workerType": "gpu",
        "replica": 1,
        "minReplica": 1,
        "maxReplica": 2,
    }
    assert result.diff == [DiffEntry(path="workerSpec[g3]", before=None, after=sent["workerSpec"][2])]


def test_add_group_to_a_cluster_without_groups():
    raw = read()
    del raw["workerSpec"]
    result = plan(RayCluster.model_validate(raw), [AddGroup(spec=WorkerGroup(group_name="g1", replica=1))])

    assert body(result)["workerSpec"] == [{"groupName": "g1", "replica": 1}]


def test_remove_group_sends_the_rest():
    result = plan(cluster(), [RemoveGroup(group="WorkerGroup1")])

    sent = body(result)
    assert sent["workerSpec"] == [group("WorkerGroup2", futureGroupField="keep me")]
    assert result.diff == [DiffEntry(path="workerSpec[WorkerGroup1]", before=group("WorkerGroup1"), after=None)]


def test_removing_every_group_sends_an_empty_list_deliberately():
    result = plan(cluster(), [RemoveGroup(group="WorkerGroup1"), RemoveGroup(group="WorkerGroup2")])

    sent = body(result)
    assert sent["workerSpec"] == []
    assert b'"workerSpec":[]' in dumps_body(sent)
    assert [e.path for e in result.diff] == ["workerSpec[WorkerGroup1]", "workerSpec[WorkerGroup2]"]
    assert all(e.after is None for e in result.diff)


def test_changes_apply_in_order():
    changes = [
        ReplaceGroup(group="WorkerGroup1", spec=WorkerGroup(group_name="big")),
        SetReplicas(group="big", max_replica=20),
        SetReplicas(group="big", replica=12),
    ]
    g = groups_by_name(body(plan(cluster(), changes)))["big"]

    assert (g["replica"], g["maxReplica"]) == (12, 20)


def test_bounds_are_checked_on_the_result_not_after_each_step():
    # The replica alone would be above max 4; the later max makes the whole request fine.
    changes = [SetReplicas(group="WorkerGroup1", replica=10), SetReplicas(group="WorkerGroup1", max_replica=10)]
    g = groups_by_name(body(plan(cluster(), changes)))["WorkerGroup1"]

    assert (g["replica"], g["maxReplica"]) == (10, 10)


# --- no-ops, preservation, the workerSpec rule ------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        [SetReplicas(group="WorkerGroup1", replica=2)],
        [SetReplicas(group="WorkerGroup1", replica=2, min_replica=1, max_replica=4)],
        [SetAutoscaling(enabled=False, idle_timeout_seconds=300)],
        [SetFields(values={"name": "prod", "headSpec.cpu": 8})],
        [ReplaceGroup(group="WorkerGroup2", spec=WorkerGroup(group_name="WorkerGroup2", memory="16Gi"))],
        [AddGroup(spec=WorkerGroup(group_name="tmp")), RemoveGroup(group="tmp")],
        [
            SetReplicas(group="WorkerGroup1", replica=7, max_replica=7),
            SetReplicas(group="WorkerGroup1", replica=2, max_replica=4),
        ],
        [],
    ],
    ids=["replica", "all-bounds", "autoscaling", "fields", "replace", "add-remove", "there-and-back", "empty"],
)
def test_nothing_changes_means_nothing_to_send(changes):
    assert plan(cluster(), changes) == Plan(body=None, diff=[])


def test_changing_one_of_fifty_groups_leaves_the_other_49_byte_identical():
    raw = read(workerSpec=[group(f"g{i:02}", futureGroupField={"i": i}) for i in range(50)])
    c = RayCluster.model_validate(raw)
    before = c.editable()["workerSpec"]

    result = plan(c, [SetReplicas(group="g17", replica=3)])

    after = body(result)["workerSpec"]
    assert len(after) == 50
    assert [g["groupName"] for g in after] == [g["groupName"] for g in before]
    for old, new in zip(before, after, strict=True):
        if old["groupName"] == "g17":
            assert new == {**old, "replica": 3}
        else:
            assert dumps_body(new) == dumps_body(old)
    assert result.diff == [DiffEntry(path="workerSpec[g17].replica", before=2, after=3)]


def test_fifty_one_groups_are_refused():
    raw = read(workerSpec=[group(f"g{i:02}") for i in range(50)])
    with pytest.raises(ChangeError, match="at most 50 worker groups"):
        plan(RayCluster.model_validate(raw), [AddGroup(spec=WorkerGroup(group_name="one-too-many", replica=1))])


def test_unknown_fields_in_head_and_groups_survive_any_change():
    sent = body(plan(cluster(), [SetFields(values={"description": "x"})]))

    assert sent["headSpec"]["futureHeadField"] == {"nested": [1, 2]}
    assert sent["workerSpec"][1]["futureGroupField"] == "keep me"


def test_read_only_top_level_attributes_are_not_sent():
    sent = body(plan(cluster(), [SetFields(values={"description": "x"})]))

    assert not {"clusterId", "state", "createTime", "dashboardUrl", "requestId"} & set(sent)


def test_fields_absent_in_the_read_stay_absent():
    raw = {
        "clusterId": "rc-1",
        "name": "tiny",
        "headSpec": {"cpu": "2"},
        "workerSpec": [{"groupName": "g1", "replica": 1}],
    }
    result = plan(RayCluster.model_validate(raw), [SetReplicas(group="g1", replica=2)])

    assert body(result) == {"name": "tiny", "headSpec": {"cpu": "2"}, "workerSpec": [{"groupName": "g1", "replica": 2}]}


@pytest.mark.parametrize("as_read", [[], None, "absent"])
def test_an_empty_or_missing_worker_spec_is_never_sent_back(as_read):
    raw = read()
    if as_read == "absent":
        del raw["workerSpec"]
    else:
        raw["workerSpec"] = as_read
    sent = body(plan(RayCluster.model_validate(raw), [SetFields(values={"name": "other"})]))

    assert "workerSpec" not in sent


def test_the_body_model_serializes_to_exactly_the_planned_dict():
    result = plan(cluster(), [SetReplicas(group="WorkerGroup1", replica=3)])

    assert result.body is not None
    assert dumps_body(result.body.wire()) == dumps_body(body(result))
    assert "futureGroupField" in dumps_body(result.body.wire()).decode()


# --- errors -----------------------------------------------------------------------------------------------------


def test_unknown_group_names_the_clusters_groups():
    with pytest.raises(ChangeError) as caught:
        plan(cluster(), [SetReplicas(group="WorkerGroup9", replica=3)])

    message = str(caught.value)
    assert "WorkerGroup9" in message
    assert "WorkerGroup1, WorkerGroup2" in message


def test_unknown_group_on_a_cluster_without_groups():
    raw = read()
    del raw["workerSpec"]
    with pytest.raises(ChangeError, match="no worker groups"):
        plan(RayCluster.model_validate(raw), [SetReplicas(group="g1", replica=1)])


def test_set_replicas_needs_something_to_set():
    with pytest.raises(ChangeError, match="replicas, min or max"):
        plan(cluster(), [SetReplicas(group="WorkerGroup1")])


def test_replica_above_max_suggests_raising_max():
    with pytest.raises(ChangeError) as caught:
        plan(cluster(), [SetReplicas(group="WorkerGroup1", replica=10)])

    message = str(caught.value)
    assert "WorkerGroup1: 10 replicas is above its max 4; set max=10 as well" in message
    assert "set max=10 as well" in message


def test_advice_never_asks_for_more_than_the_role_allows():
    from bot.emr.changes import ReplicaCap

    with pytest.raises(ChangeError) as caught:
        plan(cluster(), [SetReplicas(group="WorkerGroup1", replica=50)])
    error = caught.value
    per_group = ReplicaCap(40, "at most 40 replicas per group")
    assert error.within_cap(lambda group: None) is error
    assert error.within_cap(lambda group: ReplicaCap(60, "at most 60 replicas per group")) is error  # allowed as is
    capped = str(error.within_cap(lambda group: per_group))
    assert capped == (
        "cannot make this change: WorkerGroup1 cannot go to 50: your role allows at most 40 replicas per group; "
        "ask for at most 4 replicas, or for at most 40 with max=40 as well"
    )
    assert str(error.within_cap(lambda group: ReplicaCap(3, "at most 3 replicas per group"))).endswith(
        "ask for at most 3 replicas"
    )
    stepped = ReplicaCap(10, "changing a group by at most 8 replicas at once (2 now, so at most 10)")
    assert str(error.within_cap(lambda group: stepped)) == (
        "cannot make this change: WorkerGroup1 cannot go to 50: your role allows changing a group by at most "
        "8 replicas at once (2 now, so at most 10); ask for at most 4 replicas, or for at most 10 with max=10 as well"
    )


def test_replica_below_min_suggests_lowering_min():
    with pytest.raises(ChangeError) as caught:
        plan(cluster(), [SetReplicas(group="WorkerGroup1", replica=2, min_replica=3)])

    message = str(caught.value)
    assert "WorkerGroup1: 2 replicas is below its min 3; set min=2 as well" in message
    assert "set min=2 as well" in message


def test_lowering_max_below_the_current_replica_is_refused():
    with pytest.raises(ChangeError, match="WorkerGroup2: 2 replicas is above its max 1"):
        plan(cluster(), [SetReplicas(group="WorkerGroup2", max_replica=1)])


def test_min_above_max():
    with pytest.raises(ChangeError) as caught:
        plan(cluster(), [SetReplicas(group="WorkerGroup1", min_replica=5)])

    message = str(caught.value)
    assert "WorkerGroup1: min 5 is above its max 4; set max=5 as well" in message
    assert "set max=5 as well" in message


def test_replica_below_one_is_reported_as_such_not_as_a_bounds_problem():
    with pytest.raises(ChangeError) as caught:
        plan(cluster(), [SetReplicas(group="WorkerGroup1", replica=0)])

    message = str(caught.value)
    assert "WorkerGroup1 replicas: replica must be at least 1, not 0" in message
    assert "min=" not in message


def test_add_group_with_an_existing_name():
    with pytest.raises(ChangeError, match="already has a worker group WorkerGroup2"):
        plan(cluster(), [AddGroup(spec=WorkerGroup(group_name="WorkerGroup2", replica=1))])


def test_add_group_without_a_name():
    with pytest.raises(ChangeError, match="every worker group needs a name"):
        plan(cluster(), [AddGroup(spec=WorkerGroup(replica=1))])


def test_rename_onto_another_group_is_refused():
    with pytest.raises(ChangeError, match="already has a group WorkerGroup2"):
        plan(cluster(), [ReplaceGroup(group="WorkerGroup1", spec=WorkerGroup(group_name="WorkerGroup2"))])


def test_remove_unknown_group_names_the_clusters_groups():
    with pytest.raises(ChangeError, match="WorkerGroup1, WorkerGroup2"):
        plan(cluster(), [RemoveGroup(group="nope")])


@pytest.mark.parametrize("path", ["clusterId", "headSpec", "workerSpec", "headSpec.gftConfig", "headSpec.nope", "cpu"])
def test_set_fields_refuses_paths_it_cannot_edit(path):
    with pytest.raises(ChangeError) as caught:
        plan(cluster(), [SetFields(values={path: "x"})])

    message = str(caught.value)
    assert repr(path) in message
    assert "headSpec.enableAutoScaling" in message  # the list of what can be edited


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"name": ""}, "name must be 1 to 64 characters long"),
        ({"name": "x" * 65}, "name must be 1 to 64 characters long"),
        ({"extraParam": "{not json"}, "extraParam must be a JSON document"),
        ({"headSpec.memory": "16G"}, "head memory: memory must be a whole number of GiB"),
        ({"headSpec.cpu": "-1"}, "head CPU: cpu must be a positive number"),
        ({"headSpec.idleTimeoutSeconds": -5}, "idleTimeoutSeconds must not be negative"),
    ],
)
def test_documented_constraints_become_change_errors(values, expected):
    with pytest.raises(ChangeError, match="cannot make this change") as caught:
        plan(cluster(), [SetFields(values=values)])

    assert expected in str(caught.value)


def test_wrong_types_become_change_errors_with_wire_paths():
    with pytest.raises(ChangeError) as caught:
        plan(cluster(), [SetFields(values={"headSpec.enableAutoScaling": "maybe", "volumeIds": "vol-1"})])

    message = str(caught.value)
    assert "autoscaling: Input should be a valid boolean" in message
    assert "(given 'maybe')" in message
    assert "volumes: Input should be a valid list" in message


def test_set_fields_needs_something_to_set():
    with pytest.raises(ChangeError, match="say which fields"):
        plan(cluster(), [SetFields(values={})])


def test_several_problems_are_listed_together():
    with pytest.raises(ChangeError) as caught:
        plan(cluster(), [SetFields(values={"name": "", "headSpec.memory": "lots"})])

    lines = str(caught.value).splitlines()
    assert lines[0] == "cannot make this change:"
    assert [line.split(":")[0] for line in lines[1:]] == ["• cluster name", "• head memory"]


def test_problems_already_in_the_read_are_labelled_as_such():
    raw = read(workerSpec=[group("ok"), group("broken", memory="16GB")])
    with pytest.raises(ChangeError) as caught:
        plan(RayCluster.model_validate(raw), [SetReplicas(group="ok", replica=3)])

    assert "broken memory: memory must be" in str(caught.value)
    assert "already so in the cluster as read" in str(caught.value)


# --- diff -------------------------------------------------------------------------------------------------------


def test_diff_paths_and_order():
    before = {
        "name": "a",
        "volumeIds": ["v1"],
        "headSpec": {"cpu": "4", "enableAutoScaling": False},
        "workerSpec": [{"groupName": "g1", "replica": 1}, {"groupName": "g2", "replica": 1}],
    }
    after = {
        "workerSpec": [{"groupName": "g2", "replica": 5}, {"groupName": "new", "replica": 1}],
        "headSpec": {"cpu": "4", "enableAutoScaling": True, "idleTimeoutSeconds": 60},
        "volumeIds": ["v1", "v2"],
        "name": "b",
        "description": "d",
    }

    assert diff(before, after) == [
        DiffEntry(path="name", before="a", after="b"),
        DiffEntry(path="description", before=None, after="d"),
        DiffEntry(path="volumeIds", before=["v1"], after=["v1", "v2"]),
        DiffEntry(path="headSpec.enableAutoScaling", before=False, after=True),
        DiffEntry(path="headSpec.idleTimeoutSeconds", before=None, after=60),
        DiffEntry(path="workerSpec[g1]", before={"groupName": "g1", "replica": 1}, after=None),
        DiffEntry(path="workerSpec[g2].replica", before=1, after=5),
        DiffEntry(path="workerSpec[new]", before=None, after={"groupName": "new", "replica": 1}),
    ]


def test_diff_matches_groups_by_name_not_position():
    g1, g2 = {"groupName": "g1", "replica": 1}, {"groupName": "g2", "replica": 2}

    assert diff({"workerSpec": [g1, g2]}, {"workerSpec": [g2, g1]}) == []


def test_diff_treats_null_and_absent_alike_and_identical_bodies_as_empty():
    body_ = read()
    assert diff(body_, copy.deepcopy(body_)) == []
    assert diff({"description": None, "headSpec": None}, {}) == []


def test_diff_of_nested_unknown_fields_and_secrets():
    before = {"headSpec": {"gftConfig": {"redisUrl": "r1", "redisPassword": "hunter2"}, "x": {"y": 1}}}
    after = {"headSpec": {"gftConfig": {"redisUrl": "r2", "redisPassword": "swordfish"}, "x": {"y": 2}}}

    entries = diff(before, after)
    assert [e.path for e in entries] == [
        "headSpec.gftConfig.redisUrl",
        "headSpec.gftConfig.redisPassword",
        "headSpec.x.y",
    ]
    assert "hunter2" not in repr(entries)
    assert "swordfish" not in repr(entries)


def test_diff_keys_unnamed_and_repeated_groups_uniquely():
    before = {"workerSpec": [{"groupName": "g", "replica": 1}, {"groupName": "g", "replica": 2}, {"replica": 3}]}
    after = {"workerSpec": [{"groupName": "g", "replica": 1}, {"groupName": "g", "replica": 9}, {"replica": 3}]}

    assert diff(before, after) == [DiffEntry(path="workerSpec[g#2].replica", before=2, after=9)]


# --- summarize --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ([SetReplicas(group="WorkerGroup1", replica=10, min_replica=2)], "WorkerGroup1 replicas → 10, min → 2"),
        ([SetReplicas(group="g", max_replica=8)], "g max → 8"),
        ([SetAutoscaling(enabled=True, idle_timeout_seconds=600)], "autoscaling on (idle 600 s)"),
        ([SetAutoscaling(enabled=False)], "autoscaling off"),
        ([AddGroup(spec=WorkerGroup(group_name="g3"))], "add group g3"),
        ([RemoveGroup(group="g2")], "remove group g2"),
        ([SetFields(values={"name": "a", "description": "b"})], "edit name, description"),
        ([ReplaceGroup(group="g1", spec=WorkerGroup(group_name="g1", cpu="8"))], "edit group g1"),
        ([ReplaceGroup(group="g1", spec=WorkerGroup(group_name="g9"))], "edit group g1 (renamed g9)"),
        (
            [SetReplicas(group="g1", replica=3), SetAutoscaling(enabled=True)],
            "g1 replicas → 3; autoscaling on",
        ),
        ([], "nothing"),
    ],
)
def test_summarize(changes, expected):
    assert summarize(changes) == expected


# --- properties -------------------------------------------------------------------------------------------------

_names = st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True), min_size=1, max_size=8, unique=True)


@st.composite
def _cluster_and_resizes(draw: st.DrawFn) -> tuple[RayCluster, list[SetReplicas]]:
    names = draw(_names)
    groups = []
    for name in names:
        low = draw(st.integers(1, 5))
        high = draw(st.integers(low, 10))
        groups.append(group(name, minReplica=low, maxReplica=high, replica=draw(st.integers(low, high))))
    targets = draw(st.lists(st.sampled_from(names), max_size=len(names), unique=True))
    resizes = []
    for name in targets:
        current = next(g for g in groups if g["groupName"] == name)
        replica = draw(st.integers(current["minReplica"], current["maxReplica"]))
        resizes.append(SetReplicas(group=name, replica=replica))
    return RayCluster.model_validate(read(workerSpec=groups)), resizes


@settings(max_examples=75, deadline=None)
@given(_cluster_and_resizes())
def test_property_diff_reports_exactly_the_groups_whose_replica_changed(case):
    c, resizes = case
    before = {g["groupName"]: g for g in c.editable()["workerSpec"]}
    really_changed = {r.group for r in resizes if r.replica != before[r.group]["replica"]}

    result = plan(c, resizes)

    assert {e.path for e in result.diff} == {f"workerSpec[{name}].replica" for name in really_changed}
    if not really_changed:
        assert result.body is None
        return
    sent = body(result)
    assert [g["groupName"] for g in sent["workerSpec"]] == list(before)
    for g in sent["workerSpec"]:
        if g["groupName"] not in really_changed:
            assert dumps_body(g) == dumps_body(before[g["groupName"]])


@settings(max_examples=50, deadline=None)
@given(_names, st.data())
def test_property_removing_a_subset_keeps_the_rest_in_order_and_empties_only_when_all_go(names, data):
    c = RayCluster.model_validate(read(workerSpec=[group(n) for n in names]))
    removed = data.draw(st.lists(st.sampled_from(names), min_size=1, unique=True))

    result = plan(c, [RemoveGroup(group=n) for n in removed])

    sent = body(result)
    assert [g["groupName"] for g in sent["workerSpec"]] == [n for n in names if n not in removed]
    assert (sent["workerSpec"] == []) == (set(removed) == set(names))
    assert [e.path for e in result.diff] == [f"workerSpec[{n}]" for n in names if n in removed]


@settings(max_examples=50, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["name", "description", "networkServiceName", "headSpec.queueName", "headSpec.env"]),
        st.one_of(st.none(), st.text(min_size=1, max_size=20)),
        min_size=1,
    )
)
def test_property_set_fields_diff_matches_the_body(values):
    c = cluster()
    result = plan(c, [SetFields(values=values)])

    def at(wire: dict[str, Any], path: str) -> Any:
        if path.startswith("headSpec."):
            return (wire.get("headSpec") or {}).get(path.removeprefix("headSpec."))
        return wire.get(path)

    before = c.editable()
    changed = {p for p, v in values.items() if at(before, p) != v}
    assert {e.path for e in result.diff} == changed
    if result.body is not None:
        sent = result.body.wire()
        for path, value in values.items():
            assert at(sent, path) == value
        assert sent["workerSpec"] == before["workerSpec"]


# --- revert_plan: Undo and the revert of temporary resizes -------------------------------------------------------


def _seeded_prod() -> RayCluster:
    import json
    from pathlib import Path

    seed = json.loads((Path(__file__).resolve().parents[1] / "bot" / "sandbox" / "seed_clusters.json").read_text())
    return RayCluster.model_validate(seed[0])


def test_revert_puts_back_every_changed_field_including_whole_groups():
    from bot.emr.changes import AddGroup, RemoveGroup, SetAutoscaling, SetReplicas, revert_plan

    cluster = _seeded_prod()
    before = cluster.editable()
    applied = plan(
        cluster,
        [
            SetReplicas(group="WorkerGroup1", replica=3),
            SetAutoscaling(enabled=False),
            RemoveGroup(group="WorkerGroup2"),
            AddGroup(spec=WorkerGroup(group_name="g3", replica=1, min_replica=1, max_replica=2, worker_type="cpu")),
        ],
    ).body.wire()
    now = RayCluster.model_validate(applied)
    undo = revert_plan(now, before, applied)
    assert undo.body.wire() == before  # byte for byte what was read before the change, group order included
    assert {d.path for d in undo.diff} == {
        "headSpec.enableAutoScaling",
        "workerSpec[WorkerGroup1].replica",
        "workerSpec[WorkerGroup2]",
        "workerSpec[g3]",
    }


def test_revert_keeps_fields_the_change_did_not_touch():
    from bot.emr.changes import SetReplicas, revert_plan

    cluster = _seeded_prod()
    before = cluster.editable()
    applied = plan(cluster, [SetReplicas(group="WorkerGroup1", replica=3)]).body.wire()
    later = copy.deepcopy(applied)
    later["workerSpec"][1]["replica"] = 5  # someone else resized another group since
    later["description"] = "changed by someone else"
    undo = revert_plan(RayCluster.model_validate(later), before, applied).body.wire()
    assert undo["workerSpec"][0]["replica"] == 2
    assert undo["workerSpec"][1]["replica"] == 5
    assert undo["description"] == "changed by someone else"


def test_revert_refuses_when_a_changed_field_was_changed_again():
    from bot.emr.changes import RevertConflict, SetReplicas, revert_plan

    cluster = _seeded_prod()
    before = cluster.editable()
    applied = plan(cluster, [SetReplicas(group="WorkerGroup1", replica=3)]).body.wire()
    later = copy.deepcopy(applied)
    later["workerSpec"][0]["replica"] = 7
    with pytest.raises(RevertConflict) as caught:
        revert_plan(RayCluster.model_validate(later), before, applied)
    [conflict] = caught.value.conflicts
    assert (conflict.path, conflict.before, conflict.after) == ("workerSpec[WorkerGroup1].replica", 3, 7)
    assert "it is now 7" in str(caught.value)


# --- secrets: a mask is never sent (issue item 9) ----------------------------------------------------------------


def secret_cluster(**overrides: Any) -> RayCluster:
    """A cluster whose groups carry an image pull secret and whose head holds a Redis password."""
    wire = read(
        workerSpec=[
            group("WorkerGroup1", imagePullSecret="real"),
            group("WorkerGroup2", replica=30, maxReplica=40, imagePullSecret="real-2"),
        ]
    )
    wire["headSpec"]["gftConfig"] = {"redisUrl": "redis://r:6379", "redisPassword": "hunter2"}
    wire.update(overrides)
    return RayCluster.model_validate(wire)


def test_an_edit_of_a_replica_sends_every_secret_as_read():
    c = secret_cluster()
    sent = body(plan(c, [SetReplicas(group="WorkerGroup1", replica=3)]))
    assert [g["imagePullSecret"] for g in sent["workerSpec"]] == ["real", "real-2"]
    assert sent["headSpec"]["gftConfig"]["redisPassword"] == "hunter2"
    assert MASK not in dumps_body(sent).decode()


def test_a_whole_group_copied_from_a_masked_draft_sends_the_secret_as_read():
    c = secret_cluster()
    drafted = redact_secrets(c.editable())["workerSpec"][0] | {"replica": 3}
    assert drafted["imagePullSecret"] == MASK
    result = plan(c, [ReplaceGroup(group="WorkerGroup1", spec=WorkerGroup.model_validate(drafted))])
    sent = groups_by_name(body(result))["WorkerGroup1"]
    assert sent["imagePullSecret"] == "real" and sent["replica"] == 3
    assert [d.path for d in result.diff] == ["workerSpec[WorkerGroup1].replica"]


def test_a_renamed_group_keeps_its_secret():
    c = secret_cluster()
    drafted = redact_secrets(c.editable())["workerSpec"][1] | {"groupName": "big"}
    sent = body(plan(c, [ReplaceGroup(group="WorkerGroup2", spec=WorkerGroup.model_validate(drafted))]))
    assert sent["workerSpec"][1]["groupName"] == "big" and sent["workerSpec"][1]["imagePullSecret"] == "real-2"


def test_masked_values_nested_in_a_group_come_from_the_read():
    c = cluster(
        workerSpec=[
            group("WorkerGroup1", registry={"user": "u", "token": "t0k", "mirrors": [{"accessKeySecret": "k"}]})
        ]
    )
    drafted = redact_secrets(c.editable())["workerSpec"][0] | {"replica": 3}
    assert drafted["registry"] == {"user": "u", "token": MASK, "mirrors": [{"accessKeySecret": MASK}]}
    sent = body(plan(c, [ReplaceGroup(group="WorkerGroup1", spec=WorkerGroup.model_validate(drafted))]))
    assert sent["workerSpec"][0]["registry"] == {"user": "u", "token": "t0k", "mirrors": [{"accessKeySecret": "k"}]}


def test_a_masked_value_in_set_fields_is_the_value_as_read():
    sent = body(plan(cluster(), [SetFields(values={"description": MASK, "name": "renamed"})]))
    assert sent["description"] == "the production cluster" and sent["name"] == "renamed"


def test_adding_a_group_with_a_masked_secret_is_refused():
    c = secret_cluster()
    copied = redact_secrets(c.editable())["workerSpec"][0] | {"groupName": "WorkerGroup3"}
    with pytest.raises(ChangeError) as caught:
        plan(c, [AddGroup(spec=WorkerGroup.model_validate(copied))])
    message = str(caught.value)
    assert message.startswith("workerSpec[WorkerGroup3].imagePullSecret is a secret raybot cannot send")
    assert "Nothing was sent; leave that field out of WorkerGroup3 and set it in the EMR console" in message


def test_a_masked_field_the_group_never_had_is_refused():
    c = cluster()  # no secrets anywhere
    spec = WorkerGroup.model_validate({"imagePullSecret": MASK})
    with pytest.raises(
        ChangeError, match=r"workerSpec\[WorkerGroup1\]\.imagePullSecret is a secret raybot cannot send"
    ):
        plan(c, [ReplaceGroup(group="WorkerGroup1", spec=spec)])


def test_a_read_that_holds_the_mask_itself_is_sent_back_as_read():
    # A cluster a masked value already reached (before this was fixed) is not made uneditable: untouched is as read.
    c = cluster(workerSpec=[group("WorkerGroup1", imagePullSecret=MASK), group("WorkerGroup2")])
    sent = body(plan(c, [SetReplicas(group="WorkerGroup2", replica=3)]))
    assert sent["workerSpec"][0]["imagePullSecret"] == MASK


def test_redact_secrets_masks_every_secret_at_any_depth():
    wire = {
        "name": "prod",
        "headSpec": {"gftConfig": {"redisUrl": "r", "redisPassword": "p"}, "cpu": "4"},
        "workerSpec": [
            {
                "groupName": "token-workers",  # a value, not a key: kept
                "imagePullSecret": "s",
                "env": [{"name": "A", "token": "t"}, {"name": "B", "value": "v"}],
                "auth": {"accessKeyId": "id", "accessKeySecret": "k", "passwd": "p"},
                "secrets": {"a": "b"},  # a secret field holding a mapping is masked whole
                "emptyToken": None,
            }
        ],
    }
    original = copy.deepcopy(wire)
    masked = redact_secrets(wire)
    assert wire == original  # a copy
    assert masked["headSpec"] == {"gftConfig": {"redisUrl": "r", "redisPassword": MASK}, "cpu": "4"}
    [g] = masked["workerSpec"]
    assert g["groupName"] == "token-workers" and g["imagePullSecret"] == MASK
    assert g["env"] == [{"name": "A", "token": MASK}, {"name": "B", "value": "v"}]
    assert g["auth"] == {"accessKeyId": MASK, "accessKeySecret": MASK, "passwd": MASK}
    assert g["secrets"] == MASK and g["emptyToken"] is None
    assert redact_secrets(None) is None
    assert mask_secrets("x", "redisPassword") == MASK and mask_secrets("x", "name") == "x"


def test_a_masked_record_compared_with_a_fresh_read_shows_no_change():
    c = secret_cluster()
    assert diff(redact_secrets(c.editable()), c.editable()) == []
    assert diff(c.editable(), redact_secrets(c.editable())) == []
    # A secret that is gone, or a real change next to it, still shows.
    fresh = c.editable()
    del fresh["workerSpec"][0]["imagePullSecret"]
    fresh["workerSpec"][1]["replica"] = 31
    assert [(d.path, d.before, d.after) for d in diff(redact_secrets(c.editable()), fresh)] == [
        ("workerSpec[WorkerGroup1].imagePullSecret", MASK, None),
        ("workerSpec[WorkerGroup2].replica", 30, 31),
    ]


def test_diff_masks_by_field_name_not_by_group_name():
    before = {"workerSpec": [{"groupName": "token-workers", "replica": 1}]}
    [entry] = diff(before, {"workerSpec": []})
    assert entry.before == {"groupName": "token-workers", "replica": 1}


def _audited(c: RayCluster, changes: list[Any]) -> tuple[dict[str, Any], dict[str, Any], RayCluster]:
    """The change as the audit log keeps it (masked, as flow.call_audited stores it), and the cluster after it."""
    sent = body(plan(c, changes))
    return redact_secrets(c.editable()), redact_secrets(sent), RayCluster.model_validate(sent)


def test_undo_of_a_resize_sends_the_real_secrets_as_read():
    c = secret_cluster()
    before, applied, now = _audited(c, [SetReplicas(group="WorkerGroup1", replica=3)])
    assert applied["headSpec"]["gftConfig"]["redisPassword"] == MASK  # what the log keeps
    assert holds_change(now, before, applied)
    undo = revert_plan(now, before, applied, change_id=7)
    sent = body(undo)
    assert sent["headSpec"]["gftConfig"]["redisPassword"] == "hunter2"
    assert [g["imagePullSecret"] for g in sent["workerSpec"]] == ["real", "real-2"]
    assert sent["workerSpec"][0]["replica"] == 2
    assert [d.path for d in undo.diff] == ["workerSpec[WorkerGroup1].replica"]


def test_undo_of_a_removed_group_with_a_secret_is_refused():
    c = secret_cluster()
    before, applied, now = _audited(c, [RemoveGroup(group="WorkerGroup2")])
    with pytest.raises(SecretNotKept) as caught:
        revert_plan(now, before, applied, change_id=7)
    assert str(caught.value) == (
        "change #7 removed WorkerGroup2, whose imagePullSecret raybot does not keep; "
        "restore it by hand (nothing was sent)"
    )
    assert isinstance(caught.value, RevertConflict) and caught.value.conflicts == []  # callers explain it as one
    with pytest.raises(SecretNotKept, match="^the change removed WorkerGroup2"):
        revert_plan(now, before, applied)


def test_undo_that_would_put_back_a_removed_secret_field_is_refused():
    c = secret_cluster()
    gone = WorkerGroup.model_validate({"imagePullSecret": None})
    before, applied, now = _audited(c, [ReplaceGroup(group="WorkerGroup1", spec=gone)])
    with pytest.raises(SecretNotKept) as caught:
        revert_plan(now, before, applied, change_id=3)
    assert str(caught.value) == (
        "change #3 removed workerSpec[WorkerGroup1].imagePullSecret, a secret raybot does not keep; "
        "restore it by hand (nothing was sent)"
    )


def test_undo_of_an_added_group_with_a_secret_removes_it():
    c = secret_cluster()
    new = WorkerGroup.model_validate(group("WorkerGroup3", imagePullSecret="fresh"))
    before, applied, now = _audited(c, [AddGroup(spec=new)])
    assert applied["workerSpec"][2]["imagePullSecret"] == MASK
    assert holds_change(now, before, applied)  # the masked record matches the real secret
    sent = body(revert_plan(now, before, applied))
    assert [g["groupName"] for g in sent["workerSpec"]] == ["WorkerGroup1", "WorkerGroup2"]
    assert sent["workerSpec"][1]["imagePullSecret"] == "real-2"


def test_a_revert_conflict_never_shows_a_secret():
    c = secret_cluster()
    new = WorkerGroup.model_validate(group("WorkerGroup3", imagePullSecret="fresh"))
    before, applied, now = _audited(c, [AddGroup(spec=new)])
    later = now.editable()
    later["workerSpec"][2]["replica"] = 3  # someone resized the added group since
    later_cluster = RayCluster.model_validate(later)
    assert not holds_change(later_cluster, before, applied)
    with pytest.raises(RevertConflict) as caught:
        revert_plan(later_cluster, before, applied)
    assert "group WorkerGroup3: the change set" in str(caught.value)  # a whole group, added by the change
    assert '"replica": 3' in str(caught.value) and MASK in str(caught.value)
    assert "fresh" not in str(caught.value) and "fresh" not in repr(caught.value.conflicts)


def test_holds_change_is_false_when_a_masked_secret_is_gone():
    c = secret_cluster()
    new = WorkerGroup.model_validate(group("WorkerGroup3", imagePullSecret="fresh"))
    before, applied, now = _audited(c, [AddGroup(spec=new)])
    without = now.editable()
    del without["workerSpec"][2]["imagePullSecret"]
    assert not holds_change(RayCluster.model_validate(without), before, applied)


def test_kept_group_changes_survive_a_round_trip_unchanged():
    from pydantic import TypeAdapter

    from bot.emr.changes import Change

    adapter = TypeAdapter(list[Change])
    changes = [
        ReplaceGroup(group="WorkerGroup1", spec=WorkerGroup.model_validate({"replica": 3, "gpuSpec": None})),
        AddGroup(spec=WorkerGroup(group_name="g3", replica=1)),
    ]
    again = adapter.validate_python(adapter.dump_python(changes, mode="json"))
    assert [c.spec.wire() for c in again] == [{"replica": 3, "gpuSpec": None}, {"groupName": "g3", "replica": 1}]
    # Planned again (an approval's replay), only what was set changes: the other fields stay as read.
    assert body(plan(cluster(), again)) == body(plan(cluster(), changes))
