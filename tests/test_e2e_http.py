"""`raybot serve` in HTTP mode, end to end over real sockets: the Slack emulator, the EMR emulator,
and slash commands signed with the signing secret exactly as Slack signs them."""

from __future__ import annotations

import copy
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from bot.emr.models import dumps_body
from tests import e2e_world as world
from tests.e2e import (
    MARKS,
    ephemeral_reply,
    mark,
    mention_event,
    new_emr_calls,
    post_as_someone,
    post_json_signed,
    raybot_env,
    send,
    text_of,
    updates_of,
    wait_new,
    wait_until_followed,
)
from tests.harness import REPO, SIGNING_SECRET, clean_env, signed_headers, start_raybot

DEADLINE_SECONDS = "2"


@pytest.fixture(scope="module")
def raybot(emr, slack, tmp_path_factory):
    env = raybot_env(tmp_path_factory.mktemp("raybot"), slack, emr, RAYBOT_EMR_DEADLINE_SECONDS=DEADLINE_SECONDS)
    process = start_raybot(env)
    yield process
    output = process.stop()
    for secret in (SIGNING_SECRET, world.BOT_TOKEN, world.AK_SECRET):
        assert secret not in output, "a secret reached raybot's output"


@pytest.fixture(autouse=True)
async def fresh_clusters(emr, slack):
    """Every test starts from the seed, with no faults, and sees only the calls made during it."""
    emr.clear_faults()
    emr.seed(copy.deepcopy(world.SEED))
    mark(emr, slack)
    yield
    emr.clear_faults()
    await wait_until_followed(emr, slack)


async def test_healthz(http, raybot):
    response = await http.get(f"{raybot.url}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_allowed_resize_answers_in_a_thread(http, raybot, slack, emr):
    before = emr.cluster(world.WORKSPACE, world.PROD)
    response, _ = await send(http, raybot, slack, "resize prod WorkerGroup1=3")
    assert response.status_code == 200

    done = await wait_new(slack, lambda c: c.method == "chat.update" and "done:" in c.args.get("text", ""))
    root_ts = done.args["ts"]
    [update] = updates_of(emr)
    sent = update.json
    assert [g["groupName"] for g in sent["workerSpec"]] == ["WorkerGroup1", "WorkerGroup2"]
    assert sent["workerSpec"][0]["replica"] == 3
    # Everything but the target is sent back exactly as read.
    assert dumps_body(sent["workerSpec"][1]) == dumps_body(before["workerSpec"][1])
    target_before = {k: v for k, v in before["workerSpec"][0].items() if k != "replica"}
    assert {k: v for k, v in sent["workerSpec"][0].items() if k != "replica"} == target_before

    # Two answers in the thread: the change accepted (ids and diff), then once it settled (workers up).
    reply, settled = slack.thread(world.ONCALL_CHANNEL, root_ts)
    assert "settled" in text_of(settled) and "WorkerGroup1: 3 of 3 workers up" in text_of(settled)
    reply_text = text_of(reply)
    assert world.PROD in reply_text
    assert update.request_id in reply_text
    assert "WorkerGroup1" in reply_text and "2 → 3" in reply_text
    [root] = [m for m in slack.channel_messages(world.ONCALL_CHANNEL) if m["ts"] == root_ts]
    assert f"<@{world.ONCALL_USER}>" in root["text"] and "prod" in root["text"]
    assert emr.cluster(world.WORKSPACE, world.PROD)["workerSpec"][0]["replica"] == 3


async def test_a_user_named_in_the_binding_may_resize(http, raybot, slack, emr):
    await send(http, raybot, slack, "autoscale prod on idle=600", user=world.LEAD)
    # This change's own root (a root of an earlier test's change may turn ✅ meanwhile, as its follow ends).
    await wait_new(
        slack,
        lambda c: c.method == "chat.update" and "✅" in c.args.get("text", "") and "idle timeout" in c.args["text"],
    )
    [update] = updates_of(emr)
    assert update.json["headSpec"]["enableAutoScaling"] is True
    assert update.json["headSpec"]["idleTimeoutSeconds"] == 600
    assert len(update.json["workerSpec"]) == 2


async def test_unbound_channel_is_denied_and_nothing_is_read(http, raybot, slack, emr):
    calls_before = len(emr.calls)
    response, url = await send(http, raybot, slack, "resize prod WorkerGroup1=3", channel=world.UNBOUND_CHANNEL)
    assert response.status_code == 200
    reply = await ephemeral_reply(slack, url)
    assert reply["response_type"] == "ephemeral"
    assert "Not allowed" in reply["text"] and world.UNBOUND_CHANNEL in reply["text"]
    assert len(emr.calls) == calls_before


async def test_user_outside_the_required_usergroup_is_denied(http, raybot, slack, emr):
    _, url = await send(http, raybot, slack, "resize prod WorkerGroup1=3", user=world.OUTSIDER)
    reply = await ephemeral_reply(slack, url)
    assert "Not allowed" in reply["text"]
    assert world.ONCALL_GROUP in reply["text"]
    assert updates_of(emr) == []


@pytest.mark.parametrize(
    ("text", "cluster_id", "expected"),
    [
        ("resize prod WorkerGroup1 replicas=41 max=41", world.PROD, "at most 40"),
        ("resize fleet group-01 replicas=30 max=30", "ray-9w2n4b6c8d0fgh1j", "at most 20"),
    ],
)
async def test_role_limit_exceeded_is_refused_before_anything_is_sent(
    http, raybot, slack, emr, text, cluster_id, expected
):
    _, url = await send(http, raybot, slack, text)
    reply = await ephemeral_reply(slack, url)
    assert expected in reply["text"], reply["text"]
    assert updates_of(emr, cluster_id) == []
    assert not [m for m in slack.channel_messages(world.ONCALL_CHANNEL) if cluster_id in text_of(m)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("resise prod WorkerGroup1=3", "resize"),
        ("resize prod WorkerGroup1=abc", "abc"),
        ("resize prod WorkerGroup1=0", "0"),
        ("resize prod WorkerGroup1 min=5 max=2", "min 5 is above max 2"),
        ("autoscale prod maybe", "on"),
    ],
)
async def test_syntax_errors_are_answered_in_the_ack_and_nothing_reaches_the_cloud(
    http, raybot, slack, emr, text, expected
):
    calls_before = len(emr.calls)
    response, _ = await send(http, raybot, slack, text)
    assert response.status_code == 200
    answer = response.json()
    assert answer["response_type"] == "ephemeral"
    assert expected in answer["text"]
    assert "/ray" in text_of(answer)  # the usage line
    assert len(emr.calls) == calls_before


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("resize nosuch WorkerGroup1=3", "nosuch"),
        ("resize prod NoSuchGroup=3", "NoSuchGroup"),
        ("resize prod WorkerGroup1=9", "9 replicas is above its max 4; set max=9 as well"),
        # The advice never asks for what the role's limits (oncall: 40 per group, steps of 20) would refuse next.
        (
            "resize prod WorkerGroup1=50",
            "cannot make this change: WorkerGroup1 cannot go to 50: your role allows changing a group by at most 20 "
            "replicas at once (2 now, so at most 22); ask for at most 4 replicas, "
            "or for at most 22 with max=22 as well",
        ),
    ],
)
async def test_unknown_names_are_answered_ephemerally_and_nothing_is_changed(http, raybot, slack, emr, text, expected):
    _, url = await send(http, raybot, slack, text)
    reply = await ephemeral_reply(slack, url)
    assert expected in reply["text"], reply["text"]
    assert new_emr_calls(emr, "UpdateRayCluster") == []


