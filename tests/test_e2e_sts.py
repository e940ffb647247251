"""Least privilege end to end: each cluster (or channel binding) acts through its own RAM role.

raybot runs in this process (its clock injected) and serves real HTTP on loopback; the Slack, EMR and STS
emulators are servers on loopback too. The STS emulator checks each AssumeRole's signature and issues
credentials per role and session; the EMR emulator accepts them and records which AccessKey and security
token signed each call.
"""

from __future__ import annotations

import asyncio
import copy
import logging

import pytest

from bot.emr.sts import READY_RECHECK_SECONDS, REFRESH_BEFORE_SECONDS, WAIT_BEFORE_SECONDS
from bot.sandbox.sts_server import EmulatedRole, StsEmulator
from bot.slack.blocks import APPROVE_ACTION
from tests import e2e_world as world
from tests.e2e import (
    FakeClock,
    button_payload,
    ephemeral_reply,
    inprocess_raybot,
    mark,
    mention_event,
    message_with,
    new_emr_calls,
    post_as_someone,
    post_interaction,
    post_json_signed,
    raybot_env,
    send,
    text_of,
    updates_of,
    wait_new,
    wait_until_followed,
)
from tests.harness import AK_ID, AK_SECRET

PROD_ROLE = "acs:ram::1234567890123456:role/raybot-prod"
STAGING_ROLE = "acs:ram::6543210987654321:role/raybot-staging"
ONCALL_ROLE = "acs:ram::1234567890123456:role/raybot-oncall"
STAGING = "ray-p5r7s9u1w3y5a7c9"
START = 1_800_000_000.0

