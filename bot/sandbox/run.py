"""`raybot sandbox`: the whole bot in a browser, with no Slack workspace and no cloud account.

One command starts, on 127.0.0.1 only:
- the EMR emulator, seeded with four clusters (small, GPU, 50 groups, stopped);
- the Slack emulator, with the people, channels and user group of the sandbox's world;
- raybot itself, `raybot serve` in HTTP mode in a subprocess, wired to both through the ordinary environment
  contract (SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, RAYBOT_SLACK_API_URL, RAYBOT_EMR_ENDPOINT, ...);
- a web page that behaves like a Slack channel (this module serves it, with a small JSON API and an event stream).

Everything the page does reaches raybot as Slack's would: a signed POST to /slack/events with the payload Slack
sends (slash command, app_mention event, block_actions, view_submission, view_closed, message_action). What raybot
answers goes through the Slack emulator (chat.postMessage, views.open, response_url, ...), whose recorded calls feed
the page's event stream, as do the EMR emulator's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import logging
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web
from slack_sdk.signature import SignatureVerifier

from bot.config import Config, ConfigError, load_config
from bot.sandbox.emr_server import SEED_FILE, EmrEmulator, RecordedCall
from bot.sandbox.slack_server import ApiCall, SlackEmulator

log = logging.getLogger("raybot.sandbox")

JSON = dict[str, Any]
HERE = Path(__file__).resolve().parent
WEB_DIR = HERE / "web"
SAMPLE_CONFIG = HERE / "sandbox.yaml"
DEFAULT_PORT = 8765
SLASH_COMMAND = "/ray"
BOT_USER_ID = "U0RAYBOT"
TEAM_ID = "T0SANDBOX"
RAYBOT_START_SECONDS = 60.0
EMR_DEADLINE_SECONDS = "6"  # a "slow" fault (3 s) still succeeds; a hanging call ends well before Slack's patience
SLOW_FAULT_SECONDS = 3.0
# How long an emulated cluster takes to reach the shape a change (or a start, or a stop) asks for: long enough to
# watch raybot follow it, short enough to wait for; the page's "Skip ahead" lets emulated time pass at once.
SETTLE_SECONDS = 20.0
SKIP_SECONDS = 60.0
EMR_CALLS_SHOWN = 200
STATIC_FILES = {
    "index.html": "text/html",
    "app.css": "text/css",
    "app.js": "text/javascript",
    "blockkit.js": "text/javascript",
}
# The page's names for the faults, and what the EMR emulator calls them.
FAULT_KINDS = {"slow": "latency", "throttled": "throttle", "failing": "5xx", "hanging": "hang"}
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


class SandboxError(RuntimeError):
    """The sandbox cannot start; the message says why (a bad config names its line)."""


# --- the world the page shows -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """Someone the page lets you be."""

    key: str
    user_id: str
    name: str
    real_name: str
    title: str


@dataclass(frozen=True)
class Channel:
    channel_id: str
    name: str
    topic: str


@dataclass
class World:
    """People, channels and user groups of the sandbox: the fixed cast plus whatever the config names."""

    identities: list[Identity]
    channels: list[Channel]
    usergroups: dict[str, dict[str, Any]]  # id -> {"handle": ..., "members": [...]}

    def slack_users(self) -> dict[str, dict[str, Any]]:
        return {
            i.user_id: {"name": i.name, "real_name": i.real_name, "display_name": i.name, "title": i.title}
            for i in self.identities
        }

    def slack_channels(self) -> dict[str, dict[str, Any]]:
        return {c.channel_id: {"name": c.name, "topic": {"value": c.topic}} for c in self.channels}

    def as_json(self) -> JSON:
        return {
            "team": {"id": TEAM_ID, "name": "raybot sandbox"},
            "bot": {"id": BOT_USER_ID, "name": "raybot"},
            "identities": [i.__dict__ for i in self.identities],
            "channels": [c.__dict__ for c in self.channels],
            "usergroups": self.usergroups,
            "command": SLASH_COMMAND,
            "faults": list(FAULT_KINDS),
            "actions": ["ListRayCluster", "GetRayCluster", "UpdateRayCluster", "StartRayCluster", "StopRayCluster"],
        }


ONCALL = Identity("oncall", "U0ONCALL1", "olivia", "Olivia (on-call)", "On-call member: in the S0ONCALL user group")
APPROVER = Identity(
    "approver", "U0APPROVE", "paula", "Paula (approver)", "Second on-call: may approve the on-call's big changes"
)
VIEWER = Identity("viewer", "U0VIEWER", "victor", "Victor (viewer)", "Viewer: may list and show")
ADMIN = Identity("admin", "U0ADMIN", "ada", "Ada (admin)", "Platform admin: may do anything")
OUTSIDER = Identity("outsider", "U0OUTSIDE", "oscar", "Oscar (outsider)", "In the channels, bound to no role")
INCIDENT = Channel("C0ONCALL01", "incident", "On-call incident channel")
PLATFORM = Channel("C0PLATFORM", "platform", "Platform team")
ONCALL_GROUP = "S0ONCALL"
# The alerting app whose messages the message shortcut is for (an Alertmanager incoming webhook).
ALERT_BOT_ID = "B0ALERTS"
ALERT_USERNAME = "Alertmanager"


def build_world(config: Config) -> World:
    """The sandbox's cast, plus every channel, user and user group `config` names (so a user's own config works:
    its people can be chosen on the page, its user groups exist, with the on-call member in each)."""
    identities = [ONCALL, APPROVER, VIEWER, ADMIN, OUTSIDER]
    channels = [INCIDENT, PLATFORM]
    usergroups: dict[str, dict[str, Any]] = {ONCALL_GROUP: {"handle": "oncall", "members": [ONCALL.user_id]}}
    known_users = {i.user_id for i in identities}
    known_channels = {c.channel_id for c in channels}
    for channel_id, bindings in config.channels.items():
        if channel_id not in known_channels:
            known_channels.add(channel_id)
            channels.append(Channel(channel_id, channel_id.lower(), "from your config"))
        for binding in bindings:
            for user_id in binding.users:
                if user_id not in known_users:
                    known_users.add(user_id)
                    identities.append(
                        Identity(user_id.lower(), user_id, user_id.lower(), user_id, "named in your config")
                    )
            for group in binding.usergroups:
                usergroups.setdefault(group, {"handle": group.lower(), "members": [ONCALL.user_id]})
    return World(identities, channels, usergroups)


def seed_for(config: Config) -> list[dict[str, Any]]:
    """The seed clusters, plus a copy of one of them (named after the alias) for every alias of `config` whose
    cluster the seed does not have, so that every alias of a user's own config can be tried."""
    seed: list[dict[str, Any]] = json.loads(SEED_FILE.read_text(encoding="utf-8"))
    known = {(c["workspaceId"], c["clusterId"]) for c in seed}
    extra = []
    for index, (alias, entry) in enumerate(sorted(config.clusters.items())):
        if (entry.workspace, entry.cluster) in known:
            continue
        clone = copy.deepcopy(seed[index % len(seed)])
        clone.update(workspaceId=entry.workspace, clusterId=entry.cluster, name=alias)
        known.add((entry.workspace, entry.cluster))
        extra.append(clone)
    return seed + extra


