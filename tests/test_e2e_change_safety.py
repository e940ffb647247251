"""Change safety end to end, against a real `raybot serve`: the audit log across a crash, exactly-once
applies, per-cluster locks, Undo, and the two-person rule."""

from __future__ import annotations

import asyncio
import copy
import re

import pytest

from bot.slack.blocks import APPROVE_ACTION, UNDO_ACTION
from tests import e2e_world as world
from tests.e2e import (
    button_payload,
    ephemeral_reply,
    mark,
    message_with,
    new_emr_calls,
    post_form,
    post_interaction,
    raybot_env,
    send,
    text_of,
    updates_of,
    wait_new,
    wait_until_followed,
)
from tests.harness import start_raybot

FLEET = "ray-9w2n4b6c8d0fgh1j"


@pytest.fixture(scope="module")
def env(emr, slack, tmp_path_factory):
    return raybot_env(
        tmp_path_factory.mktemp("raybot"), slack, emr, RAYBOT_EMR_DEADLINE_SECONDS="8", RAYBOT_LOCK_WAIT_SECONDS="2"
    )


@pytest.fixture(scope="module")
def raybot(env):
    process = start_raybot(env)
    yield process
    process.stop()


@pytest.fixture(autouse=True)
async def fresh_clusters(emr, slack):
    emr.clear_faults()
    emr.release_hanging()
    emr.seed(copy.deepcopy(world.SEED))
    mark(emr, slack)
    yield
    emr.clear_faults()
    emr.release_hanging()
    await wait_until_followed(emr, slack)


def done_updates(slack):
    return lambda c: c.method == "chat.update" and "✅" in c.args.get("text", "")


async def finish_held_change(emr, slack) -> None:
    """Let the hanging read go (it is retried) and wait until that change settled, so nothing of it leaks."""
    emr.release_hanging()
    await wait_new(
        slack,
        lambda c: (
            c.method == "chat.update"
            and "WorkerGroup1: 2 → 3 replicas" in c.args.get("text", "")
            and "✅" in c.args["text"]
        ),
        timeout=15,
    )


async def wait_emr(emr, predicate, timeout=5.0):
    return await asyncio.to_thread(emr.wait_for_call, predicate, timeout)


async def test_duplicated_slash_command_makes_one_cloud_call(http, raybot, slack, emr):
    payload = slack.slash_command_payload(
        "/ray", "resize prod WorkerGroup1=3", user_id=world.ONCALL_USER, channel_id=world.ONCALL_CHANNEL
    )
    first, second = await asyncio.gather(post_form(http, raybot, payload), post_form(http, raybot, payload))
    assert first.status_code == second.status_code == 200
    await wait_new(slack, done_updates(slack))
    # A later command is answered only after the duplicate was seen: by then a second change would show.
    _, url = await send(http, raybot, slack, "history prod 5")
    history = text_of(await ephemeral_reply(slack, url))
    assert len(updates_of(emr)) == 1
    assert history.count("WorkerGroup1: 2 → 3 replicas") == 1


async def test_parallel_resizes_of_one_cluster_are_serialized_and_none_lost(http, raybot, slack, emr):
    emr.inject("latency", action="GetRayCluster", seconds=0.2)
    await asyncio.gather(
        send(http, raybot, slack, "resize prod WorkerGroup1=3"),
        send(http, raybot, slack, "resize prod WorkerGroup2=5", user=world.LEAD),
    )
    await wait_new(
        slack,
        lambda c: (
            c.method == "chat.update"
            and "WorkerGroup1: 2 → 3 replicas" in c.args.get("text", "")
            and "✅" in c.args["text"]
        ),
    )
    await wait_new(
        slack,
        lambda c: (
            c.method == "chat.update"
            and "WorkerGroup2: 1 → 5 replicas" in c.args.get("text", "")
            and "✅" in c.args["text"]
        ),
    )
    order = [c.action for c in new_emr_calls(emr) if c.path.endswith(world.PROD)]
    # Not interleaved: the second change read the cluster only after the first one's update (the follower's
    # reads of the first change may come in between).
    assert order[:2] == ["GetRayCluster", "UpdateRayCluster"] and order.count("UpdateRayCluster") == 2
    groups = emr.cluster(world.WORKSPACE, world.PROD)["workerSpec"]
    assert [g["replica"] for g in groups] == [3, 5]  # the second read saw the first change: nothing lost


