"""Cloud faults after which raybot cannot know at once whether UpdateRayCluster took effect, against real
`raybot serve` processes (forked from tests.forkserver): a call slower than the cluster lock's TTL, an update held
past raybot's deadline and applied later (or never), and a 503 after the service applied the update.

raybot runs with RAYBOT_LOCK_TTL_SECONDS=1 (its locks must be renewed while a change is in flight) and
RAYBOT_EMR_DEADLINE_SECONDS=2 (6 for the lock test, whose slow call must finish). Verdicts are read with
tests.e2e.verdict: "took effect" / "did not take effect" (or the usual 📨 / ❌ answers); "❔" marks raybot's
"does not know yet … checking" reply, and ⏳ or ❔ a root still undecided (applying, its outcome being checked).
"""

from __future__ import annotations

import asyncio
import copy

import pytest

from bot.sandbox.emr_server import UPDATE
from bot.slack.blocks import UNDO_ACTION
from tests import e2e_world as world
from tests.e2e import (
    NOT_TOOK,
    TOOK,
    has_button,
    mark,
    new_emr_calls,
    raybot_env,
    send,
    text_of,
    undecided,
    verdict,
    wait_new,
)

DEADLINE = 2.0  # RAYBOT_EMR_DEADLINE_SECONDS
GRACE = 5.0  # what raybot waits past a call's deadline before it says the change did not take effect
VERDICT_WITHIN = DEADLINE + GRACE + 10.0
SLOW_CALL = 3.0  # seconds an UpdateRayCluster takes in the lock test: three lock TTLs
PATIENT_DEADLINE = 6.0  # the deadline of the raybot that lets that slow call finish


@pytest.fixture(scope="module")
def raybots(emr, slack, forks, tmp_path_factory):
    """Two raybots with their own databases: one with a deadline the slow call of the lock test fits in."""
    processes = [
        forks.start(
            raybot_env(
                tmp_path_factory.mktemp("raybot"),
                slack,
                emr,
                RAYBOT_EMR_DEADLINE_SECONDS=f"{deadline:g}",
                RAYBOT_LOCK_TTL_SECONDS="1",
            )
        )
        for deadline in (DEADLINE, PATIENT_DEADLINE)
    ]
    yield processes
    for process in processes:
        process.stop()


@pytest.fixture
def raybot(raybots):
    return raybots[0]


@pytest.fixture
def patient_raybot(raybots):
    return raybots[1]


@pytest.fixture(autouse=True)
def fresh_clusters(emr, slack):
    emr.clear_faults()
    emr.release_hanging()
    emr.seed(copy.deepcopy(world.SEED))
    mark(emr, slack)
    yield
    emr.clear_faults()
    emr.release_hanging()


def prod_replicas(emr) -> list[int]:
    return [g["replica"] for g in emr.cluster(world.WORKSPACE, world.PROD)["workerSpec"]]


def replica(body: dict, group: str) -> int | None:
    return next((g.get("replica") for g in body["workerSpec"] if g.get("groupName") == group), None)


def applied_updates(emr):
    return [c for c in new_emr_calls(emr, UPDATE) if c.applied]


async def root_of(slack, summary: str):
    """The root status message raybot posted for the change `summary`."""
    return await wait_new(
        slack,
        lambda c: c.method == "chat.postMessage" and not c.args.get("thread_ts") and summary in c.args.get("text", ""),
        timeout=10,
    )


async def verdict_in(slack, root, timeout: float = VERDICT_WITHIN):
    """The first reply in the root's thread that says what became of the change."""
    ts = root.response["ts"]
    return await wait_new(
        slack,
        lambda c: c.method == "chat.postMessage" and c.args.get("thread_ts") == ts and verdict(c.args) is not None,
        timeout=timeout,
    )


async def final_root(slack, root, timeout: float = 10.0) -> str:
    """The root status message's text once it says what became of its change (no ⏳ or ❔ left)."""
    ts = root.response["ts"]
    stored = slack.message(world.ONCALL_CHANNEL, ts) or {}
    if undecided(stored.get("text", "")):
        await wait_new(
            slack,
            lambda c: c.method == "chat.update" and c.args.get("ts") == ts and not undecided(c.args.get("text", "")),
            timeout=timeout,
        )
    return (slack.message(world.ONCALL_CHANNEL, ts) or {}).get("text", "")


def thread_texts(slack, root) -> list[str]:
    return [m.get("text", "") for m in slack.thread(world.ONCALL_CHANNEL, root.response["ts"])]


def told_checking_before(slack, root, answer) -> bool:
    """Whether the thread was told "❔ … does not know yet … checking" before `answer`."""
    replies = slack.thread(world.ONCALL_CHANNEL, root.response["ts"])
    index = next(i for i, m in enumerate(replies) if m["ts"] == answer.response["ts"])
    return any(m.get("text", "").startswith("❔") for m in replies[:index])


