"""A loopback emulator of the EMR Serverless Spark Ray cluster API (version 2023-08-08).

It is as strict as the real service where raybot could get something wrong: every
request must carry a valid ACS3-HMAC-SHA256 signature (checked with
`bot.emr.signing`, and it accepts the official SDK's), request bodies are judged
by raybot's own wire models in strict mode, and errors have Alibaba's shape
(`RequestId`, `HostId`, `Code`, `Message`, `Recommend`, plus the
`x-acs-request-id` header). State is in memory, keyed by (workspaceId, clusterId).
Faults (latency, hang, 5xx, throttling, non-JSON, internal error, a RAM refusal, and the ones
below where the service did the work but the client never learns it) can be
switched on to look like service-side failures: they apply after the signature
check. `inject(kind, times=, action=, seconds=)` switches one on.

Faults that hold a request, and whether the service carries it out:
- `hang`: held until `release_hanging()` (or `stop()`), then answered 503
  ServiceUnavailable; never carried out (an UpdateRayCluster is NOT applied), even
  when the client gave up long before.
- `hang_apply`: held like `hang`, but the service got the request: when released
  (or `stop()`), or when the client gives up and disconnects, it is carried out
  (an UpdateRayCluster IS applied) and its answer is lost: a client still
  connected sees the connection closed without an answer. With `seconds` > 0 it
  is carried out that many (real) seconds after the client went away (a slow
  service that applies a change after the caller's deadline), or at release if
  that comes first.
- `5xx_after_apply`: the request is carried out, then answered 503
  ServiceUnavailable (a refused request is answered with its own error instead).
A request held by one of these (or slowed by `latency`) has `RecordedCall.held`
set while it is held; `wait_for_held()` (threads) and `held()` (async) wait for
one, so a test can act exactly while a call is in flight (kill the caller, send
a second request). Every request the service carried out (an UpdateRayCluster or
StopRayCluster that succeeded, a StartRayCluster that started the cluster) has
`RecordedCall.applied`, whether or not its answer reached the client;
`accepted()` lists them and `accepted_updates(workspace, cluster)` counts the
UpdateRayCluster calls applied to one cluster.

Codes the public documentation does not pin down, chosen here:
- body hash differs from `x-acs-content-sha256`: 400 `InvalidParameter.ContentSha256`
- a required header absent: 400 `MissingParameter`; present but not signed: 400 `IncompleteSignature`
- `x-acs-action` does not name the route's action: 404 `InvalidAction.NotFound`
- unknown workspace: 404 `WorkspaceNotFound`; unknown cluster: 404 `RayClusterNotFound`
- start a cluster that is not Stopped, stop one that is not Running: 400 `InvalidClusterState`
- a clientToken reused for another cluster: 400 `IdempotentParameterMismatch`
- STS token unknown: 400 `InvalidSecurityToken.Expired`; owned by another key: 400
  `InvalidSecurityToken.MismatchWithAccessKey`

How a cluster changes over time (`settle_seconds`). UpdateRayCluster, StartRayCluster
and StopRayCluster answer at once; with `settle_seconds` > 0 the cluster then moves
to its new shape over that many seconds of the injected clock, computed when it is
read (no background work): GetRayCluster, ListRayCluster and `cluster()` all see the
same picture.
- The documented `state` values (GetRayCluster / ListRayCluster reference and the
  official SDK's GetRayClusterResponseBody): Starting, Running, Stopping, Stopped,
  Error. There is no documented state for "an update is being applied", so by
  default an updating cluster stays `Running` with `modified: true`; pass
  `updating_state` (e.g. "Updating") to see how a client copes with another word.
- update: `modified` true; per worker group, the Running workers move linearly
  from the count when the update arrived to the new `replica` (whole instances
  only); the ones still to come are listed with phase `Pending`. Settled:
  `modified` false, state Running.
- start: Stopped -> Starting -> Running. The head is Pending, then Running from
  half time; workers come up linearly to each group's `replica`.
- stop: Running -> Stopping -> Stopped. Workers go away over the first half, the
  head at the end; Stopped has no instances.
- An update during a transition re-bases it from the counts Running at that
  moment (during Starting it stays a start; during Stopping, or when Stopped, it
  only changes the spec). A cluster Running with no transition runs its spec: its
  counts are the `replica` of each group, whatever the seed lists as instances.
- `end_in_error()`: the current transition (or else the next one) gets stuck at
  half way (or where it is, if later) and, when it would have settled, the
  cluster turns `Error` with that `message`, `modified` unchanged. A re-based
  transition keeps the failure; the next update starts a fresh transition.
- `settle_now()` moves the current transition to its end at once; `advance(seconds)`
  moves every transition that much further (emulated time for the clusters only: the
  clock that judges signatures is not touched).
- The Ray autoscaler: by default a cluster's workers head for each group's `replica`.
  `autoscaler_holds(workspace, cluster, {group: n})` models an autoscaling cluster
  (headSpec.enableAutoScaling) whose autoscaler keeps n workers of a group, clamped to
  its [minReplica, maxReplica], from the next update or start on.
- `settle_seconds` = 0 (the default): changes apply at once: an update of a running
  cluster is settled the moment it is read (its workers are those of the new spec),
  a start is Running with its head and every group's workers, stop empties the
  instances; `end_in_error()` then turns the next change into Error at once.
Instances have the fields of the SDK's GetRayClusterResponseBodyInstances
(instanceId, type "Head"/"Worker" as in the seed, phase Pending/Running, container
state, times). The API documents no group of an instance: the emulator adds
`groupName` to worker instances it builds (an emulator-only field), and names them
`<clusterId>-<group lower-case>-worker-<n>` as the seed does.

Run standalone with
`python -m bot.sandbox.emr_server [--host] [--port] [--seed] [--access-key ID:SECRET] [--settle-seconds S]`.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import hashlib
import hmac
import json
import logging
import math
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from aiohttp import web
from pydantic import ValidationError

from bot.emr import signing
from bot.emr.models import ClusterFields, RayCluster, UpdateRayClusterRequest
from bot.sandbox.loop_thread import serve_in_thread, stop_thread

log = logging.getLogger(__name__)

API_VERSION = "2023-08-08"
DEFAULT_HOST_ID = "emr-serverless-spark.cn-hangzhou.aliyuncs.com"
SEED_FILE = Path(__file__).with_name("seed_clusters.json")
NONCE_TTL_SECONDS = 15 * 60
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
JSON_CONTENT_TYPE = "application/json;charset=utf-8"

LIST = "ListRayCluster"
GET = "GetRayCluster"
UPDATE = "UpdateRayCluster"
START = "StartRayCluster"
STOP = "StopRayCluster"
ACTIONS = (LIST, GET, UPDATE, START, STOP)

FAULTS = frozenset(
    {"latency", "hang", "hang_apply", "5xx", "5xx_after_apply", "throttle", "not_json", "error", "forbidden"}
)
HOLDING_FAULTS = frozenset({"hang", "hang_apply"})

# Headers every request must carry and sign (content-type too when there is a body).
REQUIRED_HEADERS = (
    "host",
    "x-acs-action",
    "x-acs-content-sha256",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-version",
)
DATE_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")

# What ListRayCluster returns per cluster: the fields of the official SDK's
# ListRayClusterResponseBodyRayClusters (and its HeadSpec / WorkerSpec), nothing else.
LIST_FIELDS = (
    "clusterId",
    "createTime",
    "creator",
    "creatorName",
    "dashboardUrl",
    "description",
    "displayReleaseVersion",
    "grpcEndpoint",
    "headSpec",
    "instanceId",
    "message",
    "modified",
    "modifiedTime",
    "modifier",
    "modifierName",
    "name",
    "networkServiceName",
    "startTime",
    "state",
    "userId",
    "workerSpec",
)
LIST_HEAD_FIELDS = ("cpu", "enableAutoScaling", "gpuSpec", "idleTimeoutSeconds", "memory", "queueName", "replica")
LIST_WORKER_FIELDS = (
    "cpu",
    "gpuSpec",
    "groupName",
    "maxReplica",
    "memory",
    "minReplica",
    "queueName",
    "replica",
    "workerType",
)

# Top-level attributes of a cluster that UpdateRayCluster cannot change; sent anyway, they are ignored.
READ_ONLY_FIELDS = frozenset(
    {f.alias or n for n, f in RayCluster.model_fields.items() if n not in ClusterFields.model_fields} | {"workspaceId"}
)
UPDATE_FIELDS = frozenset(f.alias or n for n, f in ClusterFields.model_fields.items())


class ApiError(Exception):
    """A request the service refuses: becomes an Alibaba-shaped error answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def _invalid(message: str) -> ApiError:
    return ApiError(400, "InvalidParameter", message)


