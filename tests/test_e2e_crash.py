"""Crash trials: `raybot serve` killed with SIGKILL before, during or after the UpdateRayCluster of a resize, then
started again on the same database. Whatever the moment, raybot must come back healthy and free, tell every change
it had announced the truth, and never apply one command twice.

A trial sends `/ray resize prod WorkerGroup1=<n>` (HTTP mode, RAYBOT_EMR_DEADLINE_SECONDS=2) and kills raybot at
its point, drawn from a fixed seed:
- before: a random 0-120 ms after Slack got the command's acknowledgement (claim, lock, read, root, audit row...);
- during: while the EMR emulator holds the UpdateRayCluster; `during-applied` (`hang_apply`: the service applies it
  when raybot's connection drops, the answer is lost) or `during-never` (`hang`: never applied);
- after: a random 0-120 ms after the emulator answered the UpdateRayCluster.
Then raybot is started again on the same database, and the trial checks:
- /healthz answers 200;
- a new `/ray resize prod WorkerGroup2=<m>` is taken at once (its root is posted; never "being changed right now")
  and completes;
- every root status message posted before the kill gets its outcome in its thread within 20 s of the restart: a
  reply saying it "took effect" (or the usual ✅ answer), with Undo, if the emulator's cluster holds WorkerGroup1=n,
  and "did not take effect" if it does not; the root ends ✅ exactly when the change took effect;
- no root message in the channel still shows ⏳ or ❔ (in progress, outcome being checked);
- the command led to at most one accepted UpdateRayCluster (the emulator's count), and the restarted raybot sent
  none of its own.

Runtime: the trials run in LANES lanes at once, each with its own emulator pair and database; within a lane the
raybot started after one trial's kill is the one the next trial kills. The kills that may take raybot the deadline
plus its grace (~7 s) to judge are dealt to lanes first, one a lane. raybots are forked from tests.forkserver
(~0.3 s a start instead of ~2 s of imports per `python -m bot.cli serve`; RAYBOT_TESTS_NO_FORK=1 starts them plainly,
which takes minutes on two cores).
"""

from __future__ import annotations

import asyncio
import random
from contextlib import ExitStack
from dataclasses import dataclass, field

from bot.sandbox.emr_server import UPDATE, EmrEmulator, RecordedCall
from bot.sandbox.slack_server import SlackEmulator
from bot.slack.blocks import UNDO_ACTION
from bot.store import CARD_RENDER_GRACE_SECONDS
from tests import e2e_world as world
from tests.e2e import NOT_TOOK, TOOK, has_button, raybot_env, says_settled, send, undecided, verdict
from tests.forkserver import ForkedRaybot, ForkServer, PlainStarter

SEED = 20240611
TRIALS = 20
LANES = 10
POINTS = ["before"] * 6 + ["during-applied"] * 4 + ["during-never"] * 4 + ["after"] * 6
MAX_DELAY = 0.12  # seconds: the command reaches UpdateRayCluster in ~60-100 ms
OUTCOME_WITHIN = 20.0
CHANNEL = world.ONCALL_CHANNEL


@dataclass(frozen=True)
class Trial:
    number: int
    point: str
    delay: float
    seed: int

    def __str__(self) -> str:
        delay = f" +{self.delay * 1000:.0f} ms" if self.point in ("before", "after") else ""
        return f"trial {self.number} ({self.point}{delay})"


def plan(seed: int = SEED) -> list[Trial]:
    """TRIALS trials, every kill point in the proportions of POINTS, in a seeded order."""
    rng = random.Random(seed)
    points = list(POINTS)
    assert len(points) == TRIALS
    rng.shuffle(points)
    return [Trial(i, p, round(rng.uniform(0.0, MAX_DELAY), 3), rng.randrange(2**32)) for i, p in enumerate(points, 1)]


# The kill points whose verdict may take raybot the call's deadline plus its grace (~7 s) to give, first.
SLOW_FIRST = ("during-never", "before", "during-applied", "after")