@dataclass(frozen=True)
class Alert:
    """The alert the page posts as the alerting app: it names a cluster (by alias) and one of its worker groups."""

    alias: str
    group: str

    def text(self) -> str:
        """The alert as Slack stores it (entity-encoded mrkdwn)."""
        return (
            f":fire: *[FIRING:1] RayTaskBacklog* `{slack_escape(self.alias)}`\n"
            f"Tasks pending on worker group *{slack_escape(self.group)}* for 10 min (240 > 50)."
        )

    def as_json(self) -> JSON:
        return {"alias": self.alias, "group": self.group, "from": ALERT_USERNAME}


def alert_for(config: Config, seed: list[dict[str, Any]]) -> Alert | None:
    """The sandbox's alert: about `prod` when the config has it (else its first cluster), naming the worker group
    with the most room to grow (max minus replicas; the first of those): what an on-call would scale out. None when
    that cluster has no worker group."""
    if not config.clusters:
        return None
    alias = "prod" if "prod" in config.clusters else next(iter(config.clusters))
    entry = config.clusters[alias]
    cluster = next((c for c in seed if (c["workspaceId"], c["clusterId"]) == (entry.workspace, entry.cluster)), None)
    groups = [g for g in (cluster or {}).get("workerSpec") or [] if g.get("groupName")]
    if not groups:
        return None
    roomiest = max(groups, key=lambda g: (g.get("maxReplica") or 0) - (g.get("replica") or 0))
    return Alert(alias, roomiest["groupName"])


# --- Slack's side: signing and posting what the page does -------------------------------------------------------------


def slack_escape(text: str) -> str:
    """What a person types, as Slack sends it to apps: &, < and > entity-encoded."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_AT_BOT = re.compile(r"(?<![\w@])@raybot\b", re.IGNORECASE)


def mention_text(typed: str) -> str:
    """A message typed on the page as Slack stores it: escaped, with `@raybot` turned into the bot's mention."""
    return _AT_BOT.sub(f"<@{BOT_USER_ID}>", slack_escape(typed))


def signed_headers(secret: str, body: str, content_type: str, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack signs a request with: v0=HMAC-SHA256(secret, "v0:<timestamp>:<body>")."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": SignatureVerifier(secret).generate_signature(timestamp=ts, body=body),
        "Content-Type": content_type,
    }


@dataclass
class RaybotAnswer:
    status: int
    body: JSON | None
    text: str


def _emr_call_json(seq: int, call: RecordedCall) -> JSON:
    """What the page shows of one cloud call (never its headers: they carry the signature and key id)."""
    return {
        "seq": seq,
        "action": call.action,
        "method": call.method,
        "path": call.path,
        "query": call.query,
        "body": call.json,
        "status": call.status,
        "code": call.code,
        "requestId": call.request_id,
        "receivedAt": call.received_at,
        "clientGone": call.client_gone,
    }


