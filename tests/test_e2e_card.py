"""The root status message of a change tells the truth for the change's whole life (issue 12): after Undo, Keep it,
an automatic revert, an approval and a failure, the LAST chat.update of the root says what is true now; a change
asked for in someone else's thread still gets a root-level line kept current; an update Slack refused is rendered
again by the reconciler.

raybot runs in this process (its clock injected, so a revert falls due without waiting) and serves real HTTP on
loopback; it talks to the Slack and EMR emulators over sockets. Assertions on the last update are made after raybot
stopped, so no later update can come.
"""

from __future__ import annotations

import copy

import pytest

from bot.sandbox.emr_server import UPDATE
from bot.slack.blocks import APPROVE_ACTION, CANCEL_REVERT_ACTION, REJECT_ACTION, UNDO_ACTION, slack_date
from tests import e2e_world as world
from tests.e2e import (
    MARKS,
    FakeClock,
    SchedulerPasses,
    button_payload,
    has_button,
    inprocess_raybot,
    mark,
    mention_event,
    message_with,
    post_as_someone,
    post_interaction,
    post_json_signed,
    raybot_env,
    send,
    text_of,
    updates_of,
    wait_new,
)

HOUR = 3600.0
T0 = 1_800_000_000.0
CHANNEL = world.ONCALL_CHANNEL
ONCALL, LEAD = world.ONCALL_USER, world.LEAD
PROD_RESIZE = "WorkerGroup1: 2 → 3 replicas"


@pytest.fixture
def env(emr, slack, tmp_path):
    emr.clear_faults()
    emr.seed(copy.deepcopy(world.SEED))
    mark(emr, slack)
    yield raybot_env(tmp_path, slack, emr, RAYBOT_EMR_DEADLINE_SECONDS="1")
    emr.clear_faults()
    emr.release_hanging()


def root_posted(slack, what: str, *, thread_ts: str | None = None):
    """A predicate: the root status message of the change `what` (at channel level, or in `thread_ts`)."""
    return lambda c: (
        c.method == "chat.postMessage" and c.args.get("thread_ts") == thread_ts and what in c.args.get("text", "")
    )


def root_update(ts: str, *words: str):
    """A predicate: a chat.update of the root `ts` that says all of `words`."""
    return lambda c: (
        c.method == "chat.update" and c.args.get("ts") == ts and all(w in c.args.get("text", "") for w in words)
    )


def last_root_update(slack, ts: str):
    """The last chat.update of the root message `ts`, and the message as Slack now holds it (they must agree)."""
    updates = [c for c in slack.calls[MARKS["slack"] :] if c.method == "chat.update" and c.args.get("ts") == ts]
    assert updates, f"the root {ts} was never updated"
    last = updates[-1]
    assert last.ok, last.error
    assert slack.message(CHANNEL, ts)["text"] == last.args["text"]
    return last.args


async def test_after_undo_the_root_says_undone_by_whom(http, env, slack, emr):
    clock = FakeClock(T0)
    async with inprocess_raybot(env, clock) as bot:
        await send(http, bot, slack, "resize prod WorkerGroup1=3")
        root = await wait_new(slack, root_posted(slack, PROD_RESIZE))
        ts = root.response["ts"]
        await wait_new(slack, root_update(ts, "✅", "done"))
        answer = message_with(slack, CHANNEL, UNDO_ACTION)
        await post_interaction(http, bot, button_payload(slack, answer, CHANNEL, UNDO_ACTION, user=LEAD))
        await wait_new(slack, root_update(ts, "↩️", "undone by"))
        undo_root = await wait_new(slack, root_posted(slack, "undo of #1", thread_ts=ts))
        await wait_new(slack, root_update(undo_root.response["ts"], "✅", "done"), timeout=10)
    assert [u.json["workerSpec"][0]["replica"] for u in updates_of(emr)] == [3, 2]
    last = last_root_update(slack, ts)
    assert last["text"] == (
        f"↩️ <@{ONCALL}> · *prod* · {PROD_RESIZE} · undone by <@{LEAD}> {slack_date(T0)} (change #2)"
    )
    # The undo is a change of its own, with its own root in the thread of the change it undid (not broadcast:
    # the parent is raybot's, and says "undone" at root level already).
    assert not undo_root.args.get("reply_broadcast")
    undo_last = last_root_update(slack, undo_root.response["ts"])
    assert undo_last["text"].startswith(f"✅ <@{LEAD}> · *prod* · undo of #1: WorkerGroup1: 3 → 2 replicas · done")


