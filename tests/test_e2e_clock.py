"""What depends on time passing, with raybot run in this process so its clock can be injected: a temporary
resize that expires while raybot is stopped is reverted after it starts; an approval that expired is refused.

raybot still serves real HTTP on loopback and talks to both emulators over sockets; only its clock is fake.
"""

from __future__ import annotations

import copy

import pytest

from bot.slack.blocks import APPROVE_ACTION, CANCEL_REVERT_ACTION
from tests import e2e_world as world
from tests.e2e import (
    FakeClock,
    button_payload,
    ephemeral_reply,
    inprocess_raybot,
    mark,
    message_with,
    post_interaction,
    raybot_env,
    send,
    text_of,
    updates_of,
    wait_new,
)

FLEET = "ray-9w2n4b6c8d0fgh1j"
HOUR = 3600.0


@pytest.fixture
def env(emr, slack, tmp_path):
    emr.seed(copy.deepcopy(world.SEED))
    mark(emr, slack)
    return raybot_env(tmp_path, slack, emr)


async def test_temporary_resize_expiring_while_stopped_is_reverted_after_start(http, env, slack, emr):
    clock = FakeClock(1_800_000_000.0)
    async with inprocess_raybot(env, clock) as first:
        await send(http, first, slack, "resize prod WorkerGroup1=3 for 1h")
        done = await wait_new(slack, lambda c: c.method == "chat.postMessage" and "📨" in c.args.get("text", ""))
        # The root says when it reverts, and holds Keep it.
        root = await wait_new(slack, lambda c: c.method == "chat.update" and "⏲️ reverts at" in c.args.get("text", ""))
        assert root.args["ts"] == done.args["thread_ts"] and CANCEL_REVERT_ACTION in text_of(root.args)
    assert [u.json["workerSpec"][0]["replica"] for u in updates_of(emr)] == [3]

    clock.now += 2 * HOUR  # raybot was stopped while the resize expired
    async with inprocess_raybot(env, clock):
        reverted = await wait_new(
            slack,
            lambda c: (
                c.method == "chat.update"
                and "automatic revert of #" in c.args.get("text", "")
                and "✅" in c.args["text"]
            ),
        )
        assert reverted.args["channel"] == world.ONCALL_CHANNEL
    assert [u.json["workerSpec"][0]["replica"] for u in updates_of(emr)] == [3, 2]
    thread = slack.thread(world.ONCALL_CHANNEL, done.args["thread_ts"])
    assert any("automatic revert of #" in m["text"] for m in thread)  # a change of its own, in the same thread


async def test_keep_it_cancels_the_automatic_revert(http, env, slack, emr):
    clock = FakeClock(1_800_000_000.0)
    async with inprocess_raybot(env, clock) as first:
        await send(http, first, slack, "resize prod WorkerGroup1=3 for 1h")
        await wait_new(slack, lambda c: c.method == "chat.postMessage" and "📨" in c.args.get("text", ""))
        answer = message_with(slack, world.ONCALL_CHANNEL, CANCEL_REVERT_ACTION)
        await post_interaction(
            http,
            first,
            button_payload(slack, answer, world.ONCALL_CHANNEL, CANCEL_REVERT_ACTION, user=world.ONCALL_USER),
        )
        await wait_new(
            slack,
            lambda c: c.method == "chat.postMessage" and "cancelled the automatic revert" in c.args.get("text", ""),
        )
    clock.now += 2 * HOUR
    async with inprocess_raybot(env, clock) as second:
        _, url = await send(http, second, slack, "history prod")  # answered after the scheduler's first pass
        await ephemeral_reply(slack, url)
    assert len(updates_of(emr)) == 1


async def test_approval_after_expiry_is_refused(http, env, slack, emr):
    clock = FakeClock(1_800_000_000.0)
    async with inprocess_raybot(env, clock) as bot:
        await send(http, bot, slack, "resize fleet group-01 replicas=21 max=21")
        await wait_new(slack, lambda c: c.method == "chat.postMessage" and "🕒" in c.args.get("text", ""))
        message = message_with(slack, world.ONCALL_CHANNEL, APPROVE_ACTION)
        clock.now += 31 * 60
        await post_interaction(
            http, bot, button_payload(slack, message, world.ONCALL_CHANNEL, APPROVE_ACTION, user=world.LEAD)
        )
        refused = await wait_new(slack, lambda c: c.method == "chat.postEphemeral")
        assert "expired" in text_of(refused.args)
        closed = await wait_new(slack, lambda c: c.method == "chat.update" and "expired" in c.args.get("text", ""))
        assert "actions" not in text_of(closed.args)  # the buttons are gone
    assert updates_of(emr, FLEET) == []


async def test_an_approval_request_nobody_answers_is_closed_when_it_expires(http, env, slack, emr):
    clock = FakeClock(1_800_000_000.0)
    async with inprocess_raybot(env, clock) as bot:
        await send(http, bot, slack, "resize fleet group-01 replicas=21 max=21")
        request = await wait_new(slack, lambda c: c.method == "chat.postMessage" and "🕒" in c.args.get("text", ""))
        clock.now += 31 * 60
        bot.services.wake_scheduler()
        closed = await wait_new(slack, lambda c: c.method == "chat.update" and "expired" in c.args.get("text", ""))
        assert closed.args["ts"] == request.response["ts"]
        assert APPROVE_ACTION not in text_of(closed.args)
    assert updates_of(emr, FLEET) == []
