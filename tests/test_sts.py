"""STS AssumeRole: the RPC signature against the official library, the STS emulator, and the role cache."""

from __future__ import annotations

import asyncio
import io
import logging
import ssl
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trustme
from alibabacloud_credentials.provider.ram_role_arn import RamRoleArnCredentialsProvider
from alibabacloud_credentials.utils import parameter_helper

from bot.config import ConfigError, parse_config
from bot.emr import signing
from bot.emr.client import EmrClient
from bot.emr.credentials import StaticCredentials
from bot.emr.errors import EmrError
from bot.emr.sts import (
    READY_RECHECK_SECONDS,
    REFRESH_BEFORE_SECONDS,
    WAIT_BEFORE_SECONDS,
    Acting,
    RamRole,
    RoleCredentials,
    StsClient,
    assume_role_failure,
    check_names,
)
from bot.emr.sts import session_name as session_name_for
from bot.logs import MASK, MAX_SECRETS, configure_logging, redact
from bot.permissions import Subject, acting_role
from bot.sandbox.emr_server import EmrEmulator
from bot.sandbox.sts_server import EmulatedRole, StsEmulator
from tests import e2e_world as world
from tests.e2e import FakeClock
from tests.harness import clean_env

REPO = Path(__file__).resolve().parents[1]

BASE_ID, BASE_SECRET = "LTAIraybotbase01", "raybot-base-secret-9f2c"
PROD = RamRole("acs:ram::1234567890123456:role/raybot-prod")
STAGING = RamRole("acs:ram::6543210987654321:role/raybot-staging", external_id="raybot-ext-1")
NOW = 1_800_000_000.0
WS, CLUSTER = "w-d2d82aa09155", "ray-uiulpgow9xljimm1"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def sts(clock: FakeClock):
    emulator = StsEmulator(
        access_keys={BASE_ID: BASE_SECRET},
        roles=[
            EmulatedRole(PROD.arn, trusted=frozenset({BASE_ID})),
            EmulatedRole(STAGING.arn, external_id="raybot-ext-1"),
        ],
        clock=clock,
    )
    emulator.start()
    yield emulator
    emulator.stop()


def roles_for(sts: StsEmulator, clock: FakeClock, observed: list | None = None, **options) -> RoleCredentials:
    client = StsClient(endpoint=sts.url, clock=clock)
    return RoleCredentials(
        StaticCredentials(BASE_ID, BASE_SECRET),
        client,
        clock=clock,
        observe=(lambda role, code: observed.append((role.name, code))) if observed is not None else None,
        **options,
    )