class SandboxPage:
    """The web page's server: static files, a JSON API that turns clicks into Slack payloads, and an event stream."""

    def __init__(
        self,
        *,
        slack: SlackEmulator,
        emr: EmrEmulator,
        world: World,
        signing_secret: str,
        seed: list[JSON],
        alert: Alert | None = None,
    ) -> None:
        self.slack = slack
        self.emr = emr
        self.world = world
        self.alert = alert
        self.raybot_url = ""
        self._secret = signing_secret
        self.seed = seed
        self._http: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._streams: set[asyncio.Queue[JSON | None]] = set()
        self._trigger_users: dict[str, str] = {}
        self._view_owners: dict[str, str] = {}  # root view id -> the user whose modal it is
        self._ephemeral_ts: list[str] = []  # when each of slack.ephemerals appeared, for ordering among messages
        self._dismissed: set[int] = set()  # indexes into slack.ephemerals dismissed on the page (kept across reloads)
        self._emr_seq: dict[int, int] = {}
        self._version = 0

    # -- wiring --------------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self.slack.add_listener(self._on_slack_call)
        self.emr.add_listener(self._on_emr_call)

    async def close(self) -> None:
        for queue in list(self._streams):
            queue.put_nowait(None)
        if self._http is not None:
            await self._http.close()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=2 * 1024 * 1024)
        app.add_routes(
            [
                web.get("/", self._index),
                web.get("/static/{name}", self._static),
                web.get("/api/world", self._world),
                web.get("/api/state", self._state),
                web.get("/api/events", self._events),
                web.post("/api/send", self._send),
                web.post("/api/action", self._action),
                web.post("/api/submit", self._submit),
                web.post("/api/close", self._close_view),
                web.post("/api/shortcut", self._shortcut),
                web.post("/api/alert", self._post_alert),
                web.post("/api/faults", self._inject),
                web.delete("/api/faults", self._clear_faults),
                web.post("/api/reset", self._reset),
                web.post("/api/dismiss", self._dismiss),
                web.post("/api/skip", self._skip),
            ]
        )
        return app

    def _on_slack_call(self, call: ApiCall) -> None:
        # Emulator thread, emulator lock held: hand over at once.
        if self._loop is not None and not self._loop.is_closed():
            event = {"kind": "slack", "method": call.method, "ok": call.ok, "error": call.error}
            if call.method == "views.open" and call.ok:
                event["view_id"] = call.response["view"]["id"]
                event["trigger_id"] = call.args.get("trigger_id")
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._slack_event, event)

    def _on_emr_call(self, call: RecordedCall) -> None:
        if self._loop is not None and not self._loop.is_closed():
            event = {"kind": "emr", "action": call.action, "status": call.status, "requestId": call.request_id}
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._broadcast, event)

    def _slack_event(self, event: JSON) -> None:
        if event.get("view_id"):
            owner = self._trigger_users.get(event.get("trigger_id") or "")
            if owner:
                self._view_owners[event["view_id"]] = owner
        self._stamp_ephemerals()
        self._broadcast(event)

    def _broadcast(self, event: JSON) -> None:
        self._version += 1
        event["version"] = self._version
        for queue in self._streams:
            queue.put_nowait(event)

    def _stamp_ephemerals(self) -> None:
        count = len(self.slack.ephemerals)
        while len(self._ephemeral_ts) < count:
            self._ephemeral_ts.append(f"{time.time():.6f}")

    def _trigger(self, payload: JSON, user_id: str) -> JSON:
        if payload.get("trigger_id"):
            self._trigger_users[payload["trigger_id"]] = user_id
        return payload

    async def _post_to_raybot(self, body: str, content_type: str) -> RaybotAnswer:
        """POST one signed request to raybot's /slack/events, as Slack does."""
        assert self._http is not None
        headers = signed_headers(self._secret, body, content_type)
        try:
            async with self._http.post(f"{self.raybot_url}/slack/events", data=body.encode(), headers=headers) as resp:
                text = await resp.text()
                parsed: JSON | None = None
                if text.strip():
                    with contextlib.suppress(ValueError):
                        loaded = json.loads(text)
                        parsed = loaded if isinstance(loaded, dict) else None
                return RaybotAnswer(resp.status, parsed, text)
        except (aiohttp.ClientError, TimeoutError) as error:
            return RaybotAnswer(0, None, f"{type(error).__name__}: {error}")

    async def _post_interaction(self, payload: JSON) -> RaybotAnswer:
        body = urllib.parse.urlencode({"payload": json.dumps(payload)})
        return await self._post_to_raybot(body, "application/x-www-form-urlencoded")

    # -- HTTP handlers -------------------------------------------------------------------------------------------------

    async def _index(self, _: web.Request) -> web.Response:
        return self._file("index.html")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        return self._file(name)

    def _file(self, name: str) -> web.Response:
        body = resources.files("bot.sandbox.web").joinpath(name).read_bytes()
        return web.Response(
            body=body,
            content_type=STATIC_FILES[name],
            charset="utf-8",
            headers={
                "Cache-Control": "no-store",
                # Nothing from outside, no inline script: what the page renders can never run code.
                "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
            },
        )

    async def _world(self, _: web.Request) -> web.Response:
        name, _callback_id = message_shortcut()
        return web.json_response(
            self.world.as_json() | {"shortcut": name, "alert": self.alert.as_json() if self.alert else None}
        )

    async def _state(self, request: web.Request) -> web.Response:
        user_id = request.query.get("user", "")
        channel_id = request.query.get("channel", "")
        return web.json_response(self.state(user_id, channel_id))

    def state(self, user_id: str, channel_id: str) -> JSON:
        """Everything the page shows for one person in one channel."""
        self._stamp_ephemerals()
        ephemerals = []
        for index, entry in enumerate(self.slack.ephemerals):
            if entry.get("user") != user_id or entry.get("channel") != channel_id or index in self._dismissed:
                continue
            ts = entry.get("message_ts") or self._ephemeral_ts[index]
            ephemerals.append({**entry, "id": f"e{index}", "ts": ts})
        return {
            "version": self._version,
            "user": user_id,
            "channel": channel_id,
            "messages": self.slack.all_messages(channel_id) if channel_id else [],
            "ephemerals": ephemerals,
            "modal": self._modal_of(user_id),
            "emr": {
                "calls": [_emr_call_json(i, c) for i, c in enumerate(self.emr.calls)][-EMR_CALLS_SHOWN:],
                "faults": [self._fault_json(f) for f in self.emr.faults()],
                "settleSeconds": self.emr.settle_seconds,
                "skipSeconds": SKIP_SECONDS,
            },
            "now": time.time(),  # the page measures how long a call has been waiting against this clock
        }

    def _modal_of(self, user_id: str) -> JSON | None:
        views = self.slack.views
        for root, stack in reversed(list(self.slack.view_stacks.items())):
            if self._view_owners.get(root) == user_id:
                return {"root": root, "stack": [views[v] for v in stack]}
        return None

    @staticmethod
    def _fault_json(fault: JSON) -> JSON:
        kind = {v: k for k, v in FAULT_KINDS.items()}.get(fault["kind"], fault["kind"])
        return {**fault, "kind": kind}

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        queue: asyncio.Queue[JSON | None] = asyncio.Queue()
        self._streams.add(queue)
        try:
            await response.write(f"data: {json.dumps({'kind': 'hello', 'version': self._version})}\n\n".encode())
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=15)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if event is None:
                    break
                await response.write(f"data: {json.dumps(event)}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._streams.discard(queue)
        return response

    async def _send(self, request: web.Request) -> web.Response:
        """The composer: `/ray …` is a slash command, anything else a message (`@raybot …` mentions the bot)."""
        data = await request.json()
        user_id, channel_id = str(data.get("user", "")), str(data.get("channel", ""))
        typed = str(data.get("text", "")).strip()
        thread_ts = data.get("thread_ts") or None
        if not typed:
            return web.json_response({"ok": False, "error": "empty message"}, status=400)
        if typed.split(maxsplit=1)[0] == SLASH_COMMAND:
            if thread_ts:  # as in Slack: slash commands do not run in threads
                return web.json_response(
                    {"ok": False, "error": f"{SLASH_COMMAND} cannot be used in a thread; use @raybot there"}
                )
            text = slack_escape(typed[len(SLASH_COMMAND) :].strip())
            payload = self.slack.slash_command_payload(SLASH_COMMAND, text, user_id=user_id, channel_id=channel_id)
            self._trigger(payload, user_id)
            answer = await self._post_to_raybot(urllib.parse.urlencode(payload), "application/x-www-form-urlencoded")
            if answer.status == 200 and answer.body and (answer.body.get("text") or answer.body.get("blocks")):
                # The answer in the acknowledgement itself: Slack shows it like a response_url post.
                self.slack.apply_command_response(payload["response_url"], answer.body)
                self._stamp_ephemerals()
                self._broadcast({"kind": "ack"})
            return web.json_response(self._outcome(answer, f"{SLASH_COMMAND} failed"))
        if typed.startswith("/"):
            return web.json_response({"ok": False, "error": f"{typed.split()[0]} is not a valid command"})
        try:
            message = self.slack.post_user_message(channel_id, user_id, mention_text(typed), thread_ts=thread_ts)
        except KeyError as error:
            return web.json_response({"ok": False, "error": f"unknown user, channel or thread {error}"}, status=400)
        self._broadcast({"kind": "message"})
        if f"<@{BOT_USER_ID}>" not in message["text"]:
            return web.json_response({"ok": True})
        event = self.slack.app_mention_payload(message, channel_id=channel_id)
        answer = await self._post_to_raybot(json.dumps(event), "application/json")
        return web.json_response(self._outcome(answer, "raybot did not take the mention"))

    @staticmethod
    def _outcome(answer: RaybotAnswer, failure: str) -> JSON:
        if answer.status == 200:
            return {"ok": True, "status": 200}
        # Slack tells the person when the app does not answer well; so does the page.
        detail = "no answer (is raybot running?)" if answer.status == 0 else f"HTTP {answer.status}"
        return {"ok": False, "status": answer.status, "error": f"{failure}: {detail}"}

    async def _action(self, request: web.Request) -> web.Response:
        """A click (button, select, overflow, ...) in a message or a modal: a block_actions payload."""
        data = await request.json()
        user_id = str(data.get("user", ""))
        action = data.get("action")
        if not isinstance(action, dict) or not action.get("action_id"):
            return web.json_response({"ok": False, "error": "no action"}, status=400)
        view_id = data.get("view_id")
        if view_id:
            try:
                payload = self.slack.block_actions_payload(
                    action, user_id=user_id, view_id=view_id, state_values=data.get("state_values") or {}
                )
            except KeyError:
                return web.json_response({"ok": False, "error": "that view is gone"}, status=404)
        else:
            channel_id = str(data.get("channel", ""))
            ts = str(data.get("message_ts", ""))
            ephemeral = bool(data.get("is_ephemeral"))
            message = None if ephemeral else self.slack.message(channel_id, ts)
            if message is None and not ephemeral:
                return web.json_response({"ok": False, "error": "that message is gone"}, status=404)
            payload = self.slack.block_actions_payload(
                action,
                user_id=user_id,
                channel_id=channel_id,
                message=message,
                message_ts=ts,
                is_ephemeral=ephemeral,
                state_values=data.get("state_values") or {},
            )
        self._trigger(payload, user_id)
        answer = await self._post_interaction(payload)
        return web.json_response(self._outcome(answer, "raybot did not take the click"))

    async def _submit(self, request: web.Request) -> web.Response:
        """A modal's submit button: view_submission; raybot's answer decides what the modal does next."""
        data = await request.json()
        user_id, view_id = str(data.get("user", "")), str(data.get("view_id", ""))
        try:
            payload = self.slack.view_submission_payload(view_id, user_id=user_id, values=data.get("values") or {})
        except KeyError:
            return web.json_response({"ok": False, "error": "that view is gone"}, status=404)
        self._trigger(payload, user_id)
        answer = await self._post_interaction(payload)
        if answer.status != 200:
            return web.json_response(self._outcome(answer, "raybot did not take the submission") | {"modal": None})
        response = answer.body or {}
        try:
            self.slack.apply_view_response(view_id, response)
        except Exception as error:  # noqa: BLE001 - Slack shows a broken answer in the modal; so does the page
            detail = getattr(error, "messages", None) or [str(error)]
            return web.json_response(
                {"ok": False, "error": f"Slack refused raybot's answer: {'; '.join(map(str, detail))}"}
            )
        self._broadcast({"kind": "views"})
        return web.json_response(
            {
                "ok": True,
                "response_action": response.get("response_action"),
                "errors": response.get("errors") or {},
                "modal": self._modal_of(user_id),
            }
        )

    async def _close_view(self, request: web.Request) -> web.Response:
        """The modal's close button (back one view) or its ✕ (the whole stack); view_closed if the view asked."""
        data = await request.json()
        user_id, view_id = str(data.get("user", "")), str(data.get("view_id", ""))
        clear = bool(data.get("clear"))
        views, stacks = self.slack.views, self.slack.view_stacks
        root = next((r for r, stack in stacks.items() if view_id in stack), None)
        if root is None:
            return web.json_response({"ok": True, "modal": self._modal_of(user_id)})
        closing = root if clear else view_id
        notify = [v for v in stacks[root][stacks[root].index(closing) :] if views[v].get("notify_on_close")]
        payloads = [self.slack.view_closed_payload(v, user_id=user_id, is_cleared=clear) for v in notify]
        self.slack.close_view(closing)
        self._broadcast({"kind": "views"})
        for payload in payloads:
            await self._post_interaction(payload)
        return web.json_response({"ok": True, "modal": self._modal_of(user_id)})

    async def _shortcut(self, request: web.Request) -> web.Response:
        """A message shortcut used on a message: message_action with the manifest's callback id."""
        data = await request.json()
        user_id, channel_id = str(data.get("user", "")), str(data.get("channel", ""))
        message = self.slack.message(channel_id, str(data.get("message_ts", "")))
        if message is None:
            return web.json_response({"ok": False, "error": "that message is gone"}, status=404)
        callback_id = str(data.get("callback_id") or message_shortcut()[1])
        payload = self.slack.message_action_payload(callback_id, message, user_id=user_id, channel_id=channel_id)
        self._trigger(payload, user_id)
        answer = await self._post_interaction(payload)
        return web.json_response(self._outcome(answer, "raybot did not take the shortcut"))

    def post_alert(self, channel_id: str) -> JSON:
        """The alerting app posts the sandbox's alert in `channel_id` (KeyError: no such channel, or no alert)."""
        if self.alert is None:
            raise KeyError("alert")
        message = self.slack.post_app_message(
            channel_id, bot_id=ALERT_BOT_ID, username=ALERT_USERNAME, text=self.alert.text()
        )
        self._broadcast({"kind": "message"})
        return message

    async def _post_alert(self, request: web.Request) -> web.Response:
        """ "Post an alert": a message from the alerting app to use the message shortcut on."""
        data = await request.json()
        if self.alert is None:
            return web.json_response({"ok": False, "error": "no cluster of the config has a worker group"})
        try:
            message = self.post_alert(str(data.get("channel", "")))
        except KeyError:
            return web.json_response({"ok": False, "error": "unknown channel"}, status=400)
        return web.json_response({"ok": True, "ts": message["ts"]})

    async def _inject(self, request: web.Request) -> web.Response:
        data = await request.json()
        kind = str(data.get("kind", ""))
        if kind not in FAULT_KINDS:
            return web.json_response(
                {"ok": False, "error": f"kind must be one of {', '.join(FAULT_KINDS)}"}, status=400
            )
        action = data.get("action") or None
        seconds = SLOW_FAULT_SECONDS if kind == "slow" else 0.0
        self.emr.inject(FAULT_KINDS[kind], action=action, seconds=seconds)
        self._broadcast({"kind": "faults"})
        return web.json_response({"ok": True, "faults": [self._fault_json(f) for f in self.emr.faults()]})

    async def _clear_faults(self, _: web.Request) -> web.Response:
        self.emr.clear_faults()
        self.emr.release_hanging()
        self._broadcast({"kind": "faults"})
        return web.json_response({"ok": True, "faults": []})

    async def _dismiss(self, request: web.Request) -> web.Response:
        """Dismiss one of the person's ephemeral messages: it stays gone on reload, as in Slack."""
        data = await request.json()
        user_id, ephemeral_id = str(data.get("user", "")), str(data.get("id", ""))
        index = int(ephemeral_id[1:]) if re.fullmatch(r"e\d{1,9}", ephemeral_id) else -1
        if not 0 <= index < len(self.slack.ephemerals) or self.slack.ephemerals[index].get("user") != user_id:
            return web.json_response({"ok": False, "error": "no such message of yours"}, status=404)
        self._dismissed.add(index)
        self._broadcast({"kind": "dismissed"})
        return web.json_response({"ok": True})

    async def _skip(self, request: web.Request) -> web.Response:
        """Let emulated time pass for the clusters: every change in progress moves that much further."""
        data = await request.json()
        seconds = data.get("seconds", SKIP_SECONDS)
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds <= 86400:
            return web.json_response({"ok": False, "error": "seconds must be a number from 0 to 86400"}, status=400)
        self.emr.advance(float(seconds))
        self._broadcast({"kind": "skip"})
        return web.json_response({"ok": True})

    async def _reset(self, _: web.Request) -> web.Response:
        """Put every cluster back as seeded (the conversation stays)."""
        self.emr.seed(copy.deepcopy(self.seed))
        self._broadcast({"kind": "reset"})
        return web.json_response({"ok": True})


def message_shortcut() -> tuple[str, str]:
    """The name (what Slack's ⋯ menu shows) and callback id (what Slack sends) of the manifest's message shortcut."""
    manifest = yaml.safe_load(resources.files("bot").joinpath("manifest.yml").read_text(encoding="utf-8"))
    for shortcut in manifest["features"].get("shortcuts", []):
        if shortcut.get("type") == "message":
            return str(shortcut["name"]), str(shortcut["callback_id"])
    raise SandboxError("the manifest has no message shortcut")


# --- raybot in a subprocess -------------------------------------------------------------------------------------------


def raybot_environment(
    *, slack: SlackEmulator, emr_url: str, config_path: Path, database: Path, signing_secret: str, access_key: tuple
) -> dict[str, str]:
    """The ordinary environment contract of `raybot serve` (HTTP mode), pointed at the emulators."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in PROXY_VARS and not k.startswith(("SLACK_", "RAYBOT_", "ALIBABA_CLOUD_"))
    }
    env.update(
        SLACK_BOT_TOKEN=slack.bot_token,
        SLACK_SIGNING_SECRET=signing_secret,
        RAYBOT_CONFIG=str(config_path),
        RAYBOT_DATABASE=str(database),
        RAYBOT_HTTP_HOST="127.0.0.1",
        RAYBOT_HTTP_PORT="0",
        RAYBOT_SLACK_API_URL=slack.api_url,
        RAYBOT_EMR_ENDPOINT=emr_url,
        RAYBOT_EMR_DEADLINE_SECONDS=EMR_DEADLINE_SECONDS,
        ALIBABA_CLOUD_ACCESS_KEY_ID=access_key[0],
        ALIBABA_CLOUD_ACCESS_KEY_SECRET=access_key[1],
        ALIBABA_CLOUD_ECS_METADATA_DISABLED="true",
        NO_PROXY="127.0.0.1,localhost",
        PYTHONUNBUFFERED="1",
    )
    return env


async def start_raybot(env: dict[str, str], log_path: Path) -> tuple[asyncio.subprocess.Process, str, asyncio.Task]:
    """`python -m bot.cli serve` with `env`; waits for the line saying where it listens. Its output goes to
    `log_path`. Returns the process, its base URL and the task copying its output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "serve",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches the sandbox only; it stops raybot itself, in order
    )
    assert process.stdout is not None
    log_file = log_path.open("a", encoding="utf-8")
    seen: list[str] = []
    url = None
    try:
        async with asyncio.timeout(RAYBOT_START_SECONDS):
            while url is None:
                line = (await process.stdout.readline()).decode("utf-8", "replace")
                if not line:
                    break
                log_file.write(line)
                seen.append(line)
                if line.startswith("raybot: listening on "):
                    url = line.split("listening on ", 1)[1].strip().removesuffix("/slack/events")
    except TimeoutError:
        pass
    if url is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        log_file.close()
        raise SandboxError("raybot did not start:\n" + "".join(seen[-30:]))

    async def copy_output() -> None:
        assert process.stdout is not None
        with log_file:
            async for raw in process.stdout:
                log_file.write(raw.decode("utf-8", "replace"))
                log_file.flush()

    return process, url, asyncio.create_task(copy_output(), name="raybot-output")


