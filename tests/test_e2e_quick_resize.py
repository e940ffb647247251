"""The message shortcut's quick resize end to end: a real raybot, the Slack and EMR emulators, signed requests.

An alert naming prod and a group opens the quick resize with that group preselected, one Submit resizes it (the
EMR emulator records the UpdateRayCluster) and the outcome goes to the alert's thread; a number above the role's
limit is shown as it is typed (views.update, hashed) and refused on Submit; an alert naming a clusterId; an alert
naming nothing (or a cluster the person may not change) opens the picker; the full editor one button away."""

from __future__ import annotations

import copy

import pytest

from bot.slack import modals
from bot.slack import quick_resize as quick
from bot.slack.blocks import APPROVE_ACTION
from commands.message_action import CALLBACK_ID
from tests import e2e_world as world
from tests.e2e import (
    mark,
    new_emr_calls,
    post_as_someone,
    post_interaction,
    raybot_env,
    submit_view,
    text_of,
    untouched_values,
    updates_of,
    wait_new,
    wait_until_followed,
    with_value,
)
from tests.harness import start_raybot

FLEET = "ray-9w2n4b6c8d0fgh1j"


@pytest.fixture(scope="module")
def raybot(emr, slack, tmp_path_factory):
    env = raybot_env(tmp_path_factory.mktemp("raybot"), slack, emr)
    process = start_raybot(env)
    yield process
    process.stop()


@pytest.fixture(autouse=True)
async def fresh(emr, slack):
    emr.clear_faults()
    emr.seed(copy.deepcopy(world.SEED))
    mark(emr, slack)
    yield
    await wait_until_followed(emr, slack)


async def shortcut_on(http, raybot, slack, text: str, *, user=world.ONCALL_USER, channel=world.ONCALL_CHANNEL):
    """Post `text` as an alert, use the message shortcut on it as `user`; returns the alert's ts."""
    ts = await post_as_someone(slack, channel, text)
    message = slack.message(channel, ts)
    mark_after = len(slack.calls)
    payload = slack.message_action_payload(CALLBACK_ID, message, user_id=user, channel_id=channel)
    response = await post_interaction(http, raybot, payload)
    assert response.status_code == 200, response.text
    assert len(slack.calls) >= mark_after
    return ts


async def quick_view_opened(slack) -> dict:
    """The quick resize once it is filled (views.open of the loading view, then views.update)."""
    opened = await wait_new(slack, lambda c: c.method == "views.open")
    assert opened.args["view"]["callback_id"] == quick.CALLBACK_LOADING  # at once, with the trigger
    view_id = opened.response["view"]["id"]
    await wait_new(
        slack,
        lambda c: (
            c.method == "views.update"
            and c.args.get("view_id") == view_id
            and c.args["view"]["callback_id"] == quick.CALLBACK_QUICK
        ),
    )
    return slack.views[view_id]


def preselected(view: dict) -> str:
    block = next(b for b in view["blocks"] if b.get("block_id") == quick.BLOCK_GROUP)
    return block["element"]["initial_option"]["text"]["text"]


def effect(view: dict) -> str:
    return next(b for b in view["blocks"] if b.get("block_id") == quick.BLOCK_EFFECT)["elements"][0]["text"]


async def type_number(http, raybot, slack, view: dict, user: str, typed: str) -> dict:
    """Type `typed` in the number input as Slack dispatches it (on_character_entered); returns the views.update."""
    values = with_value(untouched_values(view), quick.BLOCK_REPLICAS, typed)
    action = {"type": "number_input", "action_id": quick.ACTION_REPLICAS, "block_id": quick.BLOCK_REPLICAS}
    payload = slack.block_actions_payload(
        action | {"value": typed}, user_id=user, view_id=view["id"], state_values=values
    )
    earlier = {id(c) for c in slack.calls}
    await post_interaction(http, raybot, payload)
    update = await slack.wait_for(
        lambda c: id(c) not in earlier and c.method == "views.update" and c.args.get("view_id") == view["id"] and c.ok
    )
    assert update.args.get("hash") == view["hash"]  # never over a view newer than the one typed in
    return update.args["view"]


def c_text(call) -> str:  # noqa: ANN001
    return text_of(call.args)