def deal(trials: list[Trial], lanes: int) -> list[list[Trial]]:
    """Deal the trials to `lanes` lanes round-robin, the slow kinds first, so that no lane gets two of them."""
    ordered = sorted(trials, key=lambda t: SLOW_FIRST.index(t.point))  # stable: the seeded order within a kind
    return [sorted(ordered[i::lanes], key=lambda t: t.number) for i in range(lanes)]


class TrialFailed(AssertionError):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise TrialFailed(message)


@dataclass
class Lane:
    number: int
    emr: EmrEmulator
    slack: SlackEmulator
    env: dict[str, str]
    forks: ForkServer | PlainStarter
    http: object
    raybot: ForkedRaybot | None = None
    # Roots raybot could not find again (killed between Slack posting them and recording where), already
    # answered beside them in an earlier trial of this lane: they keep their ⏳, and that was said.
    unfindable: set[str] = field(default_factory=set)


def replica(spec: list[dict], group: str) -> int | None:
    return next((g.get("replica") for g in spec if g.get("groupName") == group), None)


def prod_spec(emr: EmrEmulator) -> list[dict]:
    return emr.cluster(world.WORKSPACE, world.PROD)["workerSpec"]


def since(calls: list, mark: int):
    """A predicate: the call is not one of the first `mark` of `calls` (an emulator's calls, as recorded so far)."""
    earlier = {id(c) for c in calls[:mark]}
    return lambda c: id(c) not in earlier


async def waited(what: str, awaitable):
    try:
        return await awaitable
    except TimeoutError:
        raise TrialFailed(f"timed out waiting for {what}") from None


async def run_trial(lane: Lane, trial: Trial) -> None:
    emr, slack, http = lane.emr, lane.slack, lane.http
    assert lane.raybot is not None
    rng = random.Random(trial.seed)
    spec = prod_spec(emr)
    old1, old2 = replica(spec, "WorkerGroup1"), replica(spec, "WorkerGroup2")
    n = rng.choice([v for v in range(1, 5) if v != old1])
    m = rng.choice([v for v in range(1, 9) if v != old2])
    emr_mark, slack_mark = len(emr.calls), len(slack.calls)
    new_emr = since(emr.calls, emr_mark)

    if trial.point == "during-applied":
        emr.inject("hang_apply", times=1, action=UPDATE)
    elif trial.point == "during-never":
        emr.inject("hang", times=1, action=UPDATE)
    response, _ = await send(http, lane.raybot, slack, f"resize prod WorkerGroup1={n}")
    check(response.status_code == 200, f"the command was answered {response.status_code}")
    held: RecordedCall | None = None
    if trial.point == "before":
        await asyncio.sleep(trial.delay)  # the kill point itself, not a wait for something
    elif trial.point.startswith("during"):
        held = await waited("raybot's UpdateRayCluster to be held", emr.held(UPDATE, timeout=5))
    else:
        await waited(
            "the answer to raybot's UpdateRayCluster",
            emr.wait_for(lambda c: new_emr(c) and c.action == UPDATE and c.status != 0, timeout=5),
        )
        await asyncio.sleep(trial.delay)
    await asyncio.to_thread(lane.raybot.kill)
    if trial.point == "during-applied":
        await waited("the lost update to be applied", emr.wait_for(lambda c: c is held and c.applied, timeout=5))
    elif trial.point == "during-never":
        emr.release_hanging()  # answered 503 to a dead connection: never applied
        await waited("the held update to be let go", emr.wait_for(lambda c: c is held and c.status != 0, timeout=5))
    emr.clear_faults()  # whatever the kill left unused
    roots = [
        c
        for c in slack.calls[slack_mark:]
        if c.method == "chat.postMessage" and c.ok and not c.args.get("thread_ts") and c.args.get("channel") == CHANNEL
    ]

    restart_mark = len(slack.calls)
    lane.raybot = await lane.forks.start_async(lane.env)
    problems = await after_restart(lane, roots, emr_mark, restart_mark, n=n, old1=old1, old2=old2, m=m)
    if problems:
        raise TrialFailed(f"n={n}, m={m}: " + "; ".join(problems))


