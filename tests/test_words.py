"""bot/slack/words.py: a change in plain words, for every kind of field the spec has."""

from __future__ import annotations

import pytest

from bot.emr.changes import MASK, DiffEntry, diff
from bot.slack.words import (
    change_in_words,
    diff_in_words,
    duration_in_words,
    path_in_words,
    record_in_words,
    replicas_in_words,
    workers_up,
)


def entry(path: str, before: object = None, after: object = None) -> DiffEntry:
    return DiffEntry(path=path, before=before, after=after)


@pytest.mark.parametrize(
    ("path", "before", "after", "expected"),
    [
        # worker groups: replicas and bounds
        ("workerSpec[WorkerGroup1].replica", 2, 3, "WorkerGroup1: 2 → 3 replicas"),
        ("workerSpec[WorkerGroup1].replica", 2, 1, "WorkerGroup1: 2 → 1 replica"),
        ("workerSpec[WorkerGroup1].replica", None, 4, "WorkerGroup1: replicas set to 4"),
        ("workerSpec[WorkerGroup1].replica", 4, None, "WorkerGroup1: replicas cleared (was 4)"),
        ("workerSpec[WorkerGroup1].minReplica", 1, 2, "WorkerGroup1: min 1 → 2"),
        ("workerSpec[WorkerGroup1].maxReplica", 4, 10, "WorkerGroup1: max 4 → 10"),
        ("workerSpec[WorkerGroup1].maxReplica", None, 10, "WorkerGroup1: max set to 10"),
        # worker groups: resources
        ("workerSpec[G].cpu", "4", "8", "G: CPU 4 → 8"),
        ("workerSpec[G].memory", "16Gi", "32Gi", "G: memory 16 GiB → 32 GiB"),
        ("workerSpec[G].gpuSpec", None, "1*A10", "G: GPU set to 1*A10"),
        ("workerSpec[G].gpuSpec", "1*A10", None, "G: GPU cleared (was 1*A10)"),
        ("workerSpec[G].workerType", "cpu", "gpu", "G: instance type cpu → gpu"),
        ("workerSpec[G].queueName", "a", "b", "G: queue a → b"),
        ("workerSpec[G].rayStartParams", "x", "y", "G: Ray start parameters x → y"),
        ("workerSpec[G].nodeSelector.zone", "a", "b", "G: node selector zone a → b"),
        # whole groups
        ("workerSpec[GpuGroup]", {"groupName": "GpuGroup", "replica": 1}, None, "GpuGroup removed (1 replica)"),
        ("workerSpec[New]", None, {"groupName": "New", "replica": 2, "maxReplica": 4}, "New added (2 replicas)"),
        ("workerSpec[#0].replica", 1, 2, "unnamed group 1: 1 → 2 replicas"),
        ("workerSpec[G#2].replica", 1, 2, "G (#2): 1 → 2 replicas"),
        # a group name with "]" and "." in it is the name, not a path
        ("workerSpec[a]b.replica].replica", 1, 2, "a]b.replica: 1 → 2 replicas"),
        # the head
        ("headSpec.enableAutoScaling", False, True, "autoscaling turned on"),
        ("headSpec.enableAutoScaling", True, False, "autoscaling turned off"),
        ("headSpec.enableAutoScaling", None, True, "autoscaling: set to on"),
        ("headSpec.idleTimeoutSeconds", 900, 600, "autoscaling idle timeout: 900 s → 600 s"),
        ("headSpec.cpu", "4", "8", "head CPU: 4 → 8"),
        ("headSpec.memory", "16Gi", "32Gi", "head memory: 16 GiB → 32 GiB"),
        ("headSpec.gpuSpec", None, "1*A10", "head GPU: set to 1*A10"),
        ("headSpec.queueName", "a", "b", "head queue: a → b"),
        ("headSpec.gftEnabled", False, True, "head fault tolerance (GFT): off → on"),
        ("headSpec.gftConfig.redisUrl", "r1", "r2", "fault tolerance Redis URL: r1 → r2"),
        ("headSpec.gftConfig.redisPassword", MASK, MASK, "fault tolerance Redis password: changed"),
        ("headSpec.futureKnob", 1, 2, "head future knob: 1 → 2"),
        # the cluster's own fields
        ("name", "a", "b", "cluster name: a → b"),
        ("description", None, "x", "description: set to x"),
        ("displayReleaseVersion", "esr-2", "esr-3", "release version: esr-2 → esr-3"),
        ("networkServiceName", "n1", "n2", "network service: n1 → n2"),
        ("extraParam", "{}", '{"a":1}', 'extra parameters: {} → {"a":1}'),
        ("volumeIds", ["v1"], ["v1", "v2"], 'volumes: ["v1"] → ["v1", "v2"]'),
        ("someNewTopField", 1, 2, "some new top field: 1 → 2"),
    ],
)
def test_every_kind_of_field_in_words(path, before, after, expected):
    assert change_in_words([entry(path, before, after)]) == expected
    # The detail line says the same (an added group with its bounds as well).
    [detail] = diff_in_words([entry(path, before, after)])
    assert detail == expected or detail.startswith(expected.split(" (")[0] + ": ")


def test_no_api_path_ever_shows():
    every = [
        entry("workerSpec[G].replica", 1, 2),
        entry("workerSpec[G].unknownField.deeper", 1, 2),
        entry("headSpec.unknownField", 1, 2),
        entry("headSpec", None, "odd"),
        entry("workerSpec[G]", "odd", "odder"),
    ]
    text = change_in_words(every) + "\n" + "\n".join(diff_in_words(every))
    for raw in ("workerSpec", "headSpec", ".replica", "unknownField", "[G]"):
        assert raw not in text