# The world's config, with a role per cluster for prod and staging, and one for the on-call binding.
CONFIG = (
    world.CONFIG.replace(
        f"    cluster: {world.PROD}\n",
        f'    cluster: {world.PROD}\n    role_arn: "{PROD_ROLE}"\n',
    )
    .replace(
        f"    cluster: {STAGING}\n",
        f'    cluster: {STAGING}\n    role_arn: "{STAGING_ROLE}"\n    external_id: raybot-staging-ext\n',
    )
    .replace(
        '    - role: oncall\n      clusters: ["prod*", "fleet"]\n',
        '    - role: oncall\n      clusters: ["prod*", "fleet"]\n'
        f'      role_arn: "{ONCALL_ROLE}"\n      duration: 900\n',
    )
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def sts(emr, clock):
    emulator = StsEmulator(
        access_keys={AK_ID: AK_SECRET},
        roles=[
            EmulatedRole(PROD_ROLE, trusted=frozenset({AK_ID})),
            EmulatedRole(STAGING_ROLE, trusted=frozenset({AK_ID}), external_id="raybot-staging-ext"),
            EmulatedRole(ONCALL_ROLE, trusted=frozenset({AK_ID})),
        ],
        clock=clock,
        on_issue=lambda i: emr.accept_sts_credential(i.access_key_id, i.access_key_secret, i.security_token),
    )
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def env(emr, slack, sts, tmp_path):
    assert CONFIG.count("role_arn") == 3
    emr.seed(copy.deepcopy(world.SEED))
    mark(emr, slack)
    return raybot_env(tmp_path, slack, emr, config_text=CONFIG, RAYBOT_STS_ENDPOINT=sts.url)


def issued_to(sts: StsEmulator, role_arn: str):
    return [i for i in sts.issued if i.role_arn == role_arn]


async def shows(http, raybot, slack, count: int) -> None:
    """`count` concurrent `/ray show prod` by the admin, each answered without a failure."""
    sent = await asyncio.gather(
        *(send(http, raybot, slack, "show prod", user=world.ADMIN, channel="C0PLATFORM") for _ in range(count))
    )
    replies = await asyncio.gather(*(ephemeral_reply(slack, url, timeout=20) for _, url in sent))
    assert all("failed" not in text_of(r) for r in replies)


def assert_no_secret_logged(caplog, sts: StsEmulator) -> None:
    text = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert AK_SECRET not in text
    for issued in sts.issued:
        assert issued.access_key_secret not in text
        assert issued.security_token not in text


async def test_each_cluster_and_binding_acts_through_its_own_role(http, env, slack, emr, sts, clock, caplog):
    caplog.set_level(logging.DEBUG)
    async with inprocess_raybot(env, clock) as raybot:
        for alias, replicas in (("prod", 3), ("staging", 2)):
            mark(emr, slack)
            text = f"resize {alias} WorkerGroup1={replicas}"
            await send(http, raybot, slack, text, user=world.ADMIN, channel="C0PLATFORM")
            updated = f"*{alias}* change accepted"
            await wait_new(
                slack, lambda c, updated=updated: c.method == "chat.postMessage" and updated in c.args["text"]
            )
            await wait_until_followed(emr, slack)  # the follower's reads act through the role too
            [prod_or_staging] = issued_to(sts, PROD_ROLE if alias == "prod" else STAGING_ROLE)
            calls = [c for c in new_emr_calls(emr) if c.action in ("GetRayCluster", "UpdateRayCluster")]
            assert {c.action for c in calls} == {"GetRayCluster", "UpdateRayCluster"}
            for call in calls:  # the read and the change: each signed by that cluster's role
                assert (call.access_key_id, call.security_token) == (
                    prod_or_staging.access_key_id,
                    prod_or_staging.security_token,
                )
            # ActionTrail of the role's account shows who in Slack asked.
            assert prod_or_staging.session_name == f"raybot-{world.ADMIN}" and prod_or_staging.caller == AK_ID

        # In the on-call channel the binding names a role of its own: it wins over the cluster's.
        mark(emr, slack)
        await send(http, raybot, slack, "resize prod WorkerGroup1=4")
        await wait_new(slack, lambda c: c.method == "chat.postMessage" and "*prod* change accepted" in c.args["text"])
        await wait_until_followed(emr, slack)
        [oncall] = issued_to(sts, ONCALL_ROLE)
        assert oncall.session_name == f"raybot-{world.ONCALL_USER}"
        [update] = [c for c in new_emr_calls(emr) if c.action == "UpdateRayCluster"]
        assert (update.access_key_id, update.security_token) == (oncall.access_key_id, oncall.security_token)
        assert all(c.access_key_id != AK_ID for c in new_emr_calls(emr))  # nothing signed with the base key

        metrics = (await http.get(f"{raybot.url}/metrics")).text
        assert 'raybot_assume_role_total{account="1234567890123456",code="OK",role="raybot-prod"} 1.0' in metrics
        assert len(sts.assumed(PROD_ROLE)) == 1  # the second resize's calls reused it
    assert_no_secret_logged(caplog, sts)


async def test_credentials_are_reused_until_near_expiry_then_refreshed_once_under_50_commands(
    http, env, slack, emr, sts, clock, caplog
):
    caplog.set_level(logging.DEBUG)
    async with inprocess_raybot(env, clock) as raybot:
        await shows(http, raybot, slack, 5)
        [first] = issued_to(sts, PROD_ROLE)
        clock.now = first.expires_at - REFRESH_BEFORE_SECONDS - 1  # 55 minutes on: still fresh
        await shows(http, raybot, slack, 5)
        assert len(sts.assumed(PROD_ROLE)) == 1

        mark(emr, slack)
        clock.now = first.expires_at - WAIT_BEFORE_SECONDS + 1  # too close: every command waits for one renewal
        await shows(http, raybot, slack, 50)
        assert len(sts.assumed(PROD_ROLE)) == 2
        [_, second] = issued_to(sts, PROD_ROLE)
        reads = new_emr_calls(emr, "GetRayCluster")
        assert len(reads) == 50 and {c.access_key_id for c in reads} == {second.access_key_id}
    assert_no_secret_logged(caplog, sts)


async def test_in_the_renewal_window_50_commands_go_on_with_the_old_credential_while_one_assume_role_renews(
    http, env, slack, emr, sts, clock, caplog
):
    caplog.set_level(logging.DEBUG)
    # The AssumeRole's deadline is the cloud calls' one: long enough here for a renewal held while 50 commands run.
    async with inprocess_raybot(env | {"RAYBOT_EMR_DEADLINE_SECONDS": "60"}, clock) as raybot:
        await shows(http, raybot, slack, 1)
        [first] = issued_to(sts, PROD_ROLE)
        clock.now = first.expires_at - REFRESH_BEFORE_SECONDS + 1  # renewal due, but 4 minutes before the last one
        assert clock.now < first.expires_at - WAIT_BEFORE_SECONDS

        mark(emr, slack)
        sts.hold(PROD_ROLE)  # the renewal stays in flight until every command below has been answered
        await shows(http, raybot, slack, 50)
        await sts.held()
        reads = new_emr_calls(emr, "GetRayCluster")
        assert len(reads) == 50 and {(c.access_key_id, c.security_token) for c in reads} == {
            (first.access_key_id, first.security_token)
        }
        assert len(sts.assumed(PROD_ROLE)) == 1  # the renewal has not been answered

        sts.release()
        await raybot.services.emr.roles.renewed()
        [_, renewed] = issued_to(sts, PROD_ROLE)  # exactly one AssumeRole renewed it, for all 50
        assert len(sts.calls) == 2 and renewed.session_name == first.session_name

        mark(emr, slack)
        await shows(http, raybot, slack, 1)  # the next command signs with the new credential
        [read] = new_emr_calls(emr, "GetRayCluster")
        assert (read.access_key_id, read.security_token) == (renewed.access_key_id, renewed.security_token)
        assert len(sts.calls) == 2
    assert_no_secret_logged(caplog, sts)


async def test_readyz_asks_sts_again_after_a_success_at_most_once_a_minute(http, env, slack, emr, sts, clock):
    async with inprocess_raybot(env, clock) as raybot:
        await shows(http, raybot, slack, 1)  # the admin's prod session is cached for commands
        assert (await http.get(f"{raybot.url}/readyz")).status_code == 200
        probes = [c for c in sts.calls if c.session_name == "raybot-probe"]
        assert sorted(c.role_arn for c in probes) == sorted([PROD_ROLE, STAGING_ROLE, ONCALL_ROLE])

        sts.deny(PROD_ROLE)  # someone revokes the trust policy
        clock.now += READY_RECHECK_SECONDS - 1
        assert (await http.get(f"{raybot.url}/readyz")).status_code == 200  # the last answer, STS not asked
        asked = len(sts.calls)
        clock.now += 1
        ready = await http.get(f"{raybot.url}/readyz")
        refused = [c for c in sts.calls[asked:] if c.role_arn == PROD_ROLE]
        assert len(refused) == 1 and refused[0].session_name == "raybot-probe"
        assert ready.status_code == 503 and not ready.json()["ready"]
        assert ready.json()["checks"]["role raybot-prod"] == f"NoPermission (RequestId {refused[0].request_id})"
        assert ready.json()["checks"]["role raybot-staging"] == "ok"
        asked = len(sts.calls)
        assert (await http.get(f"{raybot.url}/readyz")).status_code == 503 and len(sts.calls) == asked

        # The readiness check kept its hands off the commands' cache: the admin's credential still serves.
        mark(emr, slack)
        await shows(http, raybot, slack, 1)
        assert len(sts.calls) == asked and len(new_emr_calls(emr, "GetRayCluster")) == 1


async def test_an_assume_role_denial_reaches_the_thread_and_nothing_is_sent(http, env, slack, emr, sts, clock):
    sts.deny(PROD_ROLE)  # the role's trust policy no longer lets raybot in
    async with inprocess_raybot(env, clock) as raybot:
        alert = await post_as_someone(slack, "C0PLATFORM", "CPU at 98% on prod")
        text = "<@U0RAYBOT> resize prod WorkerGroup1=5"
        ts = await post_as_someone(slack, "C0PLATFORM", text, thread_ts=alert)
        mark(emr, slack)
        event = mention_event(text, user=world.ADMIN, channel="C0PLATFORM", ts=ts, thread_ts=alert)
        assert (await post_json_signed(http, raybot, event)).status_code == 200
        note = await wait_new(slack, lambda c: c.method == "chat.postEphemeral")
        said = text_of(note.args)
        [refused] = sts.calls
        assert note.args["thread_ts"] == alert and note.args["user"] == world.ADMIN
        assert "NoPermission" in said and refused.request_id in said
        assert "raybot may not assume raybot-prod" in said and "nothing was sent" in said
        assert new_emr_calls(emr) == []  # not even the read
        assert await raybot.services.store.history("prod", 10) == []  # no change recorded

        ready = await http.get(f"{raybot.url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["role raybot-prod"].startswith("NoPermission (RequestId ")
        assert ready.json()["checks"]["role raybot-staging"] == "ok"
        metrics = (await http.get(f"{raybot.url}/metrics")).text
        assert 'raybot_assume_role_total{account="1234567890123456",code="NoPermission",role="raybot-prod"}' in metrics

        sts.clear_denials()
        assert (await http.get(f"{raybot.url}/readyz")).status_code == 503  # STS is asked once a minute at most
        clock.now += READY_RECHECK_SECONDS
        assert (await http.get(f"{raybot.url}/readyz")).status_code == 200


async def test_an_automatic_revert_acts_for_the_person_who_asked(http, env, slack, emr, sts, clock):
    async with inprocess_raybot(env, clock) as raybot:
        await send(http, raybot, slack, "resize prod WorkerGroup1=3 for 1h", user=world.ADMIN, channel="C0PLATFORM")
        await wait_new(slack, lambda c: c.method == "chat.postMessage" and "*prod* change accepted" in c.args["text"])
        await wait_until_followed(emr, slack)
    clock.now += 2 * 3600  # raybot was stopped while the change expired; its role credentials expired too
    mark(emr, slack)
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
    first, renewed = issued_to(sts, PROD_ROLE)
    assert renewed.session_name == first.session_name == f"raybot-{world.ADMIN}"
    [revert] = new_emr_calls(emr, "UpdateRayCluster")
    assert revert.json["workerSpec"][0]["replica"] == 2
    # The revert, and every read around it (the revert's own follow included), act for the person who asked.
    assert {(c.access_key_id, c.security_token) for c in new_emr_calls(emr)} == {
        (renewed.access_key_id, renewed.security_token)
    }


async def test_an_approved_change_acts_for_its_requester_and_a_denial_leaves_the_request_open(
    http, env, slack, emr, sts, clock
):
    fleet = "ray-9w2n4b6c8d0fgh1j"
    async with inprocess_raybot(env, clock) as raybot:
        await send(http, raybot, slack, "resize fleet group-01 replicas=21 max=21")  # above 20: needs approval
        await wait_new(slack, lambda c: c.method == "chat.postMessage" and "🕒" in c.args.get("text", ""))
        [asked] = issued_to(sts, ONCALL_ROLE)  # the request's read, through the on-call binding's role
        message = message_with(slack, world.ONCALL_CHANNEL, APPROVE_ACTION)
        click = button_payload(slack, message, world.ONCALL_CHANNEL, APPROVE_ACTION, user=world.LEAD)

        clock.now = asked.expires_at + 1  # 15 minutes later (duration: 900): the request is open, its role expired
        sts.deny(ONCALL_ROLE, times=1)
        mark(emr, slack)
        await post_interaction(http, raybot, click)
        note = await wait_new(slack, lambda c: c.method == "chat.postEphemeral")
        refused = sts.calls[-1]
        assert note.args["user"] == world.LEAD
        assert "NoPermission" in text_of(note.args) and refused.request_id in text_of(note.args)
        assert new_emr_calls(emr) == []  # not even the read: nothing was sent
        [record] = await raybot.services.store.history("fleet", 10)
        assert record.state == "awaiting_approval"  # the request stays open

        await post_interaction(
            http, raybot, button_payload(slack, message, world.ONCALL_CHANNEL, APPROVE_ACTION, user=world.LEAD)
        )
        await wait_new(
            slack, lambda c: c.method == "chat.postMessage" and "*fleet* change accepted" in c.args.get("text", "")
        )
        await wait_until_followed(emr, slack)
    _, approved = issued_to(sts, ONCALL_ROLE)
    # The approver's click, the requester's change: ActionTrail names the person who asked.
    assert approved.session_name == f"raybot-{world.ONCALL_USER}"
    [update] = [c for c in new_emr_calls(emr, "UpdateRayCluster") if c.path.endswith(fleet)]
    assert (update.access_key_id, update.security_token) == (approved.access_key_id, approved.security_token)


async def test_a_denial_at_the_send_fails_the_change_with_nothing_sent(http, env, slack, emr, sts, clock):
    # Credentials good for two minutes, and a lock that outlives the jump of the clock below.
    sts.add_role(EmulatedRole(PROD_ROLE, trusted=frozenset({AK_ID}), lifetime=120))
    async with inprocess_raybot(env | {"RAYBOT_LOCK_TTL_SECONDS": "300"}, clock) as raybot:
        emr.inject("latency", action="GetRayCluster", times=1, seconds=30)
        await send(http, raybot, slack, "resize prod WorkerGroup1=3", user=world.ADMIN, channel="C0PLATFORM")
        await emr.held("GetRayCluster")  # the read, signed with prod's role, is being answered
        [read_with] = issued_to(sts, PROD_ROLE)
        clock.now = read_with.expires_at - WAIT_BEFORE_SECONDS + 1  # by the send, the credential is too old
        sts.deny(PROD_ROLE, times=1)
        emr.release_hanging()
        failed = await wait_new(slack, lambda c: c.method == "chat.postMessage" and "❌" in c.args.get("text", ""))
        said = text_of(failed.args)
        assert "NoPermission" in said and sts.calls[-1].request_id in said and "nothing was sent" in said
        assert updates_of(emr) == []
        [record] = await raybot.services.store.history("prod", 10)
        assert (record.state, record.error_code, record.request_id) == (
            "failed",
            "NoPermission",
            sts.calls[-1].request_id,
        )
