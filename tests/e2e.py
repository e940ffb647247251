"""Shared plumbing of the end-to-end tests: what raybot is started with, and how a test talks to it as Slack
would and watches what it did (only the calls made during the current test; see `mark`)."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from slack_sdk.web.async_client import AsyncWebClient

import bot.scheduler
from bot.config import load_config
from bot.emr.credentials import StaticCredentials
from bot.server import running_services, start_http
from bot.services import Services
from bot.settings import load_settings
from bot.slack.blocks import UNDO_ACTION
from tests import e2e_world as world
from tests.harness import AK_ID, AK_SECRET, SIGNING_SECRET, clean_env, signed_headers


def raybot_env(directory: Path, slack, emr, *, config_text: str = world.CONFIG, **extra: str) -> dict[str, str]:
    """The environment of an HTTP-mode `raybot serve` wired to both emulators, with its own config and database."""
    config = directory / "raybot.yaml"
    config.write_text(config_text)
    return clean_env(
        SLACK_BOT_TOKEN=world.BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        RAYBOT_CONFIG=str(config),
        RAYBOT_DATABASE=str(directory / "raybot.db"),
        RAYBOT_HTTP_HOST="127.0.0.1",
        RAYBOT_HTTP_PORT="0",
        RAYBOT_SLACK_API_URL=slack.api_url,
        RAYBOT_EMR_ENDPOINT=emr.url,
        **extra,
    )


def mark(emr, slack) -> None:
    """From here on, the helpers below see only new calls."""
    MARKS["emr"], MARKS["slack"] = len(emr.calls), len(slack.calls)


MARKS = {"emr": 0, "slack": 0}


def new_emr_calls(emr, action=None):
    return [c for c in emr.calls[MARKS["emr"] :] if action is None or c.action == action]


async def wait_new(slack, predicate, timeout=5.0):
    """The first Slack call made during this test that matches `predicate`."""
    earlier = {id(c) for c in slack.calls[: MARKS["slack"]]}
    return await slack.wait_for(lambda c: id(c) not in earlier and predicate(c), timeout)


async def send(http, raybot, slack, text, *, user=world.ONCALL_USER, channel=world.ONCALL_CHANNEL):
    """Post `/ray <text>` signed as Slack; returns (HTTP response, the command's response_url)."""
    payload = slack.slash_command_payload("/ray", text, user_id=user, channel_id=channel)
    body = urllib.parse.urlencode(payload)
    response = await http.post(f"{raybot.url}/slack/events", content=body, headers=signed_headers(body))
    return response, payload["response_url"]


async def ephemeral_reply(slack, response_url, timeout=5.0):
    call = await slack.wait_for(lambda c: c.method == "response_url" and c.url == response_url, timeout)
    return call.args


def text_of(message: dict) -> str:
    return message.get("text", "") + json.dumps(message.get("blocks") or [], ensure_ascii=False)


TOOK, NOT_TOOK = "took effect", "did not take effect"
# Marks of a root status message whose change is not decided yet: applying (⏳), outcome being checked (❔).
UNDECIDED_MARKS = ("⏳", "❔")


def undecided(text: str) -> bool:
    """Whether a root status message's text still says its change is in progress or being checked."""
    return any(mark in text for mark in UNDECIDED_MARKS)


def verdict(message: dict) -> str | None:
    """What a thread reply says became of its change: TOOK, NOT_TOOK, or None (no verdict, or still checking).

    The usual answer of a change raybot saw through ("📨 … change accepted", or "✅ … took effect", with Undo) is
    TOOK; a "❌" answer is NOT_TOOK.
    """
    text, whole = message.get("text", ""), text_of(message)
    if text.startswith("❔"):
        return None  # "does not know yet whether change #N took effect … checking"
    if NOT_TOOK in whole:  # it contains TOOK: look for it first
        return NOT_TOOK
    if TOOK in whole:
        return TOOK
    if text.startswith(("📨", "✅")) and has_button(message, UNDO_ACTION):
        return TOOK
    if "❌" in text:
        return NOT_TOOK
    return None


def has_button(message: dict, action_id: str) -> bool:
    return any(
        element.get("action_id") == action_id
        for block in message.get("blocks") or []
        if block.get("type") == "actions"
        for element in block.get("elements") or []
    )


def updates_of(emr, cluster_id=world.PROD):
    return [c for c in new_emr_calls(emr, "UpdateRayCluster") if c.path.endswith("/" + cluster_id)]


async def post_json_signed(http, raybot, payload: dict) -> httpx.Response:
    body = json.dumps(payload)
    headers = signed_headers(body) | {"Content-Type": "application/json"}
    return await http.post(f"{raybot.url}/slack/events", content=body, headers=headers)


async def post_interaction(http, raybot, payload: dict) -> httpx.Response:
    body = urllib.parse.urlencode({"payload": json.dumps(payload)})
    return await http.post(f"{raybot.url}/slack/events", content=body, headers=signed_headers(body))


def mention_event(text: str, *, user: str, channel: str, ts: str, thread_ts: str | None = None) -> dict:
    event = {"type": "app_mention", "user": user, "text": text, "ts": ts, "channel": channel, "event_ts": ts}
    if thread_ts:
        event["thread_ts"] = thread_ts
    return {
        "token": "unused",
        "team_id": "T0TEAM",
        "api_app_id": "A0RAYBOT",
        "event": event,
        "type": "event_callback",
        "event_id": f"Ev{ts.replace('.', '')}",
        "event_time": int(float(ts)),
        "authorizations": [{"team_id": "T0TEAM", "user_id": "U0RAYBOT", "is_bot": True}],
    }


async def post_as_someone(slack, channel: str, text: str, thread_ts: str | None = None) -> str:
    """A message in the emulated channel (an alert, a person's mention); returns its ts."""
    client = AsyncWebClient(token=world.BOT_TOKEN, base_url=slack.api_url)
    response = await client.chat_postMessage(channel=channel, text=text, thread_ts=thread_ts)
    return response["ts"]


def button_payload(slack, message: dict, channel: str, action_id: str, *, user: str, value: str | None = None) -> dict:
    """The block_actions payload Slack sends when `user` clicks the button `action_id` of `message`."""
    button = next(
        element
        for block in message.get("blocks") or []
        if block.get("type") == "actions"
        for element in block["elements"]
        if element.get("action_id") == action_id and (value is None or element.get("value") == value)
    )
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": "T0TEAM"},
        "api_app_id": "A0RAYBOT",
        "token": "unused",
        "container": {
            "type": "message",
            "message_ts": message["ts"],
            "channel_id": channel,
            "is_ephemeral": False,
            **({"thread_ts": message["thread_ts"]} if message.get("thread_ts") else {}),
        },
        "trigger_id": slack.new_trigger_id(user=user),
        "team": {"id": "T0TEAM", "domain": "example"},
        "channel": {"id": channel, "name": "incident"},
        "message": message,
        "response_url": slack.new_response_url(channel=channel, user=user, message_ts=message["ts"]),
        "actions": [
            {
                "action_id": action_id,
                "block_id": "raybot",
                "text": button["text"],
                "value": button["value"],
                "type": "button",
                "action_ts": "1732600999.000100",
            }
        ],
    }


