"""The modal editor end to end: `/ray edit`, the views Slack receives for 0, 1(+) and 50 groups, inline
validation, a permission change between open and submit, a cluster changed meanwhile, the message
shortcut and the @mention, and a cloud error while loading."""

from __future__ import annotations

import copy

import pytest

from bot.slack import limits, modals
from tests import e2e_world as world
from tests.e2e import (
    mark,
    mention_event,
    new_emr_calls,
    post_as_someone,
    post_interaction,
    post_json_signed,
    raybot_env,
    send,
    submit_view,
    text_of,
    untouched_values,
    updates_of,
    view_action_payload,
    wait_new,
    wait_until_followed,
    with_value,
)
from tests.harness import start_raybot

FLEET = "ray-9w2n4b6c8d0fgh1j"


@pytest.fixture(scope="module")
def raybot(emr, slack, tmp_path_factory):
    # No user-group cache: a membership change is seen by the next request.
    env = raybot_env(tmp_path_factory.mktemp("raybot"), slack, emr, RAYBOT_USERGROUP_CACHE_SECONDS="0")
    process = start_raybot(env)
    yield process
    process.stop()


@pytest.fixture(autouse=True)
async def fresh(emr, slack):
    emr.clear_faults()
    emr.seed(copy.deepcopy(world.SEED))
    slack.set_usergroup(world.EDITORS, [world.EDITOR])
    mark(emr, slack)
    yield
    await wait_until_followed(emr, slack)


async def open_editor(http, raybot, slack, alias: str) -> dict:
    """`/ray edit <alias>` as the editor; returns the view once it is the overview (or an error view)."""
    await send(http, raybot, slack, f"edit {alias}", user=world.EDITOR)
    opened = await wait_new(slack, lambda c: c.method == "views.open")
    assert opened.args["view"]["callback_id"] == modals.CALLBACK_LOADING  # at once, with the trigger
    view_id = opened.response["view"]["id"]
    await wait_new(slack, lambda c: c.method == "views.update" and c.args.get("view_id") == view_id)
    return slack.views[view_id]


def assert_within_limits(view: dict) -> None:
    assert len(view["blocks"]) <= limits.MODAL_BLOCKS_MAX
    assert len(view["title"]["text"]) <= limits.MODAL_TITLE_MAX
    assert len(view.get("private_metadata", "")) <= limits.PRIVATE_METADATA_MAX
    for block in view["blocks"]:
        for element in [block.get("element"), *(block.get("elements") or [])]:
            if isinstance(element, dict) and "options" in element:
                assert len(element["options"]) <= limits.STATIC_SELECT_OPTIONS_MAX


@pytest.mark.parametrize(("alias", "groups"), [("empty", 0), ("prod", 2), ("fleet", 50)])
async def test_editor_views_fit_slacks_limits(http, raybot, slack, alias, groups):
    overview = await open_editor(http, raybot, slack, alias)
    assert overview["callback_id"] == modals.CALLBACK_OVERVIEW
    assert_within_limits(overview)
    assert len(overview["private_metadata"]) <= 64  # only the draft's key
    if groups:
        picker = next(b for b in overview["blocks"] if b.get("block_id") == modals.BLOCK_GROUPS)
        assert len(picker["element"]["options"]) == groups + (1 if groups < 50 else 0)
        action = {
            "type": "static_select",
            "action_id": modals.ACTION_EDIT_GROUP,
            "block_id": modals.BLOCK_GROUPS,
            "selected_option": picker["element"]["options"][groups - 1],
        }
        await post_interaction(http, raybot, view_action_payload(slack, overview["id"], world.EDITOR, action))
        pushed = await wait_new(slack, lambda c: c.method == "views.push")
        assert_within_limits(slack.views[pushed.response["view"]["id"]])
        assert len(slack.view_stacks[overview["id"]]) == 2


