"""A loopback emulator of the EMR Serverless Spark Ray cluster API (version 2023-08-08).

It is as strict as the real service where raybot could get something wrong: every
request must carry a valid ACS3-HMAC-SHA256 signature (checked with
`bot.emr.signing`, and it accepts the official SDK's), request bodies are judged
by raybot's own wire models in strict mode, and errors have Alibaba's shape
(`RequestId`, `HostId`, `Code`, `Message`, `Recommend`, plus the
`x-acs-request-id` header). State is in memory, keyed by (workspaceId, clusterId).
Faults (latency, hang, 5xx, throttling, non-JSON, internal error) can be switched
on to look like service-side failures: they apply after the signature check.

Codes the public documentation does not pin down, chosen here:
- body hash differs from `x-acs-content-sha256`: 400 `InvalidParameter.ContentSha256`
- a required header absent: 400 `MissingParameter`; present but not signed: 400 `IncompleteSignature`
- `x-acs-action` does not name the route's action: 404 `InvalidAction.NotFound`
- unknown workspace: 404 `WorkspaceNotFound`; unknown cluster: 404 `RayClusterNotFound`
- start a cluster that is not Stopped, stop one that is not Running: 400 `InvalidClusterState`
- a clientToken reused for another cluster: 400 `IdempotentParameterMismatch`
- STS token unknown: 400 `InvalidSecurityToken.Expired`; owned by another key: 400
  `InvalidSecurityToken.MismatchWithAccessKey`

Run standalone with `python -m bot.sandbox.emr_server [--host] [--port] [--seed] [--access-key ID:SECRET]`.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import copy
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from aiohttp import web
from pydantic import ValidationError

from bot.emr import signing
from bot.emr.models import ClusterFields, RayCluster, UpdateRayClusterRequest

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

FAULTS = frozenset({"latency", "hang", "5xx", "throttle", "not_json", "error"})

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


class ClusterStore:
    """Clusters per workspace, in wire form (camelCase), as the service stores them."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._clusters: dict[str, dict[str, dict[str, Any]]] = {}
        self._started: dict[tuple[str, str], tuple[str, str, str]] = {}  # (key id, clientToken) -> ws, id, requestId
        self._lock = threading.Lock()

    def seed(self, clusters: Iterable[Mapping[str, Any]]) -> None:
        """Add or replace clusters; each carries its `workspaceId` (not stored) and `clusterId`."""
        with self._lock:
            for raw in clusters:
                cluster = copy.deepcopy(dict(raw))
                workspace = cluster.pop("workspaceId", None)
                if not workspace or not cluster.get("clusterId"):
                    raise ValueError("every seeded cluster needs a workspaceId and a clusterId")
                self._clusters.setdefault(workspace, {})[cluster["clusterId"]] = cluster

    def snapshot(self, workspace: str, cluster_id: str) -> dict[str, Any]:
        """A deep copy of one cluster; KeyError when unknown."""
        with self._lock:
            return copy.deepcopy(self._clusters[workspace][cluster_id])

    def _find(self, workspace: str, cluster_id: str) -> dict[str, Any]:
        if workspace not in self._clusters:
            raise ApiError(404, "WorkspaceNotFound", f"The workspace {workspace} does not exist.")
        cluster = self._clusters[workspace].get(cluster_id)
        if cluster is None:
            raise ApiError(
                404, "RayClusterNotFound", f"The Ray cluster {cluster_id} does not exist in workspace {workspace}."
            )
        return cluster

    def _now_ms(self, previous: Any = 0) -> int:
        # Strictly after the previous stamp, so a change is visible even under a frozen test clock.
        now = int(self._clock() * 1000)
        return max(now, previous + 1) if isinstance(previous, int) else now

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
            return [list_summary(c) for c in clusters[start : start + page_size]], len(clusters)

    def update(self, workspace: str, cluster_id: str, fields: Mapping[str, Any]) -> None:
        """Replace each top-level field sent (workerSpec and headSpec as a whole); keep everything else."""
        with self._lock:
            cluster = self._find(workspace, cluster_id)
            cluster.update(copy.deepcopy(dict(fields)))
            cluster["modifiedTime"] = self._now_ms(cluster.get("modifiedTime", 0))

    def start(self, workspace: str, cluster_id: str, key_id: str, token: str | None, request_id: str) -> str:
        """Stopped -> Running; the request id to answer with (the first one when clientToken repeats)."""
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
            cluster.update(state="Running", message="", startTime=now)
            cluster["instances"] = [
                {
                    "instanceId": f"{cluster_id}-head-0",
                    "type": "Head",
                    "phase": "Running",
                    "containerState": "Running",
                    "containerExitCode": 0,
                    "createTime": now,
                    "startTime": now,
                }
            ]
            if token is not None:
                self._started[(key_id, token)] = (workspace, cluster_id, request_id)
            return request_id

    def stop(self, workspace: str, cluster_id: str, instance_id: str | None) -> None:
        """Running -> Stopped. An instanceId, when sent, must be the cluster's or one of its instances'."""
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
            cluster.update(state="Stopped", message="stopped by user", instances=[])


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