async def test_alert_naming_prod_and_a_group_resizes_it_in_the_alerts_thread(http, raybot, slack, emr):
    alert_ts = await shortcut_on(http, raybot, slack, "[FIRING:1] RayQueueBacklog prod: *WorkerGroup2* saturated")
    after_alert = {id(c) for c in slack.calls}
    view = await quick_view_opened(slack)
    assert preselected(view) == "WorkerGroup2 · 1 replica"
    assert world.PROD in text_of(view)
    values = with_value(untouched_values(view), quick.BLOCK_REPLICAS, "5")
    answer, _ = await submit_view(http, raybot, slack, view["id"], world.ONCALL_USER, values)
    assert answer["response_action"] == "update", answer
    await wait_new(
        slack, lambda c: c.method == "views.update" and "accepted the resize" in text_of(c.args.get("view", {}))
    )
    [update] = updates_of(emr)
    groups = {g["groupName"]: g for g in update.json["workerSpec"]}
    assert groups["WorkerGroup2"]["replica"] == 5 and groups["WorkerGroup1"]["replica"] == 2
    assert groups["WorkerGroup2"]["maxReplica"] == 8  # only the replica count changed
    done = await wait_new(slack, lambda c: c.method == "chat.postMessage" and "📨" in c.args.get("text", ""))
    assert done.args["channel"] == world.ONCALL_CHANNEL and done.args["thread_ts"] == alert_ts
    assert update.request_id in text_of(done.args)
    posts = [c for c in slack.calls if id(c) not in after_alert and c.method == "chat.postMessage"]
    assert posts and all(c.args.get("thread_ts") == alert_ts for c in posts)  # the root status message too
    # The alert is not raybot's: the change's status line is broadcast to the channel too, kept current there.
    [status] = [c for c in posts if c.args.get("reply_broadcast")]
    assert "*prod*" in c_text(status) and "WorkerGroup2: 1 → 5 replicas" in c_text(status)


async def test_a_late_keystroke_never_overwrites_the_outcome(http, raybot, slack, emr):
    await shortcut_on(http, raybot, slack, "prod WorkerGroup2 slow")
    typed_in = copy.deepcopy(await quick_view_opened(slack))
    values = with_value(untouched_values(typed_in), quick.BLOCK_REPLICAS, "3")
    answer, _ = await submit_view(http, raybot, slack, typed_in["id"], world.ONCALL_USER, values)
    assert answer["response_action"] == "update"
    await wait_new(
        slack, lambda c: c.method == "views.update" and "accepted the resize" in text_of(c.args.get("view", {}))
    )
    # A keystroke Slack sent before the Submit, arriving after it: its view (and hash) is the quick resize's.
    action = {"type": "number_input", "action_id": quick.ACTION_REPLICAS, "block_id": quick.BLOCK_REPLICAS}
    late = slack.block_actions_payload(action | {"value": "4"}, user_id=world.ONCALL_USER, view_id=typed_in["id"])
    late["view"] = typed_in | {"state": {"values": with_value(values, quick.BLOCK_REPLICAS, "4")}}
    await post_interaction(http, raybot, late)
    refused = await wait_new(slack, lambda c: c.method == "views.update" and not c.ok)
    assert refused.error == "hash_conflict"
    assert "accepted the resize" in text_of(slack.views[typed_in["id"]])
    assert len(updates_of(emr)) == 1


async def test_a_number_above_the_limit_is_shown_as_typed_and_refused_on_submit(http, raybot, slack, emr):
    roomy = emr.cluster(world.WORKSPACE, world.PROD) | {"workspaceId": world.WORKSPACE}
    roomy["workerSpec"][1]["maxReplica"] = 60  # the role's limit (40), not the group's max, is what binds
    emr.seed([roomy])
    alert_ts = await shortcut_on(http, raybot, slack, "prod WorkerGroup2 backlog growing")
    view = await quick_view_opened(slack)
    assert "at most 40 replicas per group" in text_of(view)  # the limit that applies, before anything is typed

    shown = await type_number(http, raybot, slack, view, world.ONCALL_USER, "45")
    assert "⚠️" in effect(shown) and "at most 40 replicas per group" in effect(shown)
    view = slack.views[view["id"]]
    values = with_value(untouched_values(view), quick.BLOCK_REPLICAS, "45")
    answer, top = await submit_view(http, raybot, slack, view["id"], world.ONCALL_USER, values)
    assert answer["response_action"] == "errors"
    assert "at most 40 replicas per group" in answer["errors"][quick.BLOCK_REPLICAS]
    assert top == view["id"]

    # A number that needs approval says so, and Submit becomes a request.
    shown = await type_number(http, raybot, slack, slack.views[view["id"]], world.ONCALL_USER, "21")
    assert "1 → 21 replicas" in effect(shown) and "approval" in effect(shown)
    assert shown["submit"]["text"] == "Request approval"
    values = with_value(untouched_values(slack.views[view["id"]]), quick.BLOCK_REPLICAS, "21")
    answer, _ = await submit_view(http, raybot, slack, view["id"], world.ONCALL_USER, values)
    assert answer["response_action"] == "update"
    request = await wait_new(slack, lambda c: c.method == "chat.postMessage" and APPROVE_ACTION in text_of(c.args))
    assert request.args["thread_ts"] == alert_ts  # the two-person rule, in the alert's thread
    await wait_new(
        slack,
        lambda c: (
            c.method == "views.update"
            and c.args["view"]["callback_id"] == modals.CALLBACK_RESULT
            and "second person's approval" in text_of(c.args["view"])
        ),
    )
    assert new_emr_calls(emr, "UpdateRayCluster") == []