async def test_a_cloud_call_slower_than_the_lock_ttl_keeps_the_cluster_locked(http, patient_raybot, slack, emr):
    emr.inject("latency", action=UPDATE, seconds=SLOW_CALL, times=1)
    await send(http, patient_raybot, slack, "resize prod WorkerGroup1=3")
    first_root = await root_of(slack, "WorkerGroup1: 2 → 3 replicas")
    slow = await emr.held(UPDATE, timeout=10)
    _, second_url = await send(http, patient_raybot, slack, "resize prod WorkerGroup2=5", user=world.LEAD)

    first = await verdict_in(slack, first_root)
    assert verdict(first.args) == TOOK, thread_texts(slack, first_root)
    second_root = await wait_new(
        slack,
        lambda c: (
            (c.method == "response_url" and c.url == second_url)
            or (
                c.method == "chat.postMessage"
                and not c.args.get("thread_ts")
                and "WorkerGroup2: 1 → 5 replicas" in c.args.get("text", "")
            )
        ),
        timeout=15,
    )
    if second_root.method == "response_url":  # refused while the first held the cluster: nothing of it was sent
        assert "being changed right now" in second_root.args.get("text", ""), second_root.args
        updates = applied_updates(emr)
        assert updates == [slow] and replica(slow.json, "WorkerGroup1") == 3
        assert prod_replicas(emr) == [3, 1]
    else:  # it waited for the lock, then read the cluster as the first change had left it
        second = await verdict_in(slack, second_root)
        assert verdict(second.args) == TOOK, thread_texts(slack, second_root)
        updates = applied_updates(emr)
        assert len(updates) == 2 and updates[0] is slow, [u.json for u in updates]
        later = updates[1]
        assert replica(later.json, "WorkerGroup2") == 5
        assert replica(later.json, "WorkerGroup1") == 3, "the second change was applied on top of a stale read"
        assert prod_replicas(emr) == [3, 5]  # nothing lost
        assert "⏳" not in await final_root(slack, second_root)
    assert "⏳" not in await final_root(slack, first_root)


async def test_a_hung_update_applied_after_the_deadline_took_effect_and_offers_undo(http, raybot, slack, emr):
    # The service gets the update but applies it only a second after raybot gave up; the answer is lost.
    emr.inject("hang_apply", action=UPDATE, times=1, seconds=1.0)
    await send(http, raybot, slack, "resize prod WorkerGroup1=3")
    root = await root_of(slack, "WorkerGroup1: 2 → 3 replicas")
    held = await emr.held(UPDATE, timeout=10)

    answer = await verdict_in(slack, root)
    assert verdict(answer.args) == TOOK, f"the update was applied; the thread says {thread_texts(slack, root)}"
    assert TOOK in text_of(answer.args) and has_button(answer.args, UNDO_ACTION), answer.args
    assert held.client_gone and held.applied and prod_replicas(emr) == [3, 1]
    assert told_checking_before(slack, root, answer), thread_texts(slack, root)
    assert not any("❌" in t for t in thread_texts(slack, root))
    final = await final_root(slack, root)
    assert "⏳" not in final and "✅" in final
    assert len(applied_updates(emr)) == 1


async def test_a_hung_update_never_applied_did_not_take_effect(http, raybot, slack, emr):
    emr.inject("hang", action=UPDATE, times=1)  # held until the test ends; never applied
    await send(http, raybot, slack, "resize prod WorkerGroup1=3")
    root = await root_of(slack, "WorkerGroup1: 2 → 3 replicas")
    await emr.held(UPDATE, timeout=10)
    loop = asyncio.get_running_loop()
    held_at = loop.time()

    answer = await verdict_in(slack, root)
    answered_after = loop.time() - held_at
    assert NOT_TOOK in text_of(answer.args), (
        f"the update was never applied; the thread says {thread_texts(slack, root)}"
    )
    assert not has_button(answer.args, UNDO_ACTION)
    # Said only once the call's deadline and the grace had passed: before that the update could still land.
    assert answered_after >= DEADLINE + GRACE - 0.5, f"said after {answered_after:.1f} s"
    assert told_checking_before(slack, root, answer), thread_texts(slack, root)
    assert prod_replicas(emr) == [2, 1] and applied_updates(emr) == []
    final = await final_root(slack, root)
    assert "⏳" not in final and "✅" not in final


async def test_a_503_after_the_update_was_applied_took_effect(http, raybot, slack, emr):
    emr.inject("5xx_after_apply", action=UPDATE)  # every attempt is applied, then answered 503
    await send(http, raybot, slack, "resize prod WorkerGroup1=3")
    root = await root_of(slack, "WorkerGroup1: 2 → 3 replicas")

    answer = await verdict_in(slack, root)
    assert verdict(answer.args) == TOOK, f"the update was applied; the thread says {thread_texts(slack, root)}"
    assert TOOK in text_of(answer.args) and has_button(answer.args, UNDO_ACTION), answer.args
    assert not any("❌" in t for t in thread_texts(slack, root)), thread_texts(slack, root)
    assert told_checking_before(slack, root, answer), thread_texts(slack, root)
    assert prod_replicas(emr) == [3, 1] and applied_updates(emr)
    # The 503's RequestId is told with the doubt it raised: the evidence to ask the cloud's support about.
    [checking] = [t for t in thread_texts(slack, root) if t.startswith("❔")]
    assert new_emr_calls(emr, UPDATE)[0].request_id in checking, checking
    final = await final_root(slack, root)
    assert "⏳" not in final and "✅" in final
