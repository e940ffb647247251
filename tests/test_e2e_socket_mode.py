"""`raybot serve` in Socket Mode: the Slack emulator hands out a loopback WebSocket through
apps.connections.open, and a slash command delivered there as an envelope is acknowledged and
handled like one posted over HTTP.

Then two replicas on one database, each with its own connection, as in production: Slack spreads
envelopes over both, may hand the same event to both, and gives an envelope that a dying replica
never acknowledged to the other one."""

from __future__ import annotations

import asyncio
import copy
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from bot.sandbox.emr_server import EmrEmulator
from bot.sandbox.slack_server import SlackEmulator
from tests import e2e_world as world
from tests.harness import (
    RaybotProcess,
    clean_env,
    local_tcp_ports,
    output_marks,
    start_raybot,
    wait_for_output,
)


@pytest.fixture(scope="module")
def raybot(emr, slack, tmp_path_factory):
    config = tmp_path_factory.mktemp("config") / "raybot.yaml"
    config.write_text(world.CONFIG)
    env = clean_env(
        SLACK_BOT_TOKEN=world.BOT_TOKEN,
        SLACK_APP_TOKEN=world.APP_TOKEN,
        RAYBOT_CONFIG=str(config),
        RAYBOT_DATABASE=str(config.parent / "raybot.db"),
        RAYBOT_HTTP_PORT="0",
        RAYBOT_SLACK_API_URL=slack.api_url,
        RAYBOT_EMR_ENDPOINT=emr.url,
    )
    process = start_raybot(env)
    assert process.url is None  # Socket Mode: no HTTP listener for Slack
    yield process
    output = process.stop()
    assert world.APP_TOKEN not in output and world.BOT_TOKEN not in output


@pytest.fixture(autouse=True)
def fresh_clusters(emr):
    emr.seed(copy.deepcopy(world.SEED))


async def test_slash_command_envelope_is_acknowledged_and_handled(raybot, slack, emr):
    await slack.wait_for_socket_client()
    assert slack.calls_for("apps.connections.open")
    payload = slack.slash_command_payload(
        "/ray", "resize prod WorkerGroup2=5", user_id=world.ONCALL_USER, channel_id=world.ONCALL_CHANNEL
    )
    ack = await slack.send_socket_event("slash_commands", payload)
    assert ack["envelope_id"]

    done = await slack.wait_for(lambda c: c.method == "chat.update" and "✅" in c.args.get("text", ""))
    [update] = emr.calls_for("UpdateRayCluster")
    assert [g["replica"] for g in update.json["workerSpec"]] == [2, 5]
    reply = slack.thread(world.ONCALL_CHANNEL, done.args["ts"])[0]
    assert update.request_id in reply["text"] + str(reply.get("blocks"))
    assert world.PROD in reply["text"] + str(reply.get("blocks"))
    await slack.wait_for(lambda c: c.method == "chat.postMessage" and "settled" in c.args.get("text", ""))


async def test_syntax_error_comes_back_in_the_ack_payload(raybot, slack, emr):
    await slack.wait_for_socket_client()
    calls_before = len(emr.calls)
    payload = slack.slash_command_payload(
        "/ray", "resize prod WorkerGroup1=-3", user_id=world.ONCALL_USER, channel_id=world.ONCALL_CHANNEL
    )
    ack = await slack.send_socket_event("slash_commands", payload)
    assert "-3" in ack["payload"]["text"]
    assert ack["payload"]["response_type"] == "ephemeral"
    assert len(emr.calls) == calls_before


async def test_probes_listen_in_socket_mode_too(raybot):
    import httpx

    async with httpx.AsyncClient(trust_env=False) as http:
        assert (await http.get(f"{raybot.probe_url}/healthz")).json() == {"status": "ok"}
        ready = await http.get(f"{raybot.probe_url}/readyz")
        assert ready.status_code == 200, ready.text
        assert "raybot_commands_total" in (await http.get(f"{raybot.probe_url}/metrics")).text
        assert (await http.post(f"{raybot.probe_url}/slack/events")).status_code in (404, 405)


# -- two replicas ------------------------------------------------------------------------------------------------------


@dataclass
class Replicas:
    slack: SlackEmulator
    emr: EmrEmulator
    processes: list[RaybotProcess]


