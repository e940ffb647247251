"""bot.metrics: the series a session produces, bounded labels, own registries, the 429 observer."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator
from slack_sdk.web.async_client import AsyncWebClient

from bot.emr.errors import EmrError
from bot.metrics import OTHER, BoundedLabel, Metrics, SlackRateLimitObserver, slack_method

Sample = tuple[str, frozenset[tuple[str, str]]]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def samples(metrics: Metrics) -> dict[Sample, float]:
    """Every sample of the rendered text, parsed back as Prometheus would."""
    body, _ = metrics.render()
    out: dict[Sample, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def key(name: str, **labels: str) -> Sample:
    return name, frozenset(labels.items())


def counters(all_samples: dict[Sample, float]) -> dict[Sample, float]:
    """The counter samples that are not zero (histograms and the gauge left out; `_created` dropped)."""
    return {
        k: v
        for k, v in all_samples.items()
        if k[0].endswith("_total") and not k[0].startswith("raybot_changes") and v != 0
    }


def test_a_fresh_registry_exposes_every_family_and_no_counter_series() -> None:
    metrics = Metrics()
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=")
    families = {f.name for f in text_string_to_metric_families(body.decode())}
    assert families >= {
        "raybot_commands",
        "raybot_denials",
        "raybot_cloud_calls",
        "raybot_cloud_call_duration_seconds",
        "raybot_ack_duration_seconds",
        "raybot_changes_in_flight",
        "raybot_slack_api_errors",
        "raybot_slack_ratelimited",
    }
    assert all(name.startswith("raybot_") for name in families)
    assert counters(samples(metrics)) == {}
    assert samples(metrics)[key("raybot_changes_in_flight")] == 0


async def test_a_scripted_session_increments_exactly_the_expected_series() -> None:
    clock = FakeClock()
    metrics = Metrics(clock=clock)

    # /ray resize prod WorkerGroup1=10: acked, one change, Get + Update, answered in the thread.
    metrics.ack(0.004)
    with metrics.change_in_flight():
        assert metrics.value("raybot_changes_in_flight") == 1
        async with metrics.time_cloud_call("GetRayCluster"):
            clock.now += 0.2
        async with metrics.time_cloud_call("UpdateRayCluster"):
            clock.now += 0.5
    metrics.command("resize", "ok")
    # The same, throttled by the cloud: the error propagates and is counted with its Code.
    with pytest.raises(EmrError):
        with metrics.change_in_flight():
            with metrics.time_cloud_call("GetRayCluster"):
                clock.now += 1.5
                raise EmrError(action="GetRayCluster", code="Throttling.User", message="slow down", status=400)
    metrics.command("resize", "failed")
    # Denied by a role limit, and a modal submit acked slowly.
    metrics.denial("limit")
    metrics.command("resize", "denied")
    metrics.ack(2.5, kind="view_submission")
    # Slack trouble.
    metrics.slack_error("chat.postMessage", "not_in_channel")
    metrics.slack_ratelimited("chat.update")
    metrics.slack_ratelimited("chat.update")

    got = samples(metrics)
    assert counters(got) == {
        key("raybot_commands_total", command="resize", outcome="ok"): 1,
        key("raybot_commands_total", command="resize", outcome="failed"): 1,
        key("raybot_commands_total", command="resize", outcome="denied"): 1,
        key("raybot_denials_total", reason="limit"): 1,
        key("raybot_cloud_calls_total", action="GetRayCluster", code="OK"): 1,
        key("raybot_cloud_calls_total", action="UpdateRayCluster", code="OK"): 1,
        key("raybot_cloud_calls_total", action="GetRayCluster", code="Throttling.User"): 1,
        key("raybot_slack_api_errors_total", method="chat.postMessage", error="not_in_channel"): 1,
        key("raybot_slack_ratelimited_total", method="chat.update"): 2,
    }
    assert got[key("raybot_changes_in_flight")] == 0
    # Histograms: exact counts and sums from the injected clock.
    get_ok = dict(action="GetRayCluster", outcome="ok")
    assert got[key("raybot_cloud_call_duration_seconds_count", **get_ok)] == 1
    assert got[key("raybot_cloud_call_duration_seconds_sum", **get_ok)] == pytest.approx(0.2)
    get_error = dict(action="GetRayCluster", outcome="error")
    assert got[key("raybot_cloud_call_duration_seconds_sum", **get_error)] == pytest.approx(1.5)
    assert got[key("raybot_cloud_call_duration_seconds_bucket", le="1.0", **get_error)] == 0
    assert got[key("raybot_cloud_call_duration_seconds_bucket", le="2.5", **get_error)] == 1
    update_ok = dict(action="UpdateRayCluster", outcome="ok")
    assert got[key("raybot_cloud_call_duration_seconds_sum", **update_ok)] == pytest.approx(0.5)
    assert got[key("raybot_ack_duration_seconds_count", kind="command")] == 1
    assert got[key("raybot_ack_duration_seconds_bucket", kind="command", le="0.005")] == 1
    assert got[key("raybot_ack_duration_seconds_bucket", kind="view_submission", le="2.0")] == 0
    assert got[key("raybot_ack_duration_seconds_bucket", kind="view_submission", le="3.0")] == 1


async def test_the_timer_counts_cancellation_and_bugs_and_never_swallows_them() -> None:
    metrics = Metrics(clock=FakeClock())

    async def hang() -> None:
        async with metrics.time_cloud_call("UpdateRayCluster"):
            await asyncio.Event().wait()

    task = asyncio.create_task(hang())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(KeyError):
        with metrics.time_cloud_call("ListRayCluster") as timer:
            raise KeyError("bug")
    assert timer.code == "Exception"
    assert counters(samples(metrics)) == {
        key("raybot_cloud_calls_total", action="UpdateRayCluster", code="Cancelled"): 1,
        key("raybot_cloud_calls_total", action="ListRayCluster", code="Exception"): 1,
    }


def test_outside_values_are_bounded_to_well_formed_labels_or_other() -> None:
    metrics = Metrics()
    metrics.cloud_call("GetRayCluster", "x" * 200, 0.1)  # absurdly long code
    metrics.cloud_call("GetRayCluster", "Bad code with spaces", 0.1)
    metrics.cloud_call("GetRayCluster", "", 0.1)
    metrics.cloud_call("not an action", "OK", 0.1)
    metrics.command("U0LEAD please resize", "ok")  # free text typed by a person
    metrics.command("resize", "exploded")  # type: ignore[arg-type]  # an outcome nobody defined
    metrics.denial("because I said so")  # type: ignore[arg-type]
    metrics.ack(0.1, kind="carrier-pigeon")  # type: ignore[arg-type]
    metrics.slack_error("chat.postMessage", "Some <b>HTML</b> error page")
    metrics.slack_error("https://evil.example/api", None)

    assert counters(samples(metrics)) == {
        key("raybot_cloud_calls_total", action="GetRayCluster", code=OTHER): 3,
        key("raybot_cloud_calls_total", action=OTHER, code="OK"): 1,
        key("raybot_commands_total", command=OTHER, outcome="ok"): 1,
        key("raybot_commands_total", command="resize", outcome=OTHER): 1,
        key("raybot_denials_total", reason=OTHER): 1,
        key("raybot_slack_api_errors_total", method="chat.postMessage", error=OTHER): 1,
        key("raybot_slack_api_errors_total", method=OTHER, error=OTHER): 1,
    }
    assert samples(metrics)[key("raybot_ack_duration_seconds_count", kind=OTHER)] == 1


def test_a_peer_inventing_a_new_code_per_call_cannot_grow_the_series_past_the_cap() -> None:
    label = BoundedLabel(r"[A-Za-z][A-Za-z0-9._-]{0,63}", cap=3, known=frozenset({"OK"}))
    assert [label(c) for c in ("A", "B", "C", "D", "A", "OK", "E")] == ["A", "B", "C", OTHER, "A", "OK", OTHER]

    metrics = Metrics()
    for i in range(500):
        metrics.cloud_call("GetRayCluster", f"Invented.Code{i}", 0.01)
    codes = {dict(k[1])["code"] for k in counters(samples(metrics)) if k[0] == "raybot_cloud_calls_total"}
    assert OTHER in codes
    assert len(codes) <= 61  # the cap of cloud codes, plus "other"


def test_each_metrics_has_its_own_registry_and_leaves_the_global_one_alone() -> None:
    first, second = Metrics(), Metrics()  # the same names twice in one process: no "Duplicated timeseries"
    first.command("show", "ok")
    assert first.value("raybot_commands_total", {"command": "show", "outcome": "ok"}) == 1
    assert second.value("raybot_commands_total", {"command": "show", "outcome": "ok"}) is None
    assert REGISTRY.get_sample_value("raybot_commands_total", {"command": "show", "outcome": "ok"}) is None


def test_slack_method_is_read_from_the_request_url() -> None:
    assert slack_method("https://slack.com/api/chat.postMessage") == "chat.postMessage"
    assert slack_method("http://127.0.0.1:8080/api/views.update?x=1") == "views.update"


class RetryAtOnce(AsyncRetryHandler):
    """Retries a 429 without waiting (the real handler sleeps Retry-After plus jitter)."""

    def __init__(self) -> None:
        super().__init__(max_retry_count=2, interval_calculator=FixedValueRetryIntervalCalculator(fixed_internal=0))

    async def _can_retry_async(self, *, state, request, response=None, error=None) -> bool:  # type: ignore[no-untyped-def]
        return response is not None and response.status_code == 429


async def _slack_that_limits_first(answers: list[int]) -> tuple[web.AppRunner, str, list[str]]:
    seen: list[str] = []

    async def api(request: web.Request) -> web.Response:
        seen.append(request.match_info["method"])
        status = answers.pop(0) if answers else 200
        if status == 429:
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "0"})
        return web.json_response({"ok": True, "channel": "C1", "ts": "1.2"})

    app = web.Application()
    app.add_routes([web.post("/api/{method}", api)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}/api/", seen


async def test_the_observer_counts_every_429_and_lets_the_next_handler_retry() -> None:
    metrics = Metrics()
    runner, base_url, seen = await _slack_that_limits_first([429, 429])
    try:
        client = AsyncWebClient(
            token="xoxb-test", base_url=base_url, retry_handlers=[SlackRateLimitObserver(metrics), RetryAtOnce()]
        )
        response = await client.chat_postMessage(channel="C1", text="hi")
    finally:
        await runner.cleanup()
    assert response["ok"] is True
    assert seen == ["chat.postMessage"] * 3
    assert metrics.value("raybot_slack_ratelimited_total", {"method": "chat.postMessage"}) == 2


async def test_the_observer_alone_never_retries() -> None:
    metrics = Metrics()
    runner, base_url, seen = await _slack_that_limits_first([429])
    try:
        client = AsyncWebClient(token="xoxb-test", base_url=base_url, retry_handlers=[SlackRateLimitObserver(metrics)])
        with pytest.raises(SlackApiError):
            await client.chat_update(channel="C1", ts="1.2", text="hi")
    finally:
        await runner.cleanup()
    assert seen == ["chat.update"]
    assert metrics.value("raybot_slack_ratelimited_total", {"method": "chat.update"}) == 1