@pytest.fixture
def json_log():
    """raybot's own logging setup (JSON lines, the masking filter) writing to a buffer; restored afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    configure_logging("json", stream=out)
    yield out
    root.handlers[:] = handlers
    root.setLevel(level)


# --- the signature ---------------------------------------------------------------------------------


def test_rpc_signature_matches_the_official_library() -> None:
    # The RPC signature covers the parameters, not the host: a loopback endpoint that is never called.
    client = StsClient(endpoint="https://127.0.0.1:9", nonce=lambda: "0f6e1a4c-nonce")
    base = signing.Credential(BASE_ID, BASE_SECRET, "CAIS-base-token/with+odd=chars")
    for role in (PROD, STAGING, RamRole(PROD.arn, session_name="on call {user}")):
        params = client.request_params(base, role, session_name_for(role, "U0ONCALL1"), NOW)
        unsigned = {k: v for k, v in params.items() if k != "Signature"}
        oracle = parameter_helper.sign_string(
            parameter_helper.compose_string_to_sign("GET", unsigned), BASE_SECRET + "&"
        )
        assert params["Signature"] == oracle
        assert signing.rpc_string_to_sign("GET", params) == parameter_helper.compose_string_to_sign("GET", unsigned)


def test_rpc_encoding_is_pop_encoding() -> None:
    # STS's own encoding (not form encoding): a space is %20, * is %2A, ~ stays.
    assert signing.rpc_percent_encode("a b*c~d/e") == "a%20b%2Ac~d%2Fe"


def test_probe_names_tell_same_named_roles_apart() -> None:
    other = RamRole("acs:ram::6543210987654321:role/raybot-prod")
    assert check_names([PROD, STAGING]) == {PROD: "raybot-prod", STAGING: "raybot-staging"}
    assert check_names([PROD, other]) == {PROD: "1234567890123456/raybot-prod", other: "6543210987654321/raybot-prod"}


def test_session_names_fit_what_sts_accepts() -> None:
    assert session_name_for(PROD, "U0ONCALL1") == "raybot-U0ONCALL1"
    assert session_name_for(PROD, None) == "raybot-probe"
    assert session_name_for(RamRole(PROD.arn, session_name="oncall {user}"), "W0X") == "oncall-W0X"
    assert len(session_name_for(RamRole(PROD.arn, session_name="x" * 70), "U1")) == 64


# --- the emulator ----------------------------------------------------------------------------------


async def test_the_official_provider_assumes_a_role_from_the_emulator_over_tls(clock, monkeypatch, tmp_path) -> None:
    """The oracle: alibabacloud-credentials' own RAM-role provider (HTTPS only) is answered by the emulator."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    clock.now = time.time()  # the library stamps its request with the real clock
    emulator = StsEmulator(
        access_keys={BASE_ID: BASE_SECRET}, roles=[EmulatedRole(PROD.arn)], clock=clock, ssl_context=server_context
    )
    emulator.start()
    try:
        bundle = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(bundle))
        monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
        provider = RamRoleArnCredentialsProvider(
            access_key_id=BASE_ID,
            access_key_secret=BASE_SECRET,
            role_arn=PROD.arn,
            role_session_name="raybot-U0ONCALL1",
            sts_endpoint=emulator.host_port,
        )
        credentials = await provider.get_credentials_async()
        [issued] = emulator.issued
        assert credentials.get_access_key_id() == issued.access_key_id
        assert credentials.get_security_token() == issued.security_token
        assert issued.session_name == "raybot-U0ONCALL1" and issued.caller == BASE_ID
    finally:
        emulator.stop()


async def test_the_emulator_refuses_a_wrong_signature_and_a_replayed_nonce(sts, clock) -> None:
    client = StsClient(endpoint=sts.url, clock=clock, nonce=lambda: "same-nonce")
    with pytest.raises(EmrError) as wrong:
        await client.assume_role(signing.Credential(BASE_ID, "not-the-secret"), PROD, "raybot-U1")
    assert wrong.value.code == "SignatureDoesNotMatch" and wrong.value.request_id
    # STS quotes the string it signed, the caller's security token among the parameters: never shown or logged.
    assert "string to sign" not in str(wrong.value) and BASE_ID not in str(wrong.value)
    assert "the string the cloud signed is left out" in str(wrong.value)
    await client.assume_role(signing.Credential(BASE_ID, BASE_SECRET), PROD, "raybot-U1")
    with pytest.raises(EmrError) as replay:
        await client.assume_role(signing.Credential(BASE_ID, BASE_SECRET), PROD, "raybot-U1")
    assert replay.value.code == "SignatureNonceUsed"
    await client.aclose()


def test_a_signature_mismatch_never_repeats_the_string_sts_signed() -> None:
    from urllib.parse import quote

    token = "CAIS+tok/en=="
    quoted = quote(quote(token, safe=""), safe="")
    body = (
        '{"Code": "SignatureDoesNotMatch", "RequestId": "R-1", "Message": "Specified signature is not matched with '
        f'our calculation. server string to sign is:GET&%2F&AccessKeyId%3DSTS.x%26SecurityToken%3D{quoted}"}}'
    ).encode()
    error = assume_role_failure(PROD, 400, body, None)
    assert token not in str(error) and quoted not in str(error) and "SecurityToken" not in str(error)
    assert error.message == (
        f"raybot may not assume {PROD.name}: Specified signature is not matched with our calculation (the string "
        "the cloud signed is left out: it can carry credentials); nothing was sent"
    )
    plain = assume_role_failure(PROD, 403, b'{"Code": "NoPermission", "Message": "You are not authorized."}', None)
    assert plain.message == f"raybot may not assume {PROD.name}: You are not authorized.; nothing was sent"