# --- the whole sandbox ------------------------------------------------------------------------------------------------


@dataclass
class Sandbox:
    """A running sandbox. `url` is the page; `aclose()` stops everything (raybot first, then the servers)."""

    url: str
    raybot_url: str
    slack: SlackEmulator
    emr: EmrEmulator
    page: SandboxPage
    config_path: Path
    workdir: Path
    log_path: Path
    _process: asyncio.subprocess.Process
    _output: asyncio.Task
    _runner: web.AppRunner
    _cleanup: list[Any] = field(default_factory=list)
    _closed: bool = False

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.terminate()
            try:
                async with asyncio.timeout(10):
                    await self._process.wait()
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        with contextlib.suppress(Exception):
            await self._output
        await self.page.close()
        await self._runner.cleanup()
        self.emr.release_hanging()
        await asyncio.to_thread(self.emr.stop)
        await asyncio.to_thread(self.slack.stop)
        for action in self._cleanup:
            action()

    def walkthrough(self) -> str:
        """What `raybot sandbox` prints: where to go and what to try."""
        return (
            f"raybot sandbox is running. Open {self.url}/ in your browser.\n"
            "\n"
            "  Try, as Olivia (on-call) in #incident:\n"
            "    /ray resize prod WorkerGroup1=3     a status message, and the answer in its thread with\n"
            "                                        the clusterId, the requestId and what changed\n"
            "    /ray edit fleet                     a modal for the 50-group cluster: pick a group, change it,\n"
            "                                        Review, Apply\n"
            "    @raybot show train-gpu              mentions answer in a thread\n"
            "    ⋯ → Ray cluster action on the Alertmanager alert   the quick resize of the cluster it names:\n"
            "                                        type a number, read what it does, Resize; the answer goes to\n"
            "                                        the alert's thread\n"
            "    /ray resize train-gpu cpu-preprocess=8   above 6 replicas the on-call needs a second person:\n"
            "                                        switch to Paula (approver) and click Approve\n"
            "    /ray start staging                  (as Ada, admin) the cluster starts; raybot follows it until\n"
            '                                        its workers are up: "settled"\n'
            f'  Clusters take {self.emr.settle_seconds:g} s of emulated time to change; "Skip ahead" in the Cloud\n'
            "  API panel lets it pass at once.\n"
            "  Switch to Victor (viewer) and resize: refused, with the reason. Oscar (outsider) may do nothing.\n"
            "  In the Cloud API panel, inject a fault (slow, throttled, failing, hanging) and resize again:\n"
            "  raybot reports the error with its Code and RequestId.\n"
            "\n"
            f"  config   {self.config_path}\n"
            f"  raybot   {self.raybot_url}/slack/events   (log: {self.log_path})\n"
            f"  Slack    {self.slack.url}   (emulator)\n"
            f"  EMR      {self.emr.url}   (emulator)\n"
            "\n"
            "Ctrl-C stops everything."
        )


