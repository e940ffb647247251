"""raybot as a service, end to end: /metrics over a scripted session, /readyz while Slack refuses the token,
SIGTERM in the middle of a slow cloud call, and no secret in any log line of a full run."""

from __future__ import annotations

import asyncio
import copy
import json
import re
import signal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import e2e_world as world
from tests.e2e import ephemeral_reply, mark, raybot_env, send, text_of, updates_of, wait_new
from tests.harness import AK_SECRET, BOT_TOKEN, SIGNING_SECRET, start_raybot


@pytest.fixture
def env(emr, slack, tmp_path):
    emr.clear_faults()
    emr.seed(copy.deepcopy(world.SEED))
    mark(emr, slack)
    return raybot_env(tmp_path, slack, emr, RAYBOT_LOG_FORMAT="json", RAYBOT_LOG_LEVEL="DEBUG")


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_count_a_scripted_session(http, env, slack, emr):
    raybot = start_raybot(env)
    try:
        _, url = await send(http, raybot, slack, "help")
        await ephemeral_reply(slack, url)
        await send(http, raybot, slack, "resize prod WorkerGroup1=3")
        await wait_new(slack, lambda c: c.method == "chat.update" and "✅" in c.args.get("text", ""))
        _, url = await send(http, raybot, slack, "show prod", channel=world.UNBOUND_CHANNEL)
        await ephemeral_reply(slack, url)
        _, url = await send(http, raybot, slack, "show ghost")
        await ephemeral_reply(slack, url)
        # A command is counted when its handler ends, which may be a moment after its last answer (a change
        # records its outcome and releases the cluster after telling the thread): read until all four are in.
        commands = ("help", "ok"), ("resize", "ok"), ("show", "denied"), ("show", "failed")
        for _ in range(100):
            response = await http.get(f"{raybot.url}/metrics")
            counted = samples(response.text)
            if all(("raybot_commands_total", (("command", c), ("outcome", o))) in counted for c, o in commands):
                break
            await asyncio.sleep(0.05)
    finally:
        raybot.stop()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    got = samples(response.text)
    assert got[("raybot_commands_total", (("command", "help"), ("outcome", "ok")))] == 1
    assert got[("raybot_commands_total", (("command", "resize"), ("outcome", "ok")))] == 1
    assert got[("raybot_commands_total", (("command", "show"), ("outcome", "denied")))] == 1
    assert got[("raybot_commands_total", (("command", "show"), ("outcome", "failed")))] == 1
    assert got[("raybot_denials_total", (("reason", "no_binding"),))] == 1
    assert got[("raybot_cloud_calls_total", (("action", "UpdateRayCluster"), ("code", "OK")))] == 1
    assert got[("raybot_cloud_calls_total", (("action", "GetRayCluster"), ("code", "RayClusterNotFound")))] == 1
    assert got[("raybot_ack_duration_seconds_count", (("kind", "command"),))] == 4
    assert got[("raybot_changes_in_flight", ())] == 0


async def test_readyz_fails_while_slack_refuses_the_token(http, env, slack):
    raybot = start_raybot(env)
    try:
        ready = await http.get(f"{raybot.url}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"config": "ok", "store": "ok", "slack": "ok", "credentials": "ok"}
        slack.inject("auth.test", error="invalid_auth")
        broken = await http.get(f"{raybot.url}/readyz")
        assert broken.status_code == 503
        assert broken.json()["checks"]["slack"] == "Slack said invalid_auth"
        assert (await http.get(f"{raybot.url}/healthz")).status_code == 200  # alive all the same
        assert (await http.get(f"{raybot.url}/readyz")).status_code == 200
    finally:
        raybot.stop()


async def test_sigterm_lets_the_change_in_flight_finish_and_exits_0(http, env, slack, emr):
    raybot = start_raybot(env)
    emr.inject("latency", action="UpdateRayCluster", seconds=1.5)
    await send(http, raybot, slack, "resize prod WorkerGroup1=3")
    await asyncio.to_thread(emr.wait_for_call, lambda c: c.action == "UpdateRayCluster" and c.status == 0)
    raybot.proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(raybot.proc.wait, 30)
    output = raybot.stop()
    assert code == 0, output
    [update] = updates_of(emr)
    assert update.status == 200
    done = [c for c in slack.calls if c.method == "chat.postMessage" and "📨" in c.args.get("text", "")]
    assert any(update.request_id in text_of(c.args) for c in done)  # the thread was answered before exiting
    assert "raybot: stopped" in output


async def test_no_secret_in_any_log_line(http, env, slack, emr):
    raybot = start_raybot(env)
    try:
        await send(http, raybot, slack, "resize prod WorkerGroup1=3")
        await wait_new(slack, lambda c: c.method == "chat.update" and "✅" in c.args.get("text", ""))
        emr.inject("throttle", action="GetRayCluster", times=1)
        _, url = await send(http, raybot, slack, "show prod")
        await ephemeral_reply(slack, url)
        _, url = await send(http, raybot, slack, "resize nosuch g=1")
        await ephemeral_reply(slack, url)
    finally:
        output = raybot.stop()
    lines = [line for line in output.splitlines() if line.startswith("{")]
    assert lines, output
    records = [json.loads(line) for line in lines]  # one JSON object a line
    assert any(r.get("request_id") for r in records)
    for secret in (SIGNING_SECRET, BOT_TOKEN, AK_SECRET, "Bearer ", "ACS3-HMAC-SHA256 Credential"):
        assert secret not in output, secret
    # slack_sdk logs its request headers at DEBUG: the Authorization header is there only masked.
    for value in re.findall(r"""['"]?Authorization['"]?\s*[:=]\s*['"]?([^'",}\s]+)""", output, re.IGNORECASE):
        assert value == "[REDACTED]", value