@pytest.mark.parametrize(
    ("role", "session", "code", "status"),
    [
        (RamRole("acs:ram::1234567890123456:role/nobody"), "raybot-U1", "EntityNotExist.Role", 404),
        (RamRole(STAGING.arn), "raybot-U1", "NoPermission", 403),  # its trust policy wants an ExternalId
        (PROD, "x", "InvalidParameter.RoleSessionName", 400),
        (RamRole(PROD.arn, duration=7200), "raybot-U1", "InvalidParameter.DurationSeconds", 400),
    ],
)
async def test_the_emulator_says_no_as_sts_does(sts, clock, role, session, code, status) -> None:
    client = StsClient(endpoint=sts.url, clock=clock)
    with pytest.raises(EmrError) as caught:
        await client.assume_role(signing.Credential(BASE_ID, BASE_SECRET), role, session)
    await client.aclose()
    error = caught.value
    assert (error.code, error.status, error.action, error.sent) == (code, status, "AssumeRole", False)
    assert error.request_id == sts.calls[-1].request_id
    assert error.message.startswith(f"raybot may not assume {role.name}: ") and error.message.endswith(
        "nothing was sent"
    )


async def test_an_untrusted_caller_is_refused(clock) -> None:
    with StsEmulator(
        access_keys={BASE_ID: BASE_SECRET, "LTAIother": "other"},
        roles=[EmulatedRole(PROD.arn, trusted=frozenset({"LTAIother"}))],
        clock=clock,
    ) as emulator:
        client = StsClient(endpoint=emulator.url, clock=clock)
        with pytest.raises(EmrError) as caught:
            await client.assume_role(signing.Credential(BASE_ID, BASE_SECRET), PROD, "raybot-U1")
        await client.aclose()
        assert caught.value.code == "NoPermission" and "trust policy" in caught.value.message


# --- the cache -------------------------------------------------------------------------------------


async def test_credentials_are_kept_until_near_expiry_then_renewed_once_under_50_callers(sts, clock) -> None:
    observed: list = []
    roles = roles_for(sts, clock, observed)
    acting = Acting(PROD, "U0ONCALL1")
    first = await asyncio.gather(*(roles.credential(acting) for _ in range(50)))
    assert len(sts.assumed()) == 1 and len({c.access_key_id for c in first}) == 1
    [issued] = sts.issued
    assert first[0].security_token == issued.security_token and issued.session_name == "raybot-U0ONCALL1"

    clock.now = issued.expires_at - REFRESH_BEFORE_SECONDS - 1  # still fresh: no call
    await asyncio.gather(*(roles.credential(acting) for _ in range(50)))
    assert len(sts.assumed()) == 1

    # Inside the renewal window: everyone goes on with the old credential, and exactly one renewal runs.
    clock.now = issued.expires_at - REFRESH_BEFORE_SECONDS + 1
    during = await asyncio.gather(*(roles.credential(acting) for _ in range(50)))
    assert {c.access_key_id for c in during} == {issued.access_key_id}
    await roles.renewed()
    assert len(sts.issued) == 2
    renewed = await roles.credential(acting)
    assert renewed.access_key_id == sts.issued[1].access_key_id
    assert len(sts.assumed()) == 2

    # Too close to expiry: all 50 wait for one AssumeRole and get its credential.
    clock.now = sts.issued[1].expires_at - WAIT_BEFORE_SECONDS + 1
    latest = await asyncio.gather(*(roles.credential(acting) for _ in range(50)))
    assert len(sts.assumed()) == 3 and {c.access_key_id for c in latest} == {sts.issued[2].access_key_id}
    assert observed == [("raybot-prod", "OK")] * 3
    await roles.aclose()


