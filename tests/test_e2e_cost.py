"""What a change costs, end to end against real `raybot serve` processes: the resize answer, a temporary resize, the
modal's review, an approval request, /ray show, list and history, the added-cost gauge, approval above
`above_cost_per_hour` and denial above `max_cost_per_hour` — with the config's prices, and with none (CU only).

prod as seeded: head 4 vCPU/16Gi (4 CU), WorkerGroup1 2 × 4 vCPU/16Gi (max 4), WorkerGroup2 1 × 8 vCPU/32Gi (max 8),
autoscaling on: 20 CU/h now, 84 CU/h at most; at ¥0.35 per CU-hour, ¥7.00/h and ¥29.40/h.
"""

from __future__ import annotations

import copy

import pytest

from bot.slack import modals
from tests import e2e_world as world
from tests.e2e import (
    ephemeral_reply,
    mark,
    post_interaction,
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

PRICED = world.CONFIG.replace(
    "roles:\n",
    "pricing:\n  currency: CNY\n  cu_hour: {cn-hangzhou: 0.35}\nroles:\n",
    1,
).replace(
    "    limits: {max_replica: 40, max_step: 20}\n    approval: {above_replica: 20}\n",
    "    limits: {max_replica: 40, max_step: 20, max_cost_per_hour: 60}\n"
    "    approval: {above_replica: 20, above_cost_per_hour: 10}\n",
    1,
)
assert PRICED.count("max_cost_per_hour") == 1 and "pricing:" in PRICED


@pytest.fixture(scope="module")
def priced(emr, slack, tmp_path_factory):
    process = start_raybot(raybot_env(tmp_path_factory.mktemp("priced"), slack, emr, config_text=PRICED))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def unpriced(emr, slack, tmp_path_factory):
    process = start_raybot(raybot_env(tmp_path_factory.mktemp("unpriced"), slack, emr))
    yield process
    process.stop()


@pytest.fixture(autouse=True)
async def fresh(emr, slack):
    emr.clear_faults()
    emr.seed(copy.deepcopy(world.SEED))
    mark(emr, slack)
    yield
    await wait_until_followed(emr, slack)


def posted(slack, mark_text: str):
    return lambda c: c.method == "chat.postMessage" and mark_text in c.args.get("text", "")


def cost_lines(message: dict) -> list[str]:
    """The 💰 context lines of a message, as Slack would show them."""
    return [
        element["text"]
        for block in message.get("blocks") or []
        if block.get("type") == "context"
        for element in block["elements"]
        if element.get("text", "").startswith("💰")
    ]


async def added(http, raybot, metric: str) -> float:
    body = (await http.get(f"{raybot.url}/metrics")).text
    line = next((x for x in body.splitlines() if x.startswith(f'{metric}{{cluster="prod"}}')), None)
    return float(line.split()[-1]) if line else 0.0


async def test_resize_answer_shows_the_delta_at_the_configured_price_and_the_gauge_adds_it(http, priced, slack, emr):
    cu_before = await added(http, priced, "raybot_added_cu_per_hour")
    money_before = await added(http, priced, "raybot_added_cost_per_hour")
    await send(http, priced, slack, "resize prod WorkerGroup1 replicas=4")
    answer = await wait_new(slack, posted(slack, "change accepted"), timeout=10)
    [line] = cost_lines(answer.args)
    assert line.startswith("💰 +8 CU/h (≈ +¥2.80/h) · autoscaling 16 … 84 CU/h (≈ ¥5.60 … ¥29.40/h)")
    await wait_until_followed(emr, slack)  # told first, then recorded as applied: counted by then
    assert await added(http, priced, "raybot_added_cu_per_hour") == cu_before + 8
    assert await added(http, priced, "raybot_added_cost_per_hour") == pytest.approx(money_before + 2.8)


async def test_temporary_resize_shows_its_total_for_the_duration(http, priced, slack):
    await send(http, priced, slack, "resize prod WorkerGroup1 replicas=4 for 2h")
    answer = await wait_new(slack, posted(slack, "change accepted"), timeout=10)
    [line] = cost_lines(answer.args)
    assert line.startswith("💰 +8 CU/h (≈ +¥2.80/h) · ≈ ¥5.60 for 2 h")


async def test_a_change_above_the_cost_threshold_waits_for_approval_showing_its_cost(http, priced, slack, emr):
    await send(http, priced, slack, "resize prod WorkerGroup1 replicas=10 max=10")
    request = await wait_new(slack, posted(slack, "🕒"), timeout=10)
    text = text_of(request.args)
    assert "it raises the cost by +32 CU/h (≈ +¥11.20/h) (approval needed above +¥10.00/h)" in text
    [line] = cost_lines(request.args)
    # Autoscaled to its new max (10) it adds less than at replica 10 from 2: the range says the rest.
    assert line.startswith("💰 +32 CU/h (≈ +¥11.20/h) · autoscaling ") and "up to" not in line
    assert updates_of(emr) == []


async def test_a_change_above_the_cost_limit_is_denied_with_the_figures(http, priced, slack, emr):
    _, url = await send(http, priced, slack, "resize prod WorkerGroup2 max=20")
    reply = await ephemeral_reply(slack, url)
    assert "oncall allows at most ¥60.00/h per cluster; this change would make it up to ¥63.00/h" in text_of(reply)
    assert "+96 CU/h (≈ +¥33.60/h)" in text_of(reply)
    assert updates_of(emr) == []


async def test_show_list_and_history_tell_the_cost(http, priced, slack):
    await send(http, priced, slack, "resize prod WorkerGroup1 replicas=3")
    await wait_new(slack, posted(slack, "change accepted"), timeout=10)
    _, url = await send(http, priced, slack, "show prod")
    shown = await ephemeral_reply(slack, url)
    [line] = cost_lines(shown)
    assert line == "💰 24 CU/h (≈ ¥8.40/h) · autoscaling 16 … 84 CU/h (≈ ¥5.60 … ¥29.40/h)"
    _, url = await send(http, priced, slack, "list")
    listed = text_of(await ephemeral_reply(slack, url))
    assert "💰 24 CU/h (≈ ¥8.40/h)" in listed
    assert "staging* `Stopped`" in listed and "staging* `Stopped` · 💰" not in listed  # nothing billed while stopped
    _, url = await send(http, priced, slack, "history prod 1")
    history = text_of(await ephemeral_reply(slack, url))
    assert "WorkerGroup1: 2 → 3 replicas · 💰 +4 CU/h (≈ +¥1.40/h)" in history


async def open_review(http, raybot, slack, replica: str) -> dict:
    """As the editor: `/ray edit prod`, set WorkerGroup1's replicas, Review; returns the review view."""
    await send(http, raybot, slack, "edit prod", user=world.EDITOR)
    opened = await wait_new(slack, lambda c: c.method == "views.open")
    view_id = opened.response["view"]["id"]
    await wait_new(slack, lambda c: c.method == "views.update" and c.args.get("view_id") == view_id)
    overview = slack.views[view_id]
    picker = next(b for b in overview["blocks"] if b.get("block_id") == modals.BLOCK_GROUPS)
    action = {
        "type": "static_select",
        "action_id": modals.ACTION_EDIT_GROUP,
        "block_id": modals.BLOCK_GROUPS,
        "selected_option": picker["element"]["options"][0],  # WorkerGroup1
    }
    await post_interaction(http, raybot, view_action_payload(slack, view_id, world.EDITOR, action))
    pushed = await wait_new(slack, lambda c: c.method == "views.push")
    editor_id = pushed.response["view"]["id"]
    values = with_value(untouched_values(slack.views[editor_id]), modals.BLOCK_GROUP_REPLICA, replica)
    # The overview was updated once already (loading → editor): wait for the update this submission makes.
    earlier = {id(c) for c in slack.calls}
    await submit_view(http, raybot, slack, editor_id, world.EDITOR, values)
    await slack.wait_for(
        lambda c: id(c) not in earlier and c.method == "views.update" and c.args.get("view_id") == view_id
    )
    overview = slack.views[view_id]
    answer, review_id = await submit_view(http, raybot, slack, view_id, world.EDITOR, untouched_values(overview))
    assert answer["response_action"] == "push", answer
    return slack.views[review_id]


async def test_the_modal_review_shows_the_delta(http, priced, slack):
    review = await open_review(http, priced, slack, "4")
    [line] = cost_lines(review)
    assert line.startswith("💰 +8 CU/h (≈ +¥2.80/h)")


async def test_without_pricing_the_same_flows_show_cu_only(http, unpriced, slack, emr):
    await send(http, unpriced, slack, "resize prod WorkerGroup1 replicas=4 for 2h")
    answer = await wait_new(slack, posted(slack, "change accepted"), timeout=10)
    [line] = cost_lines(answer.args)
    assert line.startswith("💰 +8 CU/h · 16 CU-hours for 2 h · autoscaling 16 … 84 CU/h")
    await wait_until_followed(emr, slack)
    mark(emr, slack)

    await send(http, unpriced, slack, "resize fleet group-01 replicas=21 max=21")
    request = await wait_new(slack, posted(slack, "🕒"), timeout=10)
    [line] = cost_lines(request.args)
    assert line.startswith("💰 +38 CU/h · autoscaling ") and "up to" not in line

    review = await open_review(http, unpriced, slack, "3")  # WorkerGroup1 is at 4 since the first resize
    [line] = cost_lines(review)
    assert line.startswith("💰 -4 CU/h · autoscaling 16 … 84 CU/h")
    for message in (answer.args, request.args, review):
        assert "≈ ¥" not in text_of(message) and "¥" not in "".join(cost_lines(message))
