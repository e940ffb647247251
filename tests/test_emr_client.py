"""The EMR client against the loopback emulator (and, for pure edge cases, httpx.MockTransport)."""

from __future__ import annotations

import json
import logging
import re
import socket
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from bot.emr import signing
from bot.emr.client import AiohttpTransport, EmrClient, backoff_delay, error_from_response, parse_endpoint, snippet
from bot.emr.credentials import DefaultCredentials, StaticCredentials
from bot.emr.errors import EmrError
from bot.emr.models import UpdateRayClusterRequest, WorkerGroup, dumps_body
from bot.sandbox.emr_server import EmrEmulator

REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "bot" / "sandbox" / "seed_clusters.json"
VECTORS = json.loads((Path(__file__).with_name("fixtures") / "acs3_vectors.json").read_text())
WS = "w-d2d82aa09155"
SMALL = "ray-uiulpgow9xljimm1"
BIG = "ray-9w2n4b6c8d0fgh1j"
KEY_ID, KEY_SECRET = "testid", "testsecret"
ORACLE_ID, ORACLE_SECRET = "oracleid", "oraclesecret"
STS_ID, STS_SECRET, STS_TOKEN = "STS.NUx9k2", "sts-secret-value-4c1f", "sts-token-value-CAIS8a7b"
PROXY_VARS = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
)


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")


@pytest.fixture
def emulator():
    emu = EmrEmulator(
        access_keys={
            KEY_ID: KEY_SECRET,
            ORACLE_ID: ORACLE_SECRET,
            STS_ID: STS_SECRET,
            "rotated-1": "secret-1",
            "rotated-2": "secret-2",
        },
        sts_tokens={STS_TOKEN: STS_ID},
    )
    emu.seed_file(SEED)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