async def test_one_assume_role_per_role_is_in_flight_when_50_people_ask_at_once(sts, clock) -> None:
    in_flight: dict[str, int] = {}
    most: dict[str, int] = {}

    class CountingStsClient(StsClient):
        async def assume_role(self, base, role, session_name):  # the real call, counted while it is in flight
            in_flight[role.name] = in_flight.get(role.name, 0) + 1
            most[role.name] = max(most.get(role.name, 0), in_flight[role.name])
            try:
                return await super().assume_role(base, role, session_name)
            finally:
                in_flight[role.name] -= 1

    roles = RoleCredentials(
        StaticCredentials(BASE_ID, BASE_SECRET), CountingStsClient(endpoint=sts.url, clock=clock), clock=clock
    )
    people = [f"U0P{i:03d}" for i in range(50)]
    credentials = await asyncio.gather(
        *(roles.credential(Acting(PROD, user)) for user in people),
        *(roles.credential(Acting(STAGING, user)) for user in people[:5]),
    )
    assert most == {"raybot-prod": 1, "raybot-staging": 1}  # one at a time per role, however many people ask
    assert len({c.access_key_id for c in credentials}) == 55  # and everyone got their own session
    assert {i.session_name for i in sts.issued if i.role_arn == PROD.arn} == {f"raybot-{u}" for u in people}
    await roles.aclose()


async def test_each_role_and_each_user_gets_its_own_session(sts, clock) -> None:
    roles = roles_for(sts, clock)
    prod_a, prod_b, staging_a = await asyncio.gather(
        roles.credential(Acting(PROD, "U0AAA")),
        roles.credential(Acting(PROD, "U0BBB")),
        roles.credential(Acting(STAGING, "U0AAA")),
    )
    assert len({prod_a.access_key_id, prod_b.access_key_id, staging_a.access_key_id}) == 3
    sessions = {(i.role_arn, i.session_name) for i in sts.issued}
    assert sessions == {(PROD.arn, "raybot-U0AAA"), (PROD.arn, "raybot-U0BBB"), (STAGING.arn, "raybot-U0AAA")}
    await roles.aclose()


async def test_a_denial_is_told_to_every_waiter_and_counted(sts, clock) -> None:
    observed: list = []
    roles = roles_for(sts, clock, observed)
    sts.deny(PROD.arn, times=1)
    results = await asyncio.gather(*(roles.credential(Acting(PROD, "U1")) for _ in range(10)), return_exceptions=True)
    assert all(isinstance(r, EmrError) and r.code == "NoPermission" for r in results)
    assert len(sts.calls) == 1 and observed == [("raybot-prod", "NoPermission")]
    assert results[0].request_id == sts.calls[0].request_id
    # Not cached: the next command asks again.
    await roles.credential(Acting(PROD, "U1"))
    assert len(sts.assumed()) == 1
    await roles.aclose()


async def test_every_credential_still_usable_is_masked_however_many_sessions(sts, clock, json_log) -> None:
    roles = roles_for(sts, clock)
    users = [f"U{i:04d}" for i in range(MAX_SECRETS)]  # 2 secrets a session: twice the masker's rotating bound
    await asyncio.gather(*(roles.credential(Acting(PROD, user)) for user in users))
    first = sts.issued[0]
    # One session renewed: the credential it replaced may still be signing a call, so it stays masked …
    clock.now = first.expires_at - REFRESH_BEFORE_SECONDS + 1
    await roles.credential(Acting(PROD, first.session_name.removeprefix("raybot-")))
    await roles.renewed()
    assert len(sts.issued) == len(users) + 1
    secrets = [s for i in sts.issued for s in (i.access_key_secret, i.security_token)]
    logging.getLogger("raybot.flow").warning("signed with %s", " ".join(secrets), extra={"cluster": secrets[-1]})
    line = json_log.getvalue().splitlines()[-1]
    assert all(secret not in line for secret in secrets) and line.count(MASK) == len(secrets) + 1

    # … until it expires: the next credential kept lets it go (and every other one expired with it).
    clock.now = first.expires_at + 1
    await roles.credential(Acting(STAGING, "U0LATE"))
    assert redact(first.access_key_secret) == first.access_key_secret
    assert redact(sts.issued[-2].security_token) == MASK  # the renewed one is good for an hour more
    await roles.aclose()
    assert redact(sts.issued[-1].security_token) == sts.issued[-1].security_token  # closed: nothing held


