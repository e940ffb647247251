"""Prometheus metrics of one raybot process, served by `GET /metrics`.

Every `Metrics` owns its own `CollectorRegistry` (not prometheus_client's global one),
so tests and several apps in one process never clash over metric names.

Label sets are small and bounded on purpose: a label value becomes a time series
for as long as the process lives, so no user id, channel id or free text is ever a
label; cluster aliases are, only on the cost gauges, as the config bounds them.
Values that come from outside (cloud error codes, Slack error strings, command
names typed by people) pass through `BoundedLabel`, which keeps well-formed values
up to a fixed number of distinct ones and folds the rest into "other".
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Literal

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from bot.cost import Rate
from bot.emr.errors import EmrError
from bot.emr.sts import RamRole

OTHER = "other"

# What became of one command, as the caller classifies it.
Outcome = Literal["ok", "denied", "invalid", "failed", "error"]
OUTCOMES: frozenset[str] = frozenset(Outcome.__args__)  # type: ignore[attr-defined]

# Why the policy said no, as a kind (the human reason is text and never a label).
DenialKind = Literal["no_binding", "direct_message", "unknown_cluster", "not_granted", "not_for_user", "limit"]
DENIAL_KINDS: frozenset[str] = frozenset(DenialKind.__args__)  # type: ignore[attr-defined]

# What Slack asked raybot to acknowledge.
AckKind = Literal["command", "action", "view_submission", "shortcut", "event"]
ACK_KINDS: frozenset[str] = frozenset(AckKind.__args__)  # type: ignore[attr-defined]

CLOUD_ACTIONS: frozenset[str] = frozenset(
    {"GetRayCluster", "ListRayCluster", "UpdateRayCluster", "StartRayCluster", "StopRayCluster", "GetCredential"}
)
CLOUD_OK = "OK"
CLOUD_CANCELLED = "Cancelled"
CLOUD_EXCEPTION = "Exception"  # an exception that is not an EmrError: a bug, not a cloud answer

# Slack answers within 3 s or the user sees an error: buckets resolve well below that line.
ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0)
# Cloud calls: tens of milliseconds when healthy, up to the overall deadline (10 s by default) when not.
CLOUD_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class BoundedLabel:
    """Turns outside values into label values: well-formed ones, at most `cap` distinct, else "other".

    The cap makes the series count a hard bound even if a peer invents a new code per request.
    """

    def __init__(self, pattern: str, cap: int, known: frozenset[str] = frozenset()) -> None:
        self._pattern = re.compile(pattern)
        self._cap = cap
        self._known = known
        self._seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if not value or value == OTHER:
            return OTHER
        if value in self._known or value in self._seen:
            return value
        if not self._pattern.fullmatch(value) or len(self._seen) >= self._cap:
            return OTHER
        self._seen.add(value)
        return value


class CloudCallTimer:
    """Times one cloud call and records it on exit; usable with `with` and `async with`.

    The code is "OK" on success, the EmrError's Code on failure, "Cancelled" when the
    task was cancelled and "Exception" for anything else. Exceptions are never swallowed.
    """

    def __init__(self, metrics: Metrics, action: str) -> None:
        self._metrics = metrics
        self._action = action
        self._start = 0.0
        self.code: str | None = None  # set on exit: what was recorded

    def __enter__(self) -> CloudCallTimer:
        self._start = self._metrics.clock()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        seconds = self._metrics.clock() - self._start
        if exc is None:
            code = CLOUD_OK
        elif isinstance(exc, EmrError):
            code = exc.code
        elif isinstance(exc, asyncio.CancelledError):
            code = CLOUD_CANCELLED
        else:
            code = CLOUD_EXCEPTION
        self.code = code
        self._metrics.cloud_call(self._action, code, seconds)

    async def __aenter__(self) -> CloudCallTimer:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class Metrics:
    """raybot's metrics in a registry of their own; `render()` is the body of GET /metrics.

    `clock` is monotonic seconds; tests inject one to make durations exact.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.commands_total = Counter(
            "raybot_commands", "Commands handled, by command name and outcome.", ["command", "outcome"], registry=r
        )
        self.denials_total = Counter("raybot_denials", "Permission denials, by kind of reason.", ["reason"], registry=r)
        self.cloud_calls_total = Counter(
            "raybot_cloud_calls",
            'EMR Serverless Spark calls, by action and result code ("OK", the cloud Code, or a transport code).',
            ["action", "code"],
            registry=r,
        )
        self.cloud_call_duration = Histogram(
            "raybot_cloud_call_duration_seconds",
            "Duration of EMR Serverless Spark calls including retries, by action and outcome (ok or error).",
            ["action", "outcome"],
            buckets=CLOUD_BUCKETS,
            registry=r,
        )
        self.ack_duration = Histogram(
            "raybot_ack_duration_seconds",
            "Time from receiving a Slack request to acknowledging it, by kind of request.",
            ["kind"],
            buckets=ACK_BUCKETS,
            registry=r,
        )
        self.changes_in_flight = Gauge(
            "raybot_changes_in_flight", "Cluster changes started and not yet finished.", registry=r
        )
        self.slack_api_errors_total = Counter(
            "raybot_slack_api_errors",
            "Slack Web API calls that failed, by method and error.",
            ["method", "error"],
            registry=r,
        )
        self.slack_ratelimited_total = Counter(
            "raybot_slack_ratelimited", "Slack Web API answers with HTTP 429, by method.", ["method"], registry=r
        )
        self.scheduler_passes_total = Counter(
            "raybot_scheduler_passes",
            "Passes of the background reconciler, by whether any item in it failed.",
            ["result"],
            registry=r,
        )
        self.added_cu_per_hour = Gauge(
            "raybot_added_cu_per_hour",
            "CU per hour that changes raybot applied added to each cluster (net: reductions subtract), "
            "since this process started.",
            ["cluster"],
            registry=r,
        )
        self.added_cost_per_hour = Gauge(
            "raybot_added_cost_per_hour",
            "Cost per hour, in the config's pricing.currency, that changes raybot applied added to each cluster "
            "(net), since this process started; changes raybot could not price are left out.",
            ["cluster"],
            registry=r,
        )
        self.assume_roles_total = Counter(
            "raybot_assume_role",
            'STS AssumeRole calls, by account, RAM role name and result code ("OK" or STS\'s Code).',
            ["account", "role", "code"],
            registry=r,
        )
        # Outside values → bounded label values.
        self._command_label = BoundedLabel(r"[a-z][a-z0-9_-]{0,31}", cap=40)
        self._cloud_action_label = BoundedLabel(r"[A-Z][A-Za-z]{0,63}", cap=20, known=CLOUD_ACTIONS)
        self._cloud_code_label = BoundedLabel(r"[A-Za-z][A-Za-z0-9._-]{0,63}", cap=60)
        self._role_label = BoundedLabel(r"[A-Za-z0-9.@_-]{1,64}", cap=40)
        self._account_label = BoundedLabel(r"[0-9]{1,32}", cap=20)
        self._slack_method_label = BoundedLabel(r"[a-z]+(\.[a-zA-Z]+){1,3}", cap=40)
        self._slack_error_label = BoundedLabel(r"[a-z0-9_]{1,48}", cap=60)

    # --- recording ----------------------------------------------------------------------------------

    def command(self, name: str, outcome: Outcome) -> None:
        """One command finished with `outcome` (an unknown outcome is counted as "other")."""
        self.commands_total.labels(self._command_label(name), outcome if outcome in OUTCOMES else OTHER).inc()

    def denial(self, reason_kind: DenialKind) -> None:
        """The policy denied something; `reason_kind` is the kind of reason, never its text."""
        self.denials_total.labels(reason_kind if reason_kind in DENIAL_KINDS else OTHER).inc()

    def cloud_call(self, action: str, code: str, seconds: float) -> None:
        """One cloud call ended with `code` ("OK" on success) after `seconds`, retries included."""
        action_label = self._cloud_action_label(action)
        self.cloud_calls_total.labels(action_label, self._cloud_code_label(code)).inc()
        outcome = "ok" if code == CLOUD_OK else "error"
        self.cloud_call_duration.labels(action_label, outcome).observe(max(seconds, 0.0))

    def assume_role(self, role: RamRole, code: str) -> None:
        """One AssumeRole of `role` ended with `code` ("OK" on success)."""
        self.assume_roles_total.labels(
            self._account_label(role.account), self._role_label(role.name), self._cloud_code_label(code)
        ).inc()

    def time_cloud_call(self, action: str) -> CloudCallTimer:
        """`async with metrics.time_cloud_call("GetRayCluster"): ...` records the call when the block ends."""
        return CloudCallTimer(self, action)

    def ack(self, seconds: float, kind: AckKind = "command") -> None:
        """Slack was acknowledged `seconds` after the request arrived."""
        self.ack_duration.labels(kind if kind in ACK_KINDS else OTHER).observe(max(seconds, 0.0))

    def change_started(self) -> None:
        self.changes_in_flight.inc()

    def change_finished(self) -> None:
        self.changes_in_flight.dec()

    @contextmanager
    def change_in_flight(self) -> Iterator[None]:
        """Counts a change as in flight for the duration of the block, however it ends."""
        self.change_started()
        try:
            yield
        finally:
            self.change_finished()

    def cost_added(self, cluster: str, delta: Rate) -> None:
        """A change to `cluster` (a config alias) took effect, adding `delta` per hour (negative: it saved)."""
        if delta.cu is not None:
            self.added_cu_per_hour.labels(cluster).inc(float(delta.cu))
        if delta.money is not None:
            self.added_cost_per_hour.labels(cluster).inc(float(delta.money))

    def scheduler_pass(self, failures: int) -> None:
        self.scheduler_passes_total.labels("failed" if failures else "ok").inc()

    def slack_error(self, method: str, error: str | None) -> None:
        """A Slack Web API call failed: `error` is Slack's error string (`channel_not_found`, ...)."""
        self.slack_api_errors_total.labels(self._slack_method_label(method), self._slack_error_label(error)).inc()

    def slack_ratelimited(self, method: str) -> None:
        """Slack answered a call with HTTP 429."""
        self.slack_ratelimited_total.labels(self._slack_method_label(method)).inc()

    # --- exposition ---------------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """(body, Content-Type) of GET /metrics in the Prometheus text format.

        The content type carries a charset: with aiohttp pass it as a header
        (`web.Response(body=body, headers={"Content-Type": content_type})`), not as `content_type=`.
        """
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """The current value of one sample (e.g. "raybot_commands_total"), None when it does not exist yet."""
        return self.registry.get_sample_value(name, labels or {})


class SlackRateLimitObserver(AsyncRetryHandler):
    """Counts Slack's 429 answers per method; never retries by itself.

    Put it first in the AsyncWebClient's `retry_handlers`: slack_sdk asks the handlers in
    order and stops at the first that retries, so the observer sees every 429 and the
    AsyncRateLimitErrorRetryHandler after it still does the waiting and retrying.
    """

    def __init__(self, metrics: Metrics) -> None:
        super().__init__(max_retry_count=1_000_000)
        self._metrics = metrics

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is not None and response.status_code == 429:
            self._metrics.slack_ratelimited(slack_method(request.url))
        return False


def slack_method(url: str) -> str:
    """The Web API method of a request URL: "https://slack.com/api/chat.postMessage?x=1" → "chat.postMessage"."""
    return url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