def beside(message: dict, root: dict) -> bool:
    """A channel message (not in a thread) naming the same change as `root`: what raybot posts when it cannot
    find that root again. It names who asked and which cluster, as the root does ("<@U…> · *prod* · …")."""
    who, alias = root.get("text", "").split(" · ")[:2]
    text = message.get("text", "")
    return not message.get("thread_ts") and text != root.get("text") and f"{who.split(' ', 1)[-1]} · {alias}" in text


async def after_restart(
    lane: Lane, roots: list, emr_mark: int, restart_mark: int, *, n: int, old1: int | None, old2: int | None, m: int
) -> list[str]:
    """The checks after the restart, each on its own: every problem found, as text."""
    emr, slack, http = lane.emr, lane.slack, lane.http
    assert lane.raybot is not None
    problems: list[str] = []
    loop = asyncio.get_running_loop()
    outcome_by = loop.time() + OUTCOME_WITHIN

    async def waited(what: str, predicate, timeout: float):
        try:
            return await slack.wait_for(predicate, timeout=max(0.1, timeout))
        except TimeoutError:
            problems.append(f"timed out waiting for {what}")
            return None

    async def without_hourglass(ts: str, what: str, timeout: float) -> str:
        """The root message `ts` once it no longer shows ⏳ or ❔ (its text as it is after `timeout` otherwise)."""
        if undecided((slack.message(CHANNEL, ts) or {}).get("text", "")):
            await waited(
                f"{what} to leave ⏳ / ❔",
                lambda c: (
                    c.method == "chat.update" and c.args.get("ts") == ts and not undecided(c.args.get("text", ""))
                ),
                timeout,
            )
        return (slack.message(CHANNEL, ts) or {}).get("text", "")

    health = await http.get(f"{lane.raybot.url}/healthz")
    if health.status_code != 200:
        problems.append(f"/healthz answered {health.status_code} after the restart")

    # A new change of the same cluster is taken at once: the lock of the dead run holds nothing back.
    new_slack = since(slack.calls, len(slack.calls))
    _, url = await send(http, lane.raybot, slack, f"resize prod WorkerGroup2={m}")
    summary = f"→ {m} replica"  # "1 replica", "3 replicas"
    first = await waited(
        f"the new resize ({summary}) to be taken or answered",
        lambda c: (
            new_slack(c)
            and (
                (c.method == "chat.postMessage" and not c.args.get("thread_ts") and summary in c.args.get("text", ""))
                or (c.method == "response_url" and c.url == url)
            )
        ),
        10,
    )
    # A root the killed raybot sent just before the kill may be handled by the emulator after the roots were
    # collected (its request was on the wire): by now, with the restarted raybot answering, it has been.
    roots = roots + [
        c
        for c in slack.calls[restart_mark:]
        if c.method == "chat.postMessage"
        and c.ok
        and not c.args.get("thread_ts")
        and c.args.get("channel") == CHANNEL
        and undecided(c.args.get("text", ""))
        and f"WorkerGroup1: {old1} → {n} " in c.args.get("text", "")
    ]
    verify_ts = None
    if first is not None and first.method == "response_url":
        text = first.args.get("text", "")[:160]
        problems.append(f"the new resize after the restart was answered {text!r} instead of being taken")
    elif first is not None:
        verify_ts = first.response["ts"]

    # Every root the killed raybot posted gets a verdict in its thread.
    # Killed between Slack posting a root and raybot recording where it is, a root cannot be found again (raybot
    # may not read the channel): then, and only then, the truth comes as a message beside it, naming the change.
    unfindable: dict[str, dict] = {}
    restarted = since(slack.calls, restart_mark)
    for root in roots:
        ts = root.response["ts"]
        said = await waited(
            f"a verdict in the thread of {root.args.get('text', '')[:80]!r} within {OUTCOME_WITHIN:g} s",
            lambda c, ts=ts, root=root: (
                c.method == "chat.postMessage"
                and verdict(c.args) is not None
                and (c.args.get("thread_ts") == ts or (restarted(c) and beside(c.args, root.args)))
            ),
            outcome_by - loop.time(),
        )
        if said is not None and said.args.get("thread_ts") != ts:
            unfindable[ts] = said.args
            lane.unfindable.add(ts)
    if verify_ts is not None:
        await waited(
            "the new resize to settle",
            lambda c: c.method == "chat.postMessage" and c.args.get("thread_ts") == verify_ts and says_settled(c.args),
            10,
        )
        await without_hourglass(verify_ts, "the new resize's root status message", 10)

    holds = replica(prod_spec(emr), "WorkerGroup1") == n
    truth = TOOK if holds else NOT_TOOK
    for root in roots:
        ts = root.response["ts"]
        replies = slack.thread(CHANNEL, ts)
        if ts in unfindable:
            if holds or verdict(unfindable[ts]) != NOT_TOOK:
                problems.append(f"the cluster holds WorkerGroup1={n}: {holds}, yet raybot said {unfindable[ts]}")
            continue
        verdicts = [v for v in map(verdict, replies) if v is not None]
        if verdicts and set(verdicts) != {truth}:
            problems.append(
                f"the cluster {'holds' if holds else 'does not hold'} WorkerGroup1={n} but the thread says "
                f"{[r.get('text', '')[:160] for r in replies]}"
            )
        if verdicts and holds and not any(has_button(r, UNDO_ACTION) for r in replies):
            problems.append(
                f"the change took effect but its thread offers no Undo: {[r.get('text', '')[:160] for r in replies]}"
            )
        if not holds and any(has_button(r, UNDO_ACTION) for r in replies):
            problems.append("a change that did not take effect is offered Undo")
        final = await without_hourglass(ts, "the root status message", outcome_by - loop.time())
        if not undecided(final) and ("✅" in final) != holds:
            problems.append(f"the change {truth} but its root says {final!r}")
    left = [
        m["text"]
        for m in slack.channel_messages(CHANNEL)
        if undecided(m.get("text", "")) and m["ts"] not in lane.unfindable
    ]
    if left:
        problems.append(f"root messages still show ⏳ or ❔: {left}")

    applied = [c for c in emr.calls[emr_mark:] if c.action == UPDATE and c.applied]
    crashed = [
        c
        for c in applied
        if replica(c.json["workerSpec"], "WorkerGroup1") == n and replica(c.json["workerSpec"], "WorkerGroup2") == old2
    ]
    verified = [c for c in applied if replica(c.json["workerSpec"], "WorkerGroup2") == m]
    if len(crashed) > 1:
        problems.append(f"one command led to {len(crashed)} accepted UpdateRayCluster calls")
    if holds != bool(crashed):
        problems.append(f"the cluster holds WorkerGroup1={n}: {holds}, yet {len(crashed)} update(s) set it")
    if verify_ts is not None and len(verified) != 1:
        problems.append(f"the new resize led to {len(verified)} accepted UpdateRayCluster calls")
    if len(applied) != len(crashed) + len(verified):
        problems.append(f"{len(applied) - len(crashed) - len(verified)} UpdateRayCluster call(s) nobody asked for")
    return problems


