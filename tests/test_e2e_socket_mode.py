"""`raybot serve` in Socket Mode: the Slack emulator hands out a loopback WebSocket through
apps.connections.open, and a slash command delivered there as an envelope is acknowledged and
handled like one posted over HTTP."""

from __future__ import annotations

import copy

import pytest

from tests import e2e_world as world
from tests.harness import clean_env, start_raybot


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