async def run_sandbox(
    port: int = DEFAULT_PORT,
    config_path: str | Path | None = None,
    *,
    workdir: Path | None = None,
    settle_seconds: float = SETTLE_SECONDS,
):
    """Start the emulators, raybot and the page on 127.0.0.1 (`port` 0 picks a free one); return the `Sandbox`.

    `config_path` defaults to the sample config. State (raybot's database and log) lives in `workdir`, a fresh
    temporary folder removed at `aclose()` when not given. `settle_seconds`: how long an emulated cluster takes to
    change (`sandbox.emr.settle_seconds` changes it later). Raises SandboxError when something cannot start.
    """
    config_file = Path(config_path) if config_path is not None else SAMPLE_CONFIG
    try:
        config = load_config(str(config_file))
    except ConfigError as error:
        raise SandboxError(str(error)) from None
    cleanup: list[Any] = []
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="raybot-sandbox-"))
        cleanup.append(lambda: shutil.rmtree(workdir, ignore_errors=True))
    workdir.mkdir(parents=True, exist_ok=True)
    world = build_world(config)
    seed = seed_for(config)
    signing_secret = secrets.token_urlsafe(24)
    access_key = ("sandbox-" + secrets.token_hex(6), secrets.token_urlsafe(24))
    emr = EmrEmulator(
        access_keys={access_key[0]: access_key[1]}, clusters=copy.deepcopy(seed), settle_seconds=settle_seconds
    )
    slack = SlackEmulator(
        bot_token="xoxb-sandbox-" + secrets.token_hex(12),
        app_token=None,
        team_id=TEAM_ID,
        bot_user_id=BOT_USER_ID,
        users=world.slack_users(),
        usergroups={gid: list(g["members"]) for gid, g in world.usergroups.items()},
        channels=world.slack_channels(),
    )
    started: list[Any] = []
    runner: web.AppRunner | None = None
    try:
        await asyncio.to_thread(emr.start, "127.0.0.1", 0)
        started.append(emr.stop)
        await asyncio.to_thread(slack.start, "127.0.0.1", 0)
        started.append(slack.stop)
        alert = alert_for(config, seed)
        page = SandboxPage(slack=slack, emr=emr, world=world, signing_secret=signing_secret, seed=seed, alert=alert)
        await page.start()
        if alert is not None:  # #incident opens on an alert to try the message shortcut on
            page.post_alert(INCIDENT.channel_id)
        runner = web.AppRunner(page.app(), access_log=None, shutdown_timeout=2)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
        except OSError as error:
            raise SandboxError(f"cannot listen on 127.0.0.1:{port} ({error.strerror}); try --port 0") from None
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        log_path = workdir / "raybot.log"
        env = raybot_environment(
            slack=slack,
            emr_url=emr.url,
            config_path=config_file.resolve(),
            database=workdir / "raybot.db",
            signing_secret=signing_secret,
            access_key=access_key,
        )
        process, raybot_url, output = await start_raybot(env, log_path)
        page.raybot_url = raybot_url
    except BaseException:
        if runner is not None:
            await runner.cleanup()
        for stop in reversed(started):
            await asyncio.to_thread(stop)
        for action in cleanup:
            action()
        raise
    return Sandbox(
        url=url,
        raybot_url=raybot_url,
        slack=slack,
        emr=emr,
        page=page,
        config_path=config_file.resolve(),
        workdir=workdir,
        log_path=log_path,
        _process=process,
        _output=output,
        _runner=runner,
        _cleanup=cleanup,
    )