@dataclass
class RecordedCall:
    """One request as received and how it was answered.

    Appended when the request arrives (status 0 while it is being answered, and
    for a hanging request until `stop()` releases it), completed when answered.
    `held` is True while a `latency`, `hang` or `hang_apply` fault holds it; `applied` once the
    service carried it out (see the module docstring), even if the client never got
    the answer; `client_gone` once the client closed the connection before its
    answer; `answer_lost` when the service closed the connection without answering
    (`status` then says what it had decided).
    """

    action: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str] = field(repr=False)
    body: bytes = field(repr=False)
    json: Any | None = field(repr=False)
    status: int
    request_id: str
    code: str | None
    held: bool = False
    applied: bool = False
    client_gone: bool = False
    answer_lost: bool = False
    received_at: float = field(default_factory=time.time)  # wall clock (not the injected one): for showing waits

    @property
    def access_key_id(self) -> str | None:
        """The AccessKey id that signed the call (from its Authorization header)."""
        try:
            return signing.parse_authorization(self.headers.get("authorization", ""))["Credential"]
        except ValueError:
            return None

    @property
    def security_token(self) -> str | None:
        """The STS security token the call carried, if it was signed with STS credentials."""
        return self.headers.get(signing.SECURITY_TOKEN)


@dataclass(frozen=True)
class Incoming:
    """A request reduced to what the signature and the handlers look at."""

    method: str
    path: str  # raw, as on the wire
    query: dict[str, str]  # decoded
    headers: dict[str, str]  # lowercased names; repeated headers joined by "," in sorted order
    body: bytes


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    request_id: str
    code: str | None = None
    content_type: str = JSON_CONTENT_TYPE
    lost: bool = False  # the service decided this answer but closes the connection instead of sending it


@dataclass(frozen=True)
class Route:
    action: str
    workspace_id: str
    cluster_id: str | None = None


@dataclass
class Fault:
    kind: str
    remaining: int | None
    action: str | None
    seconds: float


def new_request_id() -> str:
    """A request id shaped like Alibaba's: an upper-case UUID."""
    return str(uuid.uuid4()).upper()


def dump_json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def success(request_id: str, data: Mapping[str, Any]) -> Answer:
    return Answer(200, dump_json({"requestId": request_id, **data}), request_id)


def error_answer(err: ApiError, request_id: str, host_id: str) -> Answer:
    body = {
        "RequestId": request_id,
        "HostId": host_id,
        "Code": err.code,
        "Message": err.message,
        "Recommend": f"https://api.aliyun.com/troubleshoot?q={err.code}&product=emr-serverless-spark"
        f"&requestId={request_id}",
    }
    return Answer(err.status, dump_json(body), request_id, err.code)


def resolve_route(method: str, raw_path: str) -> Route | None:
    """The action a method and raw path address, or None."""
    parts = raw_path.split("/")
    if len(parts) < 6 or parts[:4] != ["", "api", "v1", "workspaces"] or parts[5] != "rayCluster":
        return None
    segments = [unquote(p) for p in parts[4:]]
    if not all(segments):
        return None
    workspace, rest = segments[0], segments[2:]
    match method, rest:
        case "GET", []:
            return Route(LIST, workspace)
        case "GET", [cluster]:
            return Route(GET, workspace, cluster)
        case "POST", [cluster]:
            return Route(UPDATE, workspace, cluster)
        case "POST", [cluster, "start"]:
            return Route(START, workspace, cluster)
        case "POST", [cluster, "stop"]:
            return Route(STOP, workspace, cluster)
    return None


def parse_acs_date(value: str) -> float:
    """Seconds since the epoch of an `x-acs-date` (`2024-01-01T00:00:00Z`); ValueError otherwise."""
    if not DATE_PATTERN.fullmatch(value):
        raise ValueError(value)
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _must_be_signed(name: str, has_body: bool) -> bool:
    # Alibaba: every public request header except Authorization must be signed when present.
    return name == "host" or name.startswith("x-acs-") or (name == "content-type" and has_body)