def message_with(slack, channel: str, action_id: str) -> dict:
    """The newest message in `channel` (threads included) holding a button `action_id`."""
    found = [
        m
        for m in slack.all_messages(channel)
        if any(
            e.get("action_id") == action_id
            for b in m.get("blocks") or []
            if b.get("type") == "actions"
            for e in b["elements"]
        )
    ]
    return found[-1]


async def post_form(http: httpx.AsyncClient, raybot, payload: dict) -> httpx.Response:
    """A slash command payload (form fields) posted signed, as Slack posts it."""
    body = urllib.parse.urlencode(payload)
    return await http.post(f"{raybot.url}/slack/events", content=body, headers=signed_headers(body))


def view_action_payload(slack, view_id: str, user: str, action: dict) -> dict:
    """The block_actions payload Slack sends for an interaction inside the open view `view_id`."""
    view = slack.views[view_id]
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": "T0TEAM"},
        "api_app_id": "A0RAYBOT",
        "token": "unused",
        "container": {"type": "view", "view_id": view_id},
        "trigger_id": slack.new_trigger_id(user=user, view_id=view_id),
        "team": {"id": "T0TEAM", "domain": "example"},
        "view": view,
        "actions": [action | {"action_ts": "1732601000.000100"}],
    }


async def submit_view(
    http: httpx.AsyncClient, raybot, slack, view_id: str, user: str, values: dict
) -> tuple[dict, str | None]:
    """Submit the open view `view_id` with `values` as Slack would; returns raybot's answer and the view now on top."""
    payload = slack.view_submission_payload(view_id, user_id=user, values=values)
    response = await post_interaction(http, raybot, payload)
    assert response.status_code == 200, response.text
    answer = response.json() if response.content else {}
    return answer, slack.apply_view_response(view_id, answer, submitted_hash=payload["view"]["hash"])