async def test_edit_a_group_in_the_50_group_cluster_and_apply(http, raybot, slack, emr):
    overview = await open_editor(http, raybot, slack, "fleet")
    picker = next(b for b in overview["blocks"] if b.get("block_id") == modals.BLOCK_GROUPS)
    action = {
        "type": "static_select",
        "action_id": modals.ACTION_EDIT_GROUP,
        "block_id": modals.BLOCK_GROUPS,
        "selected_option": picker["element"]["options"][6],  # group-07
    }
    await post_interaction(http, raybot, view_action_payload(slack, overview["id"], world.EDITOR, action))
    pushed = await wait_new(slack, lambda c: c.method == "views.push")
    editor_id = pushed.response["view"]["id"]
    values = with_value(untouched_values(slack.views[editor_id]), modals.BLOCK_GROUP_MAX, "9")
    values = with_value(values, modals.BLOCK_GROUP_REPLICA, "4")
    # The overview was updated once already (loading → editor): wait for the update this submission makes.
    earlier = {id(c) for c in slack.calls}
    answer, top = await submit_view(http, raybot, slack, editor_id, world.EDITOR, values)
    assert answer.get("response_action") is None and top == overview["id"]  # popped back to the overview
    await slack.wait_for(
        lambda c: id(c) not in earlier and c.method == "views.update" and c.args.get("view_id") == overview["id"]
    )

    overview = slack.views[overview["id"]]
    answer, confirm_id = await submit_view(
        http, raybot, slack, overview["id"], world.EDITOR, untouched_values(overview)
    )
    assert answer["response_action"] == "push", answer
    confirm = slack.views[confirm_id]
    assert "group-07" in text_of(confirm) and "→ 4" in text_of(confirm)
    answer, _ = await submit_view(http, raybot, slack, confirm_id, world.EDITOR, {})
    assert answer["response_action"] == "update"
    await wait_new(
        slack, lambda c: c.method == "views.update" and "accepted the change" in text_of(c.args.get("view", {}))
    )
    [update] = updates_of(emr, FLEET)
    groups = update.json["workerSpec"]
    assert len(groups) == 50 and groups[6]["replica"] == 4 and groups[6]["maxReplica"] == 9
    done = await wait_new(slack, lambda c: c.method == "chat.postMessage" and "📨" in c.args.get("text", ""))
    assert update.request_id in text_of(done.args) and done.args["channel"] == world.ONCALL_CHANNEL


@pytest.mark.parametrize(
    ("block_id", "value", "fragment"),
    [
        (modals.BLOCK_NAME, "x" * 65, "64"),
        (modals.BLOCK_HEAD_MEMORY, "16GB", "16Gi"),
        (modals.BLOCK_HEAD_CPU, "-2", "positive number"),
    ],
)
async def test_overview_errors_come_back_inline(http, raybot, slack, emr, block_id, value, fragment):
    overview = await open_editor(http, raybot, slack, "prod")
    values = with_value(untouched_values(overview), block_id, value)
    answer, _ = await submit_view(http, raybot, slack, overview["id"], world.EDITOR, values)
    assert answer["response_action"] == "errors"
    assert fragment in answer["errors"][block_id]
    assert new_emr_calls(emr, "UpdateRayCluster") == []


@pytest.mark.parametrize(
    ("changes", "block_id", "fragment"),
    [
        ({modals.BLOCK_GROUP_MIN: "5", modals.BLOCK_GROUP_MAX: "2"}, modals.BLOCK_GROUP_MIN, "above"),
        ({modals.BLOCK_GROUP_NAME: "WorkerGroup2"}, modals.BLOCK_GROUP_NAME, "already"),
        ({modals.BLOCK_GROUP_NAME: ""}, modals.BLOCK_GROUP_NAME, ""),
        ({modals.BLOCK_GROUP_MEMORY: "lots"}, modals.BLOCK_GROUP_MEMORY, "Gi"),
        ({modals.BLOCK_GROUP_REPLICA: "45", modals.BLOCK_GROUP_MAX: "45"}, modals.BLOCK_GROUP_REPLICA, "at most 40"),
    ],
)
async def test_group_errors_come_back_inline(http, raybot, slack, emr, changes, block_id, fragment):
    overview = await open_editor(http, raybot, slack, "prod")
    picker = next(b for b in overview["blocks"] if b.get("block_id") == modals.BLOCK_GROUPS)
    action = {
        "type": "static_select",
        "action_id": modals.ACTION_EDIT_GROUP,
        "block_id": modals.BLOCK_GROUPS,
        "selected_option": picker["element"]["options"][0],
    }
    await post_interaction(http, raybot, view_action_payload(slack, overview["id"], world.EDITOR, action))
    pushed = await wait_new(slack, lambda c: c.method == "views.push")
    values = untouched_values(slack.views[pushed.response["view"]["id"]])
    for changed_block, value in changes.items():
        values = with_value(values, changed_block, value)
    answer, _ = await submit_view(http, raybot, slack, pushed.response["view"]["id"], world.EDITOR, values)
    assert answer["response_action"] == "errors", answer
    assert block_id in answer["errors"] and fragment in answer["errors"][block_id]