@dataclass
class Replica:
    process: RaybotProcess
    connection: str  # its Socket Mode connection's id


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    """Two `raybot serve` processes in Socket Mode on one SQLite database, with emulators of their own."""
    directory = tmp_path_factory.mktemp("replicas")
    config = directory / "raybot.yaml"
    config.write_text(world.CONFIG)
    with world.emr_emulator() as emr, world.slack_emulator() as slack:
        env = clean_env(
            SLACK_BOT_TOKEN=world.BOT_TOKEN,
            SLACK_APP_TOKEN=world.APP_TOKEN,
            RAYBOT_CONFIG=str(config),
            RAYBOT_DATABASE=str(directory / "raybot.db"),  # shared: the store takes several processes
            RAYBOT_HTTP_PORT="0",
            RAYBOT_SLACK_API_URL=slack.api_url,
            RAYBOT_EMR_ENDPOINT=emr.url,
        )
        with ThreadPoolExecutor(2) as pool:  # both start at once: the start is mostly imports
            starting = [pool.submit(start_raybot, env) for _ in range(2)]
        processes = [f.result() for f in starting if f.exception() is None]
        if len(processes) < 2:
            for process in processes:
                process.stop()
            raise next(f.exception() for f in starting if f.exception() is not None)
        try:
            yield Replicas(slack, emr, processes)
        finally:
            for process in processes:
                output = process.stop()
                assert world.APP_TOKEN not in output and world.BOT_TOKEN not in output


@pytest.fixture
async def pair(replicas):
    """The live replicas, each with the id of its connection (found by the client port the process holds)."""
    replicas.emr.seed(copy.deepcopy(world.SEED))
    alive = [p for p in replicas.processes if p.proc.poll() is None]
    await replicas.slack.wait_for_socket_clients(len(alive), timeout=10)
    by_port = {c.peer[1]: c.id for c in replicas.slack.socket_connections if c.open and c.peer}
    found = []
    for process in alive:
        [connection] = [by_port[port] for port in local_tcp_ports(process.proc.pid) if port in by_port]
        found.append(Replica(process, connection))
    return found


def mention_of(slack: SlackEmulator, text: str) -> tuple[dict, dict]:
    """A person's message mentioning raybot in the on-call channel, and the app_mention event Slack sends for it."""
    message = slack.post_user_message(world.ONCALL_CHANNEL, world.ONCALL_USER, f"<@{slack.bot_user_id}> {text}")
    return message, slack.app_mention_payload(message, channel_id=world.ONCALL_CHANNEL)


async def answered_in_thread(slack: SlackEmulator, message: dict, mark: str, timeout: float = 10.0):
    """raybot's reply containing `mark` in the thread of `message`."""
    return await slack.wait_for(
        lambda c: (
            c.method == "chat.postMessage"
            and c.args.get("thread_ts") == message["ts"]
            and mark in c.args.get("text", "")
        ),
        timeout,
    )


async def test_envelopes_are_spread_over_both_replicas(replicas, pair):
    slack = replicas.slack
    first = len(slack.socket_deliveries)
    response_urls = []
    for _ in range(4):
        payload = slack.slash_command_payload(
            "/ray", "whoami", user_id=world.ONCALL_USER, channel_id=world.ONCALL_CHANNEL
        )
        response_urls.append(payload["response_url"])
        await slack.send_socket_event("slash_commands", payload)

    deliveries = slack.socket_deliveries[first:]
    to = [d.connection_id for d in deliveries]
    assert sorted(to[:2]) == sorted(r.connection for r in pair) and to[2:] == to[:2], "round-robin over both"
    assert [d.retry_attempt for d in deliveries] == [0, 0, 0, 0]
    acks = {a.envelope_id: a.connection_id for a in slack.socket_ack_log}
    assert [acks[d.envelope_id] for d in deliveries] == to, "each replica acknowledged what it was given"
    for url in response_urls:  # and answered it
        reply = await slack.wait_for(lambda c, url=url: c.method == "response_url" and c.url == url, 10)
        assert "oncall" in reply.args.get("text", "") + str(reply.args.get("blocks"))


async def test_the_same_event_reaching_both_replicas_changes_the_cluster_once(replicas, pair):
    slack, emr = replicas.slack, replicas.emr
    emr_mark, processes = len(emr.calls), [r.process for r in pair]
    marks = output_marks(processes)
    message, event = mention_of(slack, "resize prod WorkerGroup2=6")
    copies = await slack.deliver_socket_event("events_api", event, connections=[r.connection for r in pair])
    acks = [await slack.wait_for_ack(envelope_id) for envelope_id in copies]
    assert sorted(a.connection_id for a in acks) == sorted(r.connection for r in pair), "both got it and acked"

    await answered_in_thread(slack, message, "📨")
    loser, _ = await asyncio.to_thread(wait_for_output, processes, "duplicate delivery ignored", after=marks)
    await answered_in_thread(slack, message, "settled", timeout=20)
    updates = [c for c in emr.calls[emr_mark:] if c.action == "UpdateRayCluster"]
    assert len(updates) == 1
    assert [g["replica"] for g in updates[0].json["workerSpec"]] == [2, 6]
    [(winner, mark)] = [(p, m) for p, m in zip(processes, marks, strict=True) if p is not loser]
    assert not any("duplicate delivery ignored" in line for line in winner.output[mark:])