def authenticate(
    req: Incoming,
    secrets: Mapping[str, str],
    tokens: Mapping[str, str],
    now: float,
    max_skew: float,
) -> str:
    """Check the ACS3-HMAC-SHA256 signature of `req`; return the access key id it was signed with.

    Raises ApiError with the code the service would answer. Does not check the
    nonce for reuse (that needs state; see NonceLedger).
    """
    auth = req.headers.get("authorization")
    if not auth:
        raise ApiError(
            400,
            "IncompleteSignature",
            "The request signature does not conform to Aliyun standards: the Authorization header is missing.",
        )
    try:
        parts = signing.parse_authorization(auth)
    except ValueError as exc:
        raise ApiError(
            400, "IncompleteSignature", f"The request signature does not conform to Aliyun standards: {exc}."
        ) from None
    signed = [n.strip().lower() for n in parts["SignedHeaders"].split(";") if n.strip()]
    has_body = bool(req.body)
    required = REQUIRED_HEADERS + (("content-type",) if has_body else ())
    for name in required:
        if name not in req.headers:
            raise ApiError(400, "MissingParameter", f"The header {name} is mandatory for this action.")
    for name in sorted(req.headers):
        if _must_be_signed(name, has_body) and name not in signed:
            raise ApiError(
                400, "IncompleteSignature", f"The header {name} must be signed but SignedHeaders does not name it."
            )
    for name in signed:
        if name not in req.headers:
            raise ApiError(400, "IncompleteSignature", f"SignedHeaders names {name}, which the request does not carry.")

    try:
        sent_at = parse_acs_date(req.headers["x-acs-date"])
    except ValueError:
        raise ApiError(
            400,
            "InvalidTimeStamp.Format",
            "Specified time stamp or date value is not well formatted (yyyy-MM-ddTHH:mm:ssZ).",
        ) from None
    if abs(now - sent_at) > max_skew:
        raise ApiError(
            400,
            "InvalidTimeStamp.Expired",
            f"Specified time stamp or date value is expired: "
            f"{req.headers['x-acs-date']} is more than {max_skew:g} s away from the server's time.",
        )

    key_id = parts["Credential"]
    secret = secrets.get(key_id)
    if secret is None:
        raise ApiError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
    token = req.headers.get(signing.SECURITY_TOKEN)
    if token is not None:
        owner = tokens.get(token)
        if owner is None:
            raise ApiError(400, "InvalidSecurityToken.Expired", "Specified SecurityToken is expired.")
        if owner != key_id or req.headers.get(signing.ACCESS_KEY_ID, key_id) != key_id:
            raise ApiError(
                400,
                "InvalidSecurityToken.MismatchWithAccessKey",
                "Specified SecurityToken mismatch with the AccessKey.",
            )

    claimed_hash = req.headers[signing.CONTENT_SHA256]
    if claimed_hash != hashlib.sha256(req.body).hexdigest():
        raise ApiError(
            400,
            "InvalidParameter.ContentSha256",
            "The x-acs-content-sha256 header is not the SHA-256 of the body received.",
        )
    canonical, _ = signing.canonical_request(req.method, req.path, req.query, req.headers, claimed_hash, signed)
    to_sign = signing.string_to_sign(canonical)
    if not hmac.compare_digest(signing.signature(secret, to_sign), parts["Signature"]):
        raise ApiError(
            400,
            "SignatureDoesNotMatch",
            f"The request signature does not conform to Aliyun standards. server string to sign is:{to_sign}",
        )
    return key_id


class NonceLedger:
    """Signature nonces seen in the last 15 minutes, per access key."""

    def __init__(self, ttl: float = NONCE_TTL_SECONDS) -> None:
        self._ttl = ttl
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def use(self, key_id: str, nonce: str, now: float) -> bool:
        """Record the nonce; False when it was already used within the window."""
        with self._lock:
            while self._seen:
                oldest, seen_at = next(iter(self._seen.items()))
                if now - seen_at <= self._ttl:
                    break
                del self._seen[oldest]
            if (key_id, nonce) in self._seen:
                return False
            self._seen[(key_id, nonce)] = now
            return True


class FaultBoard:
    """Injected faults, in the order they were switched on."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"kind": f.kind, "action": f.action, "remaining": f.remaining, "seconds": f.seconds}
                for f in self._faults
            ]

    def take(self, action: str) -> list[Fault]:
        """The faults that apply to one request of `action`, each use counted.

        Every matching latency fault, then at most one answering fault (the first).
        """
        taken: list[Fault] = []
        with self._lock:
            for fault in self._faults:
                if fault.action is not None and fault.action != action:
                    continue
                taken.append(fault)
                if fault.remaining is not None:
                    fault.remaining -= 1
                if fault.kind != "latency":
                    break
            self._faults = [f for f in self._faults if f.remaining is None or f.remaining > 0]
        return taken


def page_params(query: Mapping[str, str]) -> tuple[int, int]:
    """(pageNum, pageSize) of a ListRayCluster query; ApiError when out of range."""

    def number(name: str, default: int, high: int | None) -> int:
        raw = query.get(name)
        if raw is None:
            return default
        bounds = f"from 1 to {high}" if high else "of at least 1"
        if not raw.isdigit() or not 1 <= int(raw) <= (high or int(raw)):
            raise _invalid(f"{name} must be an integer {bounds}, not {raw!r}.")
        return int(raw)

    return number("pageNum", 1, None), number("pageSize", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def list_summary(cluster: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a cluster ListRayCluster returns (no instances, env, extraParam, unknown fields...)."""
    out = {k: copy.deepcopy(cluster[k]) for k in LIST_FIELDS if k in cluster}
    if isinstance(out.get("headSpec"), dict):
        out["headSpec"] = {k: v for k, v in out["headSpec"].items() if k in LIST_HEAD_FIELDS}
    if isinstance(out.get("workerSpec"), list):
        out["workerSpec"] = [
            {k: v for k, v in g.items() if k in LIST_WORKER_FIELDS} if isinstance(g, dict) else g
            for g in out["workerSpec"]
        ]
    return out


