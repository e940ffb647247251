"""A loopback emulator of STS AssumeRole (2015-04-01), for tests.

It checks what STS checks before issuing anything: the RPC signature (1.0, HMAC-SHA1, verified with
`bot.emr.signing` — and the official `alibabacloud-credentials` provider is run against it in a test),
the timestamp (15 minutes either way), the nonce (once), the caller's AccessKey (and its security
token, when the caller is itself an STS credential, as under RRSA), that the role exists, that its
trust policy lets the caller in, the ExternalId it requires, the session name and the duration. It
then issues short-lived credentials per role and session, told to `on_issue` (so the EMR emulator
can accept them). It serves plain HTTP, or HTTPS with `ssl_context` (the official provider speaks
HTTPS only; tests make a throwaway CA with trustme). Tests switch it to refuse a role (`deny`) or to keep
one AssumeRole unanswered until they `release()` it (`hold`: a renewal in flight).

Answers are shaped like STS's: `{"RequestId", "AssumedRoleUser", "Credentials"}` on success, and
`{"RequestId", "HostId", "Code", "Message", "Recommend"}` with the HTTP status of the error otherwise.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qsl

from aiohttp import web

from bot.emr import signing
from bot.emr.sts import ROLE_ARN, SESSION_NAME, STS_VERSION
from bot.sandbox.loop_thread import serve_in_thread, stop_thread

MAX_SKEW_SECONDS = 900
DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class EmulatedRole:
    """A RAM role as STS knows it: who its trust policy lets assume it (None: any caller) and its ExternalId."""

    arn: str
    trusted: frozenset[str] | None = None  # AccessKey ids allowed to assume it
    external_id: str | None = None
    max_duration: int = 3600
    lifetime: int | None = None  # tests of renewal: credentials that expire this soon, whatever was asked


@dataclass(frozen=True)
class Issued:
    """Credentials handed out: for which role and session, to which caller, until when (epoch seconds)."""

    role_arn: str
    session_name: str
    caller: str  # the AccessKey id that signed the AssumeRole
    access_key_id: str
    access_key_secret: str = field(repr=False)
    security_token: str = field(repr=False)
    expires_at: float = 0.0


@dataclass(frozen=True)
class StsCall:
    """One AssumeRole as received (without its Signature) and its answer."""

    params: dict[str, str] = field(repr=False)
    status: int
    code: str | None
    request_id: str

    @property
    def role_arn(self) -> str | None:
        return self.params.get("RoleArn")

    @property
    def session_name(self) -> str | None:
        return self.params.get("RoleSessionName")


class StsError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class _Denial:
    role_arn: str | None
    code: str
    message: str
    status: int
    remaining: int | None


class StsEmulator:
    """AssumeRole on a loopback port, served from a background thread (like the EMR emulator)."""

    def __init__(
        self,
        *,
        access_keys: dict[str, str],
        roles: Iterable[EmulatedRole] = (),
        sts_tokens: dict[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        on_issue: Callable[[Issued], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`access_keys`: id → secret of the callers; `sts_tokens`: token → the key id it belongs to (a caller
        that is itself an STS credential)."""
        self._secrets = dict(access_keys)
        self._tokens = dict(sts_tokens or {})
        self._roles = {role.arn: role for role in roles}
        self._clock = clock
        self._on_issue = on_issue
        self._ssl = ssl_context
        self._nonces: set[tuple[str, str]] = set()
        self._denials: list[_Denial] = []
        self._hold: tuple[str | None] | None = None  # (role ARN or None for any) of the next request to hold
        self._held = threading.Event()
        self._released = threading.Event()
        self._lock = threading.Lock()
        self.calls: list[StsCall] = []
        self.issued: list[Issued] = []
        self.url = ""
        self.host_port = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # ---- what tests set and read (any thread) ----

    def add_role(self, role: EmulatedRole) -> None:
        with self._lock:
            self._roles[role.arn] = role

    def deny(
        self,
        role_arn: str | None = None,
        *,
        code: str = "NoPermission",
        message: str = "You are not authorized to do this action. You should be authorized by RAM.",
        status: int = 403,
        times: int | None = None,
    ) -> None:
        """Refuse the next `times` AssumeRoles of `role_arn` (None: any role; times None: until cleared), after
        the signature check, as STS refuses a caller its RAM policy does not allow."""
        with self._lock:
            self._denials.append(_Denial(role_arn, code, message, status, times))

    def hold(self, role_arn: str | None = None) -> None:
        """Keep the next AssumeRole (of `role_arn`; None: any) unanswered until `release()` (or `stop()`):
        a renewal in flight for as long as a test needs. Then it is answered as usual."""
        with self._lock:
            self._hold = (role_arn,)
            self._held.clear()
            self._released.clear()

    async def held(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 (API, like the EMR emulator's)
        """Return once the request `hold` asked for has arrived and is being held."""
        if not await asyncio.to_thread(self._held.wait, timeout):
            raise TimeoutError(f"no AssumeRole was held within {timeout:g} s")

    def release(self) -> None:
        """Answer the held AssumeRole."""
        self._released.set()

    def clear_denials(self) -> None:
        with self._lock:
            self._denials.clear()

    def assumed(self, role_arn: str | None = None) -> list[StsCall]:
        """The AssumeRoles answered 200, of `role_arn` if given."""
        with self._lock:
            return [c for c in self.calls if c.status == 200 and (role_arn is None or c.role_arn == role_arn)]

    # ---- the API ----

    def answer(self, method: str, params: dict[str, str], request_id: str) -> tuple[int, dict]:
        """Judge one request (its query, or its form for a POST); returns (status, JSON body)."""
        code: str | None = None
        try:
            body = self._assume(method, params, request_id)
            status = 200
        except StsError as error:
            status, code = error.status, error.code
            body = {
                "RequestId": request_id,
                "HostId": "sts.aliyuncs.com",
                "Code": error.code,
                "Message": error.message,
                "Recommend": f"https://api.aliyun.com/troubleshoot?q={error.code}&product=Sts&requestId={request_id}",
            }
        shown = {k: v for k, v in params.items() if k != "Signature"}
        with self._lock:
            self.calls.append(StsCall(shown, status, code, request_id))
        return status, body

    def _assume(self, method: str, params: dict[str, str], request_id: str) -> dict:
        for name in ("Action", "Version", "AccessKeyId", "Signature", "SignatureMethod", "SignatureNonce", "Timestamp"):
            if not params.get(name):
                raise StsError(
                    400, "MissingParameter", f"The input parameter {name} that is mandatory is not supplied."
                )
        if params["Action"] != "AssumeRole":
            raise StsError(400, "InvalidAction.NotFound", f"Specified api {params['Action']} is not found.")
        if params["Version"] != STS_VERSION:
            raise StsError(400, "InvalidVersion", f"Specified parameter Version {params['Version']} is not valid.")
        if params["SignatureMethod"] != signing.RPC_SIGNATURE_METHOD or params.get("SignatureVersion", "1.0") != "1.0":
            raise StsError(400, "InvalidSignatureMethod", "Specified signature method is not supported.")
        try:
            sent = datetime.strptime(params["Timestamp"], DATE_FORMAT).replace(tzinfo=UTC).timestamp()
        except ValueError:
            raise StsError(
                400, "InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted."
            ) from None
        if abs(self._clock() - sent) > MAX_SKEW_SECONDS:
            raise StsError(400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
        key_id = params["AccessKeyId"]
        with self._lock:
            secret = self._secrets.get(key_id)
            token_owner = self._tokens.get(params["SecurityToken"]) if "SecurityToken" in params else key_id
        if secret is None:
            raise StsError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        if token_owner != key_id:
            raise StsError(400, "InvalidSecurityToken.MismatchWithAccessKey", "Specified SecurityToken is not valid.")
        expected = signing.rpc_signature(secret, signing.rpc_string_to_sign(method, params))
        if not secrets.compare_digest(expected, params["Signature"]):
            raise StsError(
                400,
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation. server string to sign is:"
                + signing.rpc_string_to_sign(method, params),
            )
        with self._lock:
            if (key_id, params["SignatureNonce"]) in self._nonces:
                raise StsError(400, "SignatureNonceUsed", "Specified signature nonce was used already.")
            self._nonces.add((key_id, params["SignatureNonce"]))
        arn = params.get("RoleArn") or ""
        if not ROLE_ARN.match(arn):
            raise StsError(400, "InvalidParameter.RoleArn", "The parameter RoleArn is wrongly formed.")
        name = params.get("RoleSessionName") or ""
        if not SESSION_NAME.match(name):
            raise StsError(400, "InvalidParameter.RoleSessionName", "The parameter RoleSessionName is wrongly formed.")
        with self._lock:
            role = self._roles.get(arn)
            denial = self._take_denial(arn)
        if denial is not None:
            raise StsError(denial.status, denial.code, denial.message)
        if role is None:
            raise StsError(404, "EntityNotExist.Role", f"The role not exists: {arn}.")
        if role.trusted is not None and key_id not in role.trusted:
            raise StsError(
                403,
                "NoPermission",
                "No permission perform sts:AssumeRole on this Role. Maybe you should check the role's trust policy.",
            )
        if role.external_id is not None and params.get("ExternalId") != role.external_id:
            raise StsError(403, "NoPermission", "The ExternalId does not match the role's trust policy.")
        try:
            duration = int(params.get("DurationSeconds") or 3600)
        except ValueError:
            duration = -1
        if not 900 <= duration <= role.max_duration:
            raise StsError(
                400, "InvalidParameter.DurationSeconds", "The Min/Max value of DurationSeconds is 15min/1hr."
            )
        expires_at = float(int(self._clock()) + (role.lifetime or duration))
        issued = Issued(
            role_arn=arn,
            session_name=name,
            caller=key_id,
            access_key_id="STS.NT" + secrets.token_hex(10),
            access_key_secret=secrets.token_urlsafe(30),
            security_token="CAIS" + secrets.token_urlsafe(60),
            expires_at=expires_at,
        )
        with self._lock:
            self.issued.append(issued)
        if self._on_issue is not None:
            self._on_issue(issued)
        account, role_name = re.match(r"acs:ram::(\d+):role/(.+)", arn).groups()  # type: ignore[union-attr]
        return {
            "RequestId": request_id,
            "AssumedRoleUser": {
                "Arn": f"acs:ram::{account}:role/{role_name}/{name}",
                "AssumedRoleId": f"3{account[:15]}:{name}",
            },
            "Credentials": {
                "AccessKeyId": issued.access_key_id,
                "AccessKeySecret": issued.access_key_secret,
                "SecurityToken": issued.security_token,
                "Expiration": datetime.fromtimestamp(expires_at, UTC).strftime(DATE_FORMAT),
            },
        }

    def _take_denial(self, arn: str) -> _Denial | None:
        for denial in self._denials:
            if denial.role_arn in (None, arn):
                if denial.remaining is not None:
                    denial.remaining -= 1
                    if denial.remaining <= 0:
                        self._denials.remove(denial)
                return denial
        return None

    # ---- serving ----

    async def _handle(self, request: web.Request) -> web.Response:
        params = dict(parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True))
        if request.method == "POST":
            params.update(parse_qsl((await request.read()).decode("utf-8"), keep_blank_values=True))
        request_id = str(uuid.uuid4()).upper()
        with self._lock:
            hold = self._hold is not None and self._hold[0] in (None, params.get("RoleArn"))
            if hold:
                self._hold = None
        if hold:
            self._held.set()
            await asyncio.get_running_loop().run_in_executor(None, self._released.wait, 60)
        status, body = self.answer(request.method, params, request_id)
        return web.json_response(body, status=status, headers={"x-acs-request-id": request_id})

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0: any free port) from a background thread; return the base URL."""
        if self._thread is not None:
            raise RuntimeError("the STS emulator is already running")
        loop, thread = serve_in_thread("sts-emulator", lambda: self._open(host, port))
        self._loop, self._thread = loop, thread
        return self.url

    async def _open(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_route("*", "/", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=self._ssl)
        await site.start()
        self._runner = runner
        bound = runner.addresses[0][1]
        self.host_port = f"{host}:{bound}"
        self.url = f"{'https' if self._ssl else 'http'}://{self.host_port}"

    def stop(self) -> None:
        """Close the server and its thread. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        self._released.set()  # a held request is answered, so the server can close
        runner = self._runner

        async def close() -> None:
            if runner is not None:
                await runner.cleanup()

        stop_thread(loop, thread, close(), timeout=10)

    def __enter__(self) -> StsEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
