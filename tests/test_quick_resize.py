"""The quick resize's pure part: the group preselected, the number judged by the same policy as /ray resize, the
view (Slack's limits, hostile names), and the shortcut's picker."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bot.config import parse_config
from bot.emr.models import ClusterFields, RayCluster, WorkerGroup
from bot.permissions import Decision, Subject, limits_here
from bot.slack import modals
from bot.slack import quick_resize as quick
from tests import e2e_world as world
from tests.test_hostile_render import SAMPLES, payload_problems, sample
from tests.test_modals import assert_fits, input_blocks, mrkdwn_texts, state_of

CONFIG = parse_config(world.CONFIG)
ONCALL = Subject(world.ONCALL_USER, world.ONCALL_CHANNEL, frozenset({world.ONCALL_GROUP}))
PROD = next(c for c in world.SEED if c["name"] == "prod")  # WorkerGroup1 2 (1–4), WorkerGroup2 1 (1–8)


def prod(**group2: Any) -> RayCluster:
    wire = copy.deepcopy(PROD)
    wire["workerSpec"][1] |= group2
    return RayCluster.model_validate(wire)


def draft_of(cluster: RayCluster, *, named: tuple[str, ...] = (), can_edit: bool = False) -> quick.QuickDraft:
    return quick.new_quick_draft(
        "prod",
        cluster,
        channel_id=world.ONCALL_CHANNEL,
        thread_ts="1732600000.000100",
        user_id=world.ONCALL_USER,
        named_groups=named,
        can_edit=can_edit,
        key="k-quick",
    )


def judged(typed: str | None, group: str | None = "WorkerGroup2", **group2: Any) -> quick.Preview:
    draft = draft_of(prod(**group2))
    return quick.judge(CONFIG, ONCALL, draft, group, typed)


def roles() -> list:
    return limits_here(CONFIG, ONCALL, "resize", "prod")


def block(view: dict[str, Any], block_id: str) -> dict[str, Any]:
    return next(b for b in view["blocks"] if b.get("block_id") == block_id)


def context_text(view: dict[str, Any], block_id: str) -> str:
    return block(view, block_id)["elements"][0]["text"]


# --- which group ------------------------------------------------------------------------------------------------------


def test_the_group_the_alert_names_is_preselected_else_the_largest() -> None:
    cluster = prod()
    assert quick.preselected_group(cluster, ["WorkerGroup2"]) == "WorkerGroup2"
    assert quick.preselected_group(cluster, ["gone", "WorkerGroup2", "WorkerGroup1"]) == "WorkerGroup2"
    assert quick.preselected_group(cluster, []) == "WorkerGroup1"  # 2 replicas against 1
    assert quick.preselected_group(prod(replica=2), []) == "WorkerGroup1"  # a tie: the first
    assert quick.preselected_group(prod(replica=3), []) == "WorkerGroup2"
    assert quick.preselected_group(ClusterFields(worker_spec=[]), ["x"]) is None
    assert draft_of(cluster, named=("WorkerGroup2",)).group == "WorkerGroup2"


def test_the_group_chosen_is_read_from_the_action_or_the_state_and_forged_values_are_ignored() -> None:
    draft = draft_of(prod())
    state = {quick.BLOCK_GROUP: {quick.ACTION_GROUP: {"type": "static_select", "selected_option": {"value": "1"}}}}
    assert quick.chosen_group(draft, state) == "WorkerGroup2"
    assert quick.chosen_group(draft, {}, "1") == "WorkerGroup2"
    assert quick.chosen_group(draft, state, "0") == "WorkerGroup1"  # the action is newer than the state
    for forged in ("2", "-1", "１", "1e0", "", "999999", None):
        assert quick.chosen_group(draft, {}, forged) == draft.group
    assert quick.typed_replicas({quick.BLOCK_REPLICAS: {quick.ACTION_REPLICAS: {"value": "7"}}}) == "7"
    assert quick.typed_replicas({}, "8") == "8"
    assert quick.typed_replicas({quick.BLOCK_REPLICAS: {quick.ACTION_REPLICAS: {"value": 7}}}) is None


# --- the number -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "fragment"),
    [
        ("ten", "whole number"),
        ("1e3", "whole number"),
        ("2.5", "whole number"),
        ("１２", "whole number"),  # full-width digits: not what raybot reads as a number
        ("9" * 5000, "whole number"),
        ("0", "at least 1"),
        ("-3", "at least 1"),
        ("9", "above the maximum of WorkerGroup2 (8)"),
        ("1", "already"),
    ],
)
def test_numbers_that_cannot_be_applied_say_why(typed: str, fragment: str) -> None:
    preview = judged(typed)
    assert not preview.ok and fragment in (preview.error or "")
    assert quick.submit_errors(preview) == {quick.BLOCK_REPLICAS: preview.error}


def test_below_the_groups_minimum_is_refused() -> None:
    preview = judged("2", minReplica=3, replica=5)
    assert "below the minimum of WorkerGroup2 (3)" in (preview.error or "")


def test_the_roles_limits_are_the_policys() -> None:
    over = judged("45", maxReplica=60)
    assert "at most 40 replicas per group" in (over.error or "") and over.decision is not None
    assert not over.decision.allowed and over.decision.kind == "limit"
    step = judged("25", maxReplica=60)  # from 1: a step of 24 > 20
    assert "at most 20 replicas at once" in (step.error or "")
    assert quick.submit_errors(step) == {quick.BLOCK_REPLICAS: step.error}


def test_a_number_that_needs_approval_is_allowed_with_its_reason() -> None:
    preview = judged("21", maxReplica=60, replica=10)
    assert preview.ok and preview.decision is not None and preview.decision.approval
    assert "above 20" in preview.decision.approval
    assert quick.submit_errors(preview) == {}


def test_an_allowed_number_and_nothing_typed() -> None:
    preview = judged(" 6 ")
    assert preview.ok and preview.replicas == 6 and preview.decision is not None and preview.decision.approval is None
    empty = judged("")
    assert not empty.ok and empty.error is None
    assert quick.submit_errors(empty) == {quick.BLOCK_REPLICAS: "Type the new number of replicas"}
    gone = judged("6", group="Gone")
    assert quick.submit_errors(gone) == {quick.BLOCK_GROUP: "Choose a worker group"}


def test_a_person_without_resize_here_is_refused_by_the_policy() -> None:
    outsider = Subject(world.OUTSIDER, world.ONCALL_CHANNEL)
    preview = quick.judge(CONFIG, outsider, draft_of(prod()), "WorkerGroup2", "6")
    assert not preview.ok and "resize" in (preview.error or "")


# --- what is shown ----------------------------------------------------------------------------------------------------


def test_the_effect_says_the_change_in_words() -> None:
    group = prod().group("WorkerGroup2")
    assert group is not None
    allowed = Decision(True, "ok")
    line = quick.quick_resize_effect(prod(), group, 6, allowed)
    assert "*WorkerGroup2*: 1 → 6 replicas (+5)" in line and "8 workers" in line and "at once" in line
    approval = quick.quick_resize_effect(prod(), group, 6, Decision(True, "ok", approval="above 5"))
    assert "approval (above 5)" in approval and "Request approval" in approval


def test_the_effect_says_what_it_costs_in_money_with_prices_and_in_cu_without() -> None:
    # WorkerGroup2: 8 vCPU and 32 GiB a replica (1:4, no discount) = 8 CU; 1 → 3 replicas adds 16 CU/h.
    priced = parse_config(world.CONFIG + "pricing: {currency: CNY, cu_hour: {cn-hangzhou: 0.35}}\n")
    preview = quick.judge(priced, ONCALL, draft_of(prod()), "WorkerGroup2", "3")
    assert preview.ok and preview.cost is not None and preview.cost.startswith("+16 CU/h (≈ +¥5.60/h)")
    assert "💰 +16 CU/h (≈ +¥5.60/h)" in quick.quick_view(draft_of(prod()), roles(), preview)["blocks"].__repr__()
    unpriced = judged("3")
    assert unpriced.cost is not None and unpriced.cost.startswith("+16 CU/h") and "¥" not in unpriced.cost


def test_the_view_fits_and_shows_the_group_the_number_and_the_limits() -> None:
    draft = draft_of(prod(), named=("WorkerGroup2",), can_edit=True)
    view = quick.quick_view(draft, roles(), quick.Preview(draft.group))
    assert_fits(view, key="k-quick")
    assert view["callback_id"] == quick.CALLBACK_QUICK and view["submit"]["text"] == "Resize"
    inputs = input_blocks(view)
    select = inputs[quick.BLOCK_GROUP]
    assert select["dispatch_action"] is True
    assert select["element"]["initial_option"]["value"] == "1"
    assert [o["text"]["text"] for o in select["element"]["options"]] == [
        "WorkerGroup1 · 2 replicas",
        "WorkerGroup2 · 1 replica",
    ]
    number = inputs[quick.BLOCK_REPLICAS]
    assert number["dispatch_action"] is True and number["element"]["type"] == "number_input"
    assert number["element"]["dispatch_action_config"] == {"trigger_actions_on": ["on_character_entered"]}
    assert number["hint"]["text"] == "WorkerGroup2 has 1 now"
    limits_text = context_text(view, quick.BLOCK_LIMITS)
    assert "*oncall*" in limits_text and "at most 40 replicas per group" in limits_text
    assert limits_text == (
        "Your limits here: *oncall*: at most 40 replicas per group; changes of at most 20 replicas at once; "
        "approval above 20 replicas (30 min)\n"
        "*WorkerGroup2* has 1 replica (min 1, max 8); autoscaling is on: the cloud moves it between its min and max."
    )
    assert "Type the new number" in context_text(view, quick.BLOCK_EFFECT)
    assert block(view, quick.BLOCK_ACTIONS)["elements"][0]["action_id"] == quick.ACTION_FULL_EDITOR
    # Without `edit`, no button that would only be refused.
    no_edit = quick.quick_view(draft_of(prod()), roles(), quick.Preview("WorkerGroup1"))
    assert quick.BLOCK_ACTIONS not in [b.get("block_id") for b in no_edit["blocks"]]


def test_the_limits_line_says_whether_the_cloud_autoscales_and_counts_money_in_the_configs_currency() -> None:
    from bot.config import ApprovalRule, Limits

    group = prod().editable()["workerSpec"][0]
    fixed = quick.limits_line(
        WorkerGroup.model_validate(group),
        [("oncall", Limits(max_cost_per_hour=200), ApprovalRule(above_cost_per_hour=50))],
        autoscaling=False,
        currency="CNY",
    )
    assert fixed == (
        "Your limits here: *oncall*: at most ¥200.00/h per cluster; approval above +¥50.00/h (30 min)\n"
        "*WorkerGroup1* has 2 replicas (min 1, max 4); autoscaling is off: it stays at the count you set."
    )
    unbounded = WorkerGroup(group_name="g", replica=1)
    assert quick.limits_line(unbounded, [], autoscaling=None).endswith(
        "*g* has 1 replica; autoscaling is off: it stays at the count you set."
    )
    assert "none: you may not resize this cluster here" in quick.limits_line(None, [])


def test_the_view_as_typed_shows_the_effect_or_the_limit() -> None:
    draft = draft_of(prod(maxReplica=60))
    over = quick.quick_view(draft, roles(), quick.judge(CONFIG, ONCALL, draft, "WorkerGroup2", "45"))
    assert "⚠️" in context_text(over, quick.BLOCK_EFFECT) and "at most 40" in context_text(over, quick.BLOCK_EFFECT)
    assert over["submit"]["text"] == "Resize"
    approval = quick.quick_view(draft, roles(), quick.judge(CONFIG, ONCALL, draft, "WorkerGroup2", "21"))
    assert approval["submit"]["text"] == "Request approval"
    ok = quick.quick_view(draft, roles(), quick.judge(CONFIG, ONCALL, draft, "WorkerGroup2", "6"))
    assert "1 → 6 replicas" in context_text(ok, quick.BLOCK_EFFECT)
    assert input_blocks(ok)[quick.BLOCK_GROUP]["element"]["initial_option"]["value"] == "1"
    for view in (over, approval, ok):
        assert_fits(view, key="k-quick")


@pytest.mark.parametrize("groups", [0, 1, 50])
def test_the_view_fits_for_any_number_of_groups(groups: int) -> None:
    fleet = next(c for c in world.SEED if c["name"] == "fleet-50")
    wire = copy.deepcopy(fleet) | {"workerSpec": copy.deepcopy(fleet["workerSpec"][:groups])}
    draft = draft_of(RayCluster.model_validate(wire), can_edit=True)
    view = quick.quick_view(draft, roles(), quick.Preview(draft.group))
    assert_fits(view, key="k-quick")
    if groups == 0:
        assert "submit" not in view and quick.BLOCK_REPLICAS not in input_blocks(view)
        assert "no worker groups" in context_text(view, quick.BLOCK_EFFECT)
    else:
        assert len(input_blocks(view)[quick.BLOCK_GROUP]["element"]["options"]) == groups
    assert_fits(quick.loading_view("x" * 200))


@pytest.mark.parametrize("sample_id", SAMPLES)
def test_hostile_names_reach_slack_escaped(sample_id: str) -> None:
    s = sample(sample_id)
    draft = quick.new_quick_draft(
        s.text,
        s.cluster,
        channel_id="C0TRUSTED1",
        thread_ts=None,
        user_id="U0TRUSTED1",
        named_groups=[g for g in s.cluster.group_names()][-1:],
        can_edit=True,
        key="k-hostile",
    )
    preselected = draft.group
    for typed in (None, s.text, "3", "1000"):
        preview = quick.judge(CONFIG, ONCALL, draft, preselected, typed)
        view = quick.quick_view(draft, roles(), preview)
        assert_fits(view, key="k-hostile")
        assert payload_problems(view["blocks"], s) == []
        for error in quick.submit_errors(preview).values():
            assert "<!" not in error and "<@U0EVIL" not in error
    assert payload_problems(quick.loading_view(s.text)["blocks"], s) == []
    group = s.cluster.group(preselected) if preselected else None
    if group is not None:
        line = quick.quick_resize_effect(s.cluster, group, 3, Decision(True, "ok", approval=None))
        assert "<!" not in line and "<@U0EVIL" not in line


# --- the shortcut's picker --------------------------------------------------------------------------------------------


def test_the_picker_preselects_the_one_that_fits_and_says_what_the_message_named() -> None:
    view = modals.picker_view(["prod", "fleet"], "k-pick", selected="fleet", not_yours=["staging"])
    assert_fits(view, key="k-pick")
    element = input_blocks(view)[modals.BLOCK_PICK]["element"]
    assert element["initial_option"]["value"] == "fleet"
    assert "staging" in "\n".join(mrkdwn_texts(view))
    assert modals.parse_picker(state_of(view), ["prod", "fleet"]).alias == "fleet"  # submitted as preselected
    many = [f"c{i}" for i in range(150)]
    typed = modals.picker_view(many, "k", selected="c120")
    assert input_blocks(typed)[modals.BLOCK_PICK]["element"]["initial_value"] == "c120"
    plain = modals.picker_view(["prod", "fleet"], "k")
    assert "initial_option" not in input_blocks(plain)[modals.BLOCK_PICK]["element"]