async def test_after_keep_it_the_root_says_kept_by_whom_and_its_button_is_gone(http, env, slack, emr, monkeypatch):
    passes = SchedulerPasses.install(monkeypatch)
    clock = FakeClock(T0)
    async with inprocess_raybot(env, clock) as bot:
        await send(http, bot, slack, "resize prod WorkerGroup1=3 for 1h")
        root = await wait_new(slack, root_posted(slack, PROD_RESIZE))
        ts = root.response["ts"]
        await wait_new(slack, root_update(ts, "✅", "⏲️ reverts at"))
        holder = message_with(slack, CHANNEL, CANCEL_REVERT_ACTION)
        assert holder["ts"] == ts  # Keep it is on the root, and only there
        await post_interaction(http, bot, button_payload(slack, holder, CHANNEL, CANCEL_REVERT_ACTION, user=ONCALL))
        await wait_new(slack, root_update(ts, "kept by"))
        clock.now += 2 * HOUR  # the revert would have been due: it was cancelled
        await passes.wake_and_wait(bot)
    assert len(updates_of(emr)) == 1
    last = last_root_update(slack, ts)
    assert last["text"].startswith(f"✅ <@{ONCALL}> · *prod* · {PROD_RESIZE}, for 1 h · done")
    assert last["text"].endswith(f"· ⏲️ kept by <@{ONCALL}>")
    assert not has_button(last, CANCEL_REVERT_ACTION)
    assert not [m for m in slack.all_messages(CHANNEL) if has_button(m, CANCEL_REVERT_ACTION)]


async def test_after_the_scheduled_revert_the_root_says_reverted(http, env, slack, emr):
    clock = FakeClock(T0)
    async with inprocess_raybot(env, clock) as bot:
        await send(http, bot, slack, "resize prod WorkerGroup1=3 for 1h")
        root = await wait_new(slack, root_posted(slack, PROD_RESIZE))
        ts = root.response["ts"]
        await wait_new(slack, root_update(ts, "✅", "⏲️ reverts at"))
        assert f"⏲️ reverts at {slack_date(T0 + HOUR)}" in slack.message(CHANNEL, ts)["text"]
        clock.now += 2 * HOUR
        bot.services.wake_scheduler()
        await wait_new(slack, root_update(ts, "↩️", "reverted automatically"), timeout=10)
        revert_root = await wait_new(slack, root_posted(slack, "automatic revert of #1", thread_ts=ts))
        await wait_new(slack, root_update(revert_root.response["ts"], "✅", "done"), timeout=10)
    assert [u.json["workerSpec"][0]["replica"] for u in updates_of(emr)] == [3, 2]
    last = last_root_update(slack, ts)
    assert last["text"] == (
        f"↩️ <@{ONCALL}> · *prod* · {PROD_RESIZE}, for 1 h · reverted automatically "
        f"{slack_date(T0 + 2 * HOUR)} (change #2)"
    )
    assert not has_button(last, CANCEL_REVERT_ACTION)


async def test_after_approval_the_root_says_approved_and_done(http, env, slack, emr):
    clock = FakeClock(T0)
    async with inprocess_raybot(env, clock) as bot:
        await send(http, bot, slack, "resize fleet group-01 replicas=21 max=21")
        request = await wait_new(slack, root_posted(slack, "🕒"))
        ts = request.response["ts"]
        assert request.args["text"].endswith(f"awaiting approval by <@{LEAD}>")  # who may approve it here
        assert APPROVE_ACTION in text_of(request.args)
        message = slack.message(CHANNEL, ts)
        await post_interaction(http, bot, button_payload(slack, message, CHANNEL, APPROVE_ACTION, user=LEAD))
        await wait_new(slack, root_update(ts, "✅", "done", f"approved by <@{LEAD}>"), timeout=10)
    last = last_root_update(slack, ts)
    assert last["text"].startswith(f"✅ <@{ONCALL}> · *fleet* · group-01: 2 → 21 replicas")
    assert last["text"].endswith(f"· approved by <@{LEAD}>")
    assert not has_button(last, APPROVE_ACTION) and not has_button(last, REJECT_ACTION)


async def test_after_a_failure_the_root_says_failed_with_the_reason(http, env, slack, emr, monkeypatch):
    passes = SchedulerPasses.install(monkeypatch)
    emr.inject("forbidden", action=UPDATE, times=1)
    clock = FakeClock(T0)
    async with inprocess_raybot(env, clock) as bot:
        await send(http, bot, slack, "resize prod WorkerGroup1=3")
        root = await wait_new(slack, root_posted(slack, PROD_RESIZE))
        ts = root.response["ts"]
        await wait_new(slack, root_update(ts, "❌"))
        await passes.wake_and_wait(bot)
    last = last_root_update(slack, ts)
    assert last["text"].startswith(f"❌ <@{ONCALL}> · *prod* · {PROD_RESIZE} · failed: `Forbidden.RAM`")


async def test_a_timeout_is_being_checked_not_failed_until_it_is_known(http, env, slack, emr):
    emr.inject("hang", action=UPDATE, times=1)  # never applied
    clock = FakeClock(T0)
    async with inprocess_raybot(env, clock) as bot:
        await send(http, bot, slack, "resize prod WorkerGroup1=3")
        root = await wait_new(slack, root_posted(slack, PROD_RESIZE))
        ts = root.response["ts"]
        checking = await wait_new(slack, root_update(ts, "❔", "outcome being checked"), timeout=10)
        assert "❌" not in checking.args["text"]
        clock.now += 60  # past the call's deadline and the grace: the verdict can be given
        bot.services.wake_scheduler()
        await wait_new(slack, root_update(ts, "❌", "did not take effect"), timeout=10)
    last = last_root_update(slack, ts)
    assert last["text"] == f"❌ <@{ONCALL}> · *prod* · {PROD_RESIZE} · failed: it did not take effect"