async def test_a_51st_group_is_refused_inline(http, raybot, slack):
    overview = await open_editor(http, raybot, slack, "fleet")
    assert modals.ACTION_ADD_GROUP not in text_of(overview)  # no Add button at 50 groups
    picker = next(b for b in overview["blocks"] if b.get("block_id") == modals.BLOCK_GROUPS)
    assert modals.NEW_GROUP_VALUE not in [o["value"] for o in picker["element"]["options"]]


async def test_permission_lost_between_open_and_submit_applies_nothing(http, raybot, slack, emr):
    overview = await open_editor(http, raybot, slack, "prod")
    confirm_answer, confirm_id = await submit_view(
        http,
        raybot,
        slack,
        overview["id"],
        world.EDITOR,
        with_value(untouched_values(overview), modals.BLOCK_DESCRIPTION, "x"),
    )
    assert confirm_answer["response_action"] == "push"
    slack.set_usergroup(world.EDITORS, [])  # removed from the group that grants `edit`
    await submit_view(http, raybot, slack, confirm_id, world.EDITOR, {})
    shown = await wait_new(
        slack, lambda c: c.method == "views.update" and "Not allowed" in text_of(c.args.get("view", {}))
    )
    assert world.EDITORS in text_of(shown.args["view"])
    assert new_emr_calls(emr, "UpdateRayCluster") == []


async def test_cluster_changed_meanwhile_is_not_overwritten(http, raybot, slack, emr):
    overview = await open_editor(http, raybot, slack, "prod")
    values = with_value(untouched_values(overview), modals.BLOCK_DESCRIPTION, "edited in the modal")
    _, confirm_id = await submit_view(http, raybot, slack, overview["id"], world.EDITOR, values)
    changed = emr.cluster(world.WORKSPACE, world.PROD) | {"workspaceId": world.WORKSPACE}
    changed["workerSpec"][0]["replica"] = 4  # someone resized it meanwhile
    emr.seed([changed])
    await submit_view(http, raybot, slack, confirm_id, world.EDITOR, {})
    stale = await wait_new(
        slack, lambda c: c.method == "views.update" and c.args["view"]["callback_id"] == modals.CALLBACK_STALE
    )
    assert "2 → 4" in text_of(stale.args["view"])
    assert new_emr_calls(emr, "UpdateRayCluster") == []
    # "Review again" shows the edit on the cluster as it is now; Apply then keeps the other person's resize.
    answer, _ = await submit_view(http, raybot, slack, confirm_id, world.EDITOR, {})
    assert answer["response_action"] == "update"
    _, final_id = confirm_id, confirm_id
    await submit_view(http, raybot, slack, final_id, world.EDITOR, {})
    await wait_new(
        slack, lambda c: c.method == "views.update" and "accepted the change" in text_of(c.args.get("view", {}))
    )
    [update] = updates_of(emr)
    assert update.json["description"] == "edited in the modal"
    assert update.json["workerSpec"][0]["replica"] == 4


async def test_cloud_error_while_loading_ends_in_the_modal(http, raybot, slack, emr):
    await send(http, raybot, slack, "edit ghost", user=world.ADMIN, channel=world.PLATFORM_CHANNEL)
    opened = await wait_new(slack, lambda c: c.method == "views.open")
    shown = await wait_new(slack, lambda c: c.method == "views.update")
    assert shown.args["view_id"] == opened.response["view"]["id"]
    [get] = new_emr_calls(emr, "GetRayCluster")
    assert get.code in text_of(shown.args["view"]) and get.request_id in text_of(shown.args["view"])