async def test_the_cache_keeps_the_most_recently_used_sessions_up_to_its_bound(sts, clock) -> None:
    roles = roles_for(sts, clock, max_sessions=3)
    for user in ("U1A", "U2B", "U3C", "U1A", "U4D"):  # U1A used again: U2B is the least recently used
        await roles.credential(Acting(PROD, user))
    assert roles.sessions == 3 and len(sts.assumed()) == 4
    for user in ("U1A", "U3C", "U4D"):
        await roles.credential(Acting(PROD, user))
    assert len(sts.assumed()) == 4  # all three still cached
    evicted = sts.issued[1]
    assert redact(evicted.security_token) == MASK  # evicted, not expired: a command may still sign with it
    await roles.credential(Acting(PROD, "U2B"))  # evicted: assumed again, and U1A goes
    assert roles.sessions == 3 and len(sts.assumed()) == 5 and sts.issued[-1].session_name == "raybot-U2B"
    await roles.credential(Acting(PROD, "U1A"))
    assert len(sts.assumed()) == 6
    await roles.aclose()


async def test_the_readiness_check_asks_sts_afresh_once_a_minute_and_leaves_the_cache_alone(sts, clock) -> None:
    observed: list = []
    roles = roles_for(sts, clock, observed)
    used = await roles.credential(Acting(PROD, "U0ONCALL1"))
    await asyncio.gather(*(roles.check(PROD) for _ in range(5)))  # one AssumeRole, whoever asks
    assert [c.session_name for c in sts.calls] == ["raybot-U0ONCALL1", "raybot-probe"]

    sts.deny(PROD.arn)  # the trust policy no longer lets raybot in
    clock.now += READY_RECHECK_SECONDS - 1
    await roles.check(PROD)  # the last answer stands for a minute: STS is not asked
    assert len(sts.calls) == 2
    clock.now += 1
    for _ in range(2):
        with pytest.raises(EmrError) as caught:
            await roles.check(PROD)
        assert caught.value.code == "NoPermission" and caught.value.request_id == sts.calls[-1].request_id
    assert len(sts.calls) == 3
    # Commands go on with the credential they hold (until it needs renewing, when STS will say no to them too).
    assert await roles.credential(Acting(PROD, "U0ONCALL1")) == used and len(sts.calls) == 3
    assert observed == [("raybot-prod", "OK"), ("raybot-prod", "OK"), ("raybot-prod", "NoPermission")]

    sts.clear_denials()
    clock.now += READY_RECHECK_SECONDS
    await roles.check(PROD)
    assert roles.sessions == 1  # the checks' credentials were thrown away, never cached
    await roles.aclose()