def _describe(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        path = ""
        for part in err["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        message = err["msg"].removeprefix("Value error, ")
        problems.append(f"{path}: {message}" if path else message)
    return "; ".join(problems)


def update_fields(body: Any) -> dict[str, Any]:
    """The top-level fields an UpdateRayCluster body sets, exactly as sent; ApiError when invalid.

    Validated by raybot's `UpdateRayClusterRequest` in strict mode and by wire
    names only (a snake_case key is an unknown field, as it is to the service).
    Read-only attributes (state, clusterId, ...) and nulls are ignored.
    """
    if not isinstance(body, dict):
        raise _invalid("The body of UpdateRayCluster must be a JSON object.")
    fields = {k: v for k, v in body.items() if v is not None and k not in READ_ONLY_FIELDS}
    if not fields:
        raise _invalid("The body of UpdateRayCluster changes nothing: send at least one field to update.")
    try:
        UpdateRayClusterRequest.model_validate(fields, strict=True, by_name=False)
    except ValidationError as exc:
        raise _invalid(_describe(exc)) from None
    return copy.deepcopy(fields)


# ---- how a cluster changes over time (pure; see the module docstring) ----

STOPPED_MESSAGE = "stopped by user"
HEAD_UP_AT = 0.5  # progress at which a starting head is Running
STUCK_AT = 0.5  # progress a failing transition does not go beyond (unless it was already further)


@dataclass
class Transition:
    """A change a cluster is moving through: what ran when it began and what is wanted."""

    kind: str  # "update", "start" or "stop"
    began: float  # clock seconds
    old: dict[str, int]  # Running workers per group when it began
    new: dict[str, int]  # wanted workers per group (0 for a group going away), in the order shown
    head_was_up: bool
    failure: str | None = None  # the Error message it ends in, if it fails
    stuck_at: float = STUCK_AT


def progress(transition: Transition, now: float, settle_seconds: float) -> float:
    """How far the transition has got by `now`: 0 when it began, 1 when it is over."""
    if settle_seconds <= 0:
        return 1.0
    return min(1.0, max(0.0, (now - transition.began) / settle_seconds))


def running_workers(old: int, new: int, moved: float) -> int:
    """Workers Running when a group moving from `old` to `new` has got `moved` (0..1) of the way."""
    step = math.floor(abs(new - old) * moved + 1e-9)  # whole instances only; 1e-9 absorbs float noise
    return old + step if new >= old else old - step


def _instance(
    instance_id: str,
    kind: str,
    group: str | None,
    running: bool,
    created_ms: int,
    started_ms: int,
    previous: Mapping[str, Any] | None,
) -> dict[str, Any]:
    # Start from what was listed before, so ids, times and unknown fields stay stable between reads.
    out = dict(previous or {})
    was_running = out.get("phase") == "Running"
    out.update(
        instanceId=instance_id,
        type=kind,
        phase="Running" if running else "Pending",
        reason="",
        message="",
        containerState="Running" if running else "Waiting",
        containerStateReason="" if running else "ContainerCreating",
        containerStateMessage="",
    )
    out.setdefault("createTime", created_ms)
    if running:
        out["containerExitCode"] = 0
        if not (was_running and "startTime" in out):
            out["startTime"] = started_ms
    else:
        out.pop("containerExitCode", None)
        out.pop("startTime", None)
    if group is not None:
        out["groupName"] = group
    return out


def transition_instances(
    cluster_id: str,
    transition: Transition,
    now: float,
    settle_seconds: float,
    previous: Iterable[Mapping[str, Any]] = (),
) -> tuple[list[dict[str, Any]], bool]:
    """The instances a cluster lists at `now` during `transition`, and whether the transition is over.

    Over means settled, or (for a failing one) the moment it turns Error; the
    instances of a failing transition stay where it got stuck.
    """
    raw = progress(transition, now, settle_seconds)
    reached = min(raw, transition.stuck_at) if transition.failure is not None else raw
    workers_moved = min(1.0, 2 * reached) if transition.kind == "stop" else reached
    by_id = {i.get("instanceId"): i for i in previous if isinstance(i, Mapping)}
    began_ms = int(transition.began * 1000)

    def at(fraction: float) -> int:
        return int((transition.began + settle_seconds * fraction) * 1000)

    instances: list[dict[str, Any]] = []
    head_id = f"{cluster_id}-head-0"
    if transition.kind == "stop":
        if reached < 1:
            instances.append(_instance(head_id, "Head", None, True, began_ms, began_ms, by_id.get(head_id)))
    else:
        head_up = transition.head_was_up or reached >= HEAD_UP_AT
        instances.append(_instance(head_id, "Head", None, head_up, began_ms, at(HEAD_UP_AT), by_id.get(head_id)))
    for group, wanted in transition.new.items():
        old = transition.old.get(group, 0)
        running = running_workers(old, wanted, workers_moved)
        for index in range(max(running, wanted)):
            worker_id = f"{cluster_id}-{group.lower()}-worker-{index}"
            # A worker above the old count comes up when the group has moved far enough to count it.
            up_at = (index + 1 - old) / (wanted - old) if wanted > old and index >= old else 0.0
            instances.append(
                _instance(worker_id, "Worker", group, index < running, began_ms, at(up_at), by_id.get(worker_id))
            )
    return instances, raw >= 1


def spec_counts(cluster: Mapping[str, Any]) -> dict[str, int]:
    """Wanted workers per group of a cluster's workerSpec, in its order."""
    counts: dict[str, int] = {}
    for group in cluster.get("workerSpec") or []:
        if isinstance(group, Mapping) and isinstance(group.get("groupName"), str):
            replica = group.get("replica")
            counts[group["groupName"]] = replica if isinstance(replica, int) and replica > 0 else 0
    return counts


def listed_counts(instances: Iterable[Any]) -> tuple[dict[str, int], bool]:
    """Running workers per group (by `groupName`) and whether the head is Running, as listed."""
    counts: dict[str, int] = {}
    head_up = False
    for instance in instances:
        if not isinstance(instance, Mapping) or instance.get("phase") != "Running":
            continue
        kind = str(instance.get("type", "")).lower()
        if kind == "head":
            head_up = True
        elif kind == "worker" and isinstance(instance.get("groupName"), str):
            counts[instance["groupName"]] = counts.get(instance["groupName"], 0) + 1
    return counts, head_up


class ClusterStore:
    """Clusters per workspace, in wire form (camelCase), as the service stores them.

    With `settle_seconds` > 0 a cluster in transition is brought up to date with
    the clock whenever it is read or changed (see the module docstring).
    """

    def __init__(
        self, clock: Callable[[], float], settle_seconds: float = 0.0, updating_state: str = "Running"
    ) -> None:
        self._clock = clock
        self._settle = settle_seconds
        self._updating_state = updating_state
        self._clusters: dict[str, dict[str, dict[str, Any]]] = {}
        self._started: dict[tuple[str, str], tuple[str, str, str]] = {}  # (key id, clientToken) -> ws, id, requestId
        self._transitions: dict[tuple[str, str], Transition] = {}
        self._doomed: dict[tuple[str, str], str] = {}  # the next transition fails with this message
        self._autoscaler: dict[tuple[str, str], dict[str, int]] = {}  # workers an autoscaler keeps per group
        self._lock = threading.Lock()

    @property
    def settle_seconds(self) -> float:
        return self._settle

    @settle_seconds.setter
    def settle_seconds(self, seconds: float) -> None:
        if not seconds >= 0:
            raise ValueError("settle_seconds must not be negative")
        with self._lock:
            self._settle = seconds

    def seed(self, clusters: Iterable[Mapping[str, Any]]) -> None:
        """Add or replace clusters; each carries its `workspaceId` (not stored) and `clusterId`."""
        with self._lock:
            for raw in clusters:
                cluster = copy.deepcopy(dict(raw))
                workspace = cluster.pop("workspaceId", None)
                if not workspace or not cluster.get("clusterId"):
                    raise ValueError("every seeded cluster needs a workspaceId and a clusterId")
                self._clusters.setdefault(workspace, {})[cluster["clusterId"]] = cluster
                self._transitions.pop((workspace, cluster["clusterId"]), None)
                self._doomed.pop((workspace, cluster["clusterId"]), None)
                self._autoscaler.pop((workspace, cluster["clusterId"]), None)

    def snapshot(self, workspace: str, cluster_id: str) -> dict[str, Any]:
        """A deep copy of one cluster as it is now; KeyError when unknown."""
        with self._lock:
            cluster = self._clusters[workspace][cluster_id]
            self._refresh(workspace, cluster)
            return copy.deepcopy(cluster)

    def _find(self, workspace: str, cluster_id: str) -> dict[str, Any]:
        if workspace not in self._clusters:
            raise ApiError(404, "WorkspaceNotFound", f"The workspace {workspace} does not exist.")
        cluster = self._clusters[workspace].get(cluster_id)
        if cluster is None:
            raise ApiError(
                404, "RayClusterNotFound", f"The Ray cluster {cluster_id} does not exist in workspace {workspace}."
            )
        self._refresh(workspace, cluster)
        return cluster

    def _now_ms(self, previous: Any = 0) -> int:
        # Strictly after the previous stamp, so a change is visible even under a frozen test clock.
        now = int(self._clock() * 1000)
        return max(now, previous + 1) if isinstance(previous, int) else now

    # ---- transitions (callers hold the lock) ----

    def _refresh(self, workspace: str, cluster: dict[str, Any]) -> None:
        """Bring a cluster in transition up to the clock; end the transition when it is over."""
        key = (workspace, cluster["clusterId"])
        transition = self._transitions.get(key)
        if transition is None:
            return
        instances, over = transition_instances(
            cluster["clusterId"], transition, self._clock(), self._settle, cluster.get("instances") or []
        )
        cluster["instances"] = instances
        if not over:
            during = {"update": self._updating_state, "start": "Starting", "stop": "Stopping"}
            cluster.update(state=during[transition.kind], message="")
            return
        del self._transitions[key]
        if transition.failure is not None:
            cluster.update(state="Error", message=transition.failure)
        elif transition.kind == "stop":
            cluster.update(state="Stopped", message=STOPPED_MESSAGE, modified=False, instances=[])
        else:
            cluster.update(state="Running", message="", modified=False)

    def _target_counts(self, workspace: str, cluster: Mapping[str, Any]) -> dict[str, int]:
        """Workers per group a cluster heads for: its spec's, or what its autoscaler keeps (within each range)."""
        counts = spec_counts(cluster)
        holds = self._autoscaler.get((workspace, cluster["clusterId"]))
        head = cluster.get("headSpec")
        if not holds or not isinstance(head, Mapping) or head.get("enableAutoScaling") is not True:
            return counts
        for group in cluster.get("workerSpec") or []:
            if not isinstance(group, Mapping) or group.get("groupName") not in holds:
                continue
            low, high = group.get("minReplica"), group.get("maxReplica")
            kept = holds[group["groupName"]]
            if isinstance(low, int):
                kept = max(kept, low)
            if isinstance(high, int):
                kept = min(kept, high)
            counts[group["groupName"]] = kept
        return counts

    def _running_now(self, workspace: str, cluster: Mapping[str, Any]) -> tuple[dict[str, int], bool]:
        # A Running cluster with no transition runs its spec, even when the seed lists fewer instances.
        if (workspace, cluster["clusterId"]) not in self._transitions and cluster.get("state") == "Running":
            return self._target_counts(workspace, cluster), True
        return listed_counts(cluster.get("instances") or [])

    def _begin(self, workspace: str, cluster: dict[str, Any], kind: str, running: tuple[dict[str, int], bool]) -> None:
        """Start (or re-base) a transition of `kind` from `running` (per group, head up) towards the spec."""
        key = (workspace, cluster["clusterId"])
        old, head_up = running
        wanted = {} if kind == "stop" else self._target_counts(workspace, cluster)
        new = wanted | {group: 0 for group in old if group not in wanted}
        ongoing = self._transitions.get(key)
        failure = ongoing.failure if ongoing is not None else self._doomed.pop(key, None)
        self._transitions[key] = Transition(kind, self._clock(), old, new, head_up, failure)
        self._refresh(workspace, cluster)

    def _fail_at_once(self, workspace: str, cluster: dict[str, Any]) -> bool:
        """Without a settle model: turn the cluster Error now if a failure is armed; whether it did."""
        message = self._doomed.pop((workspace, cluster["clusterId"]), None)
        if message is None:
            return False
        cluster.update(state="Error", message=message)
        return True

    def end_in_error(self, workspace: str, cluster_id: str, message: str) -> None:
        """The current transition (else the next one) ends in Error with `message`; KeyError when unknown."""
        with self._lock:
            cluster = self._clusters[workspace][cluster_id]
            self._refresh(workspace, cluster)
            transition = self._transitions.get((workspace, cluster_id))
            if transition is None:
                self._doomed[(workspace, cluster_id)] = message
                return
            transition.failure = message
            # Stuck where it is if already past the usual point: counts never move backwards.
            transition.stuck_at = max(STUCK_AT, progress(transition, self._clock(), self._settle))
            self._refresh(workspace, cluster)

    def advance(self, seconds: float) -> None:
        """Move every transition `seconds` further along (the clusters' emulated time), as if that much had passed."""
        if not seconds >= 0:
            raise ValueError("seconds must not be negative")
        with self._lock:
            for transition in self._transitions.values():
                transition.began -= seconds
            for workspace, cluster_id in list(self._transitions):
                self._refresh(workspace, self._clusters[workspace][cluster_id])

    def autoscaler_holds(self, workspace: str, cluster_id: str, groups: Mapping[str, int] | None) -> None:
        """The autoscaler of an autoscaling cluster keeps `groups` workers (None: each group's replica) from the
        next update or start on; KeyError when unknown."""
        with self._lock:
            self._clusters[workspace][cluster_id]  # noqa: B018 - KeyError for an unknown cluster
            if groups is None:
                self._autoscaler.pop((workspace, cluster_id), None)
            else:
                self._autoscaler[(workspace, cluster_id)] = dict(groups)

    def settle_now(self, workspace: str, cluster_id: str) -> None:
        """Move the current transition (if any) to its end at once; KeyError when unknown."""
        with self._lock:
            cluster = self._clusters[workspace][cluster_id]
            transition = self._transitions.get((workspace, cluster_id))
            if transition is not None:
                transition.began = self._clock() - self._settle
            self._refresh(workspace, cluster)

    # ---- the API's operations ----

    def get(self, workspace: str, cluster_id: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._find(workspace, cluster_id))

    def page(self, workspace: str, page_num: int, page_size: int) -> tuple[list[dict[str, Any]], int]:
        """One page of list summaries (seeded order) and the total count."""
        with self._lock:
            if workspace not in self._clusters:
                raise ApiError(404, "WorkspaceNotFound", f"The workspace {workspace} does not exist.")
            clusters = list(self._clusters[workspace].values())
            start = (page_num - 1) * page_size
            shown = clusters[start : start + page_size]
            for cluster in shown:
                self._refresh(workspace, cluster)
            return [list_summary(c) for c in shown], len(clusters)

    def update(self, workspace: str, cluster_id: str, fields: Mapping[str, Any]) -> None:
        """Replace each top-level field sent (workerSpec and headSpec as a whole); keep everything else.

        With a settle model, a cluster that runs (or failed) then moves to the new spec.
        """
        with self._lock:
            cluster = self._find(workspace, cluster_id)
            running = self._running_now(workspace, cluster)  # measured against the spec before it is replaced
            cluster.update(copy.deepcopy(dict(fields)))
            cluster["modifiedTime"] = self._now_ms(cluster.get("modifiedTime", 0))
            if self._settle <= 0:
                if self._fail_at_once(workspace, cluster):
                    cluster["modified"] = True
                elif cluster.get("state") == "Running":
                    # Settled at once: the instances match the new spec the moment it is read.
                    self._begin(workspace, cluster, "update", running)
                return
            state = cluster.get("state")
            if state in ("Stopping", "Stopped"):
                return
            kind = "start" if state == "Starting" else "update"
            if kind == "update":
                cluster["modified"] = True
            self._begin(workspace, cluster, kind, running)

    def start(self, workspace: str, cluster_id: str, key_id: str, token: str | None, request_id: str) -> str:
        """Stopped -> Running (via Starting); the request id to answer with (the first one when clientToken repeats)."""
        with self._lock:
            cluster = self._find(workspace, cluster_id)
            if token is not None and (key_id, token) in self._started:
                first_ws, first_id, first_request = self._started[(key_id, token)]
                if (first_ws, first_id) != (workspace, cluster_id):
                    raise ApiError(
                        400,
                        "IdempotentParameterMismatch",
                        f"The clientToken {token!r} was already used to start {first_id} in {first_ws}.",
                    )
                return first_request
            state = cluster.get("state")
            if state != "Stopped":
                raise ApiError(
                    400,
                    "InvalidClusterState",
                    f"The cluster {cluster_id} is {state}; only a Stopped cluster can start.",
                )
            now = self._now_ms()
            if self._settle > 0 or not self._fail_at_once(workspace, cluster):
                # Without a settle model the start is over the moment it begins: Running, head and workers up.
                running = self._running_now(workspace, cluster)
                cluster.update(message="", startTime=now)
                self._begin(workspace, cluster, "start", running)
            if token is not None:
                self._started[(key_id, token)] = (workspace, cluster_id, request_id)
            return request_id

    def stop(self, workspace: str, cluster_id: str, instance_id: str | None) -> None:
        """Running -> Stopped (via Stopping).

        An instanceId, when sent, must be the cluster's or one of its instances'.
        """
        with self._lock:
            cluster = self._find(workspace, cluster_id)
            if instance_id is not None:
                known = {cluster.get("instanceId")} | {
                    i.get("instanceId") for i in cluster.get("instances") or [] if isinstance(i, dict)
                }
                if instance_id not in known:
                    raise _invalid(f"instanceId {instance_id!r} does not belong to cluster {cluster_id}.")
            state = cluster.get("state")
            if state != "Running":
                raise ApiError(
                    400, "InvalidClusterState", f"The cluster {cluster_id} is {state}; only a Running cluster can stop."
                )
            if self._settle > 0:
                self._begin(workspace, cluster, "stop", self._running_now(workspace, cluster))
            elif not self._fail_at_once(workspace, cluster):
                cluster.update(state="Stopped", message=STOPPED_MESSAGE, instances=[])


def _json_payload(req: Incoming) -> dict[str, Any] | None:
    """The JSON object a POST carries, None for no body; ApiError for anything else."""
    if req.method != "POST" or not req.body:
        return None
    media_type = req.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise _invalid(f"The body must be sent as application/json, not {media_type or 'no content-type'}.")
    try:
        payload = json.loads(req.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _invalid(f"The body is not valid JSON: {exc}.") from None
    if not isinstance(payload, dict):
        raise _invalid("The body must be a JSON object.")
    return payload


def _optional_str(payload: Mapping[str, Any] | None, name: str) -> str | None:
    value = (payload or {}).get(name)
    if value is not None and not isinstance(value, str):
        raise _invalid(f"{name} must be a string, not {json.dumps(value)}.")
    return value


def _parse_json(body: bytes) -> Any | None:
    try:
        return json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, ValueError):
        return None


async def _first(*waits: Awaitable[Any]) -> None:
    """Return when the first of `waits` is done; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def _after(event: asyncio.Event, seconds: float) -> None:
    """Return `seconds` after `event` is set."""
    await event.wait()
    if seconds > 0:
        await asyncio.sleep(seconds)


UNAVAILABLE = "The request has failed due to a temporary failure of the server."


def _fault_answer(kind: str, request_id: str, host_id: str) -> Answer:
    if kind == "not_json":
        html = b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1>"
        html += b"</center>\r\n<hr><center>Tengine</center>\r\n</body>\r\n</html>\r\n"
        return Answer(502, html, request_id, None, "text/html")
    status, code, message = {
        "5xx": (503, "ServiceUnavailable", UNAVAILABLE),
        "throttle": (400, "Throttling.User", "Request was denied due to user flow control."),
        "error": (500, "InternalError", "The request processing has failed due to some unknown error."),
        "hang": (503, "ServiceUnavailable", "The emulator stopped before answering."),
        "5xx_after_apply": (503, "ServiceUnavailable", UNAVAILABLE),
        "forbidden": (403, "Forbidden.RAM", "User not authorized to operate on the specified resource."),
    }[kind]
    return error_answer(ApiError(status, code, message), request_id, host_id)


class EmrEmulator:
    """The EMR Serverless Spark Ray cluster API on a loopback port, served from a background thread."""

    def __init__(
        self,
        *,
        access_keys: dict[str, str] | None = None,
        sts_tokens: dict[str, str] | None = None,
        clusters: Iterable[dict] = (),
        clock: Callable[[], float] = time.time,
        max_skew_seconds: float = 900,
        settle_seconds: float = 0.0,
        updating_state: str = "Running",
    ) -> None:
        """`settle_seconds`: how long (on `clock`) a cluster takes to reach the shape a change asks
        for; 0 applies changes at once. `updating_state`: the `state` reported while an update is
        being applied (the API documents none; see the module docstring)."""
        if not settle_seconds >= 0:
            raise ValueError("settle_seconds must not be negative")
        self._secrets = dict(access_keys) if access_keys is not None else {"testid": "testsecret"}
        self._tokens = dict(sts_tokens or {})
        self._clock = clock
        self._max_skew = max_skew_seconds
        self._store = ClusterStore(clock, settle_seconds, updating_state)
        self._store.seed(clusters)
        self._nonces = NonceLedger()
        self._faults = FaultBoard()
        self.calls: list[RecordedCall] = []
        self._calls_lock = threading.Lock()
        self._calls_changed = threading.Condition(self._calls_lock)
        self._listeners: list[Callable[[RecordedCall], None]] = []
        self._lifecycle = threading.Lock()
        self.url = ""
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._released: asyncio.Event | None = None
        self._inflight: set[asyncio.Task[Any]] = set()

    # ---- state and faults (callable from any thread) ----

    def accept_sts_credential(self, access_key_id: str, access_key_secret: str, security_token: str) -> None:
        """Accept calls signed with STS credentials (as the STS emulator issues them: pass its `on_issue`)."""
        self._secrets[access_key_id] = access_key_secret
        self._tokens[security_token] = access_key_id

    def seed(self, clusters: Iterable[dict]) -> None:
        """Add or replace clusters given in wire form, each with its `workspaceId`."""
        self._store.seed(clusters)

    def seed_file(self, path: str | Path) -> None:
        """Seed from a JSON file holding a list of clusters (see seed_clusters.json)."""
        self._store.seed(json.loads(Path(path).read_text(encoding="utf-8")))

    def cluster(self, workspace_id: str, cluster_id: str) -> dict:
        """A deep copy of the cluster's current wire-form state; KeyError when unknown."""
        return self._store.snapshot(workspace_id, cluster_id)

    def end_in_error(
        self, workspace_id: str, cluster_id: str, message: str = "Failed to apply the Ray cluster change."
    ) -> None:
        """Make the cluster's current transition (or else its next one) end in state Error with `message`.

        It never settles: the counts stop moving at half way (or where they are, if
        further) and the cluster turns Error when it would have settled, at once
        when `settle_seconds` is 0. KeyError when the cluster is unknown.
        """
        self._store.end_in_error(workspace_id, cluster_id, message)

    def settle_now(self, workspace_id: str, cluster_id: str) -> None:
        """Bring the cluster's current transition to its end state now (Error if it was told to fail)."""
        self._store.settle_now(workspace_id, cluster_id)

    def advance(self, seconds: float) -> None:
        """Let `seconds` of the clusters' emulated time pass: every transition moves that much further."""
        self._store.advance(seconds)

    def autoscaler_holds(self, workspace_id: str, cluster_id: str, groups: Mapping[str, int] | None) -> None:
        """Model the Ray autoscaler of an autoscaling cluster: from its next update or start on it runs `groups`
        workers per group (each clamped to the group's [minReplica, maxReplica]) instead of their replica; None
        undoes it. KeyError when the cluster is unknown."""
        self._store.autoscaler_holds(workspace_id, cluster_id, groups)

    @property
    def settle_seconds(self) -> float:
        """How long (on the clock) a cluster takes to reach the shape a change asks for; 0: at once.

        Settable: the next change takes the new time, and one in progress is re-timed (how far it got is its
        elapsed time over the new settle time).
        """
        return self._store.settle_seconds

    @settle_seconds.setter
    def settle_seconds(self, seconds: float) -> None:
        self._store.settle_seconds = seconds

    def calls_for(self, action: str) -> list[RecordedCall]:
        with self._calls_lock:
            return [c for c in self.calls if c.action == action]

    def wait_for_call(self, predicate: Callable[[RecordedCall], bool], timeout: float = 5.0) -> RecordedCall:
        """Block until a recorded call matches `predicate` (checked on arrival and on answer); TimeoutError after
        `timeout` s. From async code: `await asyncio.to_thread(emulator.wait_for_call, ...)`."""
        deadline = time.monotonic() + timeout  # real time: this bounds how long the caller blocks
        with self._calls_changed:
            while True:
                for call in self.calls:
                    if predicate(call):
                        return call
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching EMR call within {timeout}s; saw {[c.action for c in self.calls]}")
                self._calls_changed.wait(left)

    async def wait_for(self, predicate: Callable[[RecordedCall], bool], timeout: float = 5.0) -> RecordedCall:  # noqa: ASYNC109 (API)
        """`wait_for_call` for async code (any event loop): the first recorded call matching `predicate`."""
        return await asyncio.to_thread(self.wait_for_call, predicate, timeout)

    def wait_for_held(self, action: str | None = None, timeout: float = 5.0) -> RecordedCall:
        """Block until a request (of `action`, if given) is being held by a `latency`, `hang` or `hang_apply` fault
        right now; return it. TimeoutError after `timeout` s."""
        return self.wait_for_call(lambda c: c.held and (action is None or c.action == action), timeout)

    async def held(self, action: str | None = None, timeout: float = 5.0) -> RecordedCall:  # noqa: ASYNC109 (API)
        """`wait_for_held` for async code: returns once a request of `action` is held, e.g. an UpdateRayCluster
        that raybot is waiting for, so a test can act exactly while the call is in flight."""
        return await asyncio.to_thread(self.wait_for_held, action, timeout)

    def accepted(
        self, action: str | None = UPDATE, workspace_id: str | None = None, cluster_id: str | None = None
    ) -> list[RecordedCall]:
        """The requests the service carried out (`RecordedCall.applied`), oldest first, whether or not their
        answer reached the client: by default every applied UpdateRayCluster, optionally of one cluster."""
        with self._calls_lock:
            calls = list(self.calls)
        out = []
        for call in calls:
            if not call.applied or (action is not None and call.action != action):
                continue
            route = resolve_route(call.method, call.path)
            if route is None:
                continue
            if workspace_id is not None and route.workspace_id != workspace_id:
                continue
            if cluster_id is not None and route.cluster_id != cluster_id:
                continue
            out.append(call)
        return out

    def accepted_updates(self, workspace_id: str, cluster_id: str) -> int:
        """How many UpdateRayCluster calls the service applied to the cluster since the emulator started (answered
        or not; a refused or held-and-never-applied one does not count)."""
        return len(self.accepted(UPDATE, workspace_id, cluster_id))

    def release_hanging(self) -> None:
        """Let every held request go now: a `hang` is answered 503 ServiceUnavailable (as when stopping) and not
        carried out, a `hang_apply` is carried out and its answer lost. Later ones are held again."""
        loop = self._loop
        if loop is None or self._released is None:
            return
        released = self._released

        async def swap() -> None:
            released.set()
            self._released = asyncio.Event()

        # Done when this returns: a request that arrives afterwards hangs on the new event.
        asyncio.run_coroutine_threadsafe(swap(), loop).result(timeout=5)

    def inject(self, fault: str, *, times: int | None = None, action: str | None = None, seconds: float = 0.0) -> None:
        """Switch a fault on for the next `times` matching requests (None: until cleared).

        latency: wait `seconds` (or until `release_hanging()`), then answer normally, even to a client that
        gave up; hang: hold until `release_hanging()` or stop(), then 503, never carried out; hang_apply:
        hold until released or the client goes away (then `seconds` more), carry the request out, lose the
        answer; 5xx: 503 ServiceUnavailable; 5xx_after_apply: carry it out, then answer 503; throttle: 400
        Throttling.User; not_json: 502 with an HTML body; error: 500 InternalError; forbidden: 403
        Forbidden.RAM (a refusal that is not retried and was not applied). Faults apply after the signature
        check (see the module docstring).
        """
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {sorted(FAULTS)}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None for until cleared)")
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        self._faults.add(Fault(fault, times, action, seconds))

    def clear_faults(self) -> None:
        self._faults.clear()

    def faults(self) -> list[dict[str, Any]]:
        """The faults switched on now, oldest first: kind, action (None: every action), uses left, seconds."""
        return self._faults.snapshot()

    def add_listener(self, callback: Callable[[RecordedCall], None]) -> None:
        """Call `callback(call)` when a request arrives (status 0), when its client goes away before the answer
        (`client_gone`), and when it is answered.

        It runs on the emulator's thread: it must return at once (hand the call over with
        `loop.call_soon_threadsafe`). An exception in it is logged, never raised to the client.
        """
        with self._calls_lock:
            self._listeners.append(callback)

    def _tell_listeners(self, call: RecordedCall) -> None:
        with self._calls_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(call)
            except Exception:  # a broken listener must not break the API
                log.exception("an EMR emulator listener failed")

    # ---- lifecycle ----

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0: any free port) from a background thread; return the base URL."""
        with self._lifecycle:
            if self._thread is not None:
                raise RuntimeError("the emulator is already running")
            loop, thread = serve_in_thread("emr-emulator", lambda: self._open(host, port))
            self._loop, self._thread = loop, thread
            return self.url

    def stop(self) -> None:
        """Release hanging requests, close the server and its thread. Idempotent."""
        with self._lifecycle:
            loop, thread = self._loop, self._thread
            if loop is None or thread is None:
                return
            self._loop = self._thread = None
            stop_thread(loop, thread, self._close(), timeout=None)

    def __enter__(self) -> EmrEmulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _open(self, host: str, port: int) -> None:
        self._released = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that goes away cancels its handler, which is how `_handle` learns it.
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=5, handler_cancellation=True
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}"

    async def _close(self) -> None:
        assert self._released is not None and self._runner is not None
        self._released.set()
        # Let released handlers finish (and complete their RecordedCall) before the server goes away.
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=5)
        await self._runner.cleanup()
        self._runner = None

    # ---- serving (event-loop thread) ----

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        # The request is served in a task of its own, shielded from the client: aiohttp cancels the handler when
        # the client goes away (handler_cancellation), which must not stop what the service already has.
        gone = asyncio.Event()
        work = asyncio.ensure_future(self._serve(request, gone))
        self._inflight.add(work)
        work.add_done_callback(self._inflight.discard)
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            gone.set()  # the client closed the connection before its answer
            raise

    async def _serve(self, request: web.Request, gone: asyncio.Event) -> web.StreamResponse:
        body = await request.read()
        path, _, raw_query = request.raw_path.partition("?")
        merged: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            merged.setdefault(name.lower(), []).append(value.strip())
        headers = {k: ",".join(sorted(v)) for k, v in merged.items()}
        req = Incoming(request.method, path, dict(parse_qsl(raw_query, keep_blank_values=True)), headers, body)
        route = resolve_route(req.method, path)
        action = route.action if route else headers.get("x-acs-action", "")
        request_id = new_request_id()
        call = RecordedCall(action, req.method, path, req.query, headers, body, _parse_json(body), 0, request_id, None)
        with self._calls_changed:
            self.calls.append(call)
            self._calls_changed.notify_all()
        self._tell_listeners(call)
        watch = asyncio.ensure_future(self._note_gone(call, gone))
        try:
            answer = await self._answer(req, route, call, gone)
        finally:
            watch.cancel()
        with self._calls_changed:
            call.status, call.code, call.request_id = answer.status, answer.code, answer.request_id
            call.answer_lost = answer.lost
            self._calls_changed.notify_all()
        self._tell_listeners(call)
        if answer.lost and request.transport is not None:
            # The connection ends without an answer; aiohttp's write of the response below then fails quietly.
            request.transport.close()
        return web.Response(
            status=answer.status,
            body=answer.body,
            headers={"Content-Type": answer.content_type, "x-acs-request-id": answer.request_id},
        )

    async def _note_gone(self, call: RecordedCall, gone: asyncio.Event) -> None:
        await gone.wait()
        self._mark(call, client_gone=True)
        self._tell_listeners(call)  # a page showing the call says at once that its client gave up

    def _mark(self, call: RecordedCall, **flags: bool) -> None:
        with self._calls_changed:
            for name, value in flags.items():
                setattr(call, name, value)
            self._calls_changed.notify_all()

    async def _answer(self, req: Incoming, route: Route | None, call: RecordedCall, gone: asyncio.Event) -> Answer:
        host_id = req.headers.get("host", DEFAULT_HOST_ID)
        request_id = call.request_id
        try:
            now = self._clock()
            key_id = authenticate(req, self._secrets, self._tokens, now, self._max_skew)
            if not self._nonces.use(key_id, req.headers["x-acs-signature-nonce"], now):
                raise ApiError(400, "SignatureNonceUsed", "Specified signature nonce was used already.")
            for fault in self._faults.take(route.action if route else req.headers["x-acs-action"]):
                if fault.kind == "latency":
                    self._mark(call, held=True)
                    try:
                        await self._wait_released(fault.seconds)
                    finally:
                        self._mark(call, held=False)
                    continue
                if fault.kind in HOLDING_FAULTS:
                    released = self._released
                    assert released is not None
                    self._mark(call, held=True)
                    try:
                        if fault.kind == "hang":
                            await released.wait()
                        else:
                            await _first(released.wait(), _after(gone, fault.seconds))
                    finally:
                        self._mark(call, held=False)
                    if fault.kind == "hang":
                        return _fault_answer(fault.kind, request_id, host_id)
                    return replace(self._carry_out(req, route, key_id, call, host_id), lost=True)
                if fault.kind == "5xx_after_apply":
                    done = self._carry_out(req, route, key_id, call, host_id)
                    return done if done.status != 200 else _fault_answer(fault.kind, request_id, host_id)
                return _fault_answer(fault.kind, request_id, host_id)
            return self._carry_out(req, route, key_id, call, host_id)
        except ApiError as err:
            return error_answer(err, request_id, host_id)

    def _carry_out(self, req: Incoming, route: Route | None, key_id: str, call: RecordedCall, host_id: str) -> Answer:
        """Do what the request asks; mark the call applied when it changed a cluster."""
        try:
            answer = self._dispatch(req, route, key_id, call.request_id)
        except ApiError as err:
            return error_answer(err, call.request_id, host_id)
        changed = answer.status == 200 and (
            call.action in (UPDATE, STOP) or (call.action == START and answer.request_id == call.request_id)
        )
        if changed:
            self._mark(call, applied=True)
        return answer

    async def _wait_released(self, seconds: float) -> None:
        assert self._released is not None
        try:
            await asyncio.wait_for(self._released.wait(), timeout=seconds)
        except TimeoutError:
            pass

    def _dispatch(self, req: Incoming, route: Route | None, key_id: str, request_id: str) -> Answer:
        version = req.headers["x-acs-version"]
        if version != API_VERSION:
            raise ApiError(
                400,
                "InvalidVersion",
                f"Specified parameter Version {version!r} is not valid; this API is {API_VERSION}.",
            )
        claimed = req.headers["x-acs-action"]
        if route is None or route.action != claimed:
            raise ApiError(
                404,
                "InvalidAction.NotFound",
                f"Specified api is not found, please check your url and method: {claimed} "
                f"is not {req.method} {req.path}.",
            )
        payload = _json_payload(req)
        workspace, cluster_id = route.workspace_id, route.cluster_id or ""
        match route.action:
            case "ListRayCluster":
                page_num, page_size = page_params(req.query)
                items, total = self._store.page(workspace, page_num, page_size)
                data = {"rayClusters": items, "totalCount": total, "pageNum": page_num, "pageSize": page_size}
                return success(request_id, data)
            case "GetRayCluster":
                return success(request_id, self._store.get(workspace, cluster_id))
            case "UpdateRayCluster":
                fields = update_fields(payload if payload is not None else {})
                self._store.update(workspace, cluster_id, fields)
                return success(request_id, {"clusterId": cluster_id})
            case "StartRayCluster":
                token = _optional_str(payload, "clientToken")
                answered_id = self._store.start(workspace, cluster_id, key_id, token, request_id)
                return success(answered_id, {"clusterId": cluster_id})
            case _:
                self._store.stop(workspace, cluster_id, _optional_str(payload, "instanceId"))
                return success(request_id, {"clusterId": cluster_id})


def _access_key(value: str) -> tuple[str, str]:
    key_id, sep, secret = value.partition(":")
    if not sep or not key_id or not secret:
        raise argparse.ArgumentTypeError("expected ID:SECRET")
    return key_id, secret


def main(argv: list[str] | None = None) -> None:
    """Run the emulator standalone until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m bot.sandbox.emr_server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--seed", type=Path, default=SEED_FILE, help="JSON list of clusters (default: bundled seed)")
    parser.add_argument(
        "--access-key", type=_access_key, action="append", default=[], help="ID:SECRET (repeatable; default testid)"
    )
    parser.add_argument(
        "--settle-seconds", type=float, default=0.0, help="seconds a change takes to settle (default 0: at once)"
    )
    args = parser.parse_args(argv)
    emulator = EmrEmulator(access_keys=dict(args.access_key) or None, settle_seconds=args.settle_seconds)
    emulator.seed_file(args.seed)
    url = emulator.start(args.host, args.port)
    keys = ", ".join(sorted(dict(args.access_key) or {"testid": ""}))
    print(f"EMR emulator on {url} (API {API_VERSION}, access keys: {keys}); Ctrl-C to stop", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