@contextlib.asynccontextmanager
async def sandbox_running(
    port: int = DEFAULT_PORT,
    config_path: str | Path | None = None,
    *,
    workdir: Path | None = None,
    settle_seconds: float = SETTLE_SECONDS,
) -> AsyncIterator[Sandbox]:
    sandbox = await run_sandbox(port, config_path, workdir=workdir, settle_seconds=settle_seconds)
    try:
        yield sandbox
    finally:
        await sandbox.aclose()


class BackgroundSandbox:
    """A sandbox running on its own event loop in a thread, for synchronous callers (browser tests, a REPL)."""

    def __init__(
        self,
        port: int = 0,
        config_path: str | Path | None = None,
        *,
        workdir: Path | None = None,
        settle_seconds: float = SETTLE_SECONDS,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="raybot-sandbox", daemon=True)
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            run_sandbox(port, config_path, workdir=workdir, settle_seconds=settle_seconds), self._loop
        )
        try:
            self.sandbox: Sandbox = future.result(timeout=RAYBOT_START_SECONDS + 30)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
            raise

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.sandbox.aclose(), self._loop).result(timeout=60)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def __enter__(self) -> Sandbox:
        return self.sandbox

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --- the command ------------------------------------------------------------------------------------------------------


def add_sandbox_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `raybot sandbox`."""
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port of the page on 127.0.0.1 (default {DEFAULT_PORT}; 0: any)"
    )
    parser.add_argument("--config", help="your own raybot.yaml (default: the sample config of the sandbox)")
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=SETTLE_SECONDS,
        help=f"seconds an emulated cluster takes to change (default {SETTLE_SECONDS:g}; 0: at once)",
    )


async def _serve_until_stopped(port: int, config_path: str | None, settle_seconds: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with sandbox_running(port, config_path, settle_seconds=settle_seconds) as sandbox:
        print(sandbox.walkthrough(), flush=True)
        await stop.wait()
        print("\nraybot sandbox: stopping…", flush=True)
    print("raybot sandbox: stopped.", flush=True)


def main_sandbox(args: argparse.Namespace) -> int:
    """`raybot sandbox [--port N] [--config PATH] [--settle-seconds S]`: run until Ctrl-C. Exit code 2 for a bad
    config, port or settle time."""
    logging.basicConfig(
        level=os.environ.get("RAYBOT_LOG_LEVEL", "WARNING"), format="%(levelname)s %(name)s %(message)s"
    )
    if not 0 <= args.port <= 65535:
        print(f"raybot sandbox: --port must be from 0 to 65535, not {args.port}", file=sys.stderr)
        return 2
    if not 0 <= args.settle_seconds <= 3600:
        print(f"raybot sandbox: --settle-seconds must be from 0 to 3600, not {args.settle_seconds:g}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve_until_stopped(args.port, args.config, args.settle_seconds))
    except SandboxError as error:
        print(f"raybot sandbox: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m bot.sandbox.run`: the same as `raybot sandbox`."""
    parser = argparse.ArgumentParser(prog="raybot sandbox", description=__doc__.splitlines()[0])
    add_sandbox_arguments(parser)
    return main_sandbox(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