async def test_emr_calls_are_signed_with_the_role_credentials(sts, clock, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    emr = EmrEmulator(access_keys={BASE_ID: BASE_SECRET}, clusters=world.SEED, clock=clock)
    # The EMR emulator takes whatever the STS emulator hands out, as the real cloud does.
    sts._on_issue = lambda i: emr.accept_sts_credential(i.access_key_id, i.access_key_secret, i.security_token)
    emr.start()
    try:
        client = EmrClient(
            StaticCredentials(BASE_ID, BASE_SECRET),
            region="cn-hangzhou",
            endpoint=emr.url,
            now=lambda: datetime.fromtimestamp(clock(), UTC),
            roles=roles_for(sts, clock),
        )
        async with client:
            await client.list_clusters(WS, acting=Acting(PROD, "U0ONCALL1"))
            await client.list_clusters(WS)
        [issued] = sts.issued
        with_role, without = emr.calls
        assert (with_role.access_key_id, with_role.security_token) == (issued.access_key_id, issued.security_token)
        assert (without.access_key_id, without.security_token) == (BASE_ID, None)
        text = caplog.text
        assert issued.access_key_secret not in text and issued.security_token not in text
    finally:
        emr.stop()


def test_the_binding_that_grants_the_action_names_the_role() -> None:
    config = parse_config(
        f"""
region: cn-hangzhou
clusters:
  prod: {{workspace: w-prod, cluster: ray-1, role_arn: "{PROD.arn}"}}
roles:
  viewer: {{actions: [list, show]}}
  oncall: {{actions: [list, show, resize]}}
channels:
  C0ONCALL01:
    - {{role: viewer}}
    - {{role: oncall, users: [U0ONCALL1], role_arn: "acs:ram::1234567890123456:role/raybot-oncall"}}
  C0OTHER001:
    - {{role: viewer, role_arn: "acs:ram::1234567890123456:role/raybot-readonly"}}
"""
    )
    oncall = Subject(user_id="U0ONCALL1", channel_id="C0ONCALL01")
    outsider = Subject(user_id="U0OUTSIDE", channel_id="C0ONCALL01")
    # The on-call binding grants resize and names a role: it acts; for show too, as it grants show as well.
    assert acting_role(config, oncall, "resize", "prod").name == "raybot-oncall"
    assert acting_role(config, oncall, "show", "prod").name == "raybot-oncall"
    # Someone the on-call binding does not cover reads through the cluster's role.
    assert acting_role(config, outsider, "show", "prod") == PROD
    # Another channel's read-only binding wins for calls made on its behalf.
    assert acting_role(config, Subject("U0OUTSIDE", "C0OTHER001"), "list", "prod").name == "raybot-readonly"


def test_config_roles_per_cluster_workspace_and_binding() -> None:
    config = parse_config(
        f"""
region: cn-hangzhou
sts_endpoint: http://127.0.0.1:9
workspaces:
  w-shared: {{role_arn: "acs:ram::1111111111111111:role/raybot-shared"}}
clusters:
  prod: {{workspace: w-prod, cluster: ray-1, role_arn: "{PROD.arn}", duration: 900}}
  staging: {{workspace: w-stg, cluster: ray-2, role_arn: "{STAGING.arn}", external_id: raybot-ext-1}}
  shared: {{workspace: w-shared, cluster: ray-3}}
  plain: {{workspace: w-plain, cluster: ray-4}}
roles:
  admin: {{actions: ["*"]}}
channels:
  C0ONCALL01:
    - {{role: admin, role_arn: "acs:ram::2222222222222222:role/raybot-oncall", session_name: "oncall-{{user}}"}}
"""
    )
    assert config.ram_role("prod") == RamRole(PROD.arn, duration=900)
    assert config.ram_role("staging") == RamRole(STAGING.arn, external_id="raybot-ext-1")
    assert config.ram_role("shared").name == "raybot-shared"
    assert config.ram_role("plain") is None
    binding = config.channels["C0ONCALL01"][0]
    assert config.ram_role("prod", binding).name == "raybot-oncall"
    assert session_name_for(config.ram_role("prod", binding), "U0X") == "oncall-U0X"
    assert len(config.ram_roles()) == 4


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ('role_arn: "arn:aws:iam::1:role/x"', "is not a RAM role ARN"),
        ('role_arn: "acs:ram::1:role/x", duration: 600', "greater than or equal to 900"),
        ('role_arn: "acs:ram::1:role/x", duration: 7200', "less than or equal to 3600"),
        ('role_arn: "acs:ram::1:role/x", session_name: "who am i"', "session_name"),
        ("external_id: abc", "without role_arn"),
    ],
)
def test_config_role_mistakes_are_named(entry: str, problem: str) -> None:
    text = f"""
region: cn-hangzhou
clusters:
  prod: {{workspace: w-1, cluster: ray-1, {entry}}}
roles:
  admin: {{actions: ["*"]}}
channels:
  C0ONCALL01: [{{role: admin}}]
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert problem in str(caught.value) and "clusters.prod" in str(caught.value)


def test_check_config_probe_assumes_each_role_once(tmp_path) -> None:
    config = tmp_path / "raybot.yaml"
    config.write_text(
        f"""