async def test_a_replica_told_to_disconnect_moves_to_a_new_connection_and_still_answers(replicas, pair):
    slack = replicas.slack
    moving, staying = pair
    opened = len(slack.calls_for("apps.connections.open"))
    new_id = f"conn-{len(slack.socket_connections) + 1}"  # ids are handed out in order
    await slack.send_socket_disconnect(moving.connection, "refresh_requested")
    await slack.wait_for_socket_connection(new_id, timeout=10)
    assert sorted(await slack.wait_for_socket_clients(2)) == sorted([staying.connection, new_id])
    assert len(slack.calls_for("apps.connections.open")) == opened + 1
    assert slack.socket_connection(new_id).peer[1] in local_tcp_ports(moving.process.proc.pid)
    old = slack.socket_connection(moving.connection)
    assert not old.open and old.disconnects == ("refresh_requested",)

    payload = slack.slash_command_payload("/ray", "whoami", user_id=world.ONCALL_USER, channel_id=world.ONCALL_CHANNEL)
    await slack.send_socket_event("slash_commands", payload, connection=new_id)
    await slack.wait_for(lambda c: c.method == "response_url" and c.url == payload["response_url"], 10)


async def test_a_replica_frozen_past_the_ack_timeout_does_not_apply_the_change_twice(replicas, pair):
    slack, emr = replicas.slack, replicas.emr
    frozen, other = pair
    emr_mark, marks = len(emr.calls), output_marks([frozen.process])
    message, event = mention_of(slack, "resize prod WorkerGroup1=3")

    frozen.process.freeze()
    try:
        [envelope_id] = await slack.deliver_socket_event("events_api", event, connections=[frozen.connection])
        await slack.expire_envelope(envelope_id)  # as if 3 s went by without its ack
        ack = await slack.wait_for_ack(envelope_id, timeout=10)
        assert ack.connection_id == other.connection
        await answered_in_thread(slack, message, "📨")
    finally:
        frozen.process.thaw()
    # Back to life, the frozen replica reads the stale envelope, acks it late and must not act on it again.
    await asyncio.to_thread(wait_for_output, [frozen.process], "duplicate delivery ignored", after=marks)
    assert envelope_id in {a.envelope_id for a in slack.socket_ack_log if a.connection_id == frozen.connection}
    await answered_in_thread(slack, message, "settled", timeout=20)
    updates = [c for c in emr.calls[emr_mark:] if c.action == "UpdateRayCluster"]
    assert [[g["replica"] for g in u.json["workerSpec"]] for u in updates] == [[3, 1]]


async def test_a_replica_killed_before_it_acknowledged_leaves_the_envelope_to_the_other(replicas, pair):
    """Last in this module: it kills one replica for good."""
    slack, emr = replicas.slack, replicas.emr
    victim, survivor = pair
    emr_mark = len(emr.calls)
    message, event = mention_of(slack, "resize prod WorkerGroup2=7")

    victim.process.freeze()  # the envelope reaches its socket, never its code
    try:
        [envelope_id] = await slack.deliver_socket_event("events_api", event, connections=[victim.connection])
    finally:
        victim.process.kill()

    ack = await slack.wait_for_ack(envelope_id, timeout=10)
    assert ack.connection_id == survivor.connection
    deliveries = [
        (d.connection_id, d.retry_attempt, d.retry_reason)
        for d in slack.socket_deliveries
        if d.first_envelope_id == envelope_id
    ]
    assert deliveries == [(victim.connection, 0, ""), (survivor.connection, 1, "connection_closed")]
    assert envelope_id not in slack.socket_connection(victim.connection).acked

    await answered_in_thread(slack, message, "📨")
    await answered_in_thread(slack, message, "settled", timeout=20)
    updates = [c for c in emr.calls[emr_mark:] if c.action == "UpdateRayCluster"]
    assert [[g["replica"] for g in u.json["workerSpec"]] for u in updates] == [[2, 7]]
    assert await slack.wait_for_socket_clients(1) == [survivor.connection]
