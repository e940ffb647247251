"""The async client of the EMR Serverless Spark Ray cluster API (2023-08-08).

The only module that talks to the cloud. Each call is signed with ACS3-HMAC-SHA256
(bot.emr.signing), retried with full-jitter exponential backoff when the failure is
transient (throttling by Code, 5xx, transport errors), and bounded by one deadline
covering every attempt and every backoff sleep. Every failure is an EmrError.

Requests and responses are httpx objects handed to an httpx transport (tests pass
`httpx.MockTransport`); the default transport sends them with aiohttp (see
AiohttpTransport for why).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random as random_module
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
import httpx
import yarl
from aiohttp.helpers import get_env_proxy_for_url
from pydantic import BaseModel, ValidationError

from bot.emr import signing
from bot.emr.credentials import CREDENTIALS_ERROR, CredentialsProvider
from bot.emr.errors import EmrError, cloud_message, is_retryable
from bot.emr.models import (
    ActionResponse,
    ListRayClusterResponse,
    RayCluster,
    UpdateRayClusterRequest,
    dumps_body,
)
from bot.emr.sts import Acting, RoleCredentials

API_VERSION = "2023-08-08"
USER_AGENT = "raybot/0.1 (+emr-serverless-spark 2023-08-08)"
JSON_CONTENT_TYPE = "application/json; charset=utf-8"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
BACKOFF_BASE = 0.2
BACKOFF_CAP = 2.0
# A service that keeps answering full pages must not keep raybot listing forever.
MAX_LIST_PAGES = 1000
SNIPPET_CHARS = 200

log = logging.getLogger("raybot.emr")

M = TypeVar("M", bound=BaseModel)


def regional_endpoint(region: str) -> str:
    """The public endpoint of EMR Serverless Spark in `region`."""
    return f"https://emr-serverless-spark.{region}.aliyuncs.com"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _new_nonce() -> str:
    return uuid.uuid4().hex


def backoff_delay(attempt: int, draw: float, *, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Full jitter: a uniform share (`draw` in [0, 1)) of min(cap, base * 2**(attempt-1))."""
    return draw * min(cap, base * 2 ** (attempt - 1))


def snippet(body: bytes, limit: int = SNIPPET_CHARS) -> str:
    """A short, single-line, printable excerpt of a response body for error messages."""
    text = body[: limit * 4].decode("utf-8", errors="replace")
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", text)
    text = re.sub(r"\s+", " ", text).strip()
    return text[:limit] + "…" if len(text) > limit else text