class RecordedSleep:
    """An instantaneous sleep that remembers what it was asked to wait."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
async def make_client(emulator):
    clients: list[EmrClient] = []
    base = emulator.url

    def make(credentials=None, **options) -> EmrClient:
        client = EmrClient(
            credentials or StaticCredentials(KEY_ID, KEY_SECRET), region="cn-hangzhou", endpoint=base, **options
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


# -- the actions -----------------------------------------------------------------------------------


async def test_get_cluster_signs_and_reads_the_cluster(make_client, emulator):
    cluster = await make_client().get_cluster(WS, SMALL)

    assert cluster.cluster_id == SMALL
    assert cluster.group_names() == ["WorkerGroup1", "WorkerGroup2"]
    (call,) = emulator.calls_for("GetRayCluster")
    assert call.status == 200
    assert call.method == "GET"
    assert call.path == f"/api/v1/workspaces/{WS}/rayCluster/{SMALL}"
    assert call.headers["x-acs-version"] == "2023-08-08"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", call.headers["x-acs-date"])
    assert call.headers["host"] == emulator.url.split("://", 1)[1]
    assert "content-type" not in signing.parse_authorization(call.headers["authorization"])["SignedHeaders"]
    assert cluster.request_id == call.request_id


async def test_list_clusters_fetches_every_page(make_client, emulator):
    extra = [
        {"workspaceId": WS, "clusterId": f"ray-extra{i:02d}", "name": f"extra-{i}", "state": "Running"}
        for i in range(7)
    ]
    emulator.seed(extra)

    clusters = await make_client().list_clusters(WS, page_size=3)

    ids = [c.cluster_id for c in clusters]
    assert len(ids) == len(set(ids)) == 4 + 7
    assert {f"ray-extra{i:02d}" for i in range(7)} <= set(ids)
    pages = [call.query["pageNum"] for call in emulator.calls_for("ListRayCluster")]
    assert pages == ["1", "2", "3", "4"]
    assert {call.query["pageSize"] for call in emulator.calls_for("ListRayCluster")} == {"3"}


async def test_update_round_trips_unicode_as_utf8(make_client, emulator):
    client = make_client()
    name, description = "推理集群-🚀", "中文描述 with emoji 😀 and quotes \"'"
    answer = await client.update_cluster(WS, SMALL, UpdateRayClusterRequest(name=name, description=description))

    (call,) = emulator.calls_for("UpdateRayCluster")
    assert call.headers["content-type"] == "application/json; charset=utf-8"
    assert call.body == dumps_body({"description": description, "name": name})
    assert name.encode("utf-8") in call.body and b"\\u" not in call.body
    assert "workerSpec" not in call.json
    assert answer.cluster_id == SMALL and answer.request_id == call.request_id
    again = await client.get_cluster(WS, SMALL)
    assert (again.name, again.description) == (name, description)


async def test_stop_and_start(make_client, emulator):
    client = make_client()
    stopped = await client.stop_cluster(WS, SMALL)
    started = await client.start_cluster(WS, SMALL, client_token="tok-123")

    assert stopped.request_id and started.request_id
    (stop,) = emulator.calls_for("StopRayCluster")
    (start,) = emulator.calls_for("StartRayCluster")
    assert stop.path.endswith(f"/rayCluster/{SMALL}/stop") and stop.method == "POST"
    assert start.path.endswith(f"/rayCluster/{SMALL}/start")
    assert start.json == {"clientToken": "tok-123"}
    assert stop.status == start.status == 200


async def test_region_per_call_selects_the_regional_endpoint():
    hosts: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        hosts.append(request.headers["host"])
        return httpx.Response(200, json={"clusterId": "c", "requestId": "r"})

    async with EmrClient(
        StaticCredentials(KEY_ID, KEY_SECRET), region="cn-hangzhou", transport=httpx.MockTransport(answer)
    ) as client:
        await client.get_cluster(WS, "c")
        await client.get_cluster(WS, "c", region="ap-southeast-1")
    assert hosts == [
        "emr-serverless-spark.cn-hangzhou.aliyuncs.com",
        "emr-serverless-spark.ap-southeast-1.aliyuncs.com",
    ]


def test_transport_takes_proxies_from_the_environment_once_per_origin(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    transport = AiohttpTransport()
    assert transport._proxy_for(httpx.URL("https://emr-serverless-spark.cn-hangzhou.aliyuncs.com/x")) == (
        "http://proxy.internal:3128"
    )
    assert transport._proxy_for(httpx.URL("http://127.0.0.1:9000/x")) is None
    monkeypatch.delenv("HTTPS_PROXY")
    assert transport._proxy_for(httpx.URL("https://emr-serverless-spark.cn-hangzhou.aliyuncs.com/y")) is not None


def test_endpoint_may_carry_a_scheme():
    assert parse_endpoint("127.0.0.1:9000").base_url == "https://127.0.0.1:9000"
    plain = parse_endpoint("http://127.0.0.1:9000/")
    assert (plain.base_url, plain.host) == ("http://127.0.0.1:9000", "127.0.0.1:9000")
    with pytest.raises(ValueError):
        parse_endpoint("ftp://example.com")


@pytest.mark.parametrize("vector", VECTORS["vectors"][:2], ids=lambda v: v["name"])
async def test_client_signature_matches_the_shared_vectors(vector):
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"clusterId": SMALL, "requestId": "r"})

    headers = vector["signed_headers"]
    async with EmrClient(
        StaticCredentials(VECTORS["ak_id"], VECTORS["ak_secret"]),
        region="cn-hangzhou",
        now=lambda: datetime.strptime(headers["x-acs-date"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC),
        nonce=lambda: headers["x-acs-signature-nonce"],
        transport=httpx.MockTransport(answer),
    ) as client:
        if vector["method"] == "POST":
            body = UpdateRayClusterRequest.model_validate(json.loads(vector["body"]))
            await client.update_cluster(WS, SMALL, body)
        else:
            await client.get_cluster(WS, SMALL)
    (request,) = seen
    assert request.headers["authorization"] == vector["authorization"]
    assert request.content == vector["body"].encode()


# -- faults, retries, deadline ---------------------------------------------------------------------


async def test_5xx_twice_then_success_retries_with_fresh_signatures(make_client, emulator):
    sleep = RecordedSleep()
    emulator.inject("5xx", times=2, action="GetRayCluster")
    client = make_client(sleep=sleep, random=lambda: 0.5)

    answer = await client.get_cluster(WS, SMALL)

    calls = emulator.calls_for("GetRayCluster")
    assert [c.status for c in calls] == [503, 503, 200]
    assert len({c.headers["x-acs-signature-nonce"] for c in calls}) == 3
    assert len({signing.parse_authorization(c.headers["authorization"])["Signature"] for c in calls}) == 3
    assert sleep.delays == [backoff_delay(1, 0.5), backoff_delay(2, 0.5)] == [0.1, 0.2]
    assert answer.cluster_id == SMALL


async def test_an_update_answered_5xx_is_not_sent_again(make_client, emulator):
    """A 5xx may follow an update the service applied: sending it again could apply it twice. The flow reads."""
    sleep = RecordedSleep()
    emulator.inject("5xx", times=2, action="UpdateRayCluster")
    client = make_client(sleep=sleep, random=lambda: 0.5)

    with pytest.raises(EmrError) as caught:
        await client.update_cluster(WS, SMALL, UpdateRayClusterRequest(description="once"))

    assert [c.status for c in emulator.calls_for("UpdateRayCluster")] == [503]
    assert caught.value.maybe_applied and sleep.delays == []


async def test_a_throttled_update_is_sent_again_with_fresh_signatures(make_client, emulator):
    """Throttling means the service did not apply it: retrying is safe, and re-signed each time."""
    sleep = RecordedSleep()
    emulator.inject("throttle", times=2, action="UpdateRayCluster")
    client = make_client(sleep=sleep, random=lambda: 0.5)

    answer = await client.update_cluster(WS, SMALL, UpdateRayClusterRequest(description="retry me"))

    calls = emulator.calls_for("UpdateRayCluster")
    assert [c.status for c in calls][-1] == 200 and len(calls) == 3
    assert len({c.headers["x-acs-signature-nonce"] for c in calls}) == 3
    assert len({c.body for c in calls}) == 1
    assert answer.request_id == calls[-1].request_id


async def test_persistent_throttling_gives_up_with_the_service_error(make_client, emulator):
    sleep = RecordedSleep()
    emulator.inject("throttle", action="GetRayCluster")
    client = make_client(sleep=sleep, random=lambda: 1.0, max_attempts=4)

    with pytest.raises(EmrError) as caught:
        await client.get_cluster(WS, SMALL)

    calls = emulator.calls_for("GetRayCluster")
    error = caught.value
    assert (error.code, error.status, error.retryable) == ("Throttling.User", 400, True)
    assert error.request_id == calls[-1].request_id and error.request_id
    assert len(calls) == 4
    assert sleep.delays == [0.2, 0.4, 0.8]
    # What a person is told: which cluster, and how many attempts were made.
    assert (error.attempts, error.cluster_id) == (4, SMALL)


async def test_backoff_is_capped_and_full_jitter():
    assert backoff_delay(10, 0.999) < 2.0
    assert backoff_delay(10, 0.5) == 1.0
    assert backoff_delay(1, 0.0) == 0.0


async def test_hang_ends_in_a_timeout_within_the_deadline(make_client, emulator):
    emulator.inject("hang", action="GetRayCluster")
    client = make_client(deadline=0.5, read_timeout=5.0, sleep=RecordedSleep())

    with pytest.raises(EmrError) as caught:
        await client.get_cluster(WS, SMALL)

    assert (caught.value.code, caught.value.retryable, caught.value.status) == ("Timeout", True, None)
    assert "0.5 s deadline" in caught.value.message


async def test_read_timeout_per_attempt_is_retried(make_client, emulator):
    sleep = RecordedSleep()
    emulator.inject("hang", times=1, action="GetRayCluster")
    client = make_client(deadline=30.0, read_timeout=0.5, sleep=sleep)

    cluster = await client.get_cluster(WS, SMALL)

    assert cluster.cluster_id == SMALL
    calls = emulator.calls_for("GetRayCluster")
    assert calls[0].status == 0  # the hung attempt is still unanswered on the server
    assert calls[-1].status == 200 and len(sleep.delays) == len(calls) - 1 >= 1


async def test_latency_within_the_deadline_still_succeeds(make_client, emulator):
    emulator.inject("latency", times=1, seconds=0.05)
    cluster = await make_client().get_cluster(WS, SMALL)
    assert cluster.cluster_id == SMALL


async def test_not_json_is_an_invalid_response(make_client, emulator):
    emulator.inject("not_json", action="GetRayCluster")
    client = make_client(sleep=RecordedSleep())

    with pytest.raises(EmrError) as caught:
        await client.get_cluster(WS, SMALL)

    error = caught.value
    assert error.code == "InvalidResponse"
    assert error.status is not None and f"HTTP {error.status}" in error.message
    assert len(error.message) < 400


async def test_unknown_cluster_is_not_retried(make_client, emulator):
    sleep = RecordedSleep()
    with pytest.raises(EmrError) as caught:
        await make_client(sleep=sleep).get_cluster(WS, "ray-doesnotexist")

    (call,) = emulator.calls_for("GetRayCluster")
    assert caught.value.retryable is False
    assert 400 <= caught.value.status < 500
    assert caught.value.code == call.code and caught.value.request_id == call.request_id
    assert sleep.delays == []


async def test_invalid_body_is_not_retried(make_client, emulator):
    sleep = RecordedSleep()
    # Bypass raybot's own validation to see the service's answer to a body it rejects.
    bad = UpdateRayClusterRequest.model_construct(
        worker_spec=[WorkerGroup(group_name="WorkerGroup1", replica=5, min_replica=9, max_replica=2)]
    )
    with pytest.raises(EmrError) as caught:
        await make_client(sleep=sleep).update_cluster(WS, SMALL, bad)

    (call,) = emulator.calls_for("UpdateRayCluster")
    assert caught.value.retryable is False and caught.value.status == call.status and 400 <= call.status < 500
    assert caught.value.request_id == call.request_id
    assert sleep.delays == []


async def test_connection_refused_is_retried_then_reported():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleep = RecordedSleep()
    async with EmrClient(
        StaticCredentials(KEY_ID, KEY_SECRET), region="cn-hangzhou", endpoint=f"http://127.0.0.1:{port}", sleep=sleep
    ) as client:
        with pytest.raises(EmrError) as caught:
            await client.get_cluster(WS, SMALL)
    assert (caught.value.code, caught.value.retryable, caught.value.status) == ("ConnectionError", True, None)
    assert len(sleep.delays) == 3


def test_error_bodies_are_parsed_in_either_case():
    lower = error_from_response(
        "X", 403, {}, b'{"requestId":"r1","code":"Forbidden.RAM","message":"no","recommend":"https://x"}'
    )
    assert (lower.code, lower.message, lower.request_id, lower.recommend) == ("Forbidden.RAM", "no", "r1", "https://x")
    upper = error_from_response("X", 400, {"x-acs-request-id": "hdr"}, b'{"Code":"Throttling","Message":"slow"}')
    assert (upper.code, upper.request_id, upper.retryable) == ("Throttling", "hdr", True)
    html = error_from_response("X", 502, {"x-acs-request-id": "h2"}, b"<html>\n<b>Bad\x00 gateway</b>" + b"x" * 5000)
    assert (html.code, html.request_id, html.retryable) == ("InvalidResponse", "h2", True)
    assert "\x00" not in html.message and "\n" not in html.message and len(html.message) < 300


def test_a_signature_mismatch_never_repeats_the_headers_the_cloud_signed():
    body = (
        b'{"Code":"SignatureDoesNotMatch","RequestId":"R-9","Message":"The request signature does not conform to '
        b'Alibaba Cloud standards. server string to sign is:POST\\n/api/v1/x\\nx-acs-security-token:CAIS%2Btok"}'
    )
    error = error_from_response("UpdateRayCluster", 400, {}, body)
    assert "CAIS" not in error.message and "security-token" not in error.message
    assert error.message == (
        "The request signature does not conform to Alibaba Cloud standards (the string the cloud signed is left "
        "out: it can carry credentials)"
    )


def test_snippet_is_short_and_printable():
    assert snippet(b"a\r\n\tb\x1b[31m") == "a b [31m"
    assert snippet("é".encode() * 500).endswith("…")


async def test_2xx_that_is_not_the_expected_json_is_an_error():
    bodies = iter([b"<html>ok</html>", b"[1, 2]", b'{"rayClusters": "nope"}'])

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=next(bodies), headers={"x-acs-request-id": "rid-1"})

    async with EmrClient(
        StaticCredentials(KEY_ID, KEY_SECRET), region="cn-hangzhou", transport=httpx.MockTransport(answer)
    ) as client:
        for _ in range(3):
            with pytest.raises(EmrError) as caught:
                await client.list_clusters(WS)
            assert (caught.value.code, caught.value.request_id, caught.value.retryable) == (
                "InvalidResponse",
                "rid-1",
                False,
            )


async def test_list_without_total_count_stops_at_a_short_page_and_never_runs_away():
    def short_pages(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["pageNum"])
        count = 2 if page < 3 else 1
        return httpx.Response(200, json={"rayClusters": [{"clusterId": f"c{page}-{i}"} for i in range(count)]})

    def endless(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"rayClusters": [{"clusterId": "same"}], "totalCount": 10**9})

    async with EmrClient(
        StaticCredentials(KEY_ID, KEY_SECRET), region="x", transport=httpx.MockTransport(short_pages)
    ) as client:
        assert len(await client.list_clusters(WS, page_size=2)) == 5
    async with EmrClient(
        StaticCredentials(KEY_ID, KEY_SECRET), region="x", transport=httpx.MockTransport(endless)
    ) as client:
        with pytest.raises(EmrError) as caught:
            await client.list_clusters(WS, page_size=1)
    assert caught.value.code == "InvalidResponse"


# -- read-modify-write of a large cluster ----------------------------------------------------------


async def test_fifty_groups_change_one_and_send_the_rest_byte_identical(make_client, emulator):
    client = make_client()
    stored = emulator.cluster(WS, BIG)["workerSpec"]
    cluster = await client.get_cluster(WS, BIG)
    editable = cluster.editable()
    groups = editable["workerSpec"]
    assert len(groups) == 50
    target = groups[17]["groupName"]
    changed = [dict(g, replica=(g.get("replica") or 1) + 1) if g["groupName"] == target else g for g in groups]
    body = UpdateRayClusterRequest.model_validate({**editable, "workerSpec": changed})

    await client.update_cluster(WS, BIG, body)

    (call,) = emulator.calls_for("UpdateRayCluster")
    sent = call.json["workerSpec"]
    assert len(sent) == 50
    for before, after in zip(stored, sent, strict=True):
        if before["groupName"] == target:
            assert after["replica"] == before.get("replica", 1) + 1
        else:
            assert dumps_body(after) == dumps_body(before)
    reread = await client.get_cluster(WS, BIG)
    assert reread.group(target).replica == (cluster.group(target).replica or 1) + 1


async def test_unknown_group_field_survives_read_update_read(make_client, emulator):
    client = make_client()
    cluster = await client.get_cluster(WS, SMALL)
    editable = cluster.editable()
    unknown = editable["workerSpec"][0]["nodeSelector"]
    editable["workerSpec"][1]["replica"] = 2

    await client.update_cluster(WS, SMALL, UpdateRayClusterRequest.model_validate(editable))

    (call,) = emulator.calls_for("UpdateRayCluster")
    assert call.json["workerSpec"][0]["nodeSelector"] == unknown
    reread = await client.get_cluster(WS, SMALL)
    assert reread.editable()["workerSpec"][0]["nodeSelector"] == unknown
    assert reread.group("WorkerGroup2").replica == 2


# -- credentials -----------------------------------------------------------------------------------


async def test_sts_credentials_are_accepted(make_client, emulator):
    cluster = await make_client(StaticCredentials(STS_ID, STS_SECRET, STS_TOKEN)).get_cluster(WS, SMALL)

    assert cluster.cluster_id == SMALL
    (call,) = emulator.calls_for("GetRayCluster")
    assert call.headers["x-acs-security-token"] == STS_TOKEN
    assert call.headers["x-acs-accesskey-id"] == STS_ID
    signed = signing.parse_authorization(call.headers["authorization"])["SignedHeaders"].split(";")
    assert "x-acs-security-token" in signed


class RotatingCredentials:
    """A provider that hands out the next key on every call, as STS rotation does."""

    def __init__(self, keys: list[tuple[str, str]]) -> None:
        self.keys = list(keys)
        self.asked = 0

    async def get_credential(self) -> signing.Credential:
        key_id, secret = self.keys[min(self.asked, len(self.keys) - 1)]
        self.asked += 1
        return signing.Credential(key_id, secret)


async def test_a_rotated_credential_is_used_on_the_next_call(make_client, emulator):
    provider = RotatingCredentials([("rotated-1", "secret-1"), ("rotated-2", "secret-2")])
    client = make_client(provider)

    await client.get_cluster(WS, SMALL)
    await client.get_cluster(WS, SMALL)

    used = [signing.parse_authorization(c.headers["authorization"])["Credential"] for c in emulator.calls]
    assert used == ["rotated-1", "rotated-2"]
    assert [c.status for c in emulator.calls] == [200, 200]


class ChainProvider:
    """An alibabacloud-credentials provider (ICredentialsProvider shape) returning a new STS key per call."""

    def __init__(self) -> None:
        self.calls = 0

    def get_credentials(self):
        raise AssertionError("raybot must use the async API")

    async def get_credentials_async(self):
        from alibabacloud_credentials.provider.refreshable import Credentials

        self.calls += 1
        return Credentials(
            access_key_id=STS_ID,
            access_key_secret=STS_SECRET,
            security_token=STS_TOKEN if self.calls == 1 else "unknown-token",
            provider_name="test",
        )

    def get_provider_name(self) -> str:
        return "test"


async def test_default_credentials_ask_the_chain_on_every_call(make_client, emulator):
    from alibabacloud_credentials.client import Client as CredentialClient

    chain = ChainProvider()
    client = make_client(DefaultCredentials(CredentialClient(provider=chain)), sleep=RecordedSleep())

    await client.get_cluster(WS, SMALL)
    with pytest.raises(EmrError) as caught:
        await client.get_cluster(WS, SMALL)

    assert chain.calls == 2
    assert [c.headers["x-acs-security-token"] for c in emulator.calls] == [STS_TOKEN, "unknown-token"]
    assert caught.value.status in (400, 401, 403) and not caught.value.retryable


async def test_default_credentials_read_the_environment_chain(monkeypatch):
    from alibabacloud_credentials.utils import auth_util

    monkeypatch.setattr(auth_util, "environment_access_key_id", "env-id")
    monkeypatch.setattr(auth_util, "environment_access_key_secret", "env-secret")
    monkeypatch.setattr(auth_util, "environment_security_token", None)

    credential = await DefaultCredentials().get_credential()

    assert (credential.access_key_id, credential.access_key_secret, credential.security_token) == (
        "env-id",
        "env-secret",
        None,
    )


async def test_credentials_failure_says_what_to_configure(make_client, emulator):
    from alibabacloud_credentials.client import Client as CredentialClient
    from alibabacloud_credentials.exceptions import CredentialException

    class Broken(ChainProvider):
        async def get_credentials_async(self):
            raise CredentialException("unable to load credentials from any of the providers in the chain")

    client = make_client(DefaultCredentials(CredentialClient(provider=Broken())))
    with pytest.raises(EmrError) as caught:
        await client.get_cluster(WS, SMALL)

    error = caught.value
    assert (error.code, error.action, error.retryable) == ("CredentialsError", "GetRayCluster", False)
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in error.message
    assert emulator.calls == []


async def test_logs_carry_no_secret_token_or_authorization(make_client, emulator, caplog):
    caplog.set_level(logging.DEBUG)
    emulator.inject("5xx", times=1, action="GetRayCluster")
    emulator.inject("throttle", action="StopRayCluster")
    client = make_client(StaticCredentials(STS_ID, STS_SECRET, STS_TOKEN), sleep=RecordedSleep())

    await client.get_cluster(WS, SMALL)
    await client.update_cluster(WS, SMALL, UpdateRayClusterRequest(description="logged"))
    with pytest.raises(EmrError):
        await client.stop_cluster(WS, SMALL)
    with pytest.raises(EmrError):
        await client.get_cluster(WS, "ray-doesnotexist")

    emr_records = [r for r in caplog.records if r.name == "raybot.emr"]
    assert any("attempt=2" in r.getMessage() for r in emr_records)
    assert any("Throttling.User" in r.getMessage() for r in emr_records)
    text = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    for secret in (STS_SECRET, STS_TOKEN, "authorization", "Authorization", "ACS3-HMAC-SHA256 Credential"):
        assert secret not in text


# -- byte equality with the official SDK -----------------------------------------------------------


def test_same_bytes_and_signed_headers_as_the_official_sdk(emulator, monkeypatch):
    import asyncio

    from alibabacloud_emr_serverless_spark20230808 import models as sdk_models
    from alibabacloud_emr_serverless_spark20230808.client import Client as SdkClient
    from alibabacloud_tea_openapi.models import Config
    from alibabacloud_tea_openapi.utils import Utils

    fixed = datetime.now(UTC).replace(microsecond=0)
    stamp = fixed.strftime("%Y-%m-%dT%H:%M:%SZ")
    monkeypatch.setattr(Utils, "get_timestamp", staticmethod(lambda: stamp))
    monkeypatch.setattr(Utils, "get_nonce", staticmethod(lambda: "0f1e2d3c4b5a69788796a5b4c3d2e1f0"))
    monkeypatch.setattr(Utils, "get_user_agent", staticmethod(lambda user_agent=None: "oracle-agent"))

    body = {
        "name": "推理集群 🚀",
        "description": "SDK oracle",
        "headSpec": {"cpu": "4", "memory": "16Gi", "queueName": "root_queue", "enableAutoScaling": True},
        "workerSpec": [
            {"groupName": "WorkerGroup1", "workerType": "cpu", "replica": 3, "minReplica": 1, "maxReplica": 4},
            {"groupName": "WorkerGroup2", "workerType": "cpu", "replica": 1, "minReplica": 1, "maxReplica": 8},
        ],
    }
    host = emulator.url.split("://", 1)[1]
    sdk = SdkClient(
        Config(
            access_key_id=ORACLE_ID,
            access_key_secret=ORACLE_SECRET,
            endpoint=host,
            protocol="HTTP",
            region_id="cn-hangzhou",
        )
    )
    sdk.update_ray_cluster(WS, SMALL, sdk_models.UpdateRayClusterRequest().from_map(body))

    async def with_raybot() -> None:
        async with EmrClient(
            StaticCredentials(KEY_ID, KEY_SECRET),
            region="cn-hangzhou",
            endpoint=emulator.url,
            now=lambda: fixed,
            nonce=lambda: "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        ) as client:
            await client.update_cluster(WS, SMALL, UpdateRayClusterRequest.model_validate(body))

    asyncio.run(with_raybot())

    official, ours = emulator.calls_for("UpdateRayCluster")
    assert official.status == ours.status == 200
    assert ours.body == official.body
    ours_signed = signing.parse_authorization(ours.headers["authorization"])["SignedHeaders"].split(";")
    official_signed = signing.parse_authorization(official.headers["authorization"])["SignedHeaders"].split(";")
    # The SDK also signs user-agent and accept, and names its credentials provider; nothing else may differ.
    assert set(ours_signed) <= set(official_signed)
    assert set(official_signed) - set(ours_signed) <= {"user-agent", "accept", "x-acs-credentials-provider"}
    assert ours_signed == sorted(ours_signed)
    for name in ours_signed:
        assert ours.headers[name] == official.headers[name], name
    assert ours.path == official.path
