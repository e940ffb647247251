"""The EMR emulator against the official SDK (the oracle for signatures and wire shapes) and raw signed requests."""

from __future__ import annotations

import concurrent.futures
import copy
import json
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from alibabacloud_emr_serverless_spark20230808 import models as sdk_models
from alibabacloud_emr_serverless_spark20230808.client import Client as SdkClient
from alibabacloud_tea_openapi.exceptions import ClientException
from alibabacloud_tea_openapi.utils_models import Config as SdkConfig

from bot.emr import signing
from bot.emr.models import RayCluster, dumps_body
from bot.sandbox.emr_server import SEED_FILE, EmrEmulator, RecordedCall

WS = "w-d2d82aa09155"
PROD = "ray-uiulpgow9xljimm1"
GPU = "ray-k3v8q2m7t5hzxa04"
FLEET = "ray-9w2n4b6c8d0fgh1j"
STAGING = "ray-p5r7s9u1w3y5a7c9"
CLUSTER_PATH = f"/api/v1/workspaces/{WS}/rayCluster"
PROD_PATH = f"{CLUSTER_PATH}/{PROD}"

NOW = 1_717_500_000.0
KEYS = {"testid": "testsecret", "STS.stsid": "stssecret", "otherid": "othersecret"}
TOKENS = {"sts-token-1": "STS.stsid", "foreign-token": "otherid"}
CRED = signing.Credential("testid", "testsecret")
ERROR_KEYS = {"RequestId", "HostId", "Code", "Message", "Recommend"}