def _first(mapping: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = mapping.get(key)
        if value not in (None, ""):
            return value
    return None


def error_from_response(action: str, status: int, headers: Mapping[str, str], body: bytes) -> EmrError:
    """The EmrError for a non-2xx answer: Code/Message/RequestId from the body, or InvalidResponse."""
    header_rid = headers.get("x-acs-request-id")
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and _first(parsed, "Code", "code") is not None:
        code = str(_first(parsed, "Code", "code"))
        message = _first(parsed, "Message", "message")
        recommend = _first(parsed, "Recommend", "recommend")
        return EmrError(
            action=action,
            code=code,
            message=cloud_message(str(message)) if message is not None else f"HTTP {status} without a message",
            request_id=_first(parsed, "RequestId", "requestId") or header_rid,
            status=status,
            retryable=is_retryable(status, code),
            recommend=str(recommend) if recommend is not None else None,
        )
    request_id = _first(parsed, "RequestId", "requestId") if isinstance(parsed, dict) else None
    return EmrError(
        action=action,
        code="InvalidResponse",
        message=f"HTTP {status} with a body that is not a JSON error: {snippet(body)!r}",
        request_id=request_id or header_rid,
        status=status,
        retryable=is_retryable(status, "InvalidResponse"),
    )


def parse_success(action: str, model: type[M], status: int, headers: Mapping[str, str], body: bytes) -> M:
    """The model of a 2xx answer; a body that is not the expected JSON object is EmrError(InvalidResponse)."""
    header_rid = headers.get("x-acs-request-id")
    try:
        parsed = json.loads(body)
        if not isinstance(parsed, dict):
            raise ValueError("not a JSON object")
        result = model.model_validate(parsed)
    except (ValueError, ValidationError) as exc:
        kind = "does not match the expected shape" if isinstance(exc, ValidationError) else "is not a JSON object"
        raise EmrError(
            action=action,
            code="InvalidResponse",
            message=f"HTTP {status} with a body that {kind}: {snippet(body)!r}",
            request_id=header_rid,
            status=status,
            retryable=False,
        ) from None
    if getattr(result, "request_id", "") is None and header_rid:
        result.request_id = header_rid  # type: ignore[attr-defined]
    return result


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx's transport interface over one pooled aiohttp session.

    Why: on the loopback benchmark httpx's own transport (h11 + httpcore + anyio) made
    raybot slower than the official SDK; aiohttp's C-parsed HTTP/1.1 is not. raybot
    keeps httpx as its interface (tests hand in `httpx.MockTransport`); only the wire
    goes through aiohttp, already a dependency. The session is opened on first use,
    inside the running event loop.

    Proxies come from the environment (HTTP(S)_PROXY, NO_PROXY), looked up once per
    origin: aiohttp's own `trust_env` would look them (and ~/.netrc) up in a worker
    thread on every request, which costs two thread hops per call, and a netrc entry
    would clash with the Authorization header.
    """

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str, int | None], str | None] = {}

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No decompression here: httpx decodes by Content-Encoding, as with its own transport.
            self._session = aiohttp.ClientSession(
                auto_decompress=False, trust_env=False, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    def _proxy_for(self, url: httpx.URL) -> str | None:
        origin = (url.scheme, url.host, url.port)
        if origin not in self._proxies:
            try:
                proxy, _ = get_env_proxy_for_url(yarl.URL(str(url)))
            except LookupError:
                proxy = None
            self._proxies[origin] = str(proxy) if proxy is not None else None
        return self._proxies[origin]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        body = await request.aread()
        try:
            async with self._open().request(
                request.method,
                str(request.url),
                headers=list(request.headers.multi_items()),
                data=body or None,
                skip_auto_headers=("Content-Type",),
                allow_redirects=False,
                proxy=self._proxy_for(request.url),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=timeout.get("connect"), sock_read=timeout.get("read")
                ),
            ) as answer:
                content = await answer.read()
                return httpx.Response(
                    answer.status,
                    headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in answer.raw_headers],
                    content=content,
                    request=request,
                )
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc) or "connect timeout", request=request) from exc
        except aiohttp.ServerTimeoutError as exc:
            raise httpx.ReadTimeout(str(exc) or "read timeout", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise httpx.RemoteProtocolError(str(exc) or "server disconnected", request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


@dataclass(frozen=True)
class _Endpoint:
    base_url: str
    host: str


def parse_endpoint(endpoint: str) -> _Endpoint:
    """`host[:port]` (HTTPS) or `scheme://host[:port]` into a base URL and the Host header value."""
    text = endpoint.strip().rstrip("/")
    if "://" not in text:
        text = f"https://{text}"
    url = httpx.URL(text)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"the EMR endpoint must look like host:port or https://host, not {endpoint!r}")
    host = url.netloc.decode("ascii")
    return _Endpoint(f"{url.scheme}://{host}", host)


class EmrClient:
    """Signed, retried, deadline-bounded calls to the Ray cluster API.

    One long-lived instance per process: its transport keeps the connection pool. `region`
    selects the regional endpoint (a call may name another region); `endpoint`, when
    set, overrides it for every region (the sandbox, a VPC endpoint).
    """

    def __init__(
        self,
        credentials: CredentialsProvider,
        *,
        region: str,
        endpoint: str | None = None,
        deadline: float = 10.0,
        connect_timeout: float = 3.0,
        read_timeout: float = 8.0,
        max_attempts: int = 4,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        random: Callable[[], float] = random_module.random,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utc_now,
        nonce: Callable[[], str] = _new_nonce,
        transport: httpx.AsyncBaseTransport | None = None,
        observe: Callable[[str, str, float], None] | None = None,
        roles: RoleCredentials | None = None,
    ) -> None:
        """`observe(action, code, seconds)` is told the outcome of every call ("OK" or the error's Code).

        `roles` assumes the RAM role a call is made through (its `acting`); without it, or for a call
        with no `acting`, calls are signed with `credentials` themselves.
        """
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._credentials = credentials
        self._roles = roles
        self._region = region
        self._override = parse_endpoint(endpoint) if endpoint else None
        self._endpoints: dict[str, _Endpoint] = {}
        self._deadline = deadline
        self._max_attempts = max_attempts
        self._sleep = sleep
        self._random = random
        self._clock = clock
        self._now = now
        self._nonce = nonce
        self._observe = observe
        # Requests go straight to the transport: httpx.AsyncClient's cookies, redirects, auth
        # and header merging are nothing raybot needs, and cost more than the signing itself.
        self._transport = transport if transport is not None else AiohttpTransport()
        self._timeouts = {
            "connect": connect_timeout,
            "read": read_timeout,
            "write": read_timeout,
            "pool": connect_timeout,
        }

    async def __aenter__(self) -> EmrClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (and the STS client's)."""
        await self._transport.aclose()
        if self._roles is not None:
            await self._roles.aclose()

    @property
    def roles(self) -> RoleCredentials | None:
        """The cache of assumed RAM roles, when raybot acts through roles."""
        return self._roles

    def endpoint_for(self, region: str | None = None) -> str:
        """The base URL a call in `region` (default: the client's region) goes to."""
        return self._endpoint(region).base_url

    def _endpoint(self, region: str | None) -> _Endpoint:
        if self._override is not None:
            return self._override
        region = region or self._region
        found = self._endpoints.get(region)
        if found is None:
            found = self._endpoints[region] = parse_endpoint(regional_endpoint(region))
        return found

    # -- the actions -------------------------------------------------------------------------------

    async def get_cluster(
        self, workspace_id: str, cluster_id: str, *, region: str | None = None, acting: Acting | None = None
    ) -> RayCluster:
        """GetRayCluster: the cluster as the service holds it."""
        path = signing.encode_path("api", "v1", "workspaces", workspace_id, "rayCluster", cluster_id)
        return await self._call(
            "GetRayCluster", "GET", path, RayCluster, region=region, cluster_id=cluster_id, acting=acting
        )

    async def list_clusters(
        self, workspace_id: str, *, region: str | None = None, page_size: int = 100, acting: Acting | None = None
    ) -> list[RayCluster]:
        """ListRayCluster, every page: until totalCount is reached, or a short page when there is no totalCount."""
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        path = signing.encode_path("api", "v1", "workspaces", workspace_id, "rayCluster")
        clusters: list[RayCluster] = []
        for page_num in range(1, MAX_LIST_PAGES + 1):
            query = {"pageNum": str(page_num), "pageSize": str(page_size)}
            page = await self._call(
                "ListRayCluster", "GET", path, ListRayClusterResponse, query=query, region=region, acting=acting
            )
            clusters.extend(page.ray_clusters)
            if not page.ray_clusters:
                return clusters
            if page.total_count is not None:
                if len(clusters) >= page.total_count:
                    return clusters
            elif len(page.ray_clusters) < page_size:
                return clusters
        raise EmrError(
            action="ListRayCluster",
            code="InvalidResponse",
            message=f"still more clusters after {MAX_LIST_PAGES} pages of {page_size}; stopped listing",
        )

    async def update_cluster(
        self,
        workspace_id: str,
        cluster_id: str,
        body: UpdateRayClusterRequest,
        *,
        region: str | None = None,
        acting: Acting | None = None,
    ) -> ActionResponse:
        """UpdateRayCluster with `body` exactly as set (fields never set are left out)."""
        path = signing.encode_path("api", "v1", "workspaces", workspace_id, "rayCluster", cluster_id)
        data = dumps_body(body.wire())
        return await self._call(
            "UpdateRayCluster",
            "POST",
            path,
            ActionResponse,
            body=data,
            region=region,
            idempotent=False,
            cluster_id=cluster_id,
            acting=acting,
        )

    async def start_cluster(
        self,
        workspace_id: str,
        cluster_id: str,
        *,
        client_token: str | None = None,
        region: str | None = None,
        acting: Acting | None = None,
    ) -> ActionResponse:
        """StartRayCluster; `client_token` makes a repeated start idempotent."""
        path = signing.encode_path("api", "v1", "workspaces", workspace_id, "rayCluster", cluster_id, "start")
        data = dumps_body({"clientToken": client_token} if client_token else {})
        return await self._call(
            "StartRayCluster",
            "POST",
            path,
            ActionResponse,
            body=data,
            region=region,
            cluster_id=cluster_id,
            acting=acting,
        )

    async def stop_cluster(
        self, workspace_id: str, cluster_id: str, *, region: str | None = None, acting: Acting | None = None
    ) -> ActionResponse:
        """StopRayCluster."""
        path = signing.encode_path("api", "v1", "workspaces", workspace_id, "rayCluster", cluster_id, "stop")
        return await self._call(
            "StopRayCluster",
            "POST",
            path,
            ActionResponse,
            body=dumps_body({}),
            region=region,
            idempotent=False,
            acting=acting,
            cluster_id=cluster_id,
        )

    @property
    def deadline(self) -> float:
        """Seconds one call may take, retries included: after that a change call in flight is given up."""
        return self._deadline

    # -- one call: attempts, backoff, deadline -----------------------------------------------------

    async def _call(
        self,
        action: str,
        method: str,
        path: str,
        model: type[M],
        *,
        query: Mapping[str, str] | None = None,
        body: bytes | None = None,
        region: str | None = None,
        idempotent: bool = True,
        acting: Acting | None = None,
        cluster_id: str | None = None,
    ) -> M:
        """One call, retried while that is safe: a call that is not idempotent (it changes a cluster and
        carries no token) is retried only when its attempt cannot have been applied (throttled, or no
        connection made), so a lost answer never applies a change twice; the caller then reads the cluster.
        """
        endpoint = self._endpoint(region)
        started = self._clock()
        deadline_at = started + self._deadline
        attempt = 0
        try:
            async with asyncio.timeout(self._deadline):
                while True:
                    attempt += 1
                    try:
                        result = await self._attempt(
                            action, method, endpoint, path, query, body, model, attempt, acting
                        )
                    except EmrError as exc:
                        if not exc.retryable or attempt >= self._max_attempts:
                            raise
                        if not idempotent and exc.maybe_applied:
                            raise
                        delay = backoff_delay(attempt, self._random())
                        if self._clock() + delay >= deadline_at:
                            raise
                        log.info(
                            "emr retry action=%s attempt=%d code=%s status=%s request_id=%s backoff_s=%.3f",
                            action,
                            attempt,
                            exc.code,
                            exc.status,
                            exc.request_id,
                            delay,
                            extra={"action": action, "cluster_id": cluster_id, "request_id": exc.request_id},
                        )
                        await self._sleep(delay)
                        continue
                    log.info(
                        "emr done action=%s attempts=%d request_id=%s duration_ms=%.1f",
                        action,
                        attempt,
                        getattr(result, "request_id", None),
                        (self._clock() - started) * 1000,
                        extra={
                            "action": action,
                            "cluster_id": cluster_id,
                            "request_id": getattr(result, "request_id", None),
                        },
                    )
                    if self._observe is not None:
                        self._observe(action, "OK", self._clock() - started)
                    return result
        except TimeoutError:
            error = EmrError(
                action=action,
                code="Timeout",
                message=f"no answer within the {self._deadline:g} s deadline "
                f"({attempt} attempt{'' if attempt == 1 else 's'})",
                retryable=True,
            )
        except EmrError as exc:
            error = exc
        log.info(
            "emr failed action=%s attempts=%d code=%s status=%s request_id=%s duration_ms=%.1f",
            action,
            attempt,
            error.code,
            error.status,
            error.request_id,
            (self._clock() - started) * 1000,
            extra={"action": action, "cluster_id": cluster_id, "request_id": error.request_id, "code": error.code},
        )
        if self._observe is not None:
            self._observe(action, error.code, self._clock() - started)
        error.attempts, error.cluster_id = max(attempt, 1), cluster_id
        raise error

    async def _attempt(
        self,
        action: str,
        method: str,
        endpoint: _Endpoint,
        path: str,
        query: Mapping[str, str] | None,
        body: bytes | None,
        model: type[M],
        attempt: int,
        acting: Acting | None,
    ) -> M:
        credential = await self._credential(action, acting)
        # Each attempt is signed afresh: a new date and nonce, or the service rejects the replay.
        headers = {
            "host": endpoint.host,
            "x-acs-action": action,
            "x-acs-version": API_VERSION,
            "x-acs-date": self._now().astimezone(UTC).strftime(DATE_FORMAT),
            "x-acs-signature-nonce": self._nonce(),
            "user-agent": USER_AGENT,
            "accept": "application/json",
        }
        if body is not None:
            headers["content-type"] = JSON_CONTENT_TYPE
        signed = signing.sign(
            method=method, path=path, query=query, headers=headers, body=body or b"", credential=credential
        )
        url = endpoint.base_url + path
        if query:
            url += "?" + signing.canonical_query(query)
        request = httpx.Request(method, url, headers=signed, content=body, extensions={"timeout": self._timeouts})
        sent = self._clock()
        try:
            response = await self._transport.handle_async_request(request)
            try:
                content = await response.aread()
            finally:
                await response.aclose()
        except httpx.ConnectTimeout as exc:
            raise self._transport_error(action, "Timeout", exc, attempt, sent, delivered=False) from None
        except httpx.TimeoutException as exc:
            raise self._transport_error(action, "Timeout", exc, attempt, sent) from None
        except httpx.ConnectError as exc:
            raise self._transport_error(action, "ConnectionError", exc, attempt, sent, delivered=False) from None
        except httpx.TransportError as exc:
            raise self._transport_error(action, "ConnectionError", exc, attempt, sent) from None
        status = response.status_code
        request_id = response.headers.get("x-acs-request-id")
        log.debug(
            "emr attempt action=%s attempt=%d status=%d request_id=%s duration_ms=%.1f",
            action,
            attempt,
            status,
            request_id,
            (self._clock() - sent) * 1000,
        )
        if 200 <= status < 300:
            return parse_success(action, model, status, response.headers, content)
        raise error_from_response(action, status, response.headers, content)

    def _transport_error(
        self, action: str, code: str, exc: Exception, attempt: int, sent: float, *, delivered: bool = True
    ) -> EmrError:
        detail = type(exc).__name__ + (f": {exc}" if str(exc) else "")
        log.debug(
            "emr attempt action=%s attempt=%d error=%s duration_ms=%.1f",
            action,
            attempt,
            type(exc).__name__,
            (self._clock() - sent) * 1000,
        )
        return EmrError(action=action, code=code, message=detail, retryable=True, sent=delivered)

    async def check_credentials(self) -> None:
        """Raise EmrError(CredentialsError) when no credential can be had now (for /readyz)."""
        await self._credential("GetCredential")

    async def _credential(self, action: str, acting: Acting | None = None) -> signing.Credential:
        try:
            if acting is not None and self._roles is not None:
                return await self._roles.credential(acting)
            return await self._credentials.get_credential()
        except EmrError as exc:
            if exc.code == CREDENTIALS_ERROR and exc.action != action:
                raise EmrError(action=action, code=exc.code, message=exc.message) from None
            raise
        except Exception as exc:
            raise EmrError(
                action=action,
                code=CREDENTIALS_ERROR,
                message=f"the credentials provider failed ({type(exc).__name__})",
            ) from None