async def test_an_alert_naming_a_cluster_id_opens_its_quick_resize(http, raybot, slack, emr):
    text = f"<https://emr.console.example/ray/{FLEET}/overview|Ray console> group-07: pods pending"
    await shortcut_on(http, raybot, slack, text)
    view = await quick_view_opened(slack)
    assert view["title"]["text"] == "Resize fleet"
    assert preselected(view) == "group-07 · 2 replicas"
    assert FLEET in text_of(view)


async def test_an_alert_naming_nothing_opens_the_picker_then_the_quick_resize(http, raybot, slack, emr):
    await shortcut_on(http, raybot, slack, "disk almost full somewhere")
    opened = await wait_new(slack, lambda c: c.method == "views.open")
    picker = slack.views[opened.response["view"]["id"]]
    assert picker["callback_id"] == modals.CALLBACK_PICKER
    element = next(b for b in picker["blocks"] if b.get("block_id") == modals.BLOCK_PICK)["element"]
    assert [o["value"] for o in element["options"]] == ["prod", "fleet"]  # what the on-call role may resize
    assert "initial_option" not in element
    fleet = element["options"][1]
    values = {modals.BLOCK_PICK: {modals.BLOCK_PICK: {"type": "static_select", "selected_option": fleet}}}
    answer, _ = await submit_view(http, raybot, slack, picker["id"], world.ONCALL_USER, values)
    assert answer["view"]["callback_id"] == quick.CALLBACK_LOADING
    await wait_new(
        slack, lambda c: c.method == "views.update" and c.args["view"]["callback_id"] == quick.CALLBACK_QUICK
    )
    assert slack.views[picker["id"]]["title"]["text"] == "Resize fleet"


async def test_an_alert_naming_a_cluster_the_person_may_not_change_offers_the_others(http, raybot, slack):
    await shortcut_on(http, raybot, slack, "staging and prod are slow")
    opened = await wait_new(slack, lambda c: c.method == "views.open")
    picker = slack.views[opened.response["view"]["id"]]
    element = next(b for b in picker["blocks"] if b.get("block_id") == modals.BLOCK_PICK)["element"]
    assert element["initial_option"]["value"] == "prod"  # the one named that this person may change
    assert "staging" in text_of(picker)  # named, and said to be out of reach


async def test_the_full_editor_is_one_button_away(http, raybot, slack, emr):
    alert_ts = await shortcut_on(
        http, raybot, slack, "prod WorkerGroup1 hot", user=world.ADMIN, channel=world.PLATFORM_CHANNEL
    )
    view = await quick_view_opened(slack)
    assert preselected(view) == "WorkerGroup1 · 2 replicas"
    action = {
        "type": "button",
        "action_id": quick.ACTION_FULL_EDITOR,
        "block_id": quick.BLOCK_ACTIONS,
        "value": "editor",
    }
    payload = slack.block_actions_payload(action, user_id=world.ADMIN, view_id=view["id"], state_values={})
    await post_interaction(http, raybot, payload)
    await wait_new(
        slack,
        lambda c: (
            c.method == "views.update"
            and c.args.get("view_id") == view["id"]
            and c.args["view"]["callback_id"] == modals.CALLBACK_OVERVIEW
        ),
    )
    overview = slack.views[view["id"]]
    values = with_value(untouched_values(overview), modals.BLOCK_DESCRIPTION, "from the quick resize")
    _, confirm_id = await submit_view(http, raybot, slack, overview["id"], world.ADMIN, values)
    await submit_view(http, raybot, slack, confirm_id, world.ADMIN, {})
    done = await wait_new(slack, lambda c: c.method == "chat.postMessage" and "📨" in c.args.get("text", ""))
    assert done.args["thread_ts"] == alert_ts  # the editor answers in the alert's thread too
    [update] = updates_of(emr)
    assert update.json["description"] == "from the quick resize"