def _fault_answer(kind: str, request_id: str, host_id: str) -> Answer:
    if kind == "not_json":
        html = b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1>"
        html += b"</center>\r\n<hr><center>Tengine</center>\r\n</body>\r\n</html>\r\n"
        return Answer(502, html, request_id, None, "text/html")
    status, code, message = {
        "5xx": (503, "ServiceUnavailable", "The request has failed due to a temporary failure of the server."),
        "throttle": (400, "Throttling.User", "Request was denied due to user flow control."),
        "error": (500, "InternalError", "The request processing has failed due to some unknown error."),
        "hang": (503, "ServiceUnavailable", "The emulator stopped before answering."),
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
    ) -> None:
        self._secrets = dict(access_keys) if access_keys is not None else {"testid": "testsecret"}
        self._tokens = dict(sts_tokens or {})
        self._clock = clock
        self._max_skew = max_skew_seconds
        self._store = ClusterStore(clock)
        self._store.seed(clusters)
        self._nonces = NonceLedger()
        self._faults = FaultBoard()
        self.calls: list[RecordedCall] = []
        self._calls_lock = threading.Lock()
        self._lifecycle = threading.Lock()
        self.url = ""
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._released: asyncio.Event | None = None
        self._inflight: set[asyncio.Task[Any]] = set()

    # ---- state and faults (callable from any thread) ----

    def seed(self, clusters: Iterable[dict]) -> None:
        """Add or replace clusters given in wire form, each with its `workspaceId`."""
        self._store.seed(clusters)

    def seed_file(self, path: str | Path) -> None:
        """Seed from a JSON file holding a list of clusters (see seed_clusters.json)."""
        self._store.seed(json.loads(Path(path).read_text(encoding="utf-8")))

    def cluster(self, workspace_id: str, cluster_id: str) -> dict:
        """A deep copy of the cluster's current wire-form state; KeyError when unknown."""
        return self._store.snapshot(workspace_id, cluster_id)

    def calls_for(self, action: str) -> list[RecordedCall]:
        with self._calls_lock:
            return [c for c in self.calls if c.action == action]

    def inject(self, fault: str, *, times: int | None = None, action: str | None = None, seconds: float = 0.0) -> None:
        """Switch a fault on for the next `times` matching requests (None: until cleared).

        latency: wait `seconds`, then answer normally; hang: never answer until stop();
        5xx: 503 ServiceUnavailable; throttle: 400 Throttling.User; not_json: 502 with
        an HTML body; error: 500 InternalError. Faults apply after the signature check.
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

    # ---- lifecycle ----

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0: any free port) from a background thread; return the base URL."""
        with self._lifecycle:
            if self._thread is not None:
                raise RuntimeError("the emulator is already running")
            loop = asyncio.new_event_loop()
            opened: concurrent.futures.Future[None] = concurrent.futures.Future()

            def run() -> None:
                asyncio.set_event_loop(loop)
                try:
                    loop.run_until_complete(self._open(host, port))
                except BaseException as exc:  # handed to start()'s caller (e.g. port in use)
                    loop.close()
                    opened.set_exception(exc)
                    return
                opened.set_result(None)
                loop.run_forever()
                loop.close()

            thread = threading.Thread(target=run, name="emr-emulator", daemon=True)
            thread.start()
            opened.result()
            self._loop, self._thread = loop, thread
            return self.url

    def stop(self) -> None:
        """Release hanging requests, close the server and its thread. Idempotent."""
        with self._lifecycle:
            loop, thread = self._loop, self._thread
            if loop is None or thread is None:
                return
            self._loop = self._thread = None
            try:
                asyncio.run_coroutine_threadsafe(self._close(), loop).result()
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join()

    def __enter__(self) -> EmrEmulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _open(self, host: str, port: int) -> None:
        self._released = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5)
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

    async def _handle(self, request: web.Request) -> web.Response:
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        try:
            return await self._serve(request)
        finally:
            self._inflight.discard(task)

    async def _serve(self, request: web.Request) -> web.Response:
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
        with self._calls_lock:
            self.calls.append(call)

        answer = await self._answer(req, route, request_id)
        call.status, call.code, call.request_id = answer.status, answer.code, answer.request_id
        return web.Response(
            status=answer.status,
            body=answer.body,
            headers={"Content-Type": answer.content_type, "x-acs-request-id": answer.request_id},
        )

    async def _answer(self, req: Incoming, route: Route | None, request_id: str) -> Answer:
        host_id = req.headers.get("host", DEFAULT_HOST_ID)
        try:
            now = self._clock()
            key_id = authenticate(req, self._secrets, self._tokens, now, self._max_skew)
            if not self._nonces.use(key_id, req.headers["x-acs-signature-nonce"], now):
                raise ApiError(400, "SignatureNonceUsed", "Specified signature nonce was used already.")
            for fault in self._faults.take(route.action if route else req.headers["x-acs-action"]):
                if fault.kind == "latency":
                    await self._wait_released(fault.seconds)
                    continue
                if fault.kind == "hang":
                    assert self._released is not None
                    await self._released.wait()
                return _fault_answer(fault.kind, request_id, host_id)
            return self._dispatch(req, route, key_id, request_id)
        except ApiError as err:
            return error_answer(err, request_id, host_id)

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
    args = parser.parse_args(argv)
    emulator = EmrEmulator(access_keys=dict(args.access_key) or None)
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