def untouched_values(view: dict) -> dict:
    """`view.state.values` as Slack sends them when nobody touched the inputs: their initial values."""
    values: dict = {}
    for block in view.get("blocks") or []:
        if block.get("type") != "input":
            continue
        element = block["element"]
        kind = element["type"]
        if kind in ("plain_text_input", "number_input", "email_text_input", "url_text_input"):
            entry = {"type": kind, "value": element.get("initial_value")}
        elif kind in ("static_select", "radio_buttons"):
            entry = {"type": kind, "selected_option": element.get("initial_option")}
        elif kind == "checkboxes":
            entry = {"type": kind, "selected_options": element.get("initial_options") or []}
        else:
            continue
        values[block["block_id"]] = {element["action_id"]: entry}
    return values


def with_value(values: dict, block_id: str, value: str) -> dict:
    """`values` with the text (or number) input `block_id` set to `value`."""
    out = {k: {a: dict(e) for a, e in v.items()} for k, v in values.items()}
    [(action, entry)] = out[block_id].items()
    entry["value"] = value
    return out


SETTLED_MARKERS = ("settled", "ended in", "still not settled", "not settled")


def says_settled(message: dict) -> bool:
    """Whether a thread reply is the follower's last word on a change (see SETTLED_MARKERS)."""
    return any(marker in message.get("text", "") for marker in SETTLED_MARKERS)


async def wait_until_followed(emr, slack, timeout: float = 10.0) -> None:
    """Wait until every change applied during this test was followed to its end (one final thread answer each),
    so no follower read of this test lands in the next one."""
    applied = [c for c in new_emr_calls(emr) if c.action in ("UpdateRayCluster", "StartRayCluster", "StopRayCluster")]
    wanted = sum(1 for c in applied if c.status == 200)
    seen: set[int] = set()
    for _ in range(wanted):
        call = await wait_new(
            slack,
            lambda c: (
                c.method == "chat.postMessage"
                and id(c) not in seen
                and any(marker in c.args.get("text", "") for marker in SETTLED_MARKERS)
                and c.args.get("thread_ts") is not None
            ),
            timeout,
        )
        seen.add(id(call))


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class InProcessRaybot:
    url: str
    services: Services


@asynccontextmanager
async def inprocess_raybot(env: dict[str, str], clock: FakeClock):
    """`raybot serve` in HTTP mode inside the test's event loop, with `clock` as its wall clock."""
    settings = load_settings(env)
    credentials = StaticCredentials(AK_ID, AK_SECRET)  # never the default chain in-process: it may ask ECS metadata
    async with running_services(settings, load_config(settings.config_path), clock=clock, credentials=credentials) as (
        services,
        app,
    ):
        runner, url = await start_http(app, services, "127.0.0.1", 0, signing_secret=settings.signing_secret)
        process = InProcessRaybot()
        process.url = url
        process.services = services
        try:
            yield process
        finally:
            # As `raybot serve` does on SIGTERM: what is in flight finishes before the process goes.
            await services.work.drain(10)
            await runner.cleanup()


class SchedulerPasses:
    """The passes of the scheduler of an in-process raybot, counted by wrapping `bot.scheduler.reconcile` (one call
    a pass), so a test can wake the scheduler and await a whole pass that began after the wake."""

    def __init__(self) -> None:
        self.begun = 0
        self.ended: list[int] = []
        self._changed = asyncio.Condition()

    @classmethod
    def install(cls, monkeypatch) -> SchedulerPasses:
        passes = cls()
        reconcile = bot.scheduler.reconcile

        async def counted(services: Services) -> int:
            passes.begun += 1
            number = passes.begun
            try:
                return await reconcile(services)
            finally:
                async with passes._changed:
                    passes.ended.append(number)
                    passes._changed.notify_all()

        monkeypatch.setattr(bot.scheduler, "reconcile", counted)
        return passes

    async def wake_and_wait(self, raybot: InProcessRaybot, timeout: float = 5.0) -> None:
        """Wake the scheduler and return once a pass that began after this call has ended."""
        after = self.begun
        raybot.services.wake_scheduler()
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: any(n > after for n in self.ended))