region: cn-hangzhou
clusters:
  prod: {{workspace: w-1, cluster: ray-1, role_arn: "{PROD.arn}"}}
  staging: {{workspace: w-2, cluster: ray-2, role_arn: "{STAGING.arn}", external_id: raybot-ext-1}}
  prod-b: {{workspace: w-1, cluster: ray-3, role_arn: "{PROD.arn}"}}
roles:
  admin: {{actions: ["*"]}}
channels:
  C0ONCALL01: [{{role: admin}}]
"""
    )
    with StsEmulator(
        access_keys={BASE_ID: BASE_SECRET},
        roles=[EmulatedRole(PROD.arn), EmulatedRole(STAGING.arn, external_id="raybot-ext-1")],
    ) as emulator:
        # raybot's own credentials come from the default chain, as in production: a separate process, its environment.
        env = clean_env(
            ALIBABA_CLOUD_ACCESS_KEY_ID=BASE_ID,
            ALIBABA_CLOUD_ACCESS_KEY_SECRET=BASE_SECRET,
            RAYBOT_STS_ENDPOINT=emulator.url,
            RAYBOT_DATABASE=str(tmp_path / "raybot.db"),
        )

        def probe() -> subprocess.CompletedProcess:
            command = [sys.executable, "-m", "bot.cli", "check-config", "--probe", str(config)]
            return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)

        emulator.deny(PROD.arn, code="EntityNotExist.Role", message=f"The role not exists: {PROD.arn}.", status=404)
        refused_run = probe()
        assert refused_run.returncode == 1, refused_run.stderr
        out = refused_run.stdout
        assert f"roles: probed through {emulator.url}: 1 of 2 assumed\n" in out
        assert "assumed through" not in out
        [refused] = [c for c in emulator.calls if c.role_arn == PROD.arn]
        assert f"{PROD.arn}: EntityNotExist.Role: raybot may not assume raybot-prod" in out
        assert f"(RequestId {refused.request_id})" in out
        assert f"{STAGING.arn}: ok" in out
        assert len(emulator.calls) == 2  # each distinct role once
        assert BASE_SECRET not in out + refused_run.stderr
        assert all(i.access_key_secret not in out + refused_run.stderr for i in emulator.issued)

        emulator.clear_denials()
        both = probe()
        assert both.returncode == 0 and f"roles: probed through {emulator.url}: 2 of 2 assumed\n" in both.stdout

        emulator.deny()
        none = probe()
        assert none.returncode == 1 and f"roles: probed through {emulator.url}: 0 of 2 assumed\n" in none.stdout
        assert f"{STAGING.arn}: NoPermission: raybot may not assume raybot-staging" in none.stdout


def test_the_deploy_policies_of_least_privilege() -> None:
    import json

    ram = Path(__file__).resolve().parents[1] / "deploy" / "ram"

    def actions(name: str) -> set[str]:
        policy = json.loads((ram / name).read_text(encoding="utf-8"))
        assert policy["Version"] == "1" and {s["Effect"] for s in policy["Statement"]} == {"Allow"}
        found = set()
        for statement in policy["Statement"]:
            found |= {statement["Action"]} if isinstance(statement["Action"], str) else set(statement["Action"])
        return found

    calls = {"GetRayCluster", "ListRayCluster", "UpdateRayCluster", "StartRayCluster", "StopRayCluster"}
    assert actions("operator-role-policy.json") == {f"emr-serverless-spark:{a}" for a in calls}
    assert actions("viewer-role-policy.json") == {
        "emr-serverless-spark:GetRayCluster",
        "emr-serverless-spark:ListRayCluster",
    }
    assert actions("raybot-assume-policy.json") == {"sts:AssumeRole"}
    assert actions("trust-policy.json") == {"sts:AssumeRole"}
    trust = json.loads((ram / "trust-policy.json").read_text(encoding="utf-8"))["Statement"][0]
    assert set(trust["Principal"]) == {"RAM"} and "sts:ExternalId" in trust["Condition"]["StringEquals"]
    assume = json.loads((ram / "raybot-assume-policy.json").read_text(encoding="utf-8"))["Statement"][0]
    assert all(r.startswith("acs:ram::") and ":role/" in r for r in assume["Resource"])