async def test_a_change_asked_in_an_alerts_thread_gets_a_root_level_line_kept_current(http, env, slack, emr):
    clock = FakeClock(T0)
    async with inprocess_raybot(env, clock) as bot:
        alert = await post_as_someone(slack, CHANNEL, "CPU at 98% on prod")
        text = "<@U0RAYBOT> resize prod WorkerGroup1=3"
        mention = await post_as_someone(slack, CHANNEL, text, thread_ts=alert)
        MARKS["slack"] = len(slack.calls)
        event = mention_event(text, user=ONCALL, channel=CHANNEL, ts=mention, thread_ts=alert)
        assert (await post_json_signed(http, bot, event)).status_code == 200
        root = await wait_new(slack, root_posted(slack, PROD_RESIZE, thread_ts=alert))
        ts = root.response["ts"]
        detail = await wait_new(slack, lambda c: c.method == "chat.postMessage" and "clusterId" in text_of(c.args))
        await wait_new(slack, root_update(ts, "✅", "done"))
    # The detail stays in the alert's thread; the status is one message shown in that thread and in the channel.
    assert detail.args["thread_ts"] == alert and root.args.get("reply_broadcast") is True
    in_channel = [m for m in slack.channel_messages(CHANNEL) if m["ts"] == ts]
    assert [m.get("subtype") for m in in_channel] == ["thread_broadcast"]
    last = last_root_update(slack, ts)
    assert last["text"].startswith(f"✅ <@{ONCALL}> · *prod* · {PROD_RESIZE} · done")
    assert in_channel[0]["text"] == last["text"]


async def test_a_root_update_slack_refused_is_rendered_again(http, env, slack, emr, monkeypatch):
    passes = SchedulerPasses.install(monkeypatch)
    clock = FakeClock(T0)
    async with inprocess_raybot(env, clock) as bot:
        await send(http, bot, slack, "resize prod WorkerGroup1=3 for 1h")
        root = await wait_new(slack, root_posted(slack, PROD_RESIZE))
        ts = root.response["ts"]
        await wait_new(slack, root_update(ts, "✅", "⏲️ reverts at"))
        holder = slack.message(CHANNEL, ts)
        slack.inject("chat.update", error="internal_error", times=1)
        await post_interaction(http, bot, button_payload(slack, holder, CHANNEL, CANCEL_REVERT_ACTION, user=ONCALL))
        refused = await wait_new(slack, lambda c: c.method == "chat.update" and not c.ok)
        assert "kept by" in refused.args["text"]
        # Keep it tells its thread after it rendered the root (and, refused, marked it to render again).
        await wait_new(
            slack, lambda c: c.method == "chat.postMessage" and "cancelled the automatic revert" in c.args["text"]
        )
        assert CANCEL_REVERT_ACTION in text_of(slack.message(CHANNEL, ts))  # stale for now …
        clock.now += 60  # … until the reconciler renders it again
        bot.services.wake_scheduler()
        await wait_new(slack, lambda c: root_update(ts, "kept by")(c) and c.ok)
        await passes.wake_and_wait(bot)  # the pass that rendered it has ended
        record = await bot.services.store.get_change(1)
        assert record is not None and (record.card_due_at, record.card_attempts) == (None, 0)
    last = last_root_update(slack, ts)
    assert last["text"].endswith(f"· ⏲️ kept by <@{ONCALL}>") and not has_button(last, CANCEL_REVERT_ACTION)


async def test_a_move_whose_process_died_before_rendering_is_rendered_by_the_reconciler(
    http, env, slack, emr, monkeypatch
):
    passes = SchedulerPasses.install(monkeypatch)
    clock = FakeClock(T0)
    async with inprocess_raybot(env, clock) as bot:
        await send(http, bot, slack, "resize prod WorkerGroup1=3 for 1h")
        root = await wait_new(slack, root_posted(slack, PROD_RESIZE))
        ts = root.response["ts"]
        await wait_new(slack, root_update(ts, "✅", "⏲️ reverts at"))
        await passes.wake_and_wait(bot)  # the pass that followed it to its end has rendered it, and is over
        # Keep it recorded by a process that died before it could render the root: only the row knows.
        kept = await bot.services.store.cancel_revert(1, note=f"kept by {LEAD}", kept_by=LEAD)
        assert kept is not None and kept.card_due_at is not None
        await passes.wake_and_wait(bot)
        assert "kept by" not in slack.message(CHANNEL, ts)["text"]  # its mover had the grace to render it
        clock.now = kept.card_due_at
        await passes.wake_and_wait(bot)
        assert (await bot.services.store.get_change(1)).card_due_at is None  # type: ignore[union-attr]
    last = last_root_update(slack, ts)
    assert last["text"].endswith(f"· ⏲️ kept by <@{LEAD}>") and not has_button(last, CANCEL_REVERT_ACTION)
