"""The modal editor's pure part: views fit Slack's limits and the strict emulator's checks, submissions parse."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from bot.emr.changes import ChangeError, DiffEntry, ReplaceGroup, SetFields, plan, redact_secrets
from bot.emr.models import ClusterFields, RayCluster, WorkerGroup
from bot.sandbox.slack_server import view_problems
from bot.slack import limits, modals
from bot.slack.modals import Draft

EVIL = "<!channel> <@U123> & <!here|here> @channel"
RAW_MARKUP = ("<!channel>", "<@U123>", "<!here", "@channel")


# --- builders ---------------------------------------------------------------------------------------------------------


def group(index: int, **over: Any) -> dict[str, Any]:
    spec = {
        "groupName": f"g{index}",
        "workerType": "cpu",
        "queueName": "root_queue",
        "cpu": "4",
        "memory": "16Gi",
        "replica": 2,
        "minReplica": 1,
        "maxReplica": 4,
        "rayStartParams": "",
        "nodeSelector": {"alibabacloud.com/zone": "cn-hangzhou-h"},  # unknown to raybot: must survive edits
    }
    return spec | over


def cluster_wire(groups: int = 2, **over: Any) -> dict[str, Any]:
    wire = {
        "clusterId": "ray-abc123",
        "name": "prod",
        "description": "Production CPU cluster",
        "state": "Running",
        "modifiedTime": 1717405200000,
        "modifierName": "alice",
        "displayReleaseVersion": "esr-3.0.0 (Ray 2.40.0)",
        "networkServiceName": "vpc-conn-prod",
        "extraParam": '{"rayVersion":"2.40.0"}',
        "volumeIds": ["vol-a", "vol-b"],
        "headSpec": {
            "queueName": "root_queue",
            "cpu": "4",
            "memory": "16Gi",
            "enableAutoScaling": True,
            "idleTimeoutSeconds": 900,
            "rayStartParams": '{"num-cpus":"0"}',
            "gftConfig": {"redisUrl": "redis://r", "redisPassword": "hunter2"},
            "headFuture": {"x": 1},  # unknown head field
        },
        "workerSpec": [group(i) for i in range(1, groups + 1)],
    }
    return wire | over


def cluster(groups: int = 2, **over: Any) -> RayCluster:
    return RayCluster.model_validate(cluster_wire(groups, **over))


def draft_of(c: RayCluster, alias: str = "prod") -> Draft:
    return modals.new_draft(alias, c, channel_id="C0OPS", thread_ts="1717405300.000100", user_id="U0ALICE", key="k-1")


def input_blocks(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["block_id"]: b for b in view["blocks"] if b["type"] == "input"}


def state_of(view: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """`view["state"]["values"]` exactly as Slack sends it for `view` submitted with its prefilled values.

    `changes` (keyword: block id with "." written as "__") sets a text/number value (None: emptied),
    a select's option value, or a list of checkbox values.
    """
    wanted = {key.replace("__", "."): value for key, value in changes.items()}
    values: dict[str, Any] = {}
    for block_id, block in input_blocks(view).items():
        element = block["element"]
        kind = element["type"]
        if kind in ("plain_text_input", "number_input"):
            entry = {"type": kind, "value": element.get("initial_value")}
            if block_id in wanted:
                entry["value"] = wanted[block_id]
        elif kind == "static_select":
            entry = {"type": kind, "selected_option": element.get("initial_option")}
            if block_id in wanted:
                entry["selected_option"] = next(o for o in element["options"] if o["value"] == wanted[block_id])
        elif kind == "checkboxes":
            entry = {"type": kind, "selected_options": element.get("initial_options", [])}
            if block_id in wanted:
                entry["selected_options"] = [o for o in element["options"] if o["value"] in wanted[block_id]]
        else:  # pragma: no cover - the views use only the kinds above
            raise AssertionError(kind)
        values[block_id] = {element["action_id"]: entry}
    unknown = set(wanted) - set(values)
    assert not unknown, f"no such input: {unknown}"
    return values


def walk(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found += walk(value)
    elif isinstance(node, list):
        for item in node:
            found += walk(item)
    return found


def mrkdwn_texts(view: dict[str, Any]) -> list[str]:
    return [node["text"] for node in walk(view["blocks"]) if node.get("type") == "mrkdwn"]


def assert_fits(view: dict[str, Any], key: str | None = None) -> None:
    """Every limit the design names, checked by raybot's own table and by the strict emulator's validator."""
    assert view_problems(view) == []
    assert limits.check_modal_limits(view) == []
    assert len(view["blocks"]) <= 100
    assert len(view["title"]["text"]) <= 24
    assert len(view.get("private_metadata", "")) <= 3000
    if key is not None:
        assert view["private_metadata"] == key  # the draft key, nothing else
    for node in walk(view["blocks"]):
        if node.get("type") in ("static_select", "multi_static_select"):
            assert 1 <= len(node["options"]) <= 100
        for id_key in ("block_id", "action_id"):
            if id_key in node:
                assert len(node[id_key]) <= 255
        if node.get("type") == "mrkdwn":
            assert node.get("verbatim") is True
    json.dumps(view)


def all_views(draft: Draft) -> list[dict[str, Any]]:
    c = RayCluster.model_validate(draft.original | {"modifierName": "bob"})
    names = [g["groupName"] for g in draft.edited.get("workerSpec") or []]
    views = [
        modals.overview_view(draft),
        modals.group_view(draft, None),
        modals.confirm_view(draft, []),
        modals.confirm_view(draft, [DiffEntry(path="name", before="prod", after="prod-2")]),
        modals.stale_view(draft, [DiffEntry(path="description", before="a", after="b")], c),
    ]
    views += [modals.group_view(draft, name) for name in names[:1] + names[-1:]]
    return views


# --- every view fits, for 0, 1 and 50 groups --------------------------------------------------------------------------


@pytest.mark.parametrize("groups", [0, 1, 50])
def test_every_view_fits_slack_limits(groups: int) -> None:
    draft = draft_of(cluster(groups))
    for view in all_views(draft):
        assert_fits(view, key="k-1")
    for view in (
        modals.loading_view("prod"),
        modals.error_view("prod", "Throttling", "Request was denied", "REQ-1"),
        modals.result_view("prod", "updated"),
    ):
        assert_fits(view)


def test_fifty_groups_overview_lists_every_group_in_few_blocks() -> None:
    draft = draft_of(cluster(50))
    view = modals.overview_view(draft)
    assert len(view["blocks"]) <= 30
    text = "\n".join(mrkdwn_texts(view))
    for i in range(1, 51):
        assert f"g{i} " in text
    assert "more group" not in text
    picker = input_blocks(view)[modals.BLOCK_GROUPS]["element"]
    assert [o["value"] for o in picker["options"]] == [str(i) for i in range(50)]  # full: no "new" option
    actions = next(b for b in view["blocks"] if b["type"] == "actions")
    assert [e["action_id"] for e in actions["elements"]] == [modals.ACTION_REMOVE_GROUP]  # no "Add group" at 50


def test_fifty_groups_with_long_names_span_several_sections() -> None:
    names = [f"{i:02d}-" + "x" * 40 + "-<tail>" for i in range(50)]
    draft = draft_of(cluster(50, workerSpec=[group(i, groupName=name) for i, name in enumerate(names)]))
    view = modals.overview_view(draft)
    assert_fits(view, key="k-1")
    tables = [t for t in mrkdwn_texts(view) if t.startswith("```")]
    assert len(tables) > 1
    rows = [line for t in tables for line in t.splitlines()[2:-1]]  # minus fence and heading
    assert [row[2:5] for row in rows] == [f"{i:02d}-" for i in range(50)]


def test_no_groups_overview_offers_add_only() -> None:
    view = modals.overview_view(draft_of(cluster(0)))
    picker = input_blocks(view)[modals.BLOCK_GROUPS]["element"]
    assert [o["value"] for o in picker["options"]] == [modals.NEW_GROUP_VALUE]
    actions = next(b for b in view["blocks"] if b["type"] == "actions")
    assert [e["action_id"] for e in actions["elements"]] == [modals.ACTION_ADD_GROUP]
    assert "No worker groups" in "\n".join(mrkdwn_texts(view))


def test_titles_are_cut_to_24_characters() -> None:
    alias = "a-very-long-cluster-alias-for-testing"
    for view in (modals.loading_view(alias), modals.overview_view(draft_of(cluster(1), alias=alias))):
        assert len(view["title"]["text"]) == 24
        assert view["title"]["text"].startswith("Edit a-very")
    assert modals.overview_view(draft_of(cluster(1)))["title"]["text"] == "Edit prod"


def test_loading_error_and_result_views_have_no_submit() -> None:
    loading = modals.loading_view("prod")
    assert "submit" not in loading and "Reading *prod*" in mrkdwn_texts(loading)[0]
    error = modals.error_view("prod", "Forbidden.RAM", "You are not authorized <!channel>", "6C5E-REQ")
    assert "submit" not in error and error["close"]["text"] == "Close"
    text = "\n".join(mrkdwn_texts(error))
    assert "`Forbidden.RAM`" in text and "`6C5E-REQ`" in text and "&lt;!channel&gt;" in text
    assert "RequestId" not in "\n".join(mrkdwn_texts(modals.error_view("prod", "X", "m", None)))
    failed = modals.result_view("prod", "UpdateRayCluster failed", outcome="failed")
    assert failed["title"]["text"] == "Failed" and "submit" not in failed


def test_the_result_says_where_the_change_is_with_the_status_cards_marks() -> None:
    from bot.flow import Outcome

    def shown(outcome: str) -> tuple[str, str]:
        view = modals.result_view("prod", "text", outcome=outcome)
        return mrkdwn_texts(view)[0].split(" ", 1)[0], view["title"]["text"]

    # Every outcome of a change has its words; accepted is not done (only a settled change is ✅, on the card).
    assert set(Outcome.__args__) | {"working", "error"} == set(modals.RESULT_TITLES)
    assert shown("working") == ("⏳", "Applying")
    assert shown("done") == ("📨", "Accepted, applying")
    assert shown("awaiting_approval") == ("🕒", "Awaiting approval")
    assert shown("unknown") == ("❔", "Being checked")
    assert shown("failed") == ("❌", "Failed")
    assert all(shown(o)[0] != "✅" for o in modals.RESULT_TITLES)


# --- prefilled with the current values --------------------------------------------------------------------------------


def test_overview_inputs_are_prefilled_with_current_values() -> None:
    view = modals.overview_view(draft_of(cluster(2)))
    inputs = input_blocks(view)
    initial = {bid: b["element"].get("initial_value") for bid, b in inputs.items()}
    assert initial["name"] == "prod"
    assert initial["description"] == "Production CPU cluster"
    assert initial["release"] == "esr-3.0.0 (Ray 2.40.0)"
    assert initial["network"] == "vpc-conn-prod"
    assert initial["volumes"] == "vol-a, vol-b"
    assert initial["head.queue"] == "root_queue"
    assert initial["head.cpu"] == "4"
    assert initial["head.memory"] == "16Gi"
    assert initial["head.gpu"] is None  # absent: nothing shown
    assert inputs["head.idle"]["element"] == {
        "action_id": "head.idle",
        "type": "number_input",
        "is_decimal_allowed": False,
        "initial_value": "900",
    }
    assert inputs["head.autoscaling"]["element"]["initial_option"]["value"] == "on"
    assert inputs["name"]["optional"] is False and inputs["description"]["optional"] is True
    assert modals.overview_view(draft_of(cluster(2, headSpec={"enableAutoScaling": False})))["blocks"]
    off = input_blocks(modals.overview_view(draft_of(cluster(2, headSpec={"enableAutoScaling": False}))))
    assert off["head.autoscaling"]["element"]["initial_option"]["value"] == "off"


def test_group_view_is_prefilled_and_offers_removal() -> None:
    draft = draft_of(cluster(2))
    view = modals.group_view(draft, "g2")
    inputs = input_blocks(view)
    values = {bid: b["element"].get("initial_value") for bid, b in inputs.items()}
    assert values == {
        "group.name": "g2",
        "group.type": "cpu",
        "group.replica": "2",
        "group.min": "1",
        "group.max": "4",
        "group.queue": "root_queue",
        "group.cpu": "4",
        "group.memory": "16Gi",
        "group.gpu": None,
        "group.remove": None,
    }
    assert inputs["group.replica"]["element"]["type"] == "number_input"
    assert inputs["group.remove"]["element"]["type"] == "checkboxes"
    assert view["submit"]["text"] == "Save group"
    new = input_blocks(modals.group_view(draft, None))
    assert "group.remove" not in new
    assert "initial_value" not in new["group.name"]["element"] and new["group.name"]["optional"] is False
    assert new["group.type"]["element"]["initial_value"] == "cpu"  # prefilled from the last group
    assert new["group.replica"]["element"]["initial_value"] == "1"


# --- parsing the overview ---------------------------------------------------------------------------------------------


def test_unchanged_overview_submission_changes_nothing() -> None:
    draft = draft_of(cluster(2))
    result = modals.parse_overview(state_of(modals.overview_view(draft)), draft)
    assert result.ok and result.edited == draft.original
    assert modals.review_diff(draft.model_copy(update={"edited": result.edited})) == []
    nothing = modals.confirm_view(draft, [])
    assert "submit" not in nothing and "Nothing changed" in mrkdwn_texts(nothing)[0]


def test_valid_overview_submission_yields_the_body_and_keeps_unknown_fields() -> None:
    draft = draft_of(cluster(2))
    state = state_of(
        modals.overview_view(draft),
        name="prod-2",
        description="",
        volumes="vol-a,  vol-c",
        head__memory="32Gi",
        head__cpu="8.0",
        head__gpu="A10",
        head__idle="600",
        head__autoscaling="off",
    )
    result = modals.parse_overview(state, draft)
    assert result.ok, result.errors
    expected = copy.deepcopy(draft.original)
    expected |= {"name": "prod-2", "description": "", "volumeIds": ["vol-a", "vol-c"]}
    expected["headSpec"] |= {
        "memory": "32Gi",
        "cpu": "8",
        "gpuSpec": "A10",
        "idleTimeoutSeconds": 600,
        "enableAutoScaling": False,
    }
    assert result.edited == expected
    # The draft keeps secrets masked (it lives in the store); Apply plans against a fresh read.
    assert result.edited["headSpec"]["gftConfig"] == {"redisUrl": "redis://r", "redisPassword": "••••••"}
    assert result.edited["headSpec"]["headFuture"] == {"x": 1}
    assert result.edited["extraParam"] == draft.original["extraParam"]
    assert draft.edited == draft.original  # worked on a copy


@pytest.mark.parametrize(
    ("changes", "block_id", "words"),
    [
        ({"name": "x" * 65}, "name", "1 to 64 characters"),
        ({"head__memory": "16GB"}, "head.memory", "16Gi"),
        ({"head__memory": "16"}, "head.memory", "write 16Gi"),
        ({"head__cpu": "-1"}, "head.cpu", "positive number"),
        ({"head__cpu": "four"}, "head.cpu", "positive number"),
        ({"head__idle": "-5"}, "head.idle", "at least 0"),
        ({"head__idle": "1.5"}, "head.idle", "whole number"),
        ({"head__queue": None}, "head.queue", "cannot be empty"),
    ],
)
def test_overview_errors_are_keyed_by_block_id(changes: dict[str, Any], block_id: str, words: str) -> None:
    draft = draft_of(cluster(2))
    result = modals.parse_overview(state_of(modals.overview_view(draft), **changes), draft)
    assert not result.ok and result.edited is None
    assert list(result.errors) == [block_id]
    assert words in result.errors[block_id]
    assert all(len(message) <= 1000 for message in result.errors.values())


def test_overview_reports_broken_groups_on_the_groups_block() -> None:
    broken = cluster(2, workerSpec=[group(1), group(2, minReplica=5, maxReplica=2, replica=3)])
    draft = draft_of(broken)
    result = modals.parse_overview(state_of(modals.overview_view(draft), description="new"), draft)
    assert list(result.errors) == [modals.BLOCK_GROUPS]
    assert "workerSpec[g2].minReplica" in result.errors[modals.BLOCK_GROUPS]


def test_overview_refuses_more_than_fifty_groups() -> None:
    draft = draft_of(cluster(51))
    result = modals.parse_overview(state_of(modals.overview_view(draft)), draft)
    assert "at most 50 worker groups" in result.errors[modals.BLOCK_GROUPS]


def test_a_block_missing_from_the_state_leaves_its_field_alone() -> None:
    draft = draft_of(cluster(1))
    state = state_of(modals.overview_view(draft), head__memory="64Gi")
    del state["name"], state["head.queue"]
    result = modals.parse_overview(state, draft)
    assert result.ok and result.edited["name"] == "prod" and result.edited["headSpec"]["memory"] == "64Gi"


# --- parsing the group editor -----------------------------------------------------------------------------------------


def test_group_edit_replaces_the_group_and_keeps_its_unknown_fields() -> None:
    draft = draft_of(cluster(2))
    view = modals.group_view(draft, "g1")
    name = modals.group_target(view, draft)
    assert name == "g1"
    state = state_of(view, group__replica="6", group__max="8", group__memory="32Gi", group__gpu="T4")
    result = modals.parse_group(state, draft, name)
    assert result.ok and not result.removed
    assert result.edited["workerSpec"][0] == group(1, replica=6, maxReplica=8, memory="32Gi", gpuSpec="T4")
    assert result.edited["workerSpec"][1] == draft.original["workerSpec"][1]
    assert result.edited["headSpec"] == draft.original["headSpec"]


def test_group_add_appends_a_new_group() -> None:
    draft = draft_of(cluster(2))
    view = modals.group_view(draft, None)
    assert modals.group_target(view, draft) is None
    state = state_of(view, group__name="gpu-a10", group__type="gpu", group__replica="2", group__max="3")
    result = modals.parse_group(state, draft, None)
    assert result.ok, result.errors
    added = result.edited["workerSpec"][-1]
    assert added == {
        "groupName": "gpu-a10",
        "workerType": "gpu",
        "queueName": "root_queue",
        "cpu": "4",
        "memory": "16Gi",
        "replica": 2,
        "minReplica": 1,
        "maxReplica": 3,
    }
    assert len(result.edited["workerSpec"]) == 3


def test_group_remove_checkbox_removes_the_group() -> None:
    draft = draft_of(cluster(2))
    view = modals.group_view(draft, "g1")
    result = modals.parse_group(state_of(view, group__remove=["remove"]), draft, "g1")
    assert result.ok and result.removed
    assert [g["groupName"] for g in result.edited["workerSpec"]] == ["g2"]


@pytest.mark.parametrize(
    ("target", "changes", "block_id", "words"),
    [
        ("g1", {"group__min": "5", "group__max": "3"}, "group.min", "above max"),
        ("g1", {"group__replica": "9"}, "group.replica", "above max"),
        ("g1", {"group__replica": "2", "group__min": "3", "group__max": "4"}, "group.replica", "below min"),
        ("g1", {"group__name": "g2"}, "group.name", "already has a worker group"),
        ("g1", {"group__name": "  "}, "group.name", "cannot be empty"),
        ("g1", {"group__memory": "16GB"}, "group.memory", "16Gi"),
        ("g1", {"group__cpu": "0"}, "group.cpu", "positive number"),
        ("g1", {"group__replica": "0"}, "group.replica", "at least 1"),
        (None, {"group__name": None}, "group.name", "required"),
        (None, {"group__name": "g1"}, "group.name", "already has a worker group"),
    ],
)
def test_group_errors_are_keyed_by_block_id(
    target: str | None, changes: dict[str, Any], block_id: str, words: str
) -> None:
    draft = draft_of(cluster(2))
    result = modals.parse_group(state_of(modals.group_view(draft, target), **changes), draft, target)
    assert not result.ok and result.edited is None
    assert list(result.errors) == [block_id]
    assert words in result.errors[block_id]


def test_a_51st_group_is_refused() -> None:
    draft = draft_of(cluster(50))
    state = state_of(modals.group_view(draft, None), group__name="one-more")
    result = modals.parse_group(state, draft, None)
    assert "at most 50 worker groups" in result.errors["group.name"]


def test_group_target_follows_the_group_and_notices_when_it_is_gone() -> None:
    draft = draft_of(cluster(3))
    view = modals.group_view(draft, "g3")
    shifted = draft.model_copy(update={"edited": modals.remove_group(draft, "g1")})
    assert modals.group_target(view, shifted) == "g3"  # its index moved; the digest still finds it
    gone = draft.model_copy(update={"edited": modals.remove_group(draft, "g3")})
    with pytest.raises(modals.UnknownGroupError):
        modals.group_target(view, gone)
    with pytest.raises(modals.UnknownGroupError):
        modals.group_target(modals.overview_view(draft), draft)


def test_select_values_stand_for_groups() -> None:
    draft = draft_of(cluster(2))
    assert modals.selected_group(draft, "1") == "g2"
    assert modals.selected_group(draft, modals.NEW_GROUP_VALUE) is None
    with pytest.raises(modals.UnknownGroupError):
        modals.selected_group(draft, "2")
    with pytest.raises(modals.UnknownGroupError):
        modals.remove_group(draft, "nope")


def test_role_limit_errors_land_on_a_block() -> None:
    replica = "operator allows at most 10 replicas per group; g1 would have 20"
    kind = "operator allows only worker types cpu; g1 would be gpu"
    assert modals.role_limit_errors([]) == {}
    assert modals.role_limit_errors([replica, kind]) == {"groups": f"{replica}; {kind}"}
    assert modals.role_limit_errors([replica, kind], group_name="g1") == {"group.replica": replica, "group.type": kind}


# --- from the draft to the change -------------------------------------------------------------------------------------


def test_changes_for_makes_plan_send_exactly_the_draft() -> None:
    c = cluster(3)
    draft = draft_of(c)
    overview = modals.parse_overview(state_of(modals.overview_view(draft), name="prod-x", head__memory="32Gi"), draft)
    draft = draft.model_copy(update={"edited": overview.edited})
    draft = draft.model_copy(update={"edited": modals.remove_group(draft, "g2")})
    edit = modals.parse_group(
        state_of(modals.group_view(draft, "g3"), group__name="g3b", group__replica="3"), draft, "g3"
    )
    draft = draft.model_copy(update={"edited": edit.edited})
    edit = modals.parse_group(state_of(modals.group_view(draft, "g1"), group__gpu="T4"), draft, "g1")
    draft = draft.model_copy(update={"edited": edit.edited})

    result = plan(c, modals.changes_for(draft))
    assert result.body is not None
    assert redact_secrets(result.body.wire()) == ClusterFields.model_validate(draft.edited).wire()
    assert result.body.wire()["workerSpec"][0]["nodeSelector"] == {"alibabacloud.com/zone": "cn-hangzhou-h"}
    paths = [entry.path for entry in modals.review_diff(draft)]
    assert paths == [
        "name",
        "headSpec.memory",
        "workerSpec[g1].gpuSpec",
        "workerSpec[g2]",
        "workerSpec[g3]",
        "workerSpec[g3b]",
    ]


def test_a_field_left_out_of_an_edited_group_is_left_out_of_the_body() -> None:
    c = cluster(2)
    draft = draft_of(c)
    edited = copy.deepcopy(draft.edited)
    del edited["workerSpec"][0]["rayStartParams"]
    body = plan(c, modals.changes_for(draft.model_copy(update={"edited": edited}))).body.wire()
    assert "rayStartParams" not in body["workerSpec"][0] and "rayStartParams" in body["workerSpec"][1]


def test_changes_for_refuses_fields_the_editor_cannot_send() -> None:
    draft = draft_of(cluster(1))
    edited = copy.deepcopy(draft.edited)
    edited["headSpec"]["gftConfig"]["redisUrl"] = "redis://elsewhere"
    with pytest.raises(ChangeError, match="fault tolerance settings cannot be changed from the editor"):
        modals.changes_for(draft.model_copy(update={"edited": edited}))


def test_removing_every_group_sends_an_empty_list() -> None:
    c = cluster(1)
    draft = draft_of(c)
    draft = draft.model_copy(update={"edited": modals.remove_group(draft, "g1")})
    assert plan(c, modals.changes_for(draft)).body.wire()["workerSpec"] == []


def test_confirm_view_shows_before_and_after_and_masks_secrets() -> None:
    draft = draft_of(cluster(2))
    entries = [
        DiffEntry(path="headSpec.memory", before="16Gi", after="32Gi"),
        DiffEntry(path="workerSpec[g1].replica", before=2, after=6),
        DiffEntry(path="headSpec.gftConfig.redisPassword", before="hunter2", after="s3cret-new"),
    ]
    view = modals.confirm_view(draft, entries)
    assert_fits(view, key="k-1")
    assert view["submit"]["text"] == "Apply" and view["callback_id"] == modals.CALLBACK_CONFIRM
    text = "\n".join(mrkdwn_texts(view))
    assert "• head memory: 16 GiB → 32 GiB" in text
    assert "• g1: 2 → 6 replicas" in text
    assert "hunter2" not in text and "s3cret-new" not in text
    assert "• fault tolerance Redis password: changed" in text
    assert "headSpec" not in text and "workerSpec" not in text


def test_confirm_view_of_a_huge_diff_still_fits() -> None:
    draft = draft_of(cluster(50))
    entries = [DiffEntry(path=f"workerSpec[g{i}].rayStartParams", before="", after="x" * 400) for i in range(600)]
    view = modals.confirm_view(draft, entries)
    assert_fits(view, key="k-1")
    assert "more change" in "\n".join(mrkdwn_texts(view))


# --- stale data -------------------------------------------------------------------------------------------------------


def test_stale_diff_detects_a_concurrent_resize() -> None:
    draft = draft_of(cluster(2))
    resized = cluster_wire(2, modifiedTime=1717409999000, modifierName="bob")
    resized["workerSpec"][1]["replica"] = 4
    fresh = RayCluster.model_validate(resized)
    changes = modals.stale_diff(draft, fresh)
    assert changes == [DiffEntry(path="workerSpec[g2].replica", before=2, after=4)]

    view = modals.stale_view(draft, changes, fresh)
    assert_fits(view, key="k-1")
    assert view["submit"]["text"] == "Review again"
    text = "\n".join(mrkdwn_texts(view))
    assert "• g2: 2 → 4 replicas" in text and "by bob" in text


def test_stale_diff_is_empty_when_only_read_only_fields_moved() -> None:
    draft = draft_of(cluster(2))
    same = cluster(2, modifiedTime=1717409999000, state="Updating", modifierName="bob")
    assert modals.stale_diff(draft, same) == []


def test_rebase_keeps_the_users_edits_on_the_new_values() -> None:
    draft = draft_of(cluster(2))
    edit = modals.parse_group(state_of(modals.group_view(draft, "g1"), group__replica="3"), draft, "g1")
    mine = modals.parse_overview(
        state_of(modals.overview_view(draft.model_copy(update={"edited": edit.edited})), head__memory="32Gi"),
        draft.model_copy(update={"edited": edit.edited}),
    )
    draft = draft.model_copy(update={"edited": mine.edited})

    theirs = cluster_wire(2, modifiedTime=1717409999000, description="changed by bob")
    theirs["workerSpec"][0]["maxReplica"] = 10  # same group, another field
    theirs["workerSpec"][1]["replica"] = 4
    theirs["workerSpec"].append(group(9))
    theirs["headSpec"]["memory"] = "24Gi"  # conflict: the user's 32Gi wins
    fresh = RayCluster.model_validate(theirs)
    changes = modals.stale_diff(draft, fresh)
    assert modals.conflicts(draft, changes) == ["headSpec.memory"]
    assert "your values are kept: head memory" in "\n".join(mrkdwn_texts(modals.stale_view(draft, changes, fresh)))

    rebased = modals.rebase(draft, fresh)
    assert rebased.original == redact_secrets(fresh.editable()) and rebased.modified_time == 1717409999000
    assert modals.stale_diff(rebased, fresh) == []
    assert rebased.edited["description"] == "changed by bob"
    assert rebased.edited["headSpec"]["memory"] == "32Gi"
    assert rebased.edited["workerSpec"][0] == group(1, replica=3, maxReplica=10)
    assert rebased.edited["workerSpec"][1]["replica"] == 4
    assert [g["groupName"] for g in rebased.edited["workerSpec"]] == ["g1", "g2", "g9"]
    assert [e.path for e in modals.review_diff(rebased)] == ["headSpec.memory", "workerSpec[g1].replica"]


# --- escaping ---------------------------------------------------------------------------------------------------------


def test_user_controlled_text_is_escaped_in_every_view() -> None:
    evil_groups = [group(1, groupName=EVIL), group(2, groupName=EVIL + " 2", workerType=EVIL)]
    c = cluster(2, name=EVIL, description=EVIL, workerSpec=evil_groups, modifierName=EVIL)
    draft = draft_of(c, alias=EVIL)
    views = [
        *all_views(draft),
        modals.loading_view(EVIL),
        modals.error_view(EVIL, EVIL, EVIL, EVIL),
        modals.result_view(EVIL, EVIL),
        modals.picker_view([EVIL, "prod"], "k-1"),
        modals.confirm_view(draft, [DiffEntry(path=f"workerSpec[{EVIL}].workerType", before=EVIL, after="x")]),
        modals.stale_view(draft, [DiffEntry(path="description", before=EVIL, after=EVIL)], c),
    ]
    for view in views:
        assert_fits(view)
        for text in mrkdwn_texts(view):
            for raw in RAW_MARKUP:
                assert raw not in text, (view["callback_id"], text)
        ids = [node.get(k) for node in walk(view["blocks"]) for k in ("block_id", "action_id") if k in node]
        assert not any("<" in i or "@" in i for i in ids)
    overview = modals.overview_view(draft)
    assert "&lt;!channel&gt;" in "\n".join(mrkdwn_texts(overview))
    # Inputs show the raw value (plain text is never parsed), so an untouched submit keeps it byte for byte.
    assert input_blocks(overview)["name"]["element"]["initial_value"] == EVIL
    result = modals.parse_overview(state_of(overview), draft)
    assert result.ok and result.edited == draft.original


# --- the shortcut's cluster picker ------------------------------------------------------------------------------------


def test_picker_is_a_select_up_to_100_clusters_and_a_text_input_beyond() -> None:
    few = modals.picker_view(["prod", "staging"], "k-9")
    assert_fits(few, key="k-9")
    element = input_blocks(few)["pick"]["element"]
    assert element["type"] == "static_select" and [o["value"] for o in element["options"]] == ["prod", "staging"]
    hundred = [f"c{i}" for i in range(100)]
    assert input_blocks(modals.picker_view(hundred, "k"))["pick"]["element"]["type"] == "static_select"
    many = [f"c{i}" for i in range(150)]
    view = modals.picker_view(many, "k-9")
    assert_fits(view, key="k-9")
    assert input_blocks(view)["pick"]["element"]["type"] == "plain_text_input"

    assert modals.parse_picker(state_of(few, pick="staging"), ["prod", "staging"]).alias == "staging"
    assert modals.parse_picker(state_of(view, pick=" c120 "), many).alias == "c120"
    assert modals.parse_picker(state_of(view, pick="nope"), many).errors == {
        "pick": "nope is not a cluster this channel may edit"
    }
    assert "pick" in modals.parse_picker(state_of(view), many).errors


# --- the draft --------------------------------------------------------------------------------------------------------


def test_new_draft_holds_the_read_and_survives_a_round_trip() -> None:
    c = cluster(2)
    draft = draft_of(c)
    assert draft.original == redact_secrets(c.editable()) == draft.edited  # as read, secrets masked
    assert draft.edited is not draft.original
    assert draft.modified_time == 1717405200000 and draft.cluster_id == "ray-abc123"
    assert draft.read_hash == modals.body_hash(draft.original)
    assert Draft.model_validate_json(draft.model_dump_json()) == draft
    other = modals.new_draft("prod", c, channel_id="C0OPS", thread_ts=None, user_id="U0ALICE")
    assert other.key != draft.key and len(other.key) >= 16


def test_the_draft_keeps_no_secret_and_apply_sends_the_real_one():
    from bot.emr.changes import plan

    cluster = RayCluster.model_validate(
        {
            "clusterId": "ray-1",
            "name": "prod",
            "headSpec": {
                "cpu": "4",
                "gftEnabled": True,
                "gftConfig": {"redisUrl": "r:6379", "redisPassword": "s3cr3t"},
            },
            "workerSpec": [{"groupName": "g1", "replica": 1, "minReplica": 1, "maxReplica": 4}],
        }
    )
    draft = modals.new_draft("prod", cluster, channel_id="C0ONCALL01", thread_ts=None, user_id="U0EDITOR")
    assert "s3cr3t" not in json.dumps(draft.model_dump())
    assert modals.stale_diff(draft, cluster) == []  # masked on both sides: not "changed"
    edited = copy.deepcopy(draft.edited)
    edited["description"] = "new"
    draft = draft.model_copy(update={"edited": edited})
    body = plan(cluster, modals.changes_for(draft)).body.wire()
    assert body["headSpec"]["gftConfig"]["redisPassword"] == "s3cr3t"  # the fresh read's value, not the mask
    assert body["description"] == "new"


# --- the editor never sends a masked secret (issue item 9) ------------------------------------------------------------


def secret_cluster(groups: int = 3) -> RayCluster:
    """Groups that carry an image pull secret, which the draft only holds masked."""
    return cluster(workerSpec=[group(i, imagePullSecret=f"real-{i}") for i in range(1, groups + 1)])


def edited_draft(c: RayCluster, edit: Any) -> Draft:
    draft = draft_of(c)
    edited = copy.deepcopy(draft.edited)
    edit(edited)
    return draft.model_copy(update={"edited": edited})


def test_an_edited_group_carries_only_the_fields_the_person_changed() -> None:
    c = secret_cluster()
    draft = draft_of(c)
    assert draft.edited["workerSpec"][0]["imagePullSecret"] == "••••••"
    edit = modals.parse_group(state_of(modals.group_view(draft, "g1"), group__replica="3"), draft, "g1")
    draft = draft.model_copy(update={"edited": edit.edited})

    [change] = modals.changes_for(draft)
    assert change == ReplaceGroup(group="g1", spec=WorkerGroup(replica=3))
    sent = plan(c, [change]).body.wire()
    assert [g["imagePullSecret"] for g in sent["workerSpec"]] == ["real-1", "real-2", "real-3"]
    assert "••••••" not in json.dumps(sent)
    assert sent["headSpec"]["gftConfig"]["redisPassword"] == "hunter2"


def test_an_edited_group_can_still_drop_a_field() -> None:
    c = secret_cluster()
    draft = edited_draft(c, lambda e: e["workerSpec"][0].pop("rayStartParams"))
    [change] = modals.changes_for(draft)
    assert change.spec.wire() == {"rayStartParams": None}
    sent = plan(c, [change]).body.wire()
    assert "rayStartParams" not in sent["workerSpec"][0] and sent["workerSpec"][0]["imagePullSecret"] == "real-1"


def test_a_group_renamed_in_place_keeps_its_secret() -> None:
    c = secret_cluster()
    draft = draft_of(c)
    edit = modals.parse_group(state_of(modals.group_view(draft, "g2"), group__name="g2-big"), draft, "g2")
    draft = draft.model_copy(update={"edited": edit.edited})

    [change] = modals.changes_for(draft)
    assert change == ReplaceGroup(group="g2", spec=WorkerGroup(group_name="g2-big"))
    sent = plan(c, [change]).body.wire()
    assert [(g["groupName"], g["imagePullSecret"]) for g in sent["workerSpec"]] == [
        ("g1", "real-1"),
        ("g2-big", "real-2"),
        ("g3", "real-3"),
    ]
    assert [e.path for e in modals.review_diff(draft)] == ["workerSpec[g2]", "workerSpec[g2-big]"]


def test_a_removed_group_and_a_new_one_in_its_place_are_not_a_rename() -> None:
    c = secret_cluster(2)
    draft = draft_of(c)
    draft = draft.model_copy(update={"edited": modals.remove_group(draft, "g2")})
    new = modals.parse_group(state_of(modals.group_view(draft, None), group__name="g9"), draft, None)
    draft = draft.model_copy(update={"edited": new.edited})

    changes = modals.changes_for(draft)
    assert [type(c).__name__ for c in changes] == ["RemoveGroup", "AddGroup"]
    sent = plan(c, changes).body.wire()
    assert [g["groupName"] for g in sent["workerSpec"]] == ["g1", "g9"] and "imagePullSecret" not in sent["workerSpec"][
        1
    ]


def test_a_group_copied_with_a_masked_secret_is_refused_not_sent() -> None:
    c = secret_cluster()

    def rename_two(edited: dict[str, Any]) -> None:
        # Two groups renamed side by side: which is which cannot be told, so they are removed and added.
        edited["workerSpec"][1]["groupName"] = "x2"
        edited["workerSpec"][2]["groupName"] = "x3"

    draft = edited_draft(c, rename_two)
    assert [type(c).__name__ for c in modals.changes_for(draft)] == [
        "RemoveGroup",
        "RemoveGroup",
        "AddGroup",
        "AddGroup",
    ]
    with pytest.raises(ChangeError, match=r"^workerSpec\[x2\]\.imagePullSecret is a secret raybot cannot send"):
        modals.review_diff(draft)  # the review says so before Apply
    with pytest.raises(ChangeError, match="Nothing was sent"):
        plan(c, modals.changes_for(draft))


def test_a_changed_head_field_is_the_only_thing_sent_for_the_head() -> None:
    c = secret_cluster()
    draft = edited_draft(c, lambda e: e["headSpec"].update(memory="32Gi"))
    assert modals.changes_for(draft) == [SetFields(values={"headSpec.memory": "32Gi"})]
    sent = plan(c, modals.changes_for(draft)).body.wire()
    assert sent["headSpec"]["gftConfig"]["redisPassword"] == "hunter2" and sent["headSpec"]["memory"] == "32Gi"