async def test_changes_to_two_clusters_do_not_wait_for_each_other(http, raybot, slack, emr):
    emr.inject("hang", action="GetRayCluster", times=1)
    await send(http, raybot, slack, "resize prod WorkerGroup1=3")
    await wait_emr(emr, lambda c: c.action == "GetRayCluster" and c.path.endswith(world.PROD) and c.status == 0)
    await send(http, raybot, slack, "resize fleet group-01=3")
    await wait_new(
        slack, lambda c: c.method == "chat.update" and "fleet" in c.args.get("text", "") and "✅" in c.args["text"]
    )
    assert updates_of(emr, world.PROD) == []  # prod is still waiting for its read
    await finish_held_change(emr, slack)


async def test_a_second_change_to_a_held_cluster_is_told_who_holds_it(http, raybot, slack, emr):
    emr.inject("hang", action="GetRayCluster", times=1)
    await send(http, raybot, slack, "resize prod WorkerGroup1=3")
    await wait_emr(emr, lambda c: c.action == "GetRayCluster" and c.status == 0)
    _, url = await send(http, raybot, slack, "resize prod WorkerGroup2=2", user=world.LEAD)
    reply = await ephemeral_reply(slack, url, timeout=10)
    assert "being changed right now" in reply["text"]
    assert f"<@{world.ONCALL_USER}>" in reply["text"]
    assert updates_of(emr) == []
    await finish_held_change(emr, slack)


async def test_undo_puts_the_changed_fields_back(http, raybot, slack, emr):
    await send(http, raybot, slack, "resize prod WorkerGroup1=3")
    await wait_new(slack, done_updates(slack))
    answer = message_with(slack, world.ONCALL_CHANNEL, UNDO_ACTION)
    response = await post_interaction(
        http, raybot, button_payload(slack, answer, world.ONCALL_CHANNEL, UNDO_ACTION, user=world.ONCALL_USER)
    )
    assert response.status_code == 200
    await wait_new(
        slack, lambda c: c.method == "chat.update" and "undo" in c.args.get("text", "") and "✅" in c.args["text"]
    )
    first, undo = updates_of(emr)
    assert undo.json["workerSpec"][0]["replica"] == 2
    assert undo.json["workerSpec"][1] == first.json["workerSpec"][1]


async def test_ray_undo_undoes_the_channels_latest_change_and_refuses_what_it_cannot(http, raybot, slack, emr):
    await send(http, raybot, slack, "resize prod WorkerGroup1=3")
    await wait_new(slack, lambda c: c.method == "chat.postMessage" and UNDO_ACTION in text_of(c.args))
    [first] = updates_of(emr)
    await send(http, raybot, slack, "undo prod")
    done = await wait_new(
        slack, lambda c: c.method == "chat.update" and "undo of #" in c.args.get("text", "") and "✅" in c.args["text"]
    )
    _, undo = updates_of(emr)
    assert undo.json["workerSpec"][0]["replica"] == 2 and first.json["workerSpec"][0]["replica"] == 3
    # A change number of another cluster is refused with the command that would undo it; nothing is sent.
    change_id = int(re.search(r"undo of #(\d+)", done.args["text"]).group(1))
    _, url = await send(http, raybot, slack, f"undo fleet #{change_id}")
    reply = await ephemeral_reply(slack, url)
    assert f"change #{change_id} was a change to *prod*, not *fleet*" in reply["text"]
    # A cluster with no change of this channel to undo says so, and where to look.
    _, url = await send(http, raybot, slack, "undo staging", user=world.ADMIN, channel=world.PLATFORM_CHANNEL)
    reply = await ephemeral_reply(slack, url)
    assert "no change to *staging* made in this channel can be undone now" in reply["text"]
    assert "/ray history staging" in reply["text"]
    assert len(updates_of(emr)) == 2