def logged_errors(raybot: ForkedRaybot | None, most: int = 3) -> str:
    """The last few errors the raybot now running logged, to show with a failure."""
    if raybot is None:
        return ""
    errors = [line[:300] for line in raybot.output if "ERROR" in line or "Traceback" in line][-most:]
    return "".join(f"\n    raybot logged: {line}" for line in errors)


async def run_lane(
    number: int, trials: list[Trial], forks: ForkServer | PlainStarter, http, tmp_path
) -> tuple[int, list[str]]:
    """Run `trials` one after the other on one emulator pair and one database: how many ran, the failures."""
    failures: list[str] = []
    ran = 0
    directory = tmp_path / f"lane{number}"
    directory.mkdir()
    with ExitStack() as stack:
        emr = stack.enter_context(world.emr_emulator())
        slack = stack.enter_context(world.slack_emulator())
        env = raybot_env(directory, slack, emr, RAYBOT_EMR_DEADLINE_SECONDS="2")
        lane = Lane(number, emr, slack, env, forks, http)
        lane.raybot = await forks.start_async(env)
        try:
            for trial in trials:
                ran += 1
                try:
                    await run_trial(lane, trial)
                except Exception as failure:  # noqa: BLE001 - every lane reports, none stops the others
                    shown = failure if isinstance(failure, AssertionError) else repr(failure)
                    failures.append(f"{trial}, lane {number}: {shown}{logged_errors(lane.raybot)}")
                    break  # the lane's raybot and cluster are in no known state: its other trials would say nothing
        finally:
            if lane.raybot is not None and not lane.raybot.exited.is_set():
                await asyncio.to_thread(lane.raybot.kill)
            emr.release_hanging()
    return ran, failures