def acs_date(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


@dataclass
class FakeClock:
    now: float

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def emulator(clock: FakeClock):
    emu = EmrEmulator(access_keys=KEYS, sts_tokens=TOKENS, clock=clock)
    emu.seed_file(SEED_FILE)
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture
def live_emulator():
    """On the real clock: the SDK stamps requests with the current time."""
    emu = EmrEmulator(access_keys=KEYS, sts_tokens=TOKENS)
    emu.seed_file(SEED_FILE)
    emu.start()
    yield emu
    emu.stop()


def sdk(emu: EmrEmulator, key_id: str = "testid", secret: str = "testsecret", token: str | None = None) -> SdkClient:
    config = SdkConfig(
        access_key_id=key_id,
        access_key_secret=secret,
        security_token=token,
        endpoint=f"127.0.0.1:{emu.port}",
        protocol="HTTP",
        region_id="cn-hangzhou",
    )
    return SdkClient(config)


def send(
    emu: EmrEmulator,
    method: str,
    path: str,
    *,
    action: str,
    body: bytes = b"",
    sent_body: bytes | None = None,
    query: dict[str, str] | None = None,
    date: str | None = None,
    nonce: str | None = None,
    credential: signing.Credential = CRED,
    content_type: str | None = "application/json; charset=utf-8",
    before_signing: dict[str, str] | None = None,
    drop_before: tuple[str, ...] = (),
    after_signing: dict[str, str] | None = None,
    drop_after: tuple[str, ...] = (),
    timeout: float = 5.0,
) -> httpx.Response:
    """One request signed with bot.emr.signing, optionally tampered with before or after signing."""
    headers = {
        "host": f"127.0.0.1:{emu.port}",
        "x-acs-action": action,
        "x-acs-version": "2023-08-08",
        "x-acs-date": date or acs_date(NOW),
        "x-acs-signature-nonce": nonce or uuid.uuid4().hex,
    }
    if body and content_type:
        headers["content-type"] = content_type
    headers.update(before_signing or {})
    for name in drop_before:
        headers.pop(name)
    signed = signing.sign(method=method, path=path, query=query, headers=headers, body=body, credential=credential)
    signed.update(after_signing or {})
    for name in drop_after:
        signed.pop(name)
    url = emu.url + path + ("?" + signing.canonical_query(query) if query else "")
    with httpx.Client(trust_env=False, timeout=timeout) as client:
        return client.request(method, url, headers=signed, content=body if sent_body is None else sent_body)


def update_body(emu: EmrEmulator, **group_changes: Any) -> bytes:
    """The complete workerSpec of prod as read, WorkerGroup1 changed."""
    groups = copy.deepcopy(emu.cluster(WS, PROD)["workerSpec"])
    groups[0].update(group_changes)
    return dumps_body({"workerSpec": groups})


def assert_error(emu: EmrEmulator, resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    data = resp.json()
    assert (resp.status_code, data["Code"]) == (status, code), data
    assert set(data) == ERROR_KEYS
    assert data["RequestId"] == resp.headers["x-acs-request-id"]
    call = emu.calls[-1]
    assert (call.status, call.code, call.request_id) == (status, code, data["RequestId"])
    return data


# ---------------------------------------------------------------- the official SDK


def test_sdk_get_returns_the_stored_cluster(live_emulator: EmrEmulator) -> None:
    resp = sdk(live_emulator).get_ray_cluster(WS, PROD)
    assert resp.status_code == 200
    assert resp.body.name == "prod"
    assert resp.body.state == "Running"
    assert [g.group_name for g in resp.body.worker_spec] == ["WorkerGroup1", "WorkerGroup2"]
    assert resp.body.worker_spec[0].memory == "16Gi"
    assert resp.body.head_spec.enable_auto_scaling is True
    assert resp.body.request_id == resp.headers["x-acs-request-id"]
    assert live_emulator.calls_for("GetRayCluster")[-1].request_id == resp.body.request_id


def test_sdk_lists_page_by_page(live_emulator: EmrEmulator) -> None:
    client = sdk(live_emulator)
    first = client.list_ray_cluster(WS, sdk_models.ListRayClusterRequest(page_num=1, page_size=3))
    second = client.list_ray_cluster(WS, sdk_models.ListRayClusterRequest(page_num=2, page_size=3))
    assert [c.name for c in first.body.ray_clusters] == ["prod", "train-gpu", "fleet-50"]
    assert [c.name for c in second.body.ray_clusters] == ["staging"]
    assert len(first.body.ray_clusters[2].worker_spec) == 50
    assert [c.query for c in live_emulator.calls_for("ListRayCluster")] == [
        {"pageNum": "1", "pageSize": "3"},
        {"pageNum": "2", "pageSize": "3"},
    ]


def test_sdk_update_replaces_worker_spec(live_emulator: EmrEmulator) -> None:
    before = live_emulator.cluster(WS, PROD)
    group = sdk_models.UpdateRayClusterRequestWorkerSpec(
        group_name="WorkerGroup1", worker_type="cpu", replica=3, min_replica=1, max_replica=4, cpu="4", memory="16Gi"
    )
    resp = sdk(live_emulator).update_ray_cluster(WS, PROD, sdk_models.UpdateRayClusterRequest(worker_spec=[group]))
    assert resp.body.cluster_id == PROD
    after = live_emulator.cluster(WS, PROD)
    assert [g["groupName"] for g in after["workerSpec"]] == ["WorkerGroup1"]
    assert after["workerSpec"][0]["replica"] == 3
    assert after["modifiedTime"] > before["modifiedTime"]
    assert after["headSpec"] == before["headSpec"]


def test_sdk_stop_then_start_with_client_token(live_emulator: EmrEmulator) -> None:
    client = sdk(live_emulator)
    client.stop_ray_cluster(WS, PROD, sdk_models.StopRayClusterRequest())
    assert live_emulator.cluster(WS, PROD)["state"] == "Stopped"
    first = client.start_ray_cluster(WS, PROD, sdk_models.StartRayClusterRequest(client_token="tok-1"))
    again = client.start_ray_cluster(WS, PROD, sdk_models.StartRayClusterRequest(client_token="tok-1"))
    assert live_emulator.cluster(WS, PROD)["state"] == "Running"
    assert again.body.request_id == first.body.request_id
    with pytest.raises(ClientException) as caught:
        client.start_ray_cluster(WS, PROD, sdk_models.StartRayClusterRequest(client_token="tok-2"))
    assert caught.value.code == "InvalidClusterState"


def test_sdk_with_sts_token(live_emulator: EmrEmulator) -> None:
    resp = sdk(live_emulator, "STS.stsid", "stssecret", token="sts-token-1").get_ray_cluster(WS, GPU)
    assert resp.body.worker_spec[0].worker_type == "gpu"
    assert live_emulator.calls[-1].headers["x-acs-security-token"] == "sts-token-1"


def test_sdk_wrong_secret_raises_signature_does_not_match(live_emulator: EmrEmulator) -> None:
    with pytest.raises(ClientException) as caught:
        sdk(live_emulator, secret="not-the-secret").get_ray_cluster(WS, PROD)
    call = live_emulator.calls[-1]
    assert caught.value.code == "SignatureDoesNotMatch"
    assert caught.value.status_code == 400
    assert caught.value.request_id == call.request_id
    assert "server string to sign is:ACS3-HMAC-SHA256\n" in caught.value.message


def test_sdk_unknown_cluster_raises_not_found(live_emulator: EmrEmulator) -> None:
    with pytest.raises(ClientException) as caught:
        sdk(live_emulator).get_ray_cluster(WS, "ray-doesnotexist00")
    assert (caught.value.status_code, caught.value.code) == (404, "RayClusterNotFound")
    assert caught.value.request_id == live_emulator.calls[-1].request_id


# ---------------------------------------------------------------- refused requests change nothing

BAD_REQUESTS = {
    "no Authorization": (dict(drop_after=("authorization",)), 400, "IncompleteSignature", "Authorization"),
    "not ACS3": (dict(after_signing={"authorization": "Bearer abc"}), 400, "IncompleteSignature", "ACS3"),
    "nonce not signed": (
        dict(drop_before=("x-acs-signature-nonce",), after_signing={"x-acs-signature-nonce": "n1"}),
        400,
        "IncompleteSignature",
        "x-acs-signature-nonce",
    ),
    "content-type not signed": (
        dict(content_type=None, after_signing={"content-type": "application/json"}),
        400,
        "IncompleteSignature",
        "content-type",
    ),
    "extra x-acs header not signed": (dict(after_signing={"x-acs-extra": "1"}), 400, "IncompleteSignature", "x-acs-"),
    "date absent": (dict(drop_before=("x-acs-date",)), 400, "MissingParameter", "x-acs-date"),
    "body hash mismatch": (dict(sent_body=b'{"name":"other"}'), 400, "InvalidParameter.ContentSha256", "SHA-256"),
    "unknown access key": (dict(credential=signing.Credential("nobody", "x")), 404, "InvalidAccessKeyId.NotFound", ""),
    "wrong secret": (dict(credential=signing.Credential("testid", "nope")), 400, "SignatureDoesNotMatch", "string to"),
    "stale date": (dict(date=acs_date(NOW - 901)), 400, "InvalidTimeStamp.Expired", "expired"),
    "future date": (dict(date=acs_date(NOW + 901)), 400, "InvalidTimeStamp.Expired", "expired"),
    "malformed date": (dict(date="2024-06-04 11:20:00"), 400, "InvalidTimeStamp.Format", ""),
    "action mismatch": (dict(action="GetRayCluster"), 404, "InvalidAction.NotFound", "GetRayCluster"),
    "wrong version": (dict(before_signing={"x-acs-version": "2021-01-01"}), 400, "InvalidVersion", "2021-01-01"),
    "unknown STS token": (
        dict(credential=signing.Credential("STS.stsid", "stssecret", "expired-token")),
        400,
        "InvalidSecurityToken.Expired",
        "",
    ),
    "STS token of another key": (
        dict(credential=signing.Credential("STS.stsid", "stssecret", "foreign-token")),
        400,
        "InvalidSecurityToken.MismatchWithAccessKey",
        "",
    ),
    "min above max": (dict(changes={"minReplica": 5}), 400, "InvalidParameter", "minReplica 5 is above maxReplica 4"),
    "memory 16GB": (dict(changes={"memory": "16GB"}), 400, "InvalidParameter", "'16GB'"),
    "replica as string": (dict(changes={"replica": "3"}), 400, "InvalidParameter", "workerSpec[0].replica"),
    "51 groups": (dict(body="51 groups"), 400, "InvalidParameter", "at most 50 worker groups"),
    "empty body": (dict(body=b""), 400, "InvalidParameter", "changes nothing"),
    "empty object": (dict(body=b"{}"), 400, "InvalidParameter", "changes nothing"),
    "JSON array": (dict(body=b"[]"), 400, "InvalidParameter", "JSON object"),
    "not JSON": (dict(body=b"{workerSpec:"), 400, "InvalidParameter", "not valid JSON"),
    "text/plain": (dict(content_type="text/plain"), 400, "InvalidParameter", "application/json"),
    "unknown cluster": (dict(path=f"{CLUSTER_PATH}/ray-nope"), 404, "RayClusterNotFound", "ray-nope"),
    "unknown workspace": (dict(path=f"/api/v1/workspaces/w-nope/rayCluster/{PROD}"), 404, "WorkspaceNotFound", ""),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=str)
def test_refused_update_changes_nothing(emulator: EmrEmulator, case: str) -> None:
    options, status, code, in_message = BAD_REQUESTS[case]
    options = dict(options)
    before = emulator.cluster(WS, PROD)
    body = options.pop("body", None)
    if body == "51 groups":
        groups = [{"groupName": f"g{i}", "replica": 1, "minReplica": 1, "maxReplica": 2} for i in range(51)]
        body = dumps_body({"workerSpec": groups})
    elif body is None:
        body = update_body(emulator, **{"replica": 3, **options.pop("changes", {})})
    path = options.pop("path", PROD_PATH)
    options.setdefault("action", "UpdateRayCluster")
    resp = send(emulator, "POST", path, body=body, **options)
    data = assert_error(emulator, resp, status, code)
    assert in_message in data["Message"]
    assert emulator.cluster(WS, PROD) == before


def test_signature_mismatch_reports_the_servers_string_to_sign(emulator: EmrEmulator) -> None:
    resp = send(emulator, "GET", PROD_PATH, action="GetRayCluster", credential=signing.Credential("testid", "nope"))
    message = assert_error(emulator, resp, 400, "SignatureDoesNotMatch")["Message"]
    to_sign = message.split("server string to sign is:")[1]
    assert to_sign.startswith("ACS3-HMAC-SHA256\n") and len(to_sign.split("\n")[1]) == 64


def test_nonce_is_single_use_for_fifteen_minutes(emulator: EmrEmulator, clock: FakeClock) -> None:
    assert send(emulator, "GET", PROD_PATH, action="GetRayCluster", nonce="n-1").status_code == 200
    resp = send(emulator, "GET", PROD_PATH, action="GetRayCluster", nonce="n-1")
    assert_error(emulator, resp, 400, "SignatureNonceUsed")
    clock.now += 901
    resp = send(emulator, "GET", PROD_PATH, action="GetRayCluster", nonce="n-1", date=acs_date(clock.now))
    assert resp.status_code == 200


def test_badly_signed_request_does_not_burn_its_nonce(emulator: EmrEmulator) -> None:
    wrong = signing.Credential("testid", "nope")
    resp = send(emulator, "GET", PROD_PATH, action="GetRayCluster", nonce="n-2", credential=wrong)
    assert_error(emulator, resp, 400, "SignatureDoesNotMatch")
    assert send(emulator, "GET", PROD_PATH, action="GetRayCluster", nonce="n-2").status_code == 200


def test_sts_request_signed_with_bot_signer(emulator: EmrEmulator) -> None:
    cred = signing.Credential("STS.stsid", "stssecret", "sts-token-1")
    resp = send(emulator, "GET", PROD_PATH, action="GetRayCluster", credential=cred)
    assert resp.status_code == 200
    assert resp.json()["clusterId"] == PROD


def test_request_without_any_signature_is_refused(emulator: EmrEmulator) -> None:
    with httpx.Client(trust_env=False) as client:
        resp = client.get(emulator.url + PROD_PATH)
    assert_error(emulator, resp, 400, "IncompleteSignature")


# ---------------------------------------------------------------- reads


def test_get_returns_full_cluster_with_request_id(emulator: EmrEmulator) -> None:
    resp = send(emulator, "GET", PROD_PATH, action="GetRayCluster")
    data = resp.json()
    assert data.pop("requestId") == resp.headers["x-acs-request-id"]
    assert data == emulator.cluster(WS, PROD)
    assert data["workerSpec"][0]["nodeSelector"] == {"alibabacloud.com/zone": "cn-hangzhou-h"}
    assert "workspaceId" not in data


def test_list_returns_summaries_and_paging(emulator: EmrEmulator) -> None:
    resp = send(emulator, "GET", CLUSTER_PATH, action="ListRayCluster", query={"pageNum": "2", "pageSize": "3"})
    data = resp.json()
    assert (data["totalCount"], data["pageNum"], data["pageSize"]) == (4, 2, 3)
    assert [c["clusterId"] for c in data["rayClusters"]] == [STAGING]
    assert data["requestId"] == resp.headers["x-acs-request-id"]

    everything = send(emulator, "GET", CLUSTER_PATH, action="ListRayCluster").json()
    assert everything["pageSize"] == 20 and len(everything["rayClusters"]) == 4
    prod = everything["rayClusters"][0]
    for absent in ("instances", "extraParam", "volumeIds", "jobUrl", "submitToken"):
        assert absent not in prod
    assert set(prod["workerSpec"][0]) == {
        "cpu",
        "groupName",
        "maxReplica",
        "memory",
        "minReplica",
        "queueName",
        "replica",
        "workerType",
    }
    assert "env" not in prod["headSpec"] and prod["headSpec"]["memory"] == "16Gi"


@pytest.mark.parametrize("query", [{"pageSize": "0"}, {"pageSize": "101"}, {"pageSize": "ten"}, {"pageNum": "0"}])
def test_list_rejects_page_parameters_out_of_range(emulator: EmrEmulator, query: dict[str, str]) -> None:
    resp = send(emulator, "GET", CLUSTER_PATH, action="ListRayCluster", query=query)
    assert_error(emulator, resp, 400, "InvalidParameter")


# ---------------------------------------------------------------- writes


def test_update_keeps_unknown_fields_and_replaces_what_is_sent(emulator: EmrEmulator, clock: FakeClock) -> None:
    before = emulator.cluster(WS, PROD)
    groups = copy.deepcopy(before["workerSpec"])
    groups[0]["replica"] = 4
    head = {"queueName": "root_queue", "cpu": "8", "memory": "32Gi"}
    body = dumps_body({"workerSpec": groups, "headSpec": head, "futureField": {"a": 1}, "state": "Stopped"})
    resp = send(emulator, "POST", PROD_PATH, action="UpdateRayCluster", body=body)
    assert resp.json() == {"requestId": resp.headers["x-acs-request-id"], "clusterId": PROD}
    after = emulator.cluster(WS, PROD)
    assert after["workerSpec"] == groups  # nodeSelector came back as it was read
    assert after["headSpec"] == head  # replaced as a whole
    assert after["futureField"] == {"a": 1}
    assert after["state"] == "Running"  # read-only attributes are not writable
    # With settle_seconds=0 the change is settled at once: the workers are those of the new spec.
    workers = [i for i in after["instances"] if i["type"] == "Worker" and i["phase"] == "Running"]
    assert len(workers) == sum(g["replica"] for g in groups)
    assert after["modified"] is False
    assert after["modifiedTime"] > before["modifiedTime"]


def test_update_treats_snake_case_keys_as_unknown(emulator: EmrEmulator) -> None:
    before = emulator.cluster(WS, PROD)
    body = dumps_body({"worker_spec": [{"groupName": "x", "replica": 1}]})
    assert send(emulator, "POST", PROD_PATH, action="UpdateRayCluster", body=body).status_code == 200
    assert emulator.cluster(WS, PROD)["workerSpec"] == before["workerSpec"]


def test_fifty_groups_are_accepted(emulator: EmrEmulator) -> None:
    groups = emulator.cluster(WS, FLEET)["workerSpec"]
    groups[49]["replica"] = 2
    resp = send(
        emulator, "POST", f"{CLUSTER_PATH}/{FLEET}", action="UpdateRayCluster", body=dumps_body({"workerSpec": groups})
    )
    assert resp.status_code == 200
    assert emulator.cluster(WS, FLEET)["workerSpec"][49]["replica"] == 2


def test_stop_and_start_check_the_state(emulator: EmrEmulator) -> None:
    staging = f"{CLUSTER_PATH}/{STAGING}"
    resp = send(emulator, "POST", f"{staging}/stop", action="StopRayCluster")
    assert_error(emulator, resp, 400, "InvalidClusterState")
    resp = send(emulator, "POST", f"{PROD_PATH}/start", action="StartRayCluster", body=b"{}")
    assert_error(emulator, resp, 400, "InvalidClusterState")

    resp = send(emulator, "POST", f"{staging}/start", action="StartRayCluster", body=b'{"clientToken":"c-1"}')
    assert resp.json() == {"requestId": resp.headers["x-acs-request-id"], "clusterId": STAGING}
    started = emulator.cluster(WS, STAGING)
    assert started["state"] == "Running" and started["instances"]
    resp = send(emulator, "POST", f"{staging}/stop", action="StopRayCluster")  # no body at all
    assert resp.status_code == 200
    assert emulator.cluster(WS, STAGING)["state"] == "Stopped"
    assert emulator.cluster(WS, STAGING)["instances"] == []


def test_start_is_idempotent_per_client_token(emulator: EmrEmulator) -> None:
    path = f"{CLUSTER_PATH}/{STAGING}/start"
    first = send(emulator, "POST", path, action="StartRayCluster", body=b'{"clientToken":"c-9"}')
    again = send(emulator, "POST", path, action="StartRayCluster", body=b'{"clientToken":"c-9"}')
    assert first.status_code == again.status_code == 200
    assert again.json()["requestId"] == first.json()["requestId"] == again.headers["x-acs-request-id"]
    other = send(emulator, "POST", f"{PROD_PATH}/start", action="StartRayCluster", body=b'{"clientToken":"c-9"}')
    assert_error(emulator, other, 400, "IdempotentParameterMismatch")
    bad = send(emulator, "POST", path, action="StartRayCluster", body=b'{"clientToken":7}')
    assert_error(emulator, bad, 400, "InvalidParameter")


def test_stop_checks_the_instance_id(emulator: EmrEmulator) -> None:
    foreign = send(emulator, "POST", f"{PROD_PATH}/stop", action="StopRayCluster", body=b'{"instanceId":"rci-other"}')
    assert_error(emulator, foreign, 400, "InvalidParameter")
    assert emulator.cluster(WS, PROD)["state"] == "Running"
    own = json.dumps({"instanceId": emulator.cluster(WS, PROD)["instanceId"]}).encode()
    assert send(emulator, "POST", f"{PROD_PATH}/stop", action="StopRayCluster", body=own).status_code == 200
    assert emulator.cluster(WS, PROD)["state"] == "Stopped"


# ---------------------------------------------------------------- faults


def get_prod(emu: EmrEmulator, **options: Any) -> httpx.Response:
    return send(emu, "GET", PROD_PATH, action="GetRayCluster", **options)


def test_fail_twice_then_succeed(emulator: EmrEmulator) -> None:
    emulator.inject("5xx", times=2)
    first, second, third = get_prod(emulator), get_prod(emulator), get_prod(emulator)
    assert [r.status_code for r in (first, second, third)] == [503, 503, 200]
    assert first.json()["Code"] == second.json()["Code"] == "ServiceUnavailable"
    assert first.json()["RequestId"] == first.headers["x-acs-request-id"]
    assert [c.code for c in emulator.calls_for("GetRayCluster")] == ["ServiceUnavailable", "ServiceUnavailable", None]


def test_throttle_only_the_named_action_until_cleared(emulator: EmrEmulator) -> None:
    emulator.inject("throttle", action="UpdateRayCluster")
    before = emulator.cluster(WS, PROD)
    assert get_prod(emulator).status_code == 200
    for _ in range(2):
        resp = send(emulator, "POST", PROD_PATH, action="UpdateRayCluster", body=update_body(emulator, replica=3))
        assert_error(emulator, resp, 400, "Throttling.User")
    assert emulator.cluster(WS, PROD) == before
    emulator.clear_faults()
    resp = send(emulator, "POST", PROD_PATH, action="UpdateRayCluster", body=update_body(emulator, replica=3))
    assert resp.status_code == 200


def test_internal_error(emulator: EmrEmulator) -> None:
    emulator.inject("error", times=1)
    assert_error(emulator, get_prod(emulator), 500, "InternalError")


def test_not_json_answers_html(emulator: EmrEmulator) -> None:
    emulator.inject("not_json", times=1)
    resp = get_prod(emulator)
    assert resp.status_code == 502
    assert resp.headers["content-type"].startswith("text/html")
    assert resp.text.startswith("<html>")
    with pytest.raises(ValueError):
        resp.json()
    assert emulator.calls[-1].status == 502


def test_latency_still_answers(emulator: EmrEmulator) -> None:
    emulator.inject("latency", seconds=0.01, times=1)
    assert get_prod(emulator).status_code == 200
    assert get_prod(emulator).status_code == 200


def test_a_slowed_request_is_held_while_it_waits(emulator: EmrEmulator) -> None:
    emulator.inject("latency", seconds=5, times=1, action="UpdateRayCluster")
    answer = in_background(update_prod, emulator, 3)
    held = emulator.wait_for_held("UpdateRayCluster")
    assert prod_replica(emulator) == 2
    emulator.release_hanging()  # ends the wait early; a slowed request is then answered normally
    assert answer.result(timeout=5).status_code == 200
    assert (held.held, held.applied, held.status) == (False, True, 200)


def test_hang_until_the_client_gives_up_and_stop_releases_it(emulator: EmrEmulator) -> None:
    emulator.inject("hang", times=1)
    with pytest.raises(httpx.ReadTimeout):
        get_prod(emulator, timeout=0.2)
    hung = emulator.calls[-1]
    assert hung.status == 0
    assert get_prod(emulator).status_code == 200  # times=1: only the first hangs
    emulator.stop()
    assert hung.status == 503


def update_prod(emu: EmrEmulator, replica: int, **options: Any) -> httpx.Response:
    return send(emu, "POST", PROD_PATH, action="UpdateRayCluster", body=update_body(emu, replica=replica), **options)


def in_background(fn: Any, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(fn, *args, **kwargs)
    pool.shutdown(wait=False)
    return future


def prod_replica(emu: EmrEmulator) -> int:
    return emu.cluster(WS, PROD)["workerSpec"][0]["replica"]


def test_hang_apply_released_applies_the_update_and_loses_the_answer(emulator: EmrEmulator) -> None:
    emulator.inject("hang_apply", times=1, action="UpdateRayCluster")
    answer = in_background(update_prod, emulator, 3)
    held = emulator.wait_for_held("UpdateRayCluster")
    assert (held.held, held.status, held.applied) == (True, 0, False)
    assert prod_replica(emulator) == 2  # nothing applied while it is held
    emulator.release_hanging()
    with pytest.raises(httpx.RemoteProtocolError):  # the connection closes without an answer
        answer.result(timeout=5)
    assert prod_replica(emulator) == 3
    assert (held.held, held.applied, held.answer_lost, held.status) == (False, True, True, 200)
    assert emulator.accepted_updates(WS, PROD) == 1
    assert emulator.accepted() == [held]
    assert update_prod(emulator, 4).status_code == 200  # times=1: the next one is answered
    assert emulator.accepted_updates(WS, PROD) == 2


def test_hang_apply_applies_when_the_client_gives_up(emulator: EmrEmulator) -> None:
    emulator.inject("hang_apply", action="UpdateRayCluster")
    with pytest.raises(httpx.ReadTimeout):
        update_prod(emulator, 3, timeout=0.2)
    call = emulator.wait_for_call(lambda c: c.applied)
    assert call.client_gone and call.answer_lost and not call.held
    assert prod_replica(emulator) == 3
    assert emulator.accepted_updates(WS, PROD) == 1


def test_hang_apply_with_seconds_applies_that_long_after_the_client_left(emulator: EmrEmulator) -> None:
    emulator.inject("hang_apply", times=1, action="UpdateRayCluster", seconds=0.5)
    with pytest.raises(httpx.ReadTimeout):
        update_prod(emulator, 3, timeout=0.1)
    call = emulator.wait_for_call(lambda c: c.client_gone)
    assert not call.applied and prod_replica(emulator) == 2  # the service has it but has not applied it yet
    emulator.wait_for_call(lambda c: c is call and c.applied)
    assert prod_replica(emulator) == 3


def test_hang_never_applies_even_after_the_client_gave_up(emulator: EmrEmulator) -> None:
    emulator.inject("hang", times=1, action="UpdateRayCluster")
    with pytest.raises(httpx.ReadTimeout):
        update_prod(emulator, 3, timeout=0.2)
    call = emulator.wait_for_call(lambda c: c.client_gone)
    assert call.held
    emulator.release_hanging()
    emulator.wait_for_call(lambda c: c is call and c.status == 503)
    assert (call.held, call.applied, call.answer_lost) == (False, False, False)
    assert prod_replica(emulator) == 2
    assert emulator.accepted_updates(WS, PROD) == 0


def test_listeners_hear_when_the_client_gives_up_on_a_held_call(emulator: EmrEmulator) -> None:
    # The sandbox page redraws a call's row on each notice: "raybot gave up waiting" must not wait for another event.
    heard: list[tuple[int, bool]] = []
    gave_up = threading.Event()

    def listener(call: RecordedCall) -> None:
        heard.append((call.status, call.client_gone))
        if call.client_gone:
            gave_up.set()

    emulator.add_listener(listener)
    emulator.inject("hang", times=1, action="UpdateRayCluster")
    with pytest.raises(httpx.ReadTimeout):
        update_prod(emulator, 3, timeout=0.2)
    assert gave_up.wait(5)
    assert heard == [(0, False), (0, True)]  # arrived; its client left (still unanswered, still held)
    emulator.release_hanging()


def test_stop_lets_a_hang_apply_go_and_applies_it(emulator: EmrEmulator) -> None:
    emulator.inject("hang_apply", times=1, action="UpdateRayCluster")
    answer = in_background(update_prod, emulator, 4)
    held = emulator.wait_for_held()
    emulator.stop()
    with pytest.raises(httpx.TransportError):
        answer.result(timeout=5)
    assert held.applied and prod_replica(emulator) == 4


async def test_held_is_awaitable_and_only_matches_the_held_action(emulator: EmrEmulator) -> None:
    emulator.inject("hang", times=1, action="UpdateRayCluster")
    answer = in_background(update_prod, emulator, 3)
    held = await emulator.held("UpdateRayCluster")
    assert held.action == "UpdateRayCluster" and held.held
    with pytest.raises(TimeoutError):
        await emulator.held("GetRayCluster", timeout=0.05)
    emulator.release_hanging()
    assert answer.result(timeout=5).status_code == 503
    assert (await emulator.wait_for(lambda c: c is held and c.status == 503)) is held
    assert not held.held and prod_replica(emulator) == 2


def test_5xx_after_apply_applies_then_answers_503(emulator: EmrEmulator) -> None:
    emulator.inject("5xx_after_apply", times=2, action="UpdateRayCluster")
    resp = update_prod(emulator, 3)
    assert_error(emulator, resp, 503, "ServiceUnavailable")
    assert prod_replica(emulator) == 3
    assert emulator.calls[-1].applied and emulator.accepted_updates(WS, PROD) == 1
    # A request the service refuses is answered with its own error and applies nothing.
    refused = send(emulator, "POST", PROD_PATH, action="UpdateRayCluster", body=b'{"workerSpec": 3}')
    assert_error(emulator, refused, 400, "InvalidParameter")
    assert not emulator.calls[-1].applied and emulator.accepted_updates(WS, PROD) == 1
    assert get_prod(emulator).status_code == 200  # only UpdateRayCluster was named


def test_accepted_updates_are_counted_per_cluster(emulator: EmrEmulator) -> None:
    emulator.inject("throttle", times=1, action="UpdateRayCluster")
    assert update_prod(emulator, 3).status_code == 400  # throttled: not applied
    assert update_prod(emulator, 3).status_code == 200
    assert update_prod(emulator, 4).status_code == 200
    fleet = emulator.cluster(WS, FLEET)["workerSpec"]
    resp = send(
        emulator, "POST", f"{CLUSTER_PATH}/{FLEET}", action="UpdateRayCluster", body=dumps_body({"workerSpec": fleet})
    )
    assert resp.status_code == 200
    assert get_prod(emulator).status_code == 200  # a read is never "accepted"
    assert emulator.accepted_updates(WS, PROD) == 2
    assert emulator.accepted_updates(WS, FLEET) == 1
    assert emulator.accepted_updates(WS, GPU) == 0
    assert [c.json["workerSpec"][0]["replica"] for c in emulator.accepted(cluster_id=PROD)] == [3, 4]
    assert len(emulator.accepted()) == 3


def test_forbidden_refuses_and_changes_nothing(emulator: EmrEmulator) -> None:
    emulator.inject("forbidden", action="UpdateRayCluster")
    before = emulator.cluster(WS, PROD)
    resp = send(emulator, "POST", PROD_PATH, action="UpdateRayCluster", body=update_body(emulator, replica=3))
    assert_error(emulator, resp, 403, "Forbidden.RAM")
    assert emulator.cluster(WS, PROD) == before
    assert get_prod(emulator).status_code == 200  # only the named action


def test_a_latency_released_early_is_served_even_after_the_client_gave_up(emulator: EmrEmulator) -> None:
    emulator.inject("latency", action="UpdateRayCluster", seconds=60, times=1)
    with pytest.raises(httpx.ReadTimeout):
        send(emulator, "POST", PROD_PATH, action="UpdateRayCluster", body=update_body(emulator, replica=3), timeout=0.2)
    held = emulator.calls[-1]
    assert held.status == 0
    emulator.release_hanging()
    emulator.wait_for_call(lambda c: c is held and c.status == 200)
    assert emulator.cluster(WS, PROD)["workerSpec"][0]["replica"] == 3  # applied, as a service that received it would


def test_faults_apply_after_the_signature_check(emulator: EmrEmulator) -> None:
    emulator.inject("5xx", times=1)
    wrong = signing.Credential("testid", "nope")
    assert_error(emulator, get_prod(emulator, credential=wrong), 400, "SignatureDoesNotMatch")
    assert get_prod(emulator).status_code == 503
    assert get_prod(emulator).status_code == 200


def test_inject_rejects_unknown_faults(emulator: EmrEmulator) -> None:
    with pytest.raises(ValueError):
        emulator.inject("meteor")
    with pytest.raises(ValueError):
        emulator.inject("5xx", times=0)


# ---------------------------------------------------------------- lifecycle


def test_context_manager_starts_and_stops() -> None:
    with EmrEmulator(clusters=[{"workspaceId": WS, "clusterId": "ray-x", "state": "Running"}]) as emu:
        url = emu.url
        assert url == f"http://127.0.0.1:{emu.port}"
        assert emu.cluster(WS, "ray-x") == {"clusterId": "ray-x", "state": "Running"}
    emu.stop()  # idempotent
    with pytest.raises(httpx.ConnectError), httpx.Client(trust_env=False) as client:
        client.get(url)


def test_standalone_server(tmp_path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.sandbox.emr_server", "--port", "0", "--access-key", "cli:clisecret"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "clisecret" not in line
        url = line.split(" on ")[1].split(" ")[0]
        port = int(url.rsplit(":", 1)[1])
        headers = {
            "host": f"127.0.0.1:{port}",
            "x-acs-action": "GetRayCluster",
            "x-acs-version": "2023-08-08",
            "x-acs-date": acs_date(time.time()),
            "x-acs-signature-nonce": uuid.uuid4().hex,
        }
        signed = signing.sign(
            method="GET",
            path=PROD_PATH,
            query=None,
            headers=headers,
            body=b"",
            credential=signing.Credential("cli", "clisecret"),
        )
        with httpx.Client(trust_env=False) as client:
            resp = client.get(url + PROD_PATH, headers=signed)
        assert resp.status_code == 200 and resp.json()["name"] == "prod"
    finally:
        proc.terminate()
        proc.wait()


# ---------------------------------------------------------------- how a cluster settles over time

SETTLE = 600.0


@pytest.fixture
def settling(clock: FakeClock):
    emu = EmrEmulator(access_keys=KEYS, sts_tokens=TOKENS, clock=clock, settle_seconds=SETTLE)
    emu.seed_file(SEED_FILE)
    emu.start()
    yield emu
    emu.stop()


def call(emu: EmrEmulator, clock: FakeClock, method: str, path: str, **options: Any) -> httpx.Response:
    """A signed request dated by the fake clock (it moves further than the allowed skew over a test)."""
    resp = send(emu, method, path, date=acs_date(clock.now), **options)
    assert resp.status_code == 200, resp.text
    return resp


def read(emu: EmrEmulator, clock: FakeClock, cluster_id: str = PROD) -> dict[str, Any]:
    return call(emu, clock, "GET", f"{CLUSTER_PATH}/{cluster_id}", action="GetRayCluster").json()


def resize(emu: EmrEmulator, clock: FakeClock, cluster_id: str = PROD, **replicas: int | None) -> None:
    """UpdateRayCluster with the complete workerSpec as read; a replica of None drops the group."""
    groups = []
    for group in copy.deepcopy(emu.cluster(WS, cluster_id)["workerSpec"]):
        wanted = replicas.get(group["groupName"], group["replica"])
        if wanted is not None:
            group["replica"] = wanted
            group["maxReplica"] = max(group["maxReplica"], wanted)
            groups.append(group)
    body = dumps_body({"workerSpec": groups})
    call(emu, clock, "POST", f"{CLUSTER_PATH}/{cluster_id}", action="UpdateRayCluster", body=body)


def workers(cluster: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Per group: (workers Running, workers listed)."""
    out: dict[str, tuple[int, int]] = {}
    for instance in cluster["instances"]:
        if instance["type"] == "Worker":
            up, listed = out.get(instance["groupName"], (0, 0))
            out[instance["groupName"]] = (up + (instance["phase"] == "Running"), listed + 1)
    return out


def head_phase(cluster: dict[str, Any]) -> str | None:
    return next((i["phase"] for i in cluster["instances"] if i["type"] == "Head"), None)


@pytest.mark.parametrize("updating_state", ["Running", "Updating"])
def test_update_moves_workers_over_the_settle_time(clock: FakeClock, updating_state: str) -> None:
    with EmrEmulator(access_keys=KEYS, clock=clock, settle_seconds=SETTLE, updating_state=updating_state) as emu:
        emu.seed_file(SEED_FILE)
        resize(emu, clock, WorkerGroup1=4)
        at_once = read(emu, clock)
        assert (at_once["state"], at_once["modified"]) == (updating_state, True)
        assert workers(at_once) == {"WorkerGroup1": (2, 4), "WorkerGroup2": (1, 1)}
        assert head_phase(at_once) == "Running"

        clock.now += SETTLE / 2
        half = read(emu, clock)
        assert (half["state"], half["modified"]) == (updating_state, True)
        assert workers(half) == {"WorkerGroup1": (3, 4), "WorkerGroup2": (1, 1)}
        pending = [i for i in half["instances"] if i["phase"] == "Pending"]
        assert [(i["instanceId"], i["containerState"]) for i in pending] == [
            (f"{PROD}-workergroup1-worker-3", "Waiting")
        ]
        assert "startTime" not in pending[0]
        assert half["modifiedTime"] == at_once["modifiedTime"]  # reading changes nothing

        clock.now += SETTLE / 2
        done = read(emu, clock)
        assert (done["state"], done["modified"], done["message"]) == ("Running", False, "")
        assert workers(done) == {"WorkerGroup1": (4, 4), "WorkerGroup2": (1, 1)}
        started = {i["instanceId"]: i["startTime"] for i in done["instances"]}
        assert started[f"{PROD}-workergroup1-worker-2"] == int((NOW + SETTLE / 2) * 1000)
        assert started[f"{PROD}-workergroup1-worker-0"] == 1717405420000  # as seeded: it never stopped


def test_scale_down_and_a_dropped_group(settling: EmrEmulator, clock: FakeClock) -> None:
    resize(settling, clock, WorkerGroup1=4)
    settling.settle_now(WS, PROD)
    assert workers(read(settling, clock)) == {"WorkerGroup1": (4, 4), "WorkerGroup2": (1, 1)}

    resize(settling, clock, WorkerGroup1=1, WorkerGroup2=None)
    clock.now += SETTLE / 2
    half = read(settling, clock)
    assert workers(half) == {"WorkerGroup1": (3, 3), "WorkerGroup2": (1, 1)}  # going away: nothing Pending
    clock.now += SETTLE / 2
    done = read(settling, clock)
    assert workers(done) == {"WorkerGroup1": (1, 1)}
    assert (done["state"], done["modified"]) == ("Running", False)


def test_list_reports_the_same_state(settling: EmrEmulator, clock: FakeClock) -> None:
    def listed() -> dict[str, Any]:
        page = call(settling, clock, "GET", CLUSTER_PATH, action="ListRayCluster").json()
        return next(c for c in page["rayClusters"] if c["clusterId"] == PROD)

    resize(settling, clock, WorkerGroup2=3)
    clock.now += SETTLE / 2
    assert (listed()["state"], listed()["modified"]) == ("Running", True)
    assert "instances" not in listed()
    clock.now += SETTLE / 2
    assert (listed()["state"], listed()["modified"]) == ("Running", False)
    assert settling.cluster(WS, PROD)["modified"] is False


def test_start_goes_through_starting(settling: EmrEmulator, clock: FakeClock) -> None:
    start = f"{CLUSTER_PATH}/{STAGING}/start"
    call(settling, clock, "POST", start, action="StartRayCluster", body=b"{}")
    begun = read(settling, clock, STAGING)
    assert begun["state"] == "Starting"
    assert begun["startTime"] == int(NOW * 1000)
    assert head_phase(begun) == "Pending"
    assert workers(begun) == {"WorkerGroup1": (0, 1)}
    again = send(settling, "POST", start, action="StartRayCluster", body=b"{}", date=acs_date(clock.now))
    assert_error(settling, again, 400, "InvalidClusterState")

    clock.now += SETTLE / 2
    half = read(settling, clock, STAGING)
    assert (half["state"], head_phase(half)) == ("Starting", "Running")
    clock.now += SETTLE / 2
    done = read(settling, clock, STAGING)
    assert (done["state"], head_phase(done), workers(done)) == ("Running", "Running", {"WorkerGroup1": (1, 1)})


def test_advance_lets_emulated_time_pass_without_moving_the_signing_clock(
    settling: EmrEmulator, clock: FakeClock
) -> None:
    call(settling, clock, "POST", f"{CLUSTER_PATH}/{STAGING}/start", action="StartRayCluster", body=b"{}")
    settling.advance(SETTLE / 2)
    assert read(settling, clock, STAGING)["state"] == "Starting"  # signed by the unchanged clock: still accepted
    settling.advance(SETTLE / 2)
    assert workers(read(settling, clock, STAGING)) == {"WorkerGroup1": (1, 1)}
    with pytest.raises(ValueError, match="negative"):
        settling.advance(-1)
    # A shorter settle time re-times what is in progress; 0 applies changes at once.
    call(settling, clock, "POST", f"{PROD_PATH}/stop", action="StopRayCluster")
    settling.settle_seconds = 0
    assert read(settling, clock)["state"] == "Stopped"


def test_an_autoscaler_keeps_its_count_within_each_groups_range(settling: EmrEmulator, clock: FakeClock) -> None:
    # prod autoscales; WorkerGroup1 may run 1 to 4, WorkerGroup2 1 to 8.
    settling.autoscaler_holds(WS, PROD, {"WorkerGroup1": 9, "WorkerGroup2": 0})
    cluster = settling.cluster(WS, PROD)
    body = {"workerSpec": cluster["workerSpec"]}
    call(settling, clock, "POST", PROD_PATH, action="UpdateRayCluster", body=json.dumps(body).encode())
    settling.advance(SETTLE)
    assert workers(read(settling, clock)) == {"WorkerGroup1": (4, 4), "WorkerGroup2": (1, 1)}  # clamped to the range
    with pytest.raises(KeyError):
        settling.autoscaler_holds(WS, "ray-unknown", {"g": 1})


def test_stop_goes_through_stopping(settling: EmrEmulator, clock: FakeClock) -> None:
    stop = f"{PROD_PATH}/stop"
    call(settling, clock, "POST", stop, action="StopRayCluster")
    assert read(settling, clock)["state"] == "Stopping"

    clock.now += SETTLE / 4
    quarter = read(settling, clock)
    assert quarter["state"] == "Stopping"
    assert workers(quarter) == {"WorkerGroup1": (1, 1), "WorkerGroup2": (1, 1)}  # workers leave first
    again = send(settling, "POST", stop, action="StopRayCluster", date=acs_date(clock.now))
    assert_error(settling, again, 400, "InvalidClusterState")

    clock.now += SETTLE / 4
    half = read(settling, clock)
    assert (workers(half), head_phase(half)) == ({}, "Running")  # the head goes last
    clock.now += SETTLE / 2
    done = read(settling, clock)
    assert (done["state"], done["instances"], done["message"]) == ("Stopped", [], "stopped by user")


def test_end_in_error_gets_stuck_then_turns_error(settling: EmrEmulator, clock: FakeClock) -> None:
    resize(settling, clock, WorkerGroup1=4)
    settling.end_in_error(WS, PROD, "Insufficient resources in queue root_queue.")
    clock.now += SETTLE * 0.9
    stuck = read(settling, clock)
    assert (stuck["state"], stuck["modified"], stuck["message"]) == ("Running", True, "")
    assert workers(stuck) == {"WorkerGroup1": (3, 4), "WorkerGroup2": (1, 1)}

    clock.now += SETTLE * 0.1
    failed = read(settling, clock)
    assert (failed["state"], failed["modified"]) == ("Error", True)
    assert failed["message"] == "Insufficient resources in queue root_queue."
    assert workers(failed) == {"WorkerGroup1": (3, 4), "WorkerGroup2": (1, 1)}
    clock.now += 10 * SETTLE
    later = read(settling, clock)
    assert later.pop("requestId") != failed.pop("requestId")
    assert later == failed  # it never settles


def test_end_in_error_late_keeps_the_counts_reached(settling: EmrEmulator, clock: FakeClock) -> None:
    resize(settling, clock, WorkerGroup2=5)
    clock.now += SETTLE * 0.8
    assert workers(read(settling, clock))["WorkerGroup2"] == (4, 5)
    settling.end_in_error(WS, PROD, "boom")
    assert workers(read(settling, clock))["WorkerGroup2"] == (4, 5)  # not back to half way
    settling.settle_now(WS, PROD)
    failed = read(settling, clock)
    assert (failed["state"], failed["message"], workers(failed)["WorkerGroup2"]) == ("Error", "boom", (4, 5))


def test_end_in_error_applies_to_the_next_transition_only(settling: EmrEmulator, clock: FakeClock) -> None:
    settling.end_in_error(WS, PROD, "bad image")
    assert read(settling, clock)["state"] == "Running"  # nothing is moving yet
    resize(settling, clock, WorkerGroup1=3)
    clock.now += SETTLE
    failed = read(settling, clock)
    assert (failed["state"], failed["message"]) == ("Error", "bad image")
    assert workers(failed)["WorkerGroup1"] == (2, 3)

    resize(settling, clock, WorkerGroup1=3)  # fixing it: a fresh transition from what runs
    assert read(settling, clock)["state"] == "Running"
    clock.now += SETTLE
    fixed = read(settling, clock)
    assert (fixed["state"], fixed["modified"], fixed["message"]) == ("Running", False, "")
    assert workers(fixed)["WorkerGroup1"] == (3, 3)


def test_update_during_a_transition_rebases_from_what_runs(settling: EmrEmulator, clock: FakeClock) -> None:
    resize(settling, clock, WorkerGroup1=4)
    clock.now += SETTLE / 2
    assert workers(read(settling, clock))["WorkerGroup1"] == (3, 4)

    resize(settling, clock, WorkerGroup1=1)
    rebased = read(settling, clock)
    assert (rebased["state"], rebased["modified"]) == ("Running", True)
    assert workers(rebased)["WorkerGroup1"] == (3, 3)  # the Pending one is no longer wanted
    clock.now += SETTLE / 2  # the first transition would have settled now; the new one is half way
    half = read(settling, clock)
    assert (half["modified"], workers(half)["WorkerGroup1"]) == (True, (2, 2))
    clock.now += SETTLE / 2
    done = read(settling, clock)
    assert (done["modified"], workers(done)["WorkerGroup1"]) == (False, (1, 1))


def test_a_rebased_transition_keeps_its_failure(settling: EmrEmulator, clock: FakeClock) -> None:
    resize(settling, clock, WorkerGroup1=4)
    settling.end_in_error(WS, PROD, "quota")
    clock.now += SETTLE / 2
    resize(settling, clock, WorkerGroup1=3)
    clock.now += SETTLE
    failed = read(settling, clock)
    assert (failed["state"], failed["message"], workers(failed)["WorkerGroup1"]) == ("Error", "quota", (3, 3))
    assert failed["modified"] is True


def test_update_while_starting_stays_a_start(settling: EmrEmulator, clock: FakeClock) -> None:
    call(settling, clock, "POST", f"{CLUSTER_PATH}/{STAGING}/start", action="StartRayCluster", body=b"{}")
    clock.now += SETTLE / 2
    resize(settling, clock, STAGING, WorkerGroup1=3)
    assert read(settling, clock, STAGING)["state"] == "Starting"
    settling.settle_now(WS, STAGING)
    done = read(settling, clock, STAGING)
    assert (done["state"], workers(done), head_phase(done)) == ("Running", {"WorkerGroup1": (3, 3)}, "Running")


def test_update_of_a_stopped_cluster_only_changes_the_spec(settling: EmrEmulator, clock: FakeClock) -> None:
    resize(settling, clock, STAGING, WorkerGroup1=2)
    stopped = read(settling, clock, STAGING)
    assert (stopped["state"], stopped["instances"]) == ("Stopped", [])
    assert stopped["workerSpec"][0]["replica"] == 2


def test_settle_now_and_unknown_clusters(settling: EmrEmulator, clock: FakeClock) -> None:
    resize(settling, clock, WorkerGroup1=4)
    settling.settle_now(WS, PROD)
    done = read(settling, clock)
    assert (done["state"], done["modified"], workers(done)["WorkerGroup1"]) == ("Running", False, (4, 4))
    settling.settle_now(WS, PROD)  # nothing moving: nothing changes
    assert read(settling, clock)["instances"] == done["instances"]
    with pytest.raises(KeyError):
        settling.settle_now(WS, "ray-nope")
    with pytest.raises(KeyError):
        settling.end_in_error("w-nope", PROD)


def test_without_settle_time_end_in_error_fails_the_next_change_at_once(emulator: EmrEmulator) -> None:
    before = emulator.cluster(WS, PROD)
    emulator.end_in_error(WS, PROD, "quota")
    assert send(
        emulator, "POST", PROD_PATH, action="UpdateRayCluster", body=update_body(emulator, replica=3)
    ).is_success
    after = emulator.cluster(WS, PROD)
    assert (after["state"], after["message"], after["modified"]) == ("Error", "quota", True)
    assert after["instances"] == before["instances"]
    assert after["workerSpec"][0]["replica"] == 3


def test_negative_settle_time_is_refused() -> None:
    with pytest.raises(ValueError):
        EmrEmulator(settle_seconds=-1)


def test_sdk_reads_a_cluster_in_transition() -> None:
    clock = FakeClock(time.time())  # the SDK dates requests with the real time; stay within the skew
    with EmrEmulator(access_keys=KEYS, clock=clock, settle_seconds=SETTLE) as emu:
        emu.seed_file(SEED_FILE)
        client = sdk(emu)
        spec = sdk_models.UpdateRayClusterRequestWorkerSpec(
            group_name="WorkerGroup1", worker_type="cpu", replica=4, min_replica=1, max_replica=4
        )
        client.update_ray_cluster(WS, PROD, sdk_models.UpdateRayClusterRequest(worker_spec=[spec]))
        clock.now += SETTLE / 2
        body = client.get_ray_cluster(WS, PROD).body
        assert (body.state, body.modified) == ("Running", True)
        # WorkerGroup1 goes 2 -> 4, WorkerGroup2 (left out of the request) 1 -> 0.
        shown = [(i.instance_id.removeprefix(PROD + "-"), i.type, i.phase) for i in body.instances]
        assert shown == [
            ("head-0", "Head", "Running"),
            ("workergroup1-worker-0", "Worker", "Running"),
            ("workergroup1-worker-1", "Worker", "Running"),
            ("workergroup1-worker-2", "Worker", "Running"),
            ("workergroup1-worker-3", "Worker", "Pending"),
            ("workergroup2-worker-0", "Worker", "Running"),
        ]
        assert body.instances[4].start_time is None and body.instances[3].start_time > 0
        listed = client.list_ray_cluster(WS, sdk_models.ListRayClusterRequest()).body.ray_clusters[0]
        assert (listed.state, listed.modified) == ("Running", True)
        clock.now += SETTLE / 2
        body = client.get_ray_cluster(WS, PROD).body
        assert (body.state, body.modified) == ("Running", False)
        assert [i.phase for i in body.instances] == ["Running"] * 5
        assert [i.instance_id for i in body.instances][-1] == f"{PROD}-workergroup1-worker-3"


def test_raybot_models_read_instances_with_their_group(settling: EmrEmulator, clock: FakeClock) -> None:
    resize(settling, clock, WorkerGroup1=3)
    cluster = RayCluster.model_validate(read(settling, clock))
    assert cluster.modified is True
    groups = [(i.type, getattr(i, "groupName", None), i.phase) for i in cluster.instances or []]
    assert ("Worker", "WorkerGroup1", "Pending") in groups
    assert ("Head", None, "Running") in groups
