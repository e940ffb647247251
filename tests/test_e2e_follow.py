"""Following a change until it settles, and start/stop, with raybot in this process and one fake clock shared
by raybot and the EMR emulator (which takes 10 minutes, on that clock, to move a cluster to a new spec)."""

from __future__ import annotations

import copy
import json
import time

import pytest

from bot.sandbox.emr_server import EmrEmulator
from bot.slack.blocks import STOP_ACTION, UNDO_ACTION
from tests import e2e_world as world
from tests.e2e import (
    FakeClock,
    SchedulerPasses,
    button_payload,
    ephemeral_reply,
    inprocess_raybot,
    mark,
    message_with,
    new_emr_calls,
    post_interaction,
    raybot_env,
    send,
    text_of,
    wait_new,
)
from tests.harness import AK_ID, AK_SECRET

SETTLE = 600.0
GPU = "ray-k3v8q2m7t5hzxa04"
STAGING = "ray-p5r7s9u1w3y5a7c9"


@pytest.fixture
def clock():
    return FakeClock(time.time())


@pytest.fixture
def emr(clock):
    # raybot signs with the real date; the emulator judges it by the fake clock, which runs ahead: allow it.
    with EmrEmulator(
        access_keys={AK_ID: AK_SECRET},
        clusters=copy.deepcopy(world.SEED),
        clock=clock,
        settle_seconds=SETTLE,
        max_skew_seconds=86400,
    ) as emulator:
        yield emulator


@pytest.fixture
def env(emr, slack, tmp_path):
    mark(emr, slack)
    config = raybot_env(tmp_path, slack, emr)
    # Start and stop rights for the admin in the platform channel (admin holds "*") are all the test needs.
    return config


def root_updates(slack, root_ts):
    return [c for c in slack.calls if c.method == "chat.update" and c.args.get("ts") == root_ts]


async def look_again(raybot, clock, seconds: float) -> None:
    """Let `seconds` pass on the shared clock and have raybot's follower look now."""
    clock.now += seconds
    raybot.services.wake_scheduler()


async def test_a_change_is_followed_until_the_new_spec_runs(http, env, slack, emr, clock):
    async with inprocess_raybot(env, clock) as raybot:
        await send(http, raybot, slack, "resize prod WorkerGroup1=4", user=world.ADMIN, channel=world.PLATFORM_CHANNEL)
        applying = await wait_new(
            slack,
            lambda c: (
                c.method == "chat.update" and "applying: cluster Running, still updating" in c.args.get("text", "")
            ),
        )
        root_ts = applying.args["ts"]
        assert "WorkerGroup1: 2 of 4 workers up" in applying.args["text"]
        assert "still updating" in applying.args["text"]
        await look_again(raybot, clock, SETTLE / 2)
        await wait_new(
            slack, lambda c: c.method == "chat.update" and "WorkerGroup1: 3 of 4 workers up" in c.args.get("text", "")
        )
        await look_again(raybot, clock, SETTLE)
        settled = await wait_new(
            slack, lambda c: c.method == "chat.postMessage" and "settled" in c.args.get("text", "")
        )
        assert settled.args["thread_ts"] == root_ts and "WorkerGroup1: 4 of 4 workers up" in text_of(settled.args)
        final = await wait_new(
            slack, lambda c: c.method == "chat.update" and "✅" in c.args.get("text", "") and "done:" in c.args["text"]
        )
        assert final.args["ts"] == root_ts
    replies = [c for c in slack.calls if c.method == "chat.postMessage" and c.args.get("thread_ts") == root_ts]
    assert len(replies) == 2  # accepted, then settled: no stream of edits in the thread


async def test_a_change_that_ends_in_error_says_so_with_the_apis_message(http, env, slack, emr, clock):
    emr.end_in_error(world.WORKSPACE, world.PROD, "Insufficient GPU quota in cn-hangzhou-h")
    async with inprocess_raybot(env, clock) as raybot:
        await send(http, raybot, slack, "resize prod WorkerGroup1=4", user=world.ADMIN, channel=world.PLATFORM_CHANNEL)
        await wait_new(slack, lambda c: c.method == "chat.update" and "applying: " in c.args.get("text", ""))
        await look_again(raybot, clock, SETTLE * 2)
        failed = await wait_new(
            slack, lambda c: c.method == "chat.postMessage" and "ended in" in c.args.get("text", "")
        )
        assert "Insufficient GPU quota" in failed.args["text"]
        await wait_new(slack, lambda c: c.method == "chat.update" and "❌" in c.args.get("text", ""))


