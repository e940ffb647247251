"""Acting through a RAM role: STS AssumeRole, and the cache of the credentials it hands out.

Each cluster (or workspace, or channel binding) may name the RAM role raybot acts through; raybot
assumes it with its base credentials (the default chain, RRSA on ACK included) and signs the cloud
call with what STS returns. The session name carries the Slack user, so the role's account's
ActionTrail shows who in Slack made each call.

Why not `alibabacloud_credentials`' RamRoleArnCredentialsProvider (1.0.12): its async refresh takes a
`threading.Lock` (up to 5 s) inside the event loop, so a second command arriving during a refresh
blocks every other command and then sends a second AssumeRole anyway; its clock is the process's
wall clock (no test can bring expiry near); it always speaks HTTPS to `sts_endpoint` with the system
trust store; its failures are a CredentialException holding STS's whole answer as text, not Code and
RequestId; and its module logs through its own stream handler. The request it sends is reproduced
here exactly (GET, RPC signature 1.0, HMAC-SHA1; tests check both signatures against its helpers and
run the provider itself against the STS emulator).

The cache is per (role, session name), and so per (role, Slack user), not per role: STS fixes the session
name when it issues a credential, and a credential shared by every user would make ActionTrail name one
user for everyone's calls. One AssumeRole is in flight per (role, user) at a time; at most MAX_SESSIONS
sessions are kept (the least recently used one goes first).

Log masking follows the cache: a credential's AccessKeySecret and SecurityToken are held by the log
masker (`bot.logs.hold_secret`) from the moment STS hands it out until it expires — also after a renewal
replaced it or the cache evicted it, as a command may still be signing with it (at most MAX_SESSIONS such
credentials are kept masked beyond the cache; the one nearest expiry goes first).

`/readyz` asks STS afresh (`RoleCredentials.check`, as `raybot-probe`), never through the cache, at most
once per role every READY_RECHECK_SECONDS: a role whose trust policy was revoked reads as failing within
that time, while commands go on with what the cache holds.
"""

from __future__ import annotations

import asyncio
import calendar
import json
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from bot.emr import signing
from bot.emr.credentials import CredentialsProvider
from bot.emr.errors import EmrError, cloud_message, is_retryable
from bot.logs import hold_secret, release_secret

STS_VERSION = "2015-04-01"
ASSUME_ROLE = "AssumeRole"
ENV_STS_ENDPOINT = "RAYBOT_STS_ENDPOINT"
# From this long before expiry one background AssumeRole renews the credential while commands keep using it …
REFRESH_BEFORE_SECONDS = 300.0
# … and from this long before, a command waits for the fresh one (the old may expire during its call).
WAIT_BEFORE_SECONDS = 60.0
SESSION_NAME = re.compile(r"^[A-Za-z0-9.@_-]{2,64}$")
SESSION_CHARS = re.compile(r"[^A-Za-z0-9.@_-]")
ROLE_ARN = re.compile(r"^acs:ram::(?P<account>\d{1,32}):role/(?P<name>[A-Za-z0-9.@_-]{1,64})$")
DEFAULT_DURATION = 3600
# Sessions kept: one per (role, Slack user) active within the hour, so this is a bound, not a working size.
MAX_SESSIONS = 1000
# /readyz asks STS about a role at most this often (the answer in between is the last one).
READY_RECHECK_SECONDS = 60.0
USER_PLACEHOLDER = "{user}"

log = logging.getLogger("raybot.sts")


def regional_sts_endpoint(region: str) -> str:
    """The public STS endpoint of `region` (regional, as Alibaba Cloud recommends over sts.aliyuncs.com)."""
    return f"https://sts.{region}.aliyuncs.com"


@dataclass(frozen=True)
class RamRole:
    """A RAM role raybot acts through, as the config names it.

    `session_name` is a template: `{user}` becomes the Slack user id; None means `raybot-{user}`.
    """

    arn: str
    external_id: str | None = None
    session_name: str | None = None
    duration: int = DEFAULT_DURATION

    @property
    def name(self) -> str:
        """The role's name, the last part of its ARN (what people recognise)."""
        return self.arn.rsplit("/", 1)[-1]

    @property
    def account(self) -> str:
        """The id of the Alibaba Cloud account the role belongs to."""
        return self.arn.split(":")[3]


