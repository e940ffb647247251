"""Hostile and malformed requests against a real `raybot serve` (HTTP mode, both emulators).

A seeded generator builds the corpus: unsigned and badly signed requests, bodies that are not UTF-8, not JSON,
not an object or not shaped as Slack sends them, and well-formed payloads full of forged ids, keys, numbers and
wrong types for every listener raybot registers (the slash command, every button and select, every modal
callback, the message shortcut, app_mention and url_verification). Every request must be answered within Slack's
3 s with the status its category calls for; none may reach Bolt's error path ("Traceback", "didn't call ack()"),
quote its body in the log, or make a cloud call; and raybot must work normally afterwards.

The corpus is built so that no request is a valid change: forged requests come from channels that grant nothing,
or name ids that do not exist in a fresh store.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import random
import statistics
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from bot.slack import modals
from bot.slack import quick_resize as quick
from bot.slack.blocks import APPROVE_ACTION, CANCEL_REVERT_ACTION, REJECT_ACTION, STOP_ACTION, UNDO_ACTION
from commands.edit import OPEN_EDITOR_ACTION
from commands.message_action import CALLBACK_ID as MESSAGE_ACTION_CALLBACK
from tests import e2e_world as world
from tests.e2e import (
    ephemeral_reply,
    mark,
    new_emr_calls,
    post_form,
    post_interaction,
    raybot_env,
    send,
    text_of,
    wait_new,
)
from tests.harness import SIGNING_SECRET, start_raybot

SEED = 1126
CASES = 560
BATCH = 16
SLACK_ACK_SECONDS = 3.0  # Slack shows the person a timeout when an answer takes longer
CANARY = "fuzzcanary7d1f"  # inside hostile values: it must never reach raybot's log

BUTTON_ACTIONS = (APPROVE_ACTION, REJECT_ACTION, UNDO_ACTION, CANCEL_REVERT_ACTION, STOP_ACTION, OPEN_EDITOR_ACTION)
MODAL_ACTIONS = (
    modals.ACTION_EDIT_GROUP,
    modals.ACTION_ADD_GROUP,
    modals.ACTION_REMOVE_GROUP,
    quick.ACTION_REPLICAS,
    quick.ACTION_GROUP,
    quick.ACTION_FULL_EDITOR,
)
SUBMIT_CALLBACKS = (
    modals.CALLBACK_OVERVIEW,
    modals.CALLBACK_GROUP,
    modals.CALLBACK_CONFIRM,
    modals.CALLBACK_STALE,
    modals.CALLBACK_PICKER,
    quick.CALLBACK_QUICK,
)

# Users and channels: real ids in channels that grant nothing, forged ids, ids that are not ids. The on-call
# channel grants list/show to everyone (cloud reads), so commands and mentions never come from it; buttons may,
# since nothing they name exists in a fresh store and the on-call role may neither stop nor edit.
GOOD_USERS = [world.ONCALL_USER, world.OUTSIDER, "U0FORGED1", "W0NOBODY1"]
BAD_IDS = ["", "u0lower", "U" + "1" * 40, "U0\ud800", f"<@U0ONCALL1|{CANARY}>", f"U0{CANARY}", "C0ONCALL01\n", "１２"]
QUIET_CHANNELS = [world.UNBOUND_CHANNEL, "C0FORGED1", "D0DIRECT1", "G0GROUP01"]
BUTTON_CHANNELS = [world.ONCALL_CHANNEL, *QUIET_CHANNELS]
NUMBERS = [
    "2**63",
    str(2**63),
    str(2**63 - 1),
    str(2**53),
    "-1",
    "0",
    "#²",
    "²",
    "１２",
    "٣",
    "",
    " 1",
    "1 ",
    "1e3",
    "0x10",
    "NaN",
    "00",
    "9" * 5000,
    "1" * 17,
    "\ud800",
    "1\x00",
    "7",
    "123456",
    CANARY,
]
TEXTS = [
    "",
    "x" * 50_000,
    "\ud800",
    "\udfff\ud800",
    "<!channel>",
    "prod",
    "train-gpu",
    "../../etc/passwd",
    "\x00",
    "\u202e",
    CANARY,
    "{}",
    "[]",
]
WRONG_TYPES: list[Any] = [None, 0, -1, 2**64, 1.5, True, [], {}, ["x"], {"id": 1}, {"value": CANARY}]
JSON_VALUES = [
    json.dumps({"alias": "prod", "thread_ts": "1732600000.000100"}),
    json.dumps({"alias": "train-gpu"}),
    json.dumps({"alias": 5}),
    json.dumps({"alias": "\ud800"}),
    json.dumps({"alias": "x" * 10_000}),
    json.dumps({"thread_ts": CANARY}),
    json.dumps({"alias": "prod", "thread_ts": ["x"]}),
    json.dumps([]),
    "null",
    "{",
    "[" * 5000,
    '{"alias": "prod"',
    CANARY,
]
SLASH_TEXTS = [
    "help",
    "whoami",
    "list",
    "resize prod WorkerGroup1=2**63",
    "resize prod WorkerGroup1=３",
    "show #²",
    "history prod ９",
    "history prod " + "9" * 5000,
    "stop prod",
    "start staging",
    "edit prod",
    "resize prod WorkerGroup1=3 for 2**63m",
    "undo 2**63",
    "<@U0RAYBOT> resize prod WorkerGroup1=4",
    *TEXTS,
]
RESPONSE_URLS = ["not a url", "ftp://127.0.0.1/x", "http://127.0.0.1:1/closed", "", "http://[::1", "/relative"]


@dataclass
class Case:
    category: str
    body: bytes
    headers: dict[str, str]
    expect: frozenset[int]


def sign(body: bytes, timestamp: str, secret: str = SIGNING_SECRET) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed(body: bytes, content_type: str | None) -> dict[str, str]:
    timestamp = str(int(time.time()))
    headers = {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": sign(body, timestamp)}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return headers


def form(fields: dict[str, str]) -> bytes:
    """Form-encoded as Slack does; lone surrogates go out as the (invalid) UTF-8 bytes they would be."""
    return "&".join(
        f"{urllib.parse.quote_plus(k)}={urllib.parse.quote_plus(v.encode('utf-8', 'surrogatepass'))}"
        for k, v in fields.items()
    ).encode("ascii")


def as_json(payload: Any) -> bytes:
    return json.dumps(payload).encode()  # ensure_ascii: a lone surrogate travels as the escape \ud800


FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


class Corpus:
    """The seeded generator: every method returns one Case of its category."""

    def __init__(self, rng: random.Random, response_urls: list[str]) -> None:
        self.rng = rng
        self.response_urls = response_urls  # valid ones from the Slack emulator

    def pick(self, options: list[Any] | tuple[Any, ...]) -> Any:
        return copy.deepcopy(self.rng.choice(options))

    # Mostly ids that look right, so most requests get past "who is asking" into the listeners' deeper paths.
    def user_id(self) -> str:
        return self.pick(GOOD_USERS if self.rng.random() < 0.8 else BAD_IDS)

    def channel_id(self, channels: list[str]) -> str:
        return self.pick(channels if self.rng.random() < 0.8 else BAD_IDS)

    def ts(self) -> str:
        return self.pick(["1732600000.000100", "1732600999.999999", "", CANARY, "1.2.3", "１７３２.１"])

    def maybe(self, payload: dict[str, Any], key: str, value: Any) -> None:
        """Set `key` most of the time, leave it out sometimes: a missing field is a case too."""
        if self.rng.random() < 0.85:
            payload[key] = value

    # -- payloads of each kind, shaped as Slack shapes them (field values hostile) ---------------------------------

    def slash_fields(self) -> dict[str, str]:
        fields = {
            "token": "unused",
            "team_id": self.pick(["T0TEAM", "T0FORGED", CANARY, ""]),
            "channel_id": self.channel_id(QUIET_CHANNELS),
            "user_id": self.user_id(),
            "command": "/ray" if self.rng.random() < 0.9 else self.pick(["/other", "", "/RAY"]),
            "text": self.pick(SLASH_TEXTS),
            "response_url": self.pick(self.response_urls + RESPONSE_URLS),
            "trigger_id": self.pick(["1.2.3", CANARY, "", "x" * 5000]),
        }
        for key in list(fields):
            if key != "command" and self.rng.random() < 0.1:
                del fields[key]
        return fields

    def user_object(self) -> Any:
        if self.rng.random() < 0.8:
            return {"id": self.user_id(), "team_id": "T0TEAM"}
        return self.pick([{}, {"id": None}, self.user_id()])

    def channel_object(self, channels: list[str]) -> Any:
        if self.rng.random() < 0.8:
            return {"id": self.channel_id(channels), "name": "x"}
        return self.pick([{}, {"id": None}, self.channel_id(channels)])

    def action(self, action_id: str) -> dict[str, Any]:
        action: dict[str, Any] = {"action_id": action_id, "block_id": "raybot", "type": "button"}
        self.maybe(action, "action_ts", self.ts())
        kind = self.rng.random()
        if action_id in (STOP_ACTION, OPEN_EDITOR_ACTION) and kind < 0.6:
            action["value"] = self.pick(JSON_VALUES)
        elif action_id in (modals.ACTION_EDIT_GROUP, modals.ACTION_REMOVE_GROUP) and kind < 0.6:
            action["type"] = "static_select"
            action["selected_option"] = self.pick(
                [{"value": self.pick(NUMBERS + ["new"])}, {"value": 5}, {}, None, "x", [{"value": "0"}]]
            )
        elif kind < 0.85:
            action["value"] = self.pick(NUMBERS)
        else:
            self.maybe(action, "value", self.pick(WRONG_TYPES))
        return action

    def view(self, callback_id: str) -> dict[str, Any]:
        view: dict[str, Any] = {"type": self.pick(["modal", "modal", "home"]), "callback_id": callback_id}
        self.maybe(view, "id", self.pick(["V0FORGED1", "", CANARY, 5, None]))
        self.maybe(
            view,
            "private_metadata",
            self.pick(
                [
                    "AAAAAAAAAAAAAAAAAAAAAA",
                    "x" * 64,
                    "x" * 65,
                    "",
                    "\ud800",
                    "../../drafts",
                    "key with spaces",
                    "ｋｅｙ",
                    CANARY,
                    5,
                    None,
                    ["k"],
                ]
            ),
        )
        self.maybe(
            view,
            "state",
            self.pick(
                [
                    {"values": {}},
                    {"values": {modals.BLOCK_PICK: {modals.BLOCK_PICK: {"value": "#²"}}}},
                    {"values": {modals.BLOCK_PICK: {modals.BLOCK_PICK: {"selected_option": {"value": "#１"}}}}},
                    {"values": "x"},
                    {"values": [1]},
                    {},
                    "x",
                    None,
                ]
            ),
        )
        self.maybe(view, "hash", self.pick(["1.abc", 5, None]))
        return view

    def block_actions(self) -> tuple[dict[str, Any], int]:
        known = self.rng.random() < 0.9
        in_modal = self.rng.random() < 0.35
        if known:
            action_id = self.pick(MODAL_ACTIONS if in_modal else BUTTON_ACTIONS)
        else:
            action_id = self.pick(["raybot_nothing", "", CANARY, "raybot_undo "])
        payload: dict[str, Any] = {"type": "block_actions", "api_app_id": "A0RAYBOT", "token": "unused"}
        self.maybe(payload, "user", self.user_object())
        self.maybe(payload, "team", self.pick([{"id": "T0TEAM", "domain": "x"}, {"id": CANARY}, {}, "T0TEAM"]))
        self.maybe(payload, "trigger_id", self.pick(["1.2.3", CANARY, ""]))
        if in_modal:
            self.maybe(payload, "view", self.view(self.pick([modals.CALLBACK_OVERVIEW, modals.CALLBACK_GROUP])))
            self.maybe(payload, "container", {"type": "view", "view_id": "V0FORGED1"})
        else:
            self.maybe(payload, "channel", self.channel_object(BUTTON_CHANNELS))
            self.maybe(
                payload,
                "container",
                self.pick(
                    [
                        {"type": "message", "message_ts": self.ts(), "channel_id": self.channel_id(BUTTON_CHANNELS)},
                        {"type": "message", "is_ephemeral": True, "thread_ts": self.ts()},
                        {},
                        "x",
                        5,
                        None,
                    ]
                ),
            )
            self.maybe(payload, "message", {"ts": self.ts(), "thread_ts": self.ts(), "text": CANARY})
            self.maybe(payload, "response_url", self.pick(self.response_urls + RESPONSE_URLS))
        payload["actions"] = [self.action(action_id)]
        return payload, 200 if known else 404

    def view_submission(self) -> tuple[dict[str, Any], int]:
        known = self.rng.random() < 0.9
        callback_id = self.pick(SUBMIT_CALLBACKS) if known else self.pick([modals.CALLBACK_LOADING, "", CANARY])
        payload: dict[str, Any] = {"type": "view_submission", "api_app_id": "A0RAYBOT", "token": "unused"}
        self.maybe(payload, "user", self.user_object())
        self.maybe(payload, "team", {"id": "T0TEAM"})
        self.maybe(payload, "trigger_id", self.pick(["1.2.3", CANARY]))
        payload["view"] = self.view(callback_id)
        return payload, 200 if known else 404

    def view_closed(self) -> tuple[dict[str, Any], int]:
        known = self.rng.random() < 0.85
        callback_id = modals.CALLBACK_OVERVIEW if known else self.pick([modals.CALLBACK_GROUP, CANARY])
        payload: dict[str, Any] = {"type": "view_closed", "api_app_id": "A0RAYBOT", "is_cleared": False}
        self.maybe(payload, "user", self.user_object())
        payload["view"] = self.view(callback_id)
        return payload, 200 if known else 404

    def message_action(self) -> tuple[dict[str, Any], int]:
        known = self.rng.random() < 0.9
        payload: dict[str, Any] = {
            "type": "message_action",
            "callback_id": MESSAGE_ACTION_CALLBACK if known else self.pick(["raybot_other", CANARY]),
        }
        self.maybe(payload, "user", self.user_object())
        self.maybe(payload, "channel", self.channel_object(QUIET_CHANNELS))
        self.maybe(payload, "team", {"id": "T0TEAM"})
        self.maybe(payload, "trigger_id", self.pick(["1.2.3", CANARY, "\ud800"]))
        self.maybe(payload, "message", self.pick([{"ts": self.ts(), "text": CANARY}, {}, {"thread_ts": "x"}]))
        self.maybe(payload, "response_url", self.pick(self.response_urls + RESPONSE_URLS))
        return payload, 200 if known else 404

    def global_shortcut(self) -> tuple[dict[str, Any], int]:
        # Bolt's app.shortcut(callback_id) takes global shortcuts too: raybot's gets one with no channel.
        callback_id = self.pick([MESSAGE_ACTION_CALLBACK, CANARY])
        payload = {"type": "shortcut", "callback_id": callback_id, "user": self.user_object(), "trigger_id": "1.2.3"}
        return payload, 200 if callback_id == MESSAGE_ACTION_CALLBACK else 404

    def mention(self) -> tuple[dict[str, Any], int]:
        event: dict[str, Any] = {"type": "app_mention"}
        self.maybe(event, "user", self.user_id())
        self.maybe(event, "channel", self.channel_id(QUIET_CHANNELS))
        self.maybe(event, "text", "<@U0RAYBOT> " + self.pick(SLASH_TEXTS))
        self.maybe(event, "ts", self.ts())
        if self.rng.random() < 0.3:
            event["thread_ts"] = self.ts()
        payload: dict[str, Any] = {"type": "event_callback", "team_id": "T0TEAM", "api_app_id": "A0RAYBOT"}
        payload["event"] = event
        self.maybe(payload, "event_id", self.pick(["Ev0FUZZ", "", "\ud800", CANARY * 100]))
        self.maybe(payload, "authorizations", [{"team_id": "T0TEAM", "user_id": "U0RAYBOT", "is_bot": True}])
        return payload, 200

    def other_event(self) -> tuple[dict[str, Any], int]:
        event = {"type": self.pick(["message", "reaction_added", CANARY, ""]), "user": "U0FORGED1", "text": CANARY}
        return {"type": "event_callback", "team_id": "T0TEAM", "event": event}, 404

    def url_verification(self) -> tuple[dict[str, Any], int]:
        return {"type": "url_verification", "token": "unused", "challenge": self.pick(["c" * 20, "", "\ud800"])}, 200

    # -- the envelope: a field Bolt reads, given a type Slack never sends -------------------------------------------

    def broken_envelope(self) -> dict[str, Any]:
        payload, _ = self.rng.choice(
            [self.block_actions, self.view_submission, self.message_action, self.mention, self.view_closed]
        )()
        key, value = self.pick(
            [
                ("type", 5),
                ("type", ["block_actions"]),
                ("type", None),
                ("event", "x"),
                ("event", []),
                ("event", {"type": 5}),
                ("event", {"type": "app_mention", "user": ["U0X"]}),
                ("event", {"type": "app_mention", "channel": {"id": 5}}),
                ("actions", []),
                ("actions", [1]),
                ("actions", "x"),
                ("actions", [{"action_id": 5}]),
                ("actions", [{"value": "1"}]),
                ("view", "x"),
                ("view", {}),
                ("view", {"callback_id": 1}),
                ("view", {"callback_id": "raybot.edit.overview", "team_id": ["T"]}),
                ("user", 5),
                ("user", ["U0X"]),
                ("user", {"id": 5}),
                ("channel", 7),
                ("channel", {"id": [1]}),
                ("team", 5),
                ("enterprise", 5),
                ("authorizations", "x"),
                ("authorizations", [1]),
                ("authorizations", [{"team_id": 5}]),
                ("response_urls", "x"),
                ("response_urls", [None]),
                ("trigger_id", 5),
                ("response_url", ["x"]),
                ("message", "x"),
                ("message", {"user": 5}),
                ("thread_ts", 1.5),
                ("callback_id", {"x": 1}),
                ("user_id", 5),
                ("team_id", {}),
                ("type", "interactive_message"),
                ("type", "workflow_step_edit"),
                ("type", "dialog_submission"),
                ("type", "block_suggestion"),
                ("type", CANARY),
                ("view", {"callback_id": modals.CALLBACK_OVERVIEW}),
                ("view", {"callback_id": modals.CALLBACK_OVERVIEW, "type": "workflow_step"}),
            ]
        )
        if payload.get("type") == "event_callback" and key == "event" and isinstance(value, dict):
            value = {"type": "app_mention", **value} if "type" not in value else value
        payload[key] = value
        if key == "type" and value is None:
            payload.pop("command", None)
        return payload

    # -- cases -------------------------------------------------------------------------------------------------------

    def case(self) -> Case:
        roll = self.rng.random()
        if roll < 0.10:
            return self.bad_signature()
        if roll < 0.22:
            return self.bad_body()
        if roll < 0.34:
            payload = self.broken_envelope()
            return self.interaction_or_event("envelope", payload, frozenset({400}))
        if roll < 0.50:
            fields = self.slash_fields()
            body = form(fields)
            if self.rng.random() < 0.1:  # a slash command as JSON: not how Slack sends it, still readable
                body = as_json(fields)
                return Case("slash-json", body, signed(body, JSON), frozenset({200, 400, 404}))
            expect = 200 if fields.get("command") == "/ray" else 404
            return Case("slash", body, signed(body, FORM), frozenset({expect}))
        makers = [
            ("block_actions", self.block_actions, 0.35),
            ("view_submission", self.view_submission, 0.2),
            ("view_closed", self.view_closed, 0.07),
            ("message_action", self.message_action, 0.1),
            ("shortcut", self.global_shortcut, 0.03),
            ("app_mention", self.mention, 0.15),
            ("other_event", self.other_event, 0.05),
            ("url_verification", self.url_verification, 0.05),
        ]
        name, maker, _ = self.rng.choices(makers, weights=[w for *_, w in makers])[0]
        payload, status = maker()
        return self.interaction_or_event(name, payload, frozenset({status}))

    def interaction_or_event(self, category: str, payload: dict[str, Any], expect: frozenset[int]) -> Case:
        if payload.get("type") in ("event_callback", "url_verification") or "event" in payload:
            body = as_json(payload)
            return Case(category, body, signed(body, JSON), expect)
        body = form({"payload": json.dumps(payload)})
        return Case(category, body, signed(body, FORM), expect)

    def bad_signature(self) -> Case:
        payload, _ = self.block_actions()
        body = form({"payload": json.dumps(payload)})
        now = str(int(time.time()))
        headers = {"Content-Type": FORM}
        kind = self.rng.randrange(7)
        if kind == 0:  # unsigned
            pass
        elif kind == 1:
            headers |= {"X-Slack-Request-Timestamp": now, "X-Slack-Signature": sign(body, now, "not-the-secret")}
        elif kind == 2:  # no timestamp
            headers |= {"X-Slack-Signature": sign(body, now)}
        elif kind == 3:  # a timestamp that is not a number
            bad = self.pick(["abc", "", "1e9", "-5", "+" + now, now + "0x", "9" * 50, "12.5", "١٢٣", "0x10"])
            headers |= {"X-Slack-Request-Timestamp": bad, "X-Slack-Signature": sign(body, bad)}
        elif kind == 4:  # stale: a replay
            old = str(int(time.time()) - 600)
            headers |= {"X-Slack-Request-Timestamp": old, "X-Slack-Signature": sign(body, old)}
        elif kind == 5:  # a signature that is not one
            headers |= {"X-Slack-Request-Timestamp": now, "X-Slack-Signature": self.pick(["v0=zz", "", "v0=é", "x"])}
        else:  # a signature of another body
            headers |= {"X-Slack-Request-Timestamp": now, "X-Slack-Signature": sign(body + b"&x=1", now)}
        return Case("unsigned", body, headers, frozenset({401}))

    def bad_body(self) -> Case:
        kind = self.rng.randrange(9)
        if kind == 0:  # not UTF-8
            noise = bytes(self.rng.randrange(256) for _ in range(64))
            body = self.pick([b"\xff\xfe\x00", b"payload=%7B%7D\xc3\x28", noise])
            if body.decode("utf-8", "replace") == body.decode("utf-8", "ignore"):
                body += b"\xff"  # random bytes that happen to be UTF-8: make sure they are not
            return Case("not-utf8", body, signed(body, self.pick([FORM, JSON])), frozenset({400}))
        if kind == 1:  # JSON, not an object
            body = self.pick([b"[]", b"1", b'"x"', b"null", b"true", b"1.5", b'[{"type": "block_actions"}]'])
            return Case("json-not-object", body, signed(body, JSON), frozenset({400}))
        if kind == 2:  # broken JSON
            body = self.pick([b"{", b'{"type":', b"{'type': 'x'}", b"", b"nul", b'{"type": "x"}}', b"[" * 100_000])
            return Case("json-broken", body, signed(body, JSON), frozenset({400}))
        if kind == 3:  # an interaction whose payload is not an object
            inner = self.pick(["[]", "1", '"x"', "null", "{", "", CANARY])
            body = form({"payload": inner})
            return Case("payload-not-object", body, signed(body, FORM), frozenset({400}))
        if kind == 4:  # a form that is neither a command nor an interaction
            body = self.pick([b"a=b", b"", b"payloadx=1", b"text=payload", CANARY.encode(), b"&&&="])
            return Case("form-without-payload", body, signed(body, FORM), frozenset({400}))
        if kind == 5:  # a content type Slack never sends
            payload, _ = self.block_actions()
            body = as_json(payload)
            content_type = self.pick(["text/plain", "multipart/form-data", "application/xml", None])
            return Case("content-type", body, signed(body, content_type), frozenset({400}))
        if kind == 6:  # JSON with no type at all
            body = as_json(self.pick([{}, {"user": {"id": "U0X"}}, {"value": CANARY}]))
            return Case("no-type", body, signed(body, JSON), frozenset({400}))
        if kind == 7:  # too large for any Slack payload
            body = b"payload=" + b"x" * (1024 * 1024 + 10)
            return Case("too-large", body, signed(body, FORM), frozenset({413}))
        # deeply nested, inside the payload field
        body = form({"payload": '{"type": "block_actions", "actions": ' + "[" * 50_000})
        return Case("nested", body, signed(body, FORM), frozenset({400}))


def build_corpus(response_urls: list[str]) -> list[Case]:
    corpus = Corpus(random.Random(SEED), response_urls)
    return [corpus.case() for _ in range(CASES)]


@pytest.fixture(scope="module")
def raybot(emr, slack, tmp_path_factory):
    """One raybot for the targeted cases below; nothing they send may end in a traceback."""
    process = start_raybot(raybot_env(tmp_path_factory.mktemp("raybot"), slack, emr))
    yield process
    output = process.stop()
    assert "Traceback" not in output and "didn't call ack" not in output


@pytest.fixture
async def marked(emr, slack):
    mark(emr, slack)


def click(slack, action_id: str, value: str, *, user: str = world.ONCALL_USER) -> dict[str, Any]:
    """A click on a raybot button carrying `value`, on a message in the on-call channel."""
    action = {"type": "button", "action_id": action_id, "block_id": "raybot", "value": value}
    message = {"type": "message", "ts": "1732600500.000100", "text": "a raybot message"}
    return slack.block_actions_payload(action, user_id=user, channel_id=world.ONCALL_CHANNEL, message=message)


@pytest.mark.parametrize(
    ("action_id", "value"),
    [
        (UNDO_ACTION, "2**63"),
        (UNDO_ACTION, str(2**63)),
        (UNDO_ACTION, "#²"),
        (APPROVE_ACTION, "１２"),
        (REJECT_ACTION, "-1"),
        (CANCEL_REVERT_ACTION, ""),
        (CANCEL_REVERT_ACTION, "9" * 5000),
        (STOP_ACTION, '{"alias": 5}'),
        (STOP_ACTION, "{"),
        (OPEN_EDITOR_ACTION, "[]"),
    ],
)
async def test_a_forged_button_value_is_answered_plainly_and_nothing_is_read(
    http, raybot, slack, emr, marked, action_id, value
):
    response = await post_interaction(http, raybot, click(slack, action_id, value))
    assert response.status_code == 200
    note = await wait_new(slack, lambda c: c.method == "chat.postEphemeral")
    assert note.args["user"] == world.ONCALL_USER and note.args["channel"] == world.ONCALL_CHANNEL
    text = text_of(note.args)
    assert "raybot could not read that button" in text and "Nothing was changed" in text, text
    assert "Something went wrong" not in text
    assert new_emr_calls(emr) == []


async def test_an_existing_looking_id_is_looked_up_and_refused(http, raybot, slack, emr, marked):
    await post_interaction(http, raybot, click(slack, UNDO_ACTION, str(2**53 - 1)))
    note = await wait_new(slack, lambda c: c.method == "chat.postEphemeral")
    assert "was not made in this channel" in text_of(note.args)


async def test_a_forged_editor_key_is_answered_in_the_modal(http, raybot, slack, emr, marked):
    for key in ("\ud800", "../../drafts", "x" * 65, "AAAAAAAAAAAAAAAAAAAAAA"):
        payload = {
            "type": "view_submission",
            "user": {"id": world.EDITOR, "team_id": "T0TEAM"},
            "team": {"id": "T0TEAM"},
            "view": {
                "id": "V0FORGED1",
                "type": "modal",
                "callback_id": modals.CALLBACK_OVERVIEW,
                "private_metadata": key,
            },
        }
        response = await post_interaction(http, raybot, payload)
        assert response.status_code == 200
        answer = response.json()
        assert answer["response_action"] == "update"
        shown = json.dumps(answer["view"], ensure_ascii=False)
        expected = "this editor is closed" if key.startswith("A") else "raybot could not read that editor"
        assert expected in shown, shown
    assert new_emr_calls(emr) == []


async def test_a_command_whose_text_says_payload_is_a_command(http, raybot, slack, emr, marked):
    # Bolt reads any form body containing "payload" as an interaction; raybot reads the form's fields.
    _, url = await send(http, raybot, slack, "show payload-processor")
    reply = await ephemeral_reply(slack, url)
    assert "payload-processor" in reply["text"] and "unknown cluster" in reply["text"]


async def test_an_unusable_response_url_falls_back_to_chat_post_ephemeral(http, raybot, slack, emr, marked):
    payload = slack.slash_command_payload("/ray", "help", user_id=world.OUTSIDER, channel_id=world.ONCALL_CHANNEL)
    for response_url in ("not a url", "ftp://127.0.0.1/x", "/relative"):  # (the fuzz corpus has unreachable ones)
        response = await post_form(http, raybot, payload | {"response_url": response_url})
        assert response.status_code == 200
        note = await wait_new(slack, lambda c: c.method == "chat.postEphemeral", timeout=10)
        assert note.args["user"] == world.OUTSIDER and "response_url" in text_of(note.args)
        mark(emr, slack)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "reason"),
    [
        (b"\xff\xfe", FORM, 400, "not UTF-8"),
        (b"[]", JSON, 400, "not an object"),
        (b"null", JSON, 400, "not an object"),
        (b'{"type": ', JSON, 400, "not valid JSON"),
        (b"payload=%5B%5D", FORM, 400, "not an object"),
        (b"a=b", FORM, 400, "no payload"),
        (b'{"type": "block_actions", "actions": []}', JSON, 400, "actions"),
    ],
)
async def test_a_signed_malformed_body_gets_400_with_a_short_reason(http, raybot, body, content_type, status, reason):
    response = await http.post(f"{raybot.url}/slack/events", content=body, headers=signed(body, content_type))
    assert response.status_code == status
    assert reason in response.text and len(response.text) < 100


@pytest.mark.parametrize("timestamp", ["abc", "", "١٢٣", "1e9", None])
async def test_a_timestamp_that_is_not_a_number_is_401_before_the_body_is_read(http, raybot, timestamp):
    body = b"\xff not even UTF-8"
    headers = {"Content-Type": FORM, "X-Slack-Signature": sign(body, timestamp or "")}
    if timestamp is not None:
        headers["X-Slack-Request-Timestamp"] = timestamp
    wire = {k: v.encode() for k, v in headers.items()}
    response = await http.post(f"{raybot.url}/slack/events", content=body, headers=wire)
    assert response.status_code == 401


@pytest.fixture
def fresh_raybot(emr, slack, tmp_path):
    """A raybot of its own (a fresh store: no change, approval, revert or draft exists), its output followed."""
    process = start_raybot(raybot_env(tmp_path, slack, emr))
    yield process
    process.stop()


async def post(http, url: str, case: Case) -> tuple[Case, int, float]:
    headers = {name: value.encode("utf-8") for name, value in case.headers.items()}  # "é" goes out as UTF-8 bytes
    started = time.perf_counter()
    response = await http.post(f"{url}/slack/events", content=case.body, headers=headers)
    return case, response.status_code, time.perf_counter() - started


def json_lines(output: str) -> list[dict[str, Any]]:
    lines = []
    for line in output.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            lines.append(entry)
    return lines


async def test_hostile_requests_are_all_answered_in_time_and_change_nothing(http, fresh_raybot, slack, emr):
    raybot = fresh_raybot
    urls = [slack.new_response_url(channel=c, user=u) for c in QUIET_CHANNELS for u in GOOD_USERS[:2]]
    cases = build_corpus(urls)
    emr_calls = len(emr.calls)

    results: list[tuple[Case, int, float]] = []
    for start in range(0, len(cases), BATCH):
        results += await asyncio.gather(*(post(http, raybot.url, case) for case in cases[start : start + BATCH]))

    wrong = [(c.category, status, sorted(c.expect), c.body[:300]) for c, status, _ in results if status not in c.expect]
    assert not wrong, (len(wrong), wrong[:3], Counter((w[0], w[1]) for w in wrong))
    seconds = [elapsed for *_, elapsed in results]
    slow = [(c.category, round(elapsed, 2)) for c, _, elapsed in results if elapsed >= SLACK_ACK_SECONDS]
    assert not slow, slow
    categories = Counter(c.category for c in cases)
    assert len(cases) >= 500 and len(categories) >= 15, categories
    assert sum(1 for c in cases if c.expect == {401}) >= 40
    print(
        f"\n{len(cases)} requests: max {max(seconds):.3f} s, median {statistics.median(seconds):.3f} s; "
        f"statuses {dict(Counter(s for _, s, _ in results))}; categories {dict(categories)}"
    )

    # Nothing reached the cloud.
    assert emr.calls[emr_calls:] == []

    # raybot still works: alive, and a normal command is answered as usual.
    health = await http.get(f"{raybot.url}/healthz")
    assert health.status_code == 200
    response, url = await send(http, raybot, slack, "list")
    assert response.status_code == 200
    listed = text_of(await ephemeral_reply(slack, url, timeout=10))
    assert "prod" in listed and "train-gpu" in listed

    # Stop it (its stop waits for the work in flight) and read everything it logged.
    output = raybot.stop()
    assert "raybot: stopped" in output
    assert "Traceback" not in output
    assert "didn't call ack" not in output
    assert "unhandled error" not in output
    assert "Unhandled request" not in output  # Bolt's own warning quotes the body
    assert CANARY not in output, [line for line in output.splitlines() if CANARY in line][:3]
    for secret in (SIGNING_SECRET, world.BOT_TOKEN, world.AK_SECRET):
        assert secret not in output
    entries = json_lines(output)
    refusals = [e for e in entries if e.get("message", "").startswith("refused a signed Slack request")]
    assert len(refusals) == sum(1 for c, status, _ in results if status == 400)
    assert not [e for e in entries if e.get("level") in ("ERROR", "CRITICAL") and "exc" in e]