async def test_undo_after_a_conflicting_change_explains_and_changes_nothing(http, raybot, slack, emr):
    await send(http, raybot, slack, "resize prod WorkerGroup1=3")
    # This change's own answer (a root update could be a follow of an earlier test's change settling).
    await wait_new(slack, lambda c: c.method == "chat.postMessage" and UNDO_ACTION in text_of(c.args))
    changed = emr.cluster(world.WORKSPACE, world.PROD) | {"workspaceId": world.WORKSPACE}
    changed["workerSpec"][0]["replica"] = 4  # someone else resized it since
    emr.seed([changed])
    answer = message_with(slack, world.ONCALL_CHANNEL, UNDO_ACTION)
    await post_interaction(
        http, raybot, button_payload(slack, answer, world.ONCALL_CHANNEL, UNDO_ACTION, user=world.ONCALL_USER)
    )
    note = await wait_new(slack, lambda c: c.method == "chat.postEphemeral")
    assert "changed since" in text_of(note.args) and "it is now 4" in text_of(note.args)
    assert len(updates_of(emr)) == 1


async def test_approval_refused_to_the_requester_and_applied_once_on_a_double_click(http, raybot, slack, emr):
    await send(http, raybot, slack, "resize fleet group-01 replicas=21 max=21")
    request = await wait_new(slack, lambda c: c.method == "chat.postMessage" and "🕒" in c.args.get("text", ""))
    assert updates_of(emr, FLEET) == []
    message = message_with(slack, world.ONCALL_CHANNEL, APPROVE_ACTION)

    await post_interaction(
        http, raybot, button_payload(slack, message, world.ONCALL_CHANNEL, APPROVE_ACTION, user=world.ONCALL_USER)
    )
    refused = await wait_new(slack, lambda c: c.method == "chat.postEphemeral")
    assert "someone else" in text_of(refused.args)

    click = button_payload(slack, message, world.ONCALL_CHANNEL, APPROVE_ACTION, user=world.LEAD)
    await asyncio.gather(post_interaction(http, raybot, click), post_interaction(http, raybot, click))
    await wait_new(slack, lambda c: c.method == "chat.postMessage" and "📨" in c.args.get("text", ""), timeout=10)
    [update] = updates_of(emr, FLEET)
    assert update.json["workerSpec"][0]["replica"] == 21
    assert request.args["channel"] == world.ONCALL_CHANNEL


async def test_killed_during_the_cloud_call_is_checked_and_told_on_restart(http, env, slack, emr, tmp_path):
    crash_env = env | {"RAYBOT_DATABASE": str(tmp_path / "crash.db"), "RAYBOT_EMR_DEADLINE_SECONDS": "1"}
    first = start_raybot(crash_env)
    try:
        emr.inject("hang", action="UpdateRayCluster")
        await send(http, first, slack, "resize prod WorkerGroup1=3")
        await wait_emr(emr, lambda c: c.action == "UpdateRayCluster" and c.status == 0)
        root = await wait_new(slack, lambda c: c.method == "chat.postMessage" and "⏳" in c.args.get("text", ""))
        first.proc.kill()  # no chance to write the outcome
    finally:
        first.stop()
    emr.clear_faults()
    emr.release_hanging()  # the hanging update is answered 503: it did not take effect
    second = start_raybot(crash_env)
    try:
        checking = await wait_new(
            slack, lambda c: c.method == "chat.postMessage" and "does not know yet" in c.args.get("text", "")
        )
        assert checking.args["thread_ts"] == root.response["ts"]
        told = await wait_new(
            slack,
            lambda c: c.method == "chat.postMessage" and "did not take effect" in c.args.get("text", ""),
            timeout=15,
        )
        assert told.args["thread_ts"] == root.response["ts"]
        final = await wait_new(slack, lambda c: c.method == "chat.update" and "❌" in c.args.get("text", ""))
        assert final.args["ts"] == root.response["ts"]
        # The lock the dead process held was freed by the restart: a new change goes through at once.
        await send(http, second, slack, "resize prod WorkerGroup1=4")
        await wait_new(slack, lambda c: c.method == "chat.postMessage" and UNDO_ACTION in text_of(c.args))
    finally:
        second.stop()