async def test_crash_trials_end_with_the_truth_in_every_thread(forks, http, tmp_path):
    lanes = deal(plan(), LANES)
    results = await asyncio.gather(
        *(run_lane(i, lane, forks, http, tmp_path) for i, lane in enumerate(lanes, 1)), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
    ran = sum(count for count, _ in results)
    failures = [failure for _, lane_failures in results for failure in lane_failures]
    assert not failures, (
        f"{len(failures)} of {LANES} lanes failed; {ran} of {TRIALS} trials ran (a lane stops at its first failure):\n"
        + "\n".join(failures)
    )
    assert ran == TRIALS


async def test_a_kill_with_no_change_in_flight_restarts_cleanly(forks, http, tmp_path):
    """The harness on what works today: a kill -9 between changes, a restart on the same database."""
    with world.emr_emulator() as emr, world.slack_emulator() as slack:
        env = raybot_env(tmp_path, slack, emr, RAYBOT_EMR_DEADLINE_SECONDS="2")
        first = await forks.start_async(env)
        await send(http, first, slack, "resize prod WorkerGroup1=3")
        done = await slack.wait_for(
            lambda c: c.method == "chat.postMessage" and c.args.get("thread_ts") and says_settled(c.args)
        )
        await asyncio.to_thread(first.kill)
        assert first.exit_code == -9
        second = await forks.start_async(env)
        try:
            assert (await http.get(f"{second.url}/healthz")).status_code == 200
            mark = len(slack.calls)
            _, url = await send(http, second, slack, "resize prod WorkerGroup2=4")
            root = await slack.wait_for(
                lambda c: c.method == "chat.postMessage" and "WorkerGroup2: 1 → 4 replicas" in c.args.get("text", "")
            )
            answer = await slack.wait_for(
                lambda c: (
                    c.method == "chat.postMessage"
                    and c.args.get("thread_ts") == root.response["ts"]
                    and verdict(c.args) is not None
                )
            )
            assert verdict(answer.args) == TOOK and has_button(answer.args, UNDO_ACTION)
            assert not [c for c in slack.calls[mark:] if c.method == "response_url" and c.url == url]
            await slack.wait_for(  # followed until it settled: its root says done
                lambda c: (
                    c.method == "chat.update" and c.args.get("ts") == root.response["ts"] and "✅" in c.args["text"]
                )
            )
            # Killed right after the first change's last answer, its root may not have been rendered yet: the
            # restarted raybot renders it from the row once the move's mark is due (CARD_RENDER_GRACE_SECONDS).
            first_ts = done.args["thread_ts"]
            if undecided((slack.message(CHANNEL, first_ts) or {}).get("text", "")):
                await slack.wait_for(
                    lambda c: (
                        c.method == "chat.update"
                        and c.args.get("ts") == first_ts
                        and not undecided(c.args.get("text", ""))
                    ),
                    timeout=CARD_RENDER_GRACE_SECONDS + 10,
                )
        finally:
            second.stop()
        assert [replica(prod_spec(emr), g) for g in ("WorkerGroup1", "WorkerGroup2")] == [3, 4]
        assert emr.accepted_updates(world.WORKSPACE, world.PROD) == 2
        assert done.args["thread_ts"] != root.response["ts"]
        assert not [m for m in slack.channel_messages(CHANNEL) if undecided(m.get("text", ""))]