async def test_nothing_to_change_sends_nothing(http, raybot, slack, emr):
    _, url = await send(http, raybot, slack, "resize prod WorkerGroup1=2")
    reply = await ephemeral_reply(slack, url)
    assert "nothing was sent" in reply["text"]
    assert new_emr_calls(emr, "UpdateRayCluster") == []


async def test_cloud_error_on_update_is_shown_in_the_thread_with_code_and_request_id(http, raybot, slack, emr):
    emr.inject("throttle", action="UpdateRayCluster")
    await send(http, raybot, slack, "resize prod WorkerGroup1=3")
    failed = await wait_new(slack, lambda c: c.method == "chat.update" and "❌" in c.args.get("text", ""), timeout=10)
    attempts = updates_of(emr)
    assert attempts and all(a.code == "Throttling.User" for a in attempts)
    [reply] = slack.thread(world.ONCALL_CHANNEL, failed.args["ts"])
    assert "Throttling.User" in text_of(reply)
    assert attempts[-1].request_id in text_of(reply)
    # Which cluster, what was tried and how often, and that nothing changed.
    assert f"The change to *prod* (clusterId `{world.PROD}`) failed: WorkerGroup1: 2 → 3 replicas" in text_of(reply)
    assert f"(`UpdateRayCluster`, {len(attempts)} attempts)" in text_of(reply)
    assert "nothing changed on the cluster" in text_of(reply)
    assert emr.cluster(world.WORKSPACE, world.PROD)["workerSpec"][0]["replica"] == 2