def session_name(role: RamRole, user_id: str | None) -> str:
    """The RoleSessionName for a call made for `user_id` (None: raybot's own probe, `raybot-probe`).

    Always valid for STS (2–64 of [A-Za-z0-9.@_-]): other characters become `-`, the end is cut.
    """
    template = role.session_name or f"raybot-{USER_PLACEHOLDER}"
    name = template.replace(USER_PLACEHOLDER, user_id or "probe")
    name = SESSION_CHARS.sub("-", name)[:64]
    return name if len(name) >= 2 else f"{name}--"[:2]


@dataclass(frozen=True)
class Acting:
    """Who a cloud call is made for: through which role, for which Slack user."""

    role: RamRole
    user_id: str | None = None

    @property
    def session_name(self) -> str:
        return session_name(self.role, self.user_id)


@dataclass(frozen=True)
class Assumed:
    credential: signing.Credential
    expires_at: float  # epoch seconds


def parse_expiration(text: str) -> float:
    """STS's `Expiration` (`2026-12-07T06:00:00Z`) as epoch seconds; ValueError when it is not that."""
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))


def assume_role_failure(role: RamRole, status: int | None, body: bytes, header_rid: str | None) -> EmrError:
    """STS said no: its Code and RequestId, and plain words saying that no EMR call was made."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and parsed.get("Code"):
        code = str(parsed["Code"])
        detail = cloud_message(str(parsed.get("Message") or "no message"))
        request_id = parsed.get("RequestId") or header_rid
    else:
        code = "InvalidResponse"
        detail = f"HTTP {status} with a body that is not an STS answer"
        request_id = header_rid
    return EmrError(
        action=ASSUME_ROLE,
        code=code,
        message=f"raybot may not assume {role.name}: {detail}; nothing was sent",
        request_id=request_id,
        status=status,
        retryable=is_retryable(status, code),
        sent=False,
    )


class StsClient:
    """AssumeRole over the wire: one signed GET, bounded by `deadline` seconds."""

    def __init__(
        self,
        *,
        endpoint: str,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        nonce: Callable[[], str] = lambda: uuid.uuid4().hex,
        deadline: float = 5.0,
    ) -> None:
        # Imported here: the EMR client imports this module (it signs calls with what the cache hands out).
        from bot.emr.client import AiohttpTransport, parse_endpoint

        self._endpoint = parse_endpoint(endpoint)
        self._transport = transport if transport is not None else AiohttpTransport()
        self._clock = clock
        self._nonce = nonce
        self._deadline = deadline

    @property
    def endpoint(self) -> str:
        return self._endpoint.base_url

    async def aclose(self) -> None:
        await self._transport.aclose()

    def request_params(self, base: signing.Credential, role: RamRole, name: str, now: float) -> dict[str, str]:
        """The signed query of one AssumeRole (what the official provider sends, Signature included)."""
        params = {
            "Action": ASSUME_ROLE,
            "Format": "JSON",
            "Version": STS_VERSION,
            "DurationSeconds": str(role.duration),
            "RoleArn": role.arn,
            "RoleSessionName": name,
            "SignatureMethod": signing.RPC_SIGNATURE_METHOD,
            "SignatureVersion": signing.RPC_SIGNATURE_VERSION,
            "Timestamp": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "SignatureNonce": self._nonce(),
            "AccessKeyId": base.access_key_id,
        }
        if role.external_id:
            params["ExternalId"] = role.external_id
        if base.security_token:
            params["SecurityToken"] = base.security_token
        params["Signature"] = signing.rpc_signature(base.access_key_secret, signing.rpc_string_to_sign("GET", params))
        return params

    async def assume_role(self, base: signing.Credential, role: RamRole, name: str) -> Assumed:
        """Assume `role` as session `name`; every failure is EmrError(action="AssumeRole", sent=False).

        Whoever keeps the credential has it masked in logs while it may be used (RoleCredentials does)."""
        sent_at = self._clock()
        params = self.request_params(base, role, name, sent_at)
        url = f"{self._endpoint.base_url}/?{signing.canonical_query(params)}"
        request = httpx.Request(
            "GET",
            url,
            headers={"host": self._endpoint.host, "accept": "application/json", "user-agent": "raybot/0.1"},
            extensions={"timeout": {"connect": self._deadline, "read": self._deadline, "write": 5, "pool": 5}},
        )
        try:
            async with asyncio.timeout(self._deadline):
                response = await self._transport.handle_async_request(request)
                try:
                    body = await response.aread()
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.TimeoutException):
            raise EmrError(
                action=ASSUME_ROLE,
                code="Timeout",
                message=f"STS did not answer within {self._deadline:g} s assuming {role.name}; nothing was sent",
                retryable=True,
                sent=False,
            ) from None
        except httpx.TransportError as exc:
            raise EmrError(
                action=ASSUME_ROLE,
                code="ConnectionError",
                message=f"cannot reach STS at {self.endpoint} ({type(exc).__name__}); nothing was sent",
                retryable=True,
                sent=False,
            ) from None
        rid = response.headers.get("x-acs-request-id")
        if response.status_code != 200:
            raise assume_role_failure(role, response.status_code, body, rid)
        try:
            found = json.loads(body)["Credentials"]
            credential = signing.Credential(found["AccessKeyId"], found["AccessKeySecret"], found["SecurityToken"])
            expiration = parse_expiration(found["Expiration"])
        except (ValueError, KeyError, TypeError):
            raise assume_role_failure(role, response.status_code, b"", rid) from None
        # Trust the shorter of STS's word and our own count: a skewed clock must not keep a dead credential.
        return Assumed(credential, min(expiration, sent_at + role.duration))


@dataclass(frozen=True)
class _Key:
    arn: str
    external_id: str | None
    duration: int
    session_name: str


class RoleCredentials:
    """Credentials per role (and session name), assumed on first use and kept until shortly before expiry.

    One AssumeRole per role is in flight at a time, however many commands ask: the same person's commands share
    it, and other people's sessions of that role (each has its own session name, so ActionTrail names who in
    Slack made a call) are assumed one after another, which keeps a burst of first commands within what STS
    lets one caller do. A credential within
    REFRESH_BEFORE_SECONDS of expiry is still handed out while one background AssumeRole renews it;
    within WAIT_BEFORE_SECONDS callers wait for that renewal. At most `max_sessions` keys are kept (least
    recently used evicted). `observe(role, code)` is told each AssumeRole's outcome ("OK" or STS's Code).
    """

    def __init__(
        self,
        base: CredentialsProvider,
        sts: StsClient,
        *,
        clock: Callable[[], float] = time.time,
        observe: Callable[[RamRole, str], None] | None = None,
        max_sessions: int = MAX_SESSIONS,
        recheck_seconds: float = READY_RECHECK_SECONDS,
    ) -> None:
        self._base = base
        self._sts = sts
        self._clock = clock
        self._observe = observe
        self._max_sessions = max_sessions
        self._recheck = recheck_seconds
        self._cache: OrderedDict[_Key, Assumed] = OrderedDict()  # least recently used first
        # Out of the cache (renewed or evicted) but not yet expired: a command may still sign with one.
        self._retired: list[Assumed] = []
        self._inflight: dict[_Key, asyncio.Task[Assumed]] = {}
        self._one_per_role: dict[str, asyncio.Lock] = {}  # by role ARN: the roles of the config, a bounded set
        self._checks: dict[RamRole, tuple[float, EmrError | None]] = {}
        self._checking: dict[RamRole, asyncio.Task[None]] = {}

    @property
    def sts(self) -> StsClient:
        return self._sts

    @property
    def sessions(self) -> int:
        """How many (role, session name) credentials are cached."""
        return len(self._cache)

    async def credential(self, acting: Acting) -> signing.Credential:
        """The credential to sign a call made for `acting` with; EmrError(AssumeRole or CredentialsError)."""
        role = acting.role
        key = _Key(role.arn, role.external_id, role.duration, acting.session_name)
        cached = self._cache.get(key)
        now = self._clock()
        if cached is not None and now < cached.expires_at - WAIT_BEFORE_SECONDS:
            self._cache.move_to_end(key)
            if now >= cached.expires_at - REFRESH_BEFORE_SECONDS:
                self._renewal(key, role)  # in the background: this command goes on with the cached one
            return cached.credential
        return (await asyncio.shield(self._renewal(key, role))).credential

    def _renewal(self, key: _Key, role: RamRole) -> asyncio.Task[Assumed]:
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._assume(key, role), name=f"assume-role-{role.name}")
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        return task

    def _done(self, key: _Key, task: asyncio.Task[Assumed]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            # Retrieved here: a background renewal's failure is awaited by nobody (`_assume` logged it).
            task.exception()

    async def _assume(self, key: _Key, role: RamRole) -> Assumed:
        async with self._one_per_role.setdefault(role.arn, asyncio.Lock()):
            return await self._assume_now(key, role)

    async def _assume_now(self, key: _Key, role: RamRole) -> Assumed:
        base = await self._base.get_credential()
        try:
            assumed = await self._sts.assume_role(base, role, key.session_name)
        except EmrError as error:
            self._tell(role, error.code)
            log.warning(
                "assume role failed role=%s session=%s code=%s request_id=%s",
                role.arn,
                key.session_name,
                error.code,
                error.request_id,
            )
            raise
        now = self._clock()
        self._keep(key, assumed, now)  # masked before anything else runs
        self._tell(role, "OK")
        log.info(
            "assumed role role=%s session=%s expires_in_s=%.0f",
            role.arn,
            key.session_name,
            assumed.expires_at - now,
        )
        return assumed

    def _keep(self, key: _Key, assumed: Assumed, now: float) -> None:
        """Cache `assumed` (masked from now until it expires), and keep the cache and the masked within bounds."""
        _hold(assumed)
        replaced = self._cache.pop(key, None)
        if replaced is not None:
            self._retired.append(replaced)
        self._cache[key] = assumed
        # Sessions of people who stopped asking would otherwise stay forever: drop what has expired …
        for stale in [k for k, v in self._cache.items() if v.expires_at <= now]:
            _release(self._cache.pop(stale))
        # … and the least recently used beyond the bound.
        while len(self._cache) > self._max_sessions:
            self._retired.append(self._cache.popitem(last=False)[1])
        self._retired.sort(key=lambda a: a.expires_at)
        while self._retired and (self._retired[0].expires_at <= now or len(self._retired) > self._max_sessions):
            _release(self._retired.pop(0))

    def _tell(self, role: RamRole, code: str) -> None:
        if self._observe is not None:
            self._observe(role, code)

    async def check(self, role: RamRole) -> None:
        """Whether raybot may assume `role` now, asked of STS itself as `raybot-probe` (never through the cache
        commands use), at most once per `recheck_seconds` per role: in between, the last answer stands.
        Raises the EmrError STS (or the base credentials) gave."""
        last = self._checks.get(role)
        if last is None or self._clock() >= last[0] + self._recheck:
            task = self._checking.get(role)
            if task is None:
                task = asyncio.get_running_loop().create_task(self._check(role), name=f"check-role-{role.name}")
                self._checking[role] = task
                task.add_done_callback(lambda t: self._checked(role, t))
            await asyncio.shield(task)
            last = self._checks[role]
        if last[1] is not None:
            # A fresh traceback each time: re-raising one instance would grow its traceback at every probe.
            raise last[1].with_traceback(None)

    def _checked(self, role: RamRole, task: asyncio.Task[None]) -> None:
        if self._checking.get(role) is task:
            del self._checking[role]
        if not task.cancelled():
            task.exception()

    async def _check(self, role: RamRole) -> None:
        asked_at = self._clock()
        try:
            base = await self._base.get_credential()
            await self._sts.assume_role(base, role, session_name(role, None))  # thrown away: never used
        except EmrError as error:
            self._tell(role, error.code)
            log.warning("role check failed role=%s code=%s request_id=%s", role.arn, error.code, error.request_id)
            self._checks[role] = (asked_at, error)
            return
        self._tell(role, "OK")
        self._checks[role] = (asked_at, None)

    async def renewed(self) -> None:
        """Wait until the AssumeRoles in flight have ended (whatever their outcome)."""
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)

    async def aclose(self) -> None:
        tasks = [*self._inflight.values(), *self._checking.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._sts.aclose()
        for assumed in [*self._cache.values(), *self._retired]:
            _release(assumed)
        self._cache.clear()
        self._retired.clear()


def _hold(assumed: Assumed) -> None:
    hold_secret(assumed.credential.access_key_secret)
    hold_secret(assumed.credential.security_token)


def _release(assumed: Assumed) -> None:
    release_secret(assumed.credential.access_key_secret)
    release_secret(assumed.credential.security_token)


def check_names(roles: list[RamRole]) -> dict[RamRole, str]:
    """A short name per role for probes and messages: its name, or account/name where two accounts share one."""
    names = [role.name for role in roles]
    return {role: role.name if names.count(role.name) == 1 else f"{role.account}/{role.name}" for role in roles}


async def probe_roles(roles: list[RamRole], probe: Callable[[RamRole], Awaitable[None]]) -> dict[str, str]:
    """Each distinct role's ARN → "ok" or what went wrong (Code and RequestId, never a secret)."""
    distinct = list(dict.fromkeys(roles))
    out: dict[str, str] = {}

    async def one(role: RamRole) -> None:
        try:
            await probe(role)
            out[role.arn] = "ok"
        except EmrError as error:
            rid = f" (RequestId {error.request_id})" if error.request_id else ""
            out[role.arn] = f"{error.code}: {error.message}{rid}"

    await asyncio.gather(*(one(role) for role in distinct))
    return out