def test_a_group_reads_as_one_part_with_replicas_first():
    d = [
        entry("workerSpec[WorkerGroup1].cpu", "4", "8"),
        entry("workerSpec[WorkerGroup1].replica", 2, 3),
        entry("workerSpec[WorkerGroup1].maxReplica", 4, 10),
    ]
    assert change_in_words(d) == "WorkerGroup1: 2 → 3 replicas, max 4 → 10, CPU 4 → 8"
    assert diff_in_words(d) == ["WorkerGroup1: 2 → 3 replicas", "WorkerGroup1: max 4 → 10", "WorkerGroup1: CPU 4 → 8"]


def test_groups_come_first_then_head_then_cluster():
    d = [entry("name", "a", "b"), entry("headSpec.cpu", "4", "8"), entry("workerSpec[G].replica", 1, 2)]
    assert change_in_words(d) == "G: 1 → 2 replicas; head CPU: 4 → 8; cluster name: a → b"


def test_many_parts_are_shortened_with_a_count():
    d = [entry(f"workerSpec[g{i}].replica", 1, 2) for i in range(10)]
    line = change_in_words(d)
    assert (
        line == "g0: 1 → 2 replicas; g1: 1 → 2 replicas; g2: 1 → 2 replicas; g3: 1 → 2 replicas; … and 6 more changes"
    )
    assert len(diff_in_words(d)) == 10
    assert change_in_words(d[:5]).endswith("… and 1 more change")


def test_long_values_are_cut_in_the_line_and_longer_in_the_detail():
    d = [entry("description", "a" * 500, "b" * 500)]
    assert len(change_in_words(d)) < 120
    assert 300 < len(diff_in_words(d)[0]) < 500


def test_secrets_are_never_shown_even_inside_a_structure():
    d = [
        entry("headSpec.gftConfig", None, {"redisUrl": "r", "redisPassword": "hunter2"}),
        entry("workerSpec[G].env.token", "t1", "t2"),
        entry("workerSpec[New]", None, {"groupName": "New", "replica": 1, "imagePullSecret": "s3"}),
    ]
    text = change_in_words(d) + "\n".join(diff_in_words(d))
    assert "hunter2" not in text and "t1" not in text and "t2" not in text and "s3" not in text
    assert "G: env token changed" in diff_in_words(d)


def test_an_added_group_in_detail_uses_the_replica_vocabulary():
    spec = {"groupName": "New", "replica": 2, "minReplica": 1, "maxReplica": 4, "workerType": "gpu", "cpu": "8"}
    assert diff_in_words([entry("workerSpec[New]", None, spec)]) == [
        "New added: 2 replicas (min 1, max 4), type gpu, 8 CPU"
    ]


def test_the_real_diff_reads_in_words():
    before = {"headSpec": {"idleTimeoutSeconds": 900}, "workerSpec": [{"groupName": "W", "replica": 1}]}
    after = {"headSpec": {"idleTimeoutSeconds": 600}, "workerSpec": [{"groupName": "W", "replica": 4}]}
    assert change_in_words(diff(before, after)) == "W: 1 → 4 replicas; autoscaling idle timeout: 900 s → 600 s"
    assert change_in_words([]) == "no change"


def test_vocabulary():
    assert replicas_in_words(3, 1, 10) == "3 replicas (min 1, max 10)"
    assert replicas_in_words(1) == "1 replica"
    assert replicas_in_words(None, None, 4) == "replicas not set (max 4)"
    assert workers_up(3, 3) == "3 of 3 workers up"
    assert workers_up(0, 1) == "0 of 1 worker up"
    assert workers_up(None, 2) == "2 workers wanted, none listed yet"
    assert workers_up(2, 0) == "2 workers still up"
    assert workers_up(0, 0) == "no workers up"
    assert duration_in_words(7200) == "2 h" and duration_in_words(90 * 60) == "1 h 30 min"
    assert duration_in_words(86400 + 6 * 3600) == "1 d 6 h"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("workerSpec[G1].replica", "G1 replicas"),
        ("workerSpec[G1].memory", "G1 memory"),
        ("workerSpec[G1]", "group G1"),
        ("headSpec.cpu", "head CPU"),
        ("headSpec.idleTimeoutSeconds", "autoscaling idle timeout"),
        ("name", "cluster name"),
        ("extraParam", "extra parameters"),
    ],
)
def test_path_in_words(path, expected):
    assert path_in_words(path) == expected


def test_a_record_in_words():
    d = [entry("workerSpec[W].replica", 3, 2).model_dump(mode="json")]
    assert record_in_words("undo", "undo #1 (W replicas → 3)", d, undo_of=1) == "undo of #1: W: 3 → 2 replicas"
    assert record_in_words("revert", "revert #1", d, undo_of=1) == "automatic revert of #1: W: 3 → 2 replicas"
    assert record_in_words("resize", "W replicas → 2", d, duration_seconds=3600) == "W: 3 → 2 replicas, for 1 h"
    assert record_in_words("stop", "stop", []) == "stop the cluster"
    assert record_in_words("edit", "edit: audit line", []) == "edit: audit line"  # nothing better is known


@pytest.mark.parametrize(
    ("quantity", "shown"),
    [("16Gi", "16 GiB"), ("512Mi", "512 MiB"), ("1.5Gi", "1.5 GiB"), ("16G", "16G"), ("16384", "16384")],
)
def test_memory_reads_as_people_write_it(quantity: str, shown: str) -> None:
    from bot.slack.words import memory_in_words

    assert memory_in_words(quantity) == shown