async def test_a_change_to_an_autoscaling_cluster_settles_where_its_autoscaler_keeps_the_workers(
    http, env, slack, emr, clock
):
    # prod autoscales (headSpec.enableAutoScaling) and WorkerGroup1 may run 1 to 4 workers: the autoscaler keeps 1.
    seeded = emr.cluster(world.WORKSPACE, world.PROD)
    assert seeded["headSpec"]["enableAutoScaling"] is True
    assert (seeded["workerSpec"][0]["minReplica"], seeded["workerSpec"][0]["maxReplica"]) == (1, 4)
    emr.autoscaler_holds(world.WORKSPACE, world.PROD, {"WorkerGroup1": 1})
    async with inprocess_raybot(env | {"RAYBOT_FOLLOW_SECONDS": "900"}, clock) as raybot:
        await send(http, raybot, slack, "resize prod WorkerGroup1=3", user=world.ADMIN, channel=world.PLATFORM_CHANNEL)
        applying = await wait_new(slack, lambda c: c.method == "chat.update" and "applying: " in c.args.get("text", ""))
        await look_again(raybot, clock, SETTLE)
        answer = await wait_new(
            slack,
            lambda c: (
                c.method == "chat.postMessage"
                and c.args.get("thread_ts") == applying.args["ts"]
                and "settled" in c.args.get("text", "")
            ),
        )
        text = text_of(answer.args)
        assert "not settled" not in text
        assert (
            "WorkerGroup1: 1 of 3 workers up (autoscaling: min 1, max 4)" in text
        )  # one worker, not 3, and why that is settled
    assert [g["replica"] for g in emr.cluster(world.WORKSPACE, world.PROD)["workerSpec"]][0] == 3


async def test_a_change_undone_before_it_settled_never_says_settled(http, env, slack, emr, clock, monkeypatch):
    # prod autoscales within 1–4: once undone, the first change's 4 would look "settled" at any count up to 4.
    passes = SchedulerPasses.install(monkeypatch)
    before = len(slack.calls)
    async with inprocess_raybot(env, clock) as raybot:
        await send(http, raybot, slack, "resize prod WorkerGroup1=4", user=world.ADMIN, channel=world.PLATFORM_CHANNEL)
        applying = await wait_new(slack, lambda c: c.method == "chat.update" and "applying: " in c.args.get("text", ""))
        root_ts = applying.args["ts"]
        holder = message_with(slack, world.PLATFORM_CHANNEL, UNDO_ACTION)
        await post_interaction(
            http, raybot, button_payload(slack, holder, world.PLATFORM_CHANNEL, UNDO_ACTION, user=world.ADMIN)
        )
        await wait_new(
            slack, lambda c: c.method == "chat.update" and c.args.get("ts") == root_ts and "↩️" in c.args["text"]
        )
        await look_again(raybot, clock, SETTLE * 2)
        await wait_new(
            slack,
            lambda c: (
                c.method == "chat.postMessage" and "settled" in c.args.get("text", "") and "2 of 2" in text_of(c.args)
            ),
        )
        await passes.wake_and_wait(raybot)  # every look that was due has been taken
    settled = [
        c for c in slack.calls[before:] if c.method == "chat.postMessage" and "settled" in c.args.get("text", "")
    ]
    assert len(settled) == 1, [c.args["text"] for c in settled]  # the undo's; the undone change says nothing more
    assert root_updates(slack, root_ts)[-1].args["text"].startswith("↩️")


async def test_a_change_superseded_before_it_settled_says_so_and_stops_waiting(
    http, env, slack, emr, clock, monkeypatch
):
    passes = SchedulerPasses.install(monkeypatch)
    before = len(slack.calls)
    async with inprocess_raybot(env, clock) as raybot:
        await send(http, raybot, slack, "resize prod WorkerGroup1=4", user=world.ADMIN, channel=world.PLATFORM_CHANNEL)
        first = await wait_new(
            slack, lambda c: c.method == "chat.update" and "2 → 4 replicas · accepted" in c.args["text"]
        )
        await send(http, raybot, slack, "resize prod WorkerGroup1=3", user=world.ADMIN, channel=world.PLATFORM_CHANNEL)
        await wait_new(slack, lambda c: c.method == "chat.update" and "4 → 3 replicas · accepted" in c.args["text"])
        await look_again(raybot, clock, SETTLE * 2)
        told = await wait_new(
            slack, lambda c: c.method == "chat.postMessage" and "superseded" in c.args.get("text", "")
        )
        assert told.args["thread_ts"] == first.args["ts"]
        await wait_new(
            slack,
            lambda c: (
                c.method == "chat.postMessage" and "settled" in c.args.get("text", "") and "3 of 3" in text_of(c.args)
            ),
        )
        await passes.wake_and_wait(raybot)
    final = root_updates(slack, first.args["ts"])[-1].args["text"]
    assert final.startswith("⏭️") and "accepted, then superseded by change #" in final, final
    settled = [
        c for c in slack.calls[before:] if c.method == "chat.postMessage" and c.args.get("text", "").startswith("✅")
    ]
    assert len(settled) == 1, [c.args["text"] for c in settled]  # the later change's; the first never says settled