async def test_cloud_error_on_read_is_shown_with_code_and_request_id(http, raybot, slack, emr):
    _, url = await send(http, raybot, slack, "show ghost")
    reply = await ephemeral_reply(slack, url)
    [get] = [c for c in new_emr_calls(emr, "GetRayCluster") if "ray-doesnotexist0000" in c.path]
    assert get.code in reply["text"]
    assert get.request_id in reply["text"]
    assert "for *ghost* (clusterId `ray-doesnotexist0000`) failed" in reply["text"]
    assert "Nothing was changed." in reply["text"]


async def test_acknowledges_at_once_while_the_cloud_hangs(http, raybot, slack, emr):
    emr.inject("hang", action="GetRayCluster")
    first, url = await send(http, raybot, slack, "show prod")
    second, _ = await send(http, raybot, slack, "help")
    assert first.status_code == 200 and second.status_code == 200
    reply = await ephemeral_reply(slack, url, timeout=10)
    assert "Timeout" in reply["text"]


async def test_user_text_is_escaped_before_it_is_echoed(http, raybot, slack, emr):
    cluster = emr.cluster(world.WORKSPACE, world.PROD)
    cluster["workspaceId"] = world.WORKSPACE
    cluster["name"] = "prod <!channel> <@U0BOSS>"
    cluster["description"] = "see <!here|here> & <https://evil.example|docs>"
    emr.seed([cluster])
    _, url = await send(http, raybot, slack, "show prod")
    shown = text_of(await ephemeral_reply(slack, url))
    # Slack sends what people type with &, < and > entity-encoded; this is `/ray resize prod <!channel>=3`.
    _, url = await send(http, raybot, slack, "resize prod &lt;!channel&gt;=3")
    refused = text_of(await ephemeral_reply(slack, url))
    for text in (shown, refused):
        for markup in ("<!channel>", "<@U0BOSS>", "<!here", "<https://"):
            assert markup not in text, text
    assert "&lt;!channel&gt;" in shown and "&lt;!channel&gt;" in refused


@pytest.mark.parametrize("case", ["bad", "missing", "stale"])
async def test_bad_missing_or_stale_signature_is_rejected_and_nothing_happens(http, raybot, slack, emr, case):
    payload = slack.slash_command_payload(
        "/ray", "resize prod WorkerGroup1=3", user_id=world.ONCALL_USER, channel_id=world.ONCALL_CHANNEL
    )
    body = urllib.parse.urlencode(payload)
    if case == "bad":
        headers = signed_headers(body, secret="not-the-secret")
    elif case == "missing":
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
    else:
        headers = signed_headers(body, timestamp=int(time.time()) - 600)
    slack_calls, emr_calls = len(slack.calls), len(emr.calls)
    response = await http.post(f"{raybot.url}/slack/events", content=body, headers=headers)
    assert response.status_code == 401
    # A correctly signed command sent after it is handled: by then the rejected one would have shown up too.
    _, url = await send(http, raybot, slack, "help")
    await ephemeral_reply(slack, url)
    assert [c.method for c in slack.calls[slack_calls:]] == ["response_url"]
    assert len(emr.calls) == emr_calls


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=60
    )