@pytest.mark.parametrize("threaded", [True, False])
async def test_message_shortcut_edits_and_answers_in_the_messages_thread(http, raybot, slack, emr, threaded):
    root = await post_as_someone(slack, world.ONCALL_CHANNEL, "Alert: prod is slow")
    message_ts = await post_as_someone(slack, world.ONCALL_CHANNEL, "still slow", thread_ts=root) if threaded else root
    mark(emr, slack)
    message = {"type": "message", "user": "U0ALERTS", "text": "alert", "ts": message_ts}
    if threaded:
        message["thread_ts"] = root
    payload = {
        "type": "message_action",
        "callback_id": "raybot_message_action",
        "trigger_id": slack.new_trigger_id(user=world.EDITOR),
        "response_url": slack.new_response_url(channel=world.ONCALL_CHANNEL, user=world.EDITOR),
        "team": {"id": "T0TEAM", "domain": "example"},
        "channel": {"id": world.ONCALL_CHANNEL, "name": "incident"},
        "user": {"id": world.EDITOR, "name": "editor"},
        "message_ts": message_ts,
        "message": message,
        "token": "unused",
        "action_ts": "1732600401.000000",
    }
    await post_interaction(http, raybot, payload)
    opened = await wait_new(slack, lambda c: c.method == "views.open")
    picker_id = opened.response["view"]["id"]
    assert opened.args["view"]["callback_id"] == modals.CALLBACK_PICKER  # prod, fleet and empty: pick one
    pick = slack.views[picker_id]["blocks"][1]["element"]["options"][0]
    values = {modals.BLOCK_PICK: {modals.BLOCK_PICK: {"type": "static_select", "selected_option": pick}}}
    await submit_view(http, raybot, slack, picker_id, world.EDITOR, values)
    await wait_new(
        slack, lambda c: c.method == "views.update" and c.args["view"]["callback_id"] == modals.CALLBACK_OVERVIEW
    )
    overview = slack.views[picker_id]
    values = with_value(untouched_values(overview), modals.BLOCK_DESCRIPTION, "from the alert")
    _, confirm_id = await submit_view(http, raybot, slack, picker_id, world.EDITOR, values)
    await submit_view(http, raybot, slack, confirm_id, world.EDITOR, {})
    done = await wait_new(slack, lambda c: c.method == "chat.postMessage" and "📨" in c.args.get("text", ""))
    assert done.args["thread_ts"] == root  # the thread of the message (its own thread when it is a reply)


async def test_mention_edit_in_a_thread_answers_with_a_button(http, raybot, slack):
    root = await post_as_someone(slack, world.ONCALL_CHANNEL, "Alert: fleet")
    text = "<@U0RAYBOT> edit fleet"
    ts = await post_as_someone(slack, world.ONCALL_CHANNEL, text, thread_ts=root)
    mark_calls = len(slack.calls)
    await post_json_signed(
        http, raybot, mention_event(text, user=world.EDITOR, channel=world.ONCALL_CHANNEL, ts=ts, thread_ts=root)
    )
    note = await slack.wait_for(lambda c: c.method == "chat.postEphemeral" and slack.calls.index(c) >= mark_calls)
    assert note.args["thread_ts"] == root
    assert "raybot_edit_open" in text_of(note.args)


async def test_apply_submitted_twice_changes_the_cluster_once(http, raybot, slack, emr):
    import asyncio

    overview = await open_editor(http, raybot, slack, "prod")
    values = with_value(untouched_values(overview), modals.BLOCK_DESCRIPTION, "twice")
    _, confirm_id = await submit_view(http, raybot, slack, overview["id"], world.EDITOR, values)
    payload = slack.view_submission_payload(confirm_id, user_id=world.EDITOR, values={})
    answers = await asyncio.gather(post_interaction(http, raybot, payload), post_interaction(http, raybot, payload))
    await wait_new(
        slack, lambda c: c.method == "views.update" and "accepted the change" in text_of(c.args.get("view", {}))
    )
    # The second Apply is told it was applied already: by its own answer when the first had closed the draft before
    # it was read, else by the view the duplicate run updates.
    said = ("already applied", "applied already")
    if not any(word in answer.text for answer in answers for word in said):
        await wait_new(
            slack,
            lambda c: c.method == "views.update" and any(word in text_of(c.args.get("view", {})) for word in said),
        )
    assert len(updates_of(emr)) == 1
