"""Regression tests of the change-safety issue, one (or a few) per numbered item, end to end: a real raybot (in this
process with a fake clock, or a `raybot serve` subprocess where it must be killed) over HTTP, and both emulators
over sockets. Each test says which item it guards."""

from __future__ import annotations

import asyncio
import copy
import signal
import time

import pytest

from bot.slack import modals
from bot.slack.blocks import APPROVE_ACTION, CANCEL_REVERT_ACTION, STOP_ACTION, UNDO_ACTION
from tests import e2e_world as world
from tests.e2e import (
    MARKS,
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
GPU = "ray-k3v8q2m7t5hzxa04"
STAGING = "ray-p5r7s9u1w3y5a7c9"
HOUR = 3600.0


@pytest.fixture
def clock():
    return FakeClock(1_800_000_000.0)


@pytest.fixture
def passes(monkeypatch):
    return SchedulerPasses.install(monkeypatch)


@pytest.fixture(scope="module")
def served(emr, slack, tmp_path_factory):
    """A `raybot serve` on the real clock, for tests where a change waits for another one's lock (the store measures
    that wait on its clock, which a frozen fake clock would never let end)."""
    process = start_raybot(raybot_env(tmp_path_factory.mktemp("served"), slack, emr, RAYBOT_LOCK_WAIT_SECONDS="0.5"))
    yield process
    process.stop()


@pytest.fixture(autouse=True)
async def fresh(emr, slack):
    emr.clear_faults()
    emr.release_hanging()
    emr.seed(copy.deepcopy(world.SEED))
    mark(emr, slack)
    yield
    emr.clear_faults()
    emr.release_hanging()
    slack.set_member(world.ONCALL_CHANNEL, True)


@pytest.fixture
def env(emr, slack, tmp_path):
    # A click on a held cluster is answered "busy" after half a second, not five.
    return raybot_env(tmp_path, slack, emr, RAYBOT_LOCK_WAIT_SECONDS="0.5")


def posted(slack, predicate):
    """chat.postMessage calls of this test (refused ones too) whose arguments match `predicate`."""
    return [c for c in slack.calls[MARKS["slack"] :] if c.method == "chat.postMessage" and predicate(c.args)]


async def click(http, raybot, slack, message: dict, action_id: str, user: str, channel=world.ONCALL_CHANNEL):
    response = await post_interaction(http, raybot, button_payload(slack, message, channel, action_id, user=user))
    assert response.status_code == 200


async def ephemeral_to(slack, user: str, timeout: float = 5.0):
    """The first ephemeral note of this test to `user` (chat.postEphemeral: how a button click is answered)."""
    call = await wait_new(slack, lambda c: c.method == "chat.postEphemeral" and c.args.get("user") == user, timeout)
    return text_of(call.args)


async def temporary_resize(http, raybot, slack, emr) -> dict:
    """`resize prod WorkerGroup1=3 for 1h`, applied and settled; returns its root status message (with Keep it)."""
    await send(http, raybot, slack, "resize prod WorkerGroup1=3 for 1h")
    await wait_new(slack, lambda c: c.method == "chat.postMessage" and UNDO_ACTION in text_of(c.args))  # applied
    await wait_until_followed(emr, slack)
    return message_with(slack, world.ONCALL_CHANNEL, CANCEL_REVERT_ACTION)


async def wait_emr(emr, predicate, timeout=5.0):
    """The first EMR call of this test matching `predicate` (checked when it arrives, status 0, and when answered)."""
    earlier = {id(c) for c in emr.calls[: MARKS["emr"]]}
    return await asyncio.to_thread(emr.wait_for_call, lambda c: id(c) not in earlier and predicate(c), timeout)


def revert_failures(slack, thread_ts: str):
    def failure(args: dict) -> bool:
        return (
            args.get("thread_ts") == thread_ts
            and "automatic revert" in args.get("text", "")
            and "did not" in args["text"]
        )

    return posted(slack, failure)


# --- item 4: a revert that keeps failing backs off; it never spins, and is told once --------------------------------


@pytest.mark.parametrize("failure", ["bot removed from the channel", "cloud refuses the update"])
async def test_4_a_failing_revert_backs_off_and_is_told_once(http, env, slack, emr, clock, passes, failure, caplog):
    async with inprocess_raybot(env, clock) as bot:
        answer = await temporary_resize(http, bot, slack, emr)
        thread_ts = answer["ts"]
        if failure == "bot removed from the channel":
            slack.set_member(world.ONCALL_CHANNEL, False)
        else:
            emr.inject("forbidden", action="UpdateRayCluster")
        clock.now += HOUR + 1
        await passes.wake_and_wait(bot)  # the revert is tried, and fails
        assert emr.cluster(world.WORKSPACE, world.PROD)["workerSpec"][0]["replica"] == 3
        before = passes.begun
        await asyncio.sleep(0.3)  # a scheduler that spins would make hundreds of passes here
        for _ in range(2):  # a simulated minute: the retry due after 30 s, then 30 s more
            clock.now += 30
            await passes.wake_and_wait(bot)
        await asyncio.sleep(0.3)
        during = passes.begun - before
    assert during <= 6, f"{during} scheduler passes in a simulated minute"
    assert len(revert_failures(slack, thread_ts)) == 1  # told once (tried once, when the bot may not post there)
    assert any("automatic revert" in r.getMessage() for r in caplog.records if r.name == "raybot.scheduler")
    if failure == "cloud refuses the update":
        assert len(updates_of(emr)) == 1 + 2  # the resize, then the first try and its retry: no more
        thread = slack.thread(world.ONCALL_CHANNEL, thread_ts)
        roots = [m for m in thread if "RAYBOT> · *prod* · automatic revert of #" in m.get("text", "")]
        assert len(roots) == 2 and all(m["text"].startswith("❌") for m in roots)  # each try's root says it failed


# --- item 5: Keep it and the automatic revert: one of them wins, never both -------------------------------------------


async def test_5_keep_it_while_the_revert_runs_is_refused_and_the_revert_goes_ahead(
    http, env, slack, emr, clock, passes
):
    async with inprocess_raybot(env, clock) as bot:
        answer = await temporary_resize(http, bot, slack, emr)
        emr.inject("latency", action="GetRayCluster", times=1, seconds=30)  # the revert's read is held
        clock.now += HOUR + 1
        bot.services.wake_scheduler()
        await wait_emr(emr, lambda c: c.action == "GetRayCluster" and c.status == 0)
        await click(http, bot, slack, answer, CANCEL_REVERT_ACTION, world.ONCALL_USER)
        refused = await ephemeral_to(slack, world.ONCALL_USER)
        assert "running right now" in refused
        emr.release_hanging()  # the read is answered: the revert goes ahead
        await wait_new(
            slack,
            lambda c: (
                c.method == "chat.update"
                and "automatic revert of #" in c.args.get("text", "")
                and "✅" in c.args["text"]
            ),
        )
        await wait_until_followed(emr, slack)
    assert [u.json["workerSpec"][0]["replica"] for u in updates_of(emr)] == [3, 2]
    assert not posted(slack, lambda a: "the change stays" in a.get("text", ""))


async def test_5_keep_it_and_the_revert_at_the_same_moment_never_both(http, env, slack, emr, clock, passes):
    async with inprocess_raybot(env, clock) as bot:
        answer = await temporary_resize(http, bot, slack, emr)
        clock.now += HOUR + 1
        payload = button_payload(slack, answer, world.ONCALL_CHANNEL, CANCEL_REVERT_ACTION, user=world.ONCALL_USER)
        await asyncio.gather(passes.wake_and_wait(bot), post_interaction(http, bot, payload))
        kept = await wait_new(
            slack,
            lambda c: (
                (c.method == "chat.postMessage" and "the change stays" in c.args.get("text", ""))
                or (c.method == "chat.postEphemeral" and "running right now" in text_of(c.args))
                or (c.method == "chat.postEphemeral" and "done" in text_of(c.args))
            ),
        )
        await passes.wake_and_wait(bot)
        await wait_until_followed(emr, slack)
    reverted = [u for u in updates_of(emr) if u.json["workerSpec"][0]["replica"] == 2]
    if kept.method == "chat.postMessage":  # Keep it won: nothing is reverted
        assert reverted == []
    else:  # the revert won: Keep it was refused, and the revert was sent once
        assert len(reverted) == 1
        assert not posted(slack, lambda a: "the change stays" in a.get("text", ""))


# --- item 6: an approval that meets a busy cluster or a failed read stays open --------------------------------------


@pytest.mark.parametrize("obstacle", ["cluster busy", "read fails"])
async def test_6_approve_on_a_busy_cluster_or_a_failed_read_leaves_the_request_open(http, served, slack, emr, obstacle):
    await send(http, served, slack, "resize fleet group-01 replicas=21 max=21")
    request = await wait_new(slack, lambda c: c.method == "chat.postMessage" and "🕒" in c.args.get("text", ""))
    message = message_with(slack, world.ONCALL_CHANNEL, APPROVE_ACTION)
    if obstacle == "cluster busy":
        # Another change holds fleet while its read is held; it changes nothing, so the request stays valid.
        emr.inject("latency", action="GetRayCluster", times=1, seconds=30)
        _, url = await send(http, served, slack, "resize fleet group-02=3", user=world.LEAD)
        await wait_emr(emr, lambda c: c.action == "GetRayCluster" and c.status == 0)
    else:
        emr.inject("forbidden", action="GetRayCluster", times=1)
    await click(http, served, slack, message, APPROVE_ACTION, world.LEAD)
    told = await ephemeral_to(slack, world.LEAD)
    assert ("being changed right now" if obstacle == "cluster busy" else "Forbidden.RAM") in told
    still = slack.message(world.ONCALL_CHANNEL, request.response["ts"])
    assert APPROVE_ACTION in text_of(still)  # the buttons are still there: the request is open
    assert updates_of(emr, FLEET) == []
    if obstacle == "cluster busy":
        emr.release_hanging()
        assert "nothing was sent" in text_of(await ephemeral_reply(slack, url))

    await click(http, served, slack, message, APPROVE_ACTION, world.LEAD)
    await wait_new(slack, lambda c: c.method == "chat.postMessage" and "📨" in c.args.get("text", ""))
    await wait_until_followed(emr, slack)
    [update] = updates_of(emr, FLEET)
    assert update.json["workerSpec"][0]["replica"] == 21


async def test_6_approve_after_the_cluster_changed_voids_the_request_and_says_what_changed(
    http, env, slack, emr, clock
):
    async with inprocess_raybot(env, clock) as bot:
        await send(http, bot, slack, "resize fleet group-01 replicas=21 max=21")
        request = await wait_new(slack, lambda c: c.method == "chat.postMessage" and "🕒" in c.args.get("text", ""))
        changed = emr.cluster(world.WORKSPACE, FLEET) | {"workspaceId": world.WORKSPACE}
        changed["workerSpec"][1]["replica"] = 4  # someone else resized group-02 since the request
        emr.seed([changed])
        message = message_with(slack, world.ONCALL_CHANNEL, APPROVE_ACTION)
        await click(http, bot, slack, message, APPROVE_ACTION, world.LEAD)
        closed = await wait_new(
            slack, lambda c: c.method == "chat.update" and c.args.get("ts") == request.response["ts"]
        )
    assert "🚫" in closed.args["text"] and "not applied: the cluster changed since the request" in closed.args["text"]
    assert APPROVE_ACTION not in text_of(closed.args)  # closed: no button left to click
    # In its thread: the request in full (two parts), then what changed since.
    asked, detail = slack.thread(world.ONCALL_CHANNEL, request.response["ts"])
    assert "What approving it changes, in full" in text_of(asked) and "group-01: max 5 → 21" in text_of(asked)
    assert "void" in detail["text"] and "group-02" in detail["text"]
    assert updates_of(emr, FLEET) == []


# --- item 7: start and stop under the two-person rule; the stop confirmation ------------------------------------------

# The on-call user may start and stop staging and train-gpu, but only with someone else's approval.
OPERATOR_CONFIG = world.CONFIG.replace(
    '  admin: {actions: ["*"]}\n',
    '  admin: {actions: ["*"]}\n  operator: {actions: [start, stop, show], approval: always}\n',
).replace(
    "    - role: viewer\n",
    f"    - role: operator\n      clusters: [staging, train-gpu]\n      users: [{world.ONCALL_USER}]\n"
    "    - role: viewer\n",
    1,
)
assert OPERATOR_CONFIG.count("role: operator") == 1


def confirmation_of(ask: dict) -> dict:
    """The ephemeral stop confirmation as the message its button is clicked on."""
    return {"type": "message", "ts": "1732601100.000100", "text": ask["text"], "blocks": ask["blocks"]}


@pytest.mark.parametrize(
    ("verb", "alias", "cluster_id", "action"),
    [("start", "staging", STAGING, "StartRayCluster"), ("stop", "train-gpu", GPU, "StopRayCluster")],
)
async def test_7_start_and_stop_wait_for_approval_then_apply_once(
    http, slack, emr, clock, tmp_path, verb, alias, cluster_id, action
):
    env = raybot_env(tmp_path, slack, emr, config_text=OPERATOR_CONFIG)
    async with inprocess_raybot(env, clock) as bot:
        _, url = await send(http, bot, slack, f"{verb} {alias}")
        if verb == "stop":
            ask = await ephemeral_reply(slack, url)
            await click(http, bot, slack, confirmation_of(ask), STOP_ACTION, world.ONCALL_USER)
        request = await wait_new(slack, lambda c: c.method == "chat.postMessage" and "🕒" in c.args.get("text", ""))
        assert alias in request.args["text"]
        assert new_emr_calls(emr, action) == []
        message = message_with(slack, world.ONCALL_CHANNEL, APPROVE_ACTION)
        approve = button_payload(slack, message, world.ONCALL_CHANNEL, APPROVE_ACTION, user=world.LEAD)
        await asyncio.gather(post_interaction(http, bot, approve), post_interaction(http, bot, approve))
        await wait_new(slack, lambda c: c.method == "chat.postMessage" and f"{verb} accepted" in c.args.get("text", ""))
    [call] = new_emr_calls(emr, action)
    assert cluster_id in call.path
    assert emr.cluster(world.WORKSPACE, cluster_id)["state"] == {"start": "Running", "stop": "Stopped"}[verb]


async def test_7_a_stop_click_answered_busy_stops_on_the_second_click(http, served, slack, emr):
    _, url = await send(http, served, slack, "stop train-gpu", user=world.ADMIN, channel=world.PLATFORM_CHANNEL)
    confirmation = confirmation_of(await ephemeral_reply(slack, url))
    # Another change holds train-gpu while its read is held (it changes nothing).
    emr.inject("latency", action="GetRayCluster", times=1, seconds=30)
    _, held = await send(
        http, served, slack, "resize train-gpu a10-small=2", user=world.ADMIN, channel=world.PLATFORM_CHANNEL
    )
    await wait_emr(emr, lambda c: c.action == "GetRayCluster" and c.status == 0)
    await click(http, served, slack, confirmation, STOP_ACTION, world.ADMIN, channel=world.PLATFORM_CHANNEL)
    assert "being changed right now" in await ephemeral_to(slack, world.ADMIN)
    emr.release_hanging()
    assert "nothing was sent" in text_of(await ephemeral_reply(slack, held))  # the lock is free again

    await click(http, served, slack, confirmation, STOP_ACTION, world.ADMIN, channel=world.PLATFORM_CHANNEL)
    await wait_new(slack, lambda c: c.method == "chat.postMessage" and "stop accepted" in c.args.get("text", ""))
    await wait_until_followed(emr, slack)
    assert len(new_emr_calls(emr, "StopRayCluster")) == 1


async def test_7_a_stop_confirmation_older_than_five_minutes_is_refused(http, env, slack, emr, clock):
    async with inprocess_raybot(env, clock) as bot:
        _, url = await send(http, bot, slack, "stop train-gpu", user=world.ADMIN, channel=world.PLATFORM_CHANNEL)
        confirmation = confirmation_of(await ephemeral_reply(slack, url))
        clock.now += 5 * 60 + 1
        await click(http, bot, slack, confirmation, STOP_ACTION, world.ADMIN, channel=world.PLATFORM_CHANNEL)
        assert "more than 5 minutes old" in await ephemeral_to(slack, world.ADMIN)
    assert new_emr_calls(emr, "StopRayCluster") == []
    assert emr.cluster(world.WORKSPACE, GPU)["state"] == "Running"


# --- item 8: raising maxReplica above the threshold needs approval ----------------------------------------------------


async def test_8_raising_max_replica_above_the_threshold_waits_for_approval(http, env, slack, emr, clock):
    # `/ray autoscale` only switches the head's autoscaling; a group's autoscaling bounds are set with resize.
    async with inprocess_raybot(env, clock) as bot:
        await send(http, bot, slack, "resize prod WorkerGroup1 max=25")
        request = await wait_new(slack, lambda c: c.method == "chat.postMessage" and "🕒" in c.args.get("text", ""))
        assert "autoscale to 25" in text_of(request.args)  # why it needs approval
        assert updates_of(emr) == []
        message = message_with(slack, world.ONCALL_CHANNEL, APPROVE_ACTION)
        await click(http, bot, slack, message, APPROVE_ACTION, world.LEAD)
        await wait_new(slack, lambda c: c.method == "chat.postMessage" and "📨" in c.args.get("text", ""))
        await wait_until_followed(emr, slack)
    [update] = updates_of(emr)
    assert update.json["workerSpec"][0]["maxReplica"] == 25


# --- item 9: masked secrets never reach the cloud, real ones never reach the disk -------------------------------------

SECRET = "real-secret"
REDIS_PASSWORD = "real-redis-password"


def prod_with_secrets() -> dict:
    prod = copy.deepcopy(world.SEED[0])
    prod["headSpec"]["gftEnabled"] = True
    prod["headSpec"]["gftConfig"] = {
        "redisUrl": "redis://10.0.0.5:6379",
        "redisUsername": "ray",
        "redisPassword": REDIS_PASSWORD,
    }
    prod["workerSpec"][0]["imagePullSecret"] = SECRET
    return prod


def assert_real_secrets_sent(emr) -> None:
    bodies = updates_of(emr)
    assert bodies
    for update in bodies:
        assert "••••••" not in update.body.decode()
        assert update.json["headSpec"]["gftConfig"]["redisPassword"] == REDIS_PASSWORD
        group = next((g for g in update.json["workerSpec"] if g["groupName"] == "WorkerGroup1"), None)
        assert group is None or group["imagePullSecret"] == SECRET


def assert_no_secret_on_disk(directory) -> None:
    files = [p for p in directory.iterdir() if p.name.startswith("raybot.db")]
    assert files
    for path in files:
        data = path.read_bytes()
        assert SECRET.encode() not in data and REDIS_PASSWORD.encode() not in data, path.name


async def undo_last(http, raybot, slack) -> None:
    answer = message_with(slack, world.ONCALL_CHANNEL, UNDO_ACTION)
    await click(http, raybot, slack, answer, UNDO_ACTION, world.ONCALL_USER)


def undone(c) -> bool:
    return c.method == "chat.update" and "undo of #" in c.args.get("text", "") and "✅" in c.args["text"]


async def test_9_resize_then_undo_sends_the_real_secrets(http, env, slack, emr, clock, tmp_path):
    emr.seed([prod_with_secrets()])
    async with inprocess_raybot(env, clock) as bot:
        await send(http, bot, slack, "resize prod WorkerGroup1=3")
        await wait_new(slack, lambda c: c.method == "chat.postMessage" and UNDO_ACTION in text_of(c.args))
        await undo_last(http, bot, slack)
        await wait_new(slack, undone)
        await wait_until_followed(emr, slack)
    assert [u.json["workerSpec"][0]["replica"] for u in updates_of(emr)] == [3, 2]
    assert_real_secrets_sent(emr)
    assert_no_secret_on_disk(tmp_path)


async def open_editor(http, raybot, slack, alias: str) -> dict:
    await send(http, raybot, slack, f"edit {alias}", user=world.EDITOR)
    opened = await wait_new(slack, lambda c: c.method == "views.open")
    view_id = opened.response["view"]["id"]
    await wait_new(slack, lambda c: c.method == "views.update" and c.args.get("view_id") == view_id)
    return slack.views[view_id]


async def apply_draft(http, raybot, slack, overview_id: str) -> None:
    """Review the draft in the overview and Apply it."""
    overview = slack.views[overview_id]
    answer, confirm_id = await submit_view(http, raybot, slack, overview_id, world.EDITOR, untouched_values(overview))
    assert answer["response_action"] == "push", answer
    answer, _ = await submit_view(http, raybot, slack, confirm_id, world.EDITOR, {})
    assert answer["response_action"] == "update", answer


@pytest.mark.parametrize("edit", ["change the group", "remove the group"])
async def test_9_an_edit_and_its_undo_never_send_a_masked_secret(http, env, slack, emr, clock, tmp_path, edit):
    emr.seed([prod_with_secrets()])
    async with inprocess_raybot(env, clock) as bot:
        overview = await open_editor(http, bot, slack, "prod")
        picker = next(b for b in overview["blocks"] if b.get("block_id") == modals.BLOCK_GROUPS)
        first = picker["element"]["options"][0]  # WorkerGroup1, which holds the image pull secret
        if edit == "change the group":
            action = {"type": "static_select", "action_id": modals.ACTION_EDIT_GROUP, "block_id": modals.BLOCK_GROUPS}
            await post_interaction(
                http, bot, view_action_payload(slack, overview["id"], world.EDITOR, action | {"selected_option": first})
            )
            pushed = await wait_new(slack, lambda c: c.method == "views.push")
            editor_id = pushed.response["view"]["id"]
            values = with_value(untouched_values(slack.views[editor_id]), modals.BLOCK_GROUP_REPLICA, "3")
            seen = {id(c) for c in slack.calls}
            await submit_view(http, bot, slack, editor_id, world.EDITOR, values)
        else:
            seen = {id(c) for c in slack.calls}
            action = {
                "type": "static_select",
                "action_id": modals.ACTION_REMOVE_GROUP,
                "block_id": modals.BLOCK_GROUP_ACTIONS,
                "selected_option": first,
            }
            await post_interaction(http, bot, view_action_payload(slack, overview["id"], world.EDITOR, action))
        await slack.wait_for(
            lambda c: id(c) not in seen and c.method == "views.update" and c.args.get("view_id") == overview["id"]
        )
        await apply_draft(http, bot, slack, overview["id"])
        await wait_new(slack, lambda c: c.method == "chat.postMessage" and UNDO_ACTION in text_of(c.args))
        await undo_last(http, bot, slack)
        if edit == "change the group":
            await wait_new(slack, undone)
        else:  # the group's secret is not kept, so it cannot be put back: said, and nothing is sent
            refused = await ephemeral_to(slack, world.ONCALL_USER)
            assert "WorkerGroup1" in refused and "imagePullSecret" in refused and "nothing was sent" in refused
        await wait_until_followed(emr, slack)
    assert len(updates_of(emr)) == (2 if edit == "change the group" else 1)
    assert_real_secrets_sent(emr)
    assert_no_secret_on_disk(tmp_path)
    groups = emr.cluster(world.WORKSPACE, world.PROD)["workerSpec"]
    first_group = next((g for g in groups if g["groupName"] == "WorkerGroup1"), None)
    assert first_group is None or first_group["imagePullSecret"] == SECRET


# --- item 10: a change cut off by a graceful stop is checked after the restart ----------------------------------------


def took_effect(thread_ts: str):
    """The thread answer that the change in `thread_ts` took effect (not that it did not)."""

    def matches(c) -> bool:
        text = c.args.get("text", "")
        return (
            c.method == "chat.postMessage"
            and c.args.get("thread_ts") == thread_ts
            and "took effect" in text
            and "not take effect" not in text
        )

    return matches


async def test_10_a_change_cut_off_by_sigterm_gets_its_true_outcome_after_the_restart(http, slack, emr, tmp_path):
    env = raybot_env(tmp_path, slack, emr, RAYBOT_SHUTDOWN_SECONDS="0.5")
    first = start_raybot(env)
    try:
        # The update is held by the service, which applies it when it lets it go (long after raybot stopped).
        emr.inject("latency", action="UpdateRayCluster", times=1, seconds=60)
        await send(http, first, slack, "resize prod WorkerGroup1=3")
        await wait_emr(emr, lambda c: c.action == "UpdateRayCluster" and c.status == 0)
        root = await wait_new(slack, lambda c: c.method == "chat.postMessage" and "⏳" in c.args.get("text", ""))
        first.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(first.proc.wait, 15) == 0
    finally:
        output = first.stop()
    assert "cut off" in output
    emr.release_hanging()
    await wait_emr(emr, lambda c: c.action == "UpdateRayCluster" and c.status == 200)
    root_ts = root.response["ts"]
    async with inprocess_raybot(env, time.time):  # started again (in this process: quicker than a subprocess)
        await wait_new(slack, took_effect(root_ts), timeout=10)
        await wait_until_followed(emr, slack)
        await wait_new(
            slack, lambda c: c.method == "chat.update" and c.args["ts"] == root_ts and "✅" in c.args["text"]
        )
    roots = [m for m in slack.channel_messages(world.ONCALL_CHANNEL) if m["ts"] >= root_ts]
    assert roots and not [m["text"] for m in roots if m["text"].startswith("⏳")]


# --- item 11: Undo ends a pending revert; a revert goes to the cluster that was changed -------------------------------


async def test_11_undo_of_a_temporary_resize_cancels_its_revert(http, env, slack, emr, clock, passes):
    async with inprocess_raybot(env, clock) as bot:
        await temporary_resize(http, bot, slack, emr)
        await undo_last(http, bot, slack)
        await wait_new(slack, undone)
        await wait_until_followed(emr, slack)
        clock.now += 2 * HOUR
        await passes.wake_and_wait(bot)
    assert [u.json["workerSpec"][0]["replica"] for u in updates_of(emr)] == [3, 2]  # the resize and its Undo only
    assert not posted(
        slack, lambda a: "automatic revert of #" in a.get("text", "") or "automatic revert" in a.get("text", "")
    )


async def test_11_a_revert_goes_to_the_changed_cluster_after_its_alias_moved(http, env, slack, emr, clock, tmp_path):
    async with inprocess_raybot(env, clock) as first:
        await temporary_resize(http, first, slack, emr)
    # The config now points `prod` at another cluster; the revert is still for the one that was resized.
    (tmp_path / "raybot.yaml").write_text(world.CONFIG.replace(f"cluster: {world.PROD}", f"cluster: {STAGING}"))
    clock.now += 2 * HOUR
    async with inprocess_raybot(env, clock):
        await wait_new(
            slack,
            lambda c: (
                c.method == "chat.update"
                and "automatic revert of #" in c.args.get("text", "")
                and "✅" in c.args["text"]
            ),
        )
        await wait_until_followed(emr, slack)
    assert [u.json["workerSpec"][0]["replica"] for u in updates_of(emr, world.PROD)] == [3, 2]
    assert updates_of(emr, STAGING) == []


# --- item 12: a start the cloud applied while raybot was killed is told it took effect --------------------------------


async def test_12_a_start_killed_mid_call_and_applied_is_told_it_took_effect(http, slack, emr, tmp_path):
    env = raybot_env(tmp_path, slack, emr)
    first = start_raybot(env)
    try:
        emr.inject("latency", action="StartRayCluster", times=1, seconds=60)
        await send(http, first, slack, "start staging", user=world.ADMIN, channel=world.PLATFORM_CHANNEL)
        await wait_emr(emr, lambda c: c.action == "StartRayCluster" and c.status == 0)
        root = await wait_new(slack, lambda c: c.method == "chat.postMessage" and "⏳" in c.args.get("text", ""))
        first.proc.kill()  # no chance to write anything
    finally:
        first.stop()
    emr.release_hanging()  # the service goes on with the start it received
    await wait_emr(emr, lambda c: c.action == "StartRayCluster" and c.status == 200)
    assert emr.cluster(world.WORKSPACE, STAGING)["state"] == "Running"
    async with inprocess_raybot(env, time.time):  # started again, on the same database
        await wait_new(slack, took_effect(root.response["ts"]), timeout=10)
    assert not posted(slack, lambda a: "not take effect" in a.get("text", ""))


async def test_12_a_start_from_another_database_is_not_taken_for_an_earlier_start(
    http, env, slack, emr, clock, tmp_path
):
    # Change ids start at 1 in every database: the start's clientToken must still differ, or the cloud takes the
    # second start for a repeat of the first and does nothing (while raybot says it was accepted).
    (tmp_path / "other").mkdir()
    other = raybot_env(tmp_path / "other", slack, emr)
    for settings in (env, other):
        async with inprocess_raybot(settings, clock) as bot:
            await send(http, bot, slack, "start staging", user=world.ADMIN, channel=world.PLATFORM_CHANNEL)
            await wait_new(
                slack, lambda c: c.method == "chat.postMessage" and "start accepted" in c.args.get("text", "")
            )
        assert emr.cluster(world.WORKSPACE, STAGING)["state"] == "Running"
        emr.seed([next(c for c in copy.deepcopy(world.SEED) if c["clusterId"] == STAGING)])  # stopped again
        mark(emr, slack)
        clock.now += 60