async def test_following_survives_a_restart(http, env, slack, emr, clock):
    async with inprocess_raybot(env, clock) as raybot:
        await send(http, raybot, slack, "resize prod WorkerGroup1=4", user=world.ADMIN, channel=world.PLATFORM_CHANNEL)
        applying = await wait_new(slack, lambda c: c.method == "chat.update" and "applying: " in c.args.get("text", ""))
    clock.now += SETTLE * 2  # settled while raybot was stopped
    async with inprocess_raybot(env, clock):
        settled = await wait_new(
            slack, lambda c: c.method == "chat.postMessage" and "settled" in c.args.get("text", "")
        )
        assert settled.args["thread_ts"] == applying.args["ts"]


async def test_a_change_that_never_settles_times_out(http, env, slack, emr, clock):
    async with inprocess_raybot(env | {"RAYBOT_FOLLOW_SECONDS": "300"}, clock) as raybot:
        await send(http, raybot, slack, "resize prod WorkerGroup1=4", user=world.ADMIN, channel=world.PLATFORM_CHANNEL)
        await wait_new(slack, lambda c: c.method == "chat.update" and "applying: " in c.args.get("text", ""))
        await look_again(raybot, clock, 301)
        late = await wait_new(
            slack, lambda c: c.method == "chat.postMessage" and "not settled" in c.args.get("text", "")
        )
        assert "WorkerGroup1" in text_of(late.args)


async def test_stop_asks_first_then_stops_and_follows(http, env, slack, emr, clock):
    async with inprocess_raybot(env, clock) as raybot:
        _, url = await send(http, raybot, slack, "stop train-gpu", user=world.ADMIN, channel=world.PLATFORM_CHANNEL)
        ask = await ephemeral_reply(slack, url)
        assert "Running" in ask["text"] and STOP_ACTION in json.dumps(ask["blocks"])
        assert "a10-small" in text_of(ask)  # what stops, group by group
        assert new_emr_calls(emr, "StopRayCluster") == []
        message = {"type": "message", "ts": "1732601100.000100", "text": ask["text"], "blocks": ask["blocks"]}
        click = button_payload(slack, message, world.PLATFORM_CHANNEL, STOP_ACTION, user=world.ADMIN)
        await post_interaction(http, raybot, click)
        await post_interaction(http, raybot, click)  # a double click stops once
        accepted = await wait_new(
            slack, lambda c: c.method == "chat.postMessage" and "stop accepted" in c.args.get("text", "")
        )
        # … and the second click is answered, not met with silence.
        used = await wait_new(slack, lambda c: "confirmation was used already" in c.args.get("text", ""))
        assert used.method in ("response_url", "chat.postEphemeral") and "train-gpu" in used.args["text"]
        [stop] = new_emr_calls(emr, "StopRayCluster")
        assert stop.request_id in accepted.args["text"]
        await look_again(raybot, clock, SETTLE)
        await wait_new(slack, lambda c: c.method == "chat.postMessage" and "settled" in c.args.get("text", ""))
        assert emr.cluster(world.WORKSPACE, GPU)["state"] == "Stopped"


async def test_start_with_a_client_token_and_permission_checks(http, env, slack, emr, clock):
    async with inprocess_raybot(env, clock) as raybot:
        _, url = await send(http, raybot, slack, "start staging")  # the on-call user may not start
        denied = await ephemeral_reply(slack, url)
        assert "Not allowed" in denied["text"] and "start" in denied["text"]
        assert new_emr_calls(emr, "StartRayCluster") == []

        await send(http, raybot, slack, "start staging", user=world.ADMIN, channel=world.PLATFORM_CHANNEL)
        accepted = await wait_new(
            slack, lambda c: c.method == "chat.postMessage" and "start accepted" in c.args.get("text", "")
        )
        [start] = new_emr_calls(emr, "StartRayCluster")
        assert len(start.json["clientToken"]) == 32 and start.request_id in accepted.args["text"]
        await look_again(raybot, clock, SETTLE)
        await wait_new(slack, lambda c: c.method == "chat.postMessage" and "settled" in c.args.get("text", ""))
        assert emr.cluster(world.WORKSPACE, STAGING)["state"] == "Running"
        _, url = await send(http, raybot, slack, "start staging", user=world.ADMIN, channel=world.PLATFORM_CHANNEL)
        again = await ephemeral_reply(slack, url)
        assert "only a Stopped cluster can start" in again["text"]
    assert len(new_emr_calls(emr, "StartRayCluster")) == 1