def test_check_config_prints_the_permission_table(tmp_path):
    path = tmp_path / "raybot.yaml"
    path.write_text(world.CONFIG)
    result = run_cli("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    for expected in (world.ONCALL_CHANNEL, "oncall", "prod*", "resize", "40", world.ONCALL_GROUP, "admin"):
        assert expected in result.stdout


def test_check_config_warns_when_nobody_could_approve_and_counts_in_words(tmp_path):
    path = tmp_path / "raybot.yaml"
    path.write_text(
        "clusters:\n  prod: {workspace: w-1, cluster: rc-1, region: cn-hangzhou}\n"
        "roles:\n  oncall: {actions: [resize], approval: always}\n"
        "channels:\n  C0ONCALL01:\n    - role: oncall\n"
    )
    result = run_cli("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert "nobody could ever approve them" in result.stderr
    assert "OK with 1 warning (above) (1 cluster, 1 role, 1 channel)" in result.stdout


def test_check_config_reads_the_store_without_creating_it(tmp_path):
    path = tmp_path / "raybot.yaml"
    path.write_text(world.CONFIG)
    result = run_cli("check-config", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "store: SQLite raybot.db (not created yet), no raybot tables yet: raybot serve creates them" in result.stdout
    assert "none" not in result.stdout.split("store:")[1].splitlines()[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raybot.yaml"]  # nothing left behind


def test_check_config_names_the_broken_line(tmp_path):
    path = tmp_path / "raybot.yaml"
    path.write_text(world.CONFIG.replace(f"  {world.PLATFORM_CHANNEL}:", "  platform-team:"))
    result = run_cli("check-config", str(path))
    assert result.returncode == 1
    line = world.CONFIG.splitlines().index(f"  {world.PLATFORM_CHANNEL}:") + 1
    assert f"raybot.yaml:{line}:" in result.stderr
    assert "channel ID" in result.stderr


def test_serve_stops_at_once_naming_a_missing_variable():
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "serve"],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "SLACK_BOT_TOKEN" in result.stderr


def test_manifest_command_prints_the_root_manifest():
    result = run_cli("manifest")
    assert result.returncode == 0
    assert result.stdout == (REPO / "manifest.yml").read_text()


async def test_mention_in_a_thread_changes_the_cluster_and_answers_in_that_thread(http, raybot, slack, emr):
    alert = await post_as_someone(slack, world.ONCALL_CHANNEL, "CPU at 98% on prod")
    text = "<@U0RAYBOT> resize prod WorkerGroup1=4"
    ts = await post_as_someone(slack, world.ONCALL_CHANNEL, text, thread_ts=alert)
    MARKS["slack"] = len(slack.calls)
    event = mention_event(text, user=world.ONCALL_USER, channel=world.ONCALL_CHANNEL, ts=ts, thread_ts=alert)
    response = await post_json_signed(http, raybot, event)
    assert response.status_code == 200
    root = await wait_new(slack, lambda c: c.method == "chat.postMessage" and "⏳" in c.args.get("text", ""))
    assert root.args["thread_ts"] == alert  # the status message goes into the alert's thread
    reply = await wait_new(slack, lambda c: c.method == "chat.postMessage" and "📨" in c.args.get("text", ""))
    assert reply.args["thread_ts"] == alert
    [update] = updates_of(emr)
    assert update.request_id in text_of(reply.args)


async def test_mention_with_bad_input_answers_only_the_requester_in_the_thread(http, raybot, slack, emr):
    event = mention_event(
        "<@U0RAYBOT> resize prod", user=world.ONCALL_USER, channel=world.ONCALL_CHANNEL, ts="1732600300.000300"
    )
    await post_json_signed(http, raybot, event)
    note = await wait_new(slack, lambda c: c.method == "chat.postEphemeral")
    assert note.args["user"] == world.ONCALL_USER
    assert note.args["thread_ts"] == "1732600300.000300"
    assert "/ray resize" in text_of(note.args)
    assert new_emr_calls(emr) == []


async def test_whoami_list_and_show(http, raybot, slack, emr):
    _, url = await send(http, raybot, slack, "whoami", user=world.OUTSIDER)
    whoami = text_of(await ephemeral_reply(slack, url))
    assert "viewer" in whoami and "oncall" not in whoami
    assert "on every cluster (" in whoami and "on *" not in whoami  # the clusters named once, in words

    _, url = await send(http, raybot, slack, "help resize")
    helped = text_of(await ephemeral_reply(slack, url))
    assert "Examples" in helped and "/ray resize prod WorkerGroup1=8 for 2h" in helped
    assert "/ray history" not in helped  # that command's usage, not the whole help

    _, url = await send(http, raybot, slack, "list")
    listed = text_of(await ephemeral_reply(slack, url))
    for alias in ("prod", "train-gpu", "fleet"):
        assert alias in listed
    assert "RayClusterNotFound" in listed  # the alias whose cluster does not exist says so
    assert len(new_emr_calls(emr, "ListRayCluster")) == 1  # one workspace, one paged listing

    _, url = await send(http, raybot, slack, "show fleet")
    shown = await ephemeral_reply(slack, url)
    assert len(shown["blocks"]) <= 50
    assert "group-01" in text_of(shown) and "group-50" in text_of(shown)


async def test_slack_429_is_retried_after_retry_after(http, raybot, slack, emr):
    slack.inject("chat.postMessage", rate_limited=1)
    await send(http, raybot, slack, "resize prod WorkerGroup1=3")
    await wait_new(slack, lambda c: c.method == "chat.update" and "✅" in c.args.get("text", ""), timeout=10)
    posts = [c for c in slack.calls[MARKS["slack"] :] if c.method == "chat.postMessage"]
    assert posts[0].status == 429 and posts[1].ok  # the same root message, retried once
    assert len(updates_of(emr)) == 1


async def test_slack_refusing_the_root_message_is_told_to_the_user_and_nothing_is_changed(http, raybot, slack, emr):
    slack.inject("chat.postMessage", error="not_in_channel")
    _, url = await send(http, raybot, slack, "resize prod WorkerGroup1=3")
    reply = await ephemeral_reply(slack, url)
    assert "not_in_channel" in reply["text"] and "/invite" in reply["text"]
    assert updates_of(emr) == []
