"""Loopback emulator of the Slack Web API and Socket Mode, for tests and the sandbox.

raybot and the end-to-end tests point slack_sdk at it (``AsyncWebClient(base_url=emulator.api_url)``, or
``RAYBOT_SLACK_API_URL``) and drive Bolt through its Socket Mode WebSocket. It is deliberately strict: tokens are
checked, required arguments demanded, and the limits that bite in production (blocks per message and modal, text,
title and metadata lengths, single-use trigger ids that expire in 3 s, a modal stack of 3, response_url uses) are
enforced, so that a flow that passes here does not fail on those in Slack. Where Slack is lenient in a way that
hides bugs (a reply to a thread that does not exist), the emulator is stricter and says so in the docstring.

The limits are copied from Slack's documentation on purpose rather than imported from raybot: the emulator is an
independent check of raybot's own constants.

Socket Mode is modelled as several replicas of an app see it: every apps.connections.open hands out a URL good for
one connection, and up to 10 connections may be open at once (each with an id, ``conn-1``, ``conn-2``, … in the
order they connected). An envelope goes to ONE open connection, round-robin by default, or to the one a test names;
a test may also send the same payload to several connections at once, each copy with its own envelope id, as
Slack's duplicate deliveries are. An envelope that is not acknowledged within ``ack_timeout`` seconds (3 by default,
as Slack) is delivered again, as a new envelope carrying ``retry_attempt`` (1, 2, …) and ``retry_reason``
(``timeout``), to a different open connection when there is one; one whose connection closes first is delivered
again at once with ``retry_reason`` ``connection_closed``; with no connection open it waits for the next one. After
3 retries (Slack's number) the emulator gives up and records it. Retries are immediate here, where Slack spaces
its Events API retries out (about 1 and 5 minutes), and they apply to every envelope type, not only events_api.
The server side can also close or drop a connection and send the ``disconnect`` message Slack sends before it
rotates one. Every delivery and every ack is recorded with its connection.

Threading: the aiohttp server runs on its own event loop in a background thread. All state is guarded by one lock;
the inspection methods return copies and may be called from any thread, ``wait_for`` and the Socket Mode hooks from
any event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import logging
import os
import random
import re
import signal
import string
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from bot.sandbox.loop_thread import serve_in_thread, stop_thread

logger = logging.getLogger(__name__)

JSON = dict[str, Any]
Clock = Callable[[], float]
CallPredicate = Callable[["ApiCall"], bool]

# Slack limits (https://docs.slack.dev/reference/block-kit/…, method reference pages).
MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_MESSAGE_TEXT_CHARS = 40_000
MAX_VIEW_TEXT_CHARS = 24  # modal title, submit and close
MAX_PRIVATE_METADATA_CHARS = 3000
MAX_CALLBACK_ID_CHARS = 255
MAX_EXTERNAL_ID_CHARS = 255
MAX_BLOCK_ID_CHARS = 255
MAX_ACTION_ID_CHARS = 255
MAX_VIEW_BYTES = 250_000
MAX_VIEW_STACK = 3
TRIGGER_TTL_SECONDS = 3.0
RESPONSE_URL_USES = 5
RESPONSE_URL_TTL_SECONDS = 30 * 60.0

# Socket Mode (https://docs.slack.dev/apis/events-api/using-socket-mode).
SOCKET_ENVELOPE_TYPES = ("slash_commands", "interactive", "events_api")
SOCKET_ACK_SECONDS = 3.0  # an envelope not acknowledged within this is delivered again
SOCKET_MAX_RETRIES = 3  # deliveries after the first; then Slack gives up
MAX_SOCKET_CONNECTIONS = 10  # per app; one more is told "too_many_websockets" and closed
RETRY_TIMEOUT = "timeout"
RETRY_CONNECTION_CLOSED = "connection_closed"
DISCONNECT_REASONS = frozenset({"warning", "refresh_requested", "link_disabled", "too_many_websockets"})

APP_ID = "A0RAYBOT"
BOT_ID = "B0RAYBOT"

_METHODS_FOR_APP_TOKEN = frozenset({"apps.connections.open"})
_JSON_ARGS = ("blocks", "attachments", "view", "metadata")
_CONVERSATION_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_ID_ALPHABET = string.ascii_uppercase + string.digits

_BLOCK_TYPES = frozenset(
    {"section", "divider", "header", "context", "actions", "input", "image", "rich_text", "markdown", "file", "video"}
)
_STATIC_SELECTS = frozenset({"static_select", "multi_static_select"})
_ELEMENT_TYPES = frozenset(
    {
        "button",
        "checkboxes",
        "radio_buttons",
        "overflow",
        "datepicker",
        "timepicker",
        "datetimepicker",
        "image",
        "plain_text_input",
        "number_input",
        "email_text_input",
        "url_text_input",
        "rich_text_input",
        "file_input",
        "workflow_button",
        "external_select",
        "multi_external_select",
        "users_select",
        "multi_users_select",
        "conversations_select",
        "multi_conversations_select",
        "channels_select",
        "multi_channels_select",
    }
    | _STATIC_SELECTS
)


# --------------------------------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class ApiCall:
    """One Web API call (or response_url post) as the emulator saw and answered it."""

    method: str
    args: JSON
    token: str | None = field(repr=False)  # never shown in reprs or assertion output
    ok: bool
    error: str | None
    response: JSON
    status: int = 200
    url: str = ""  # the response_url posted to, for method "response_url"


class SocketModeError(RuntimeError):
    """Socket Mode delivery failed: no (such) client connected, the envelope was given up, or the emulator stopped."""


@dataclass(frozen=True)
class SocketDelivery:
    """One envelope sent on one Socket Mode connection.

    Every delivery has its own ``envelope_id``; a redelivery of an unacknowledged envelope points at the first
    envelope of its chain with ``first_envelope_id`` (equal to ``envelope_id`` for the first delivery)."""

    envelope_id: str
    first_envelope_id: str
    envelope_type: str
    connection_id: str
    retry_attempt: int
    retry_reason: str
    payload: JSON = field(repr=False)


@dataclass(frozen=True)
class SocketAck:
    """An acknowledgement as received: ``message`` is what the client sent (``envelope_id``, ``payload``?)."""

    envelope_id: str
    first_envelope_id: str | None  # None: no envelope with that id was ever sent
    connection_id: str  # where the ack arrived (an SDK may ack on its new connection after a reconnect)
    message: JSON


@dataclass(frozen=True)
class SocketGiveUp:
    """An envelope delivered 1 + max retries times without an ack: Slack stops there."""

    first_envelope_id: str
    envelope_type: str
    deliveries: int
    last_reason: str


@dataclass(frozen=True)
class SocketConnection:
    """One Socket Mode connection, open or closed, with what went over it (envelope ids, oldest first)."""

    id: str
    open: bool
    peer: tuple[str, int] | None  # the client's address: which process holds the connection
    delivered: tuple[str, ...]
    acked: tuple[str, ...]
    disconnects: tuple[str, ...]  # reasons of the `disconnect` messages sent to it
    close_reason: str | None


class _MethodFailure(Exception):
    """A Slack ``ok: false`` answer, raised by the method handlers."""

    def __init__(self, error: str, messages: list[str] | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.messages = messages or []


@dataclass
class _Trigger:
    issued_at: float
    user: str | None
    view_id: str | None
    used: bool = False


@dataclass
class _ResponseUrl:
    issued_at: float
    channel: str | None
    user: str | None
    message_ts: str | None
    uses: int = 0


@dataclass(frozen=True)
class _Injection:
    error: str | None
    retry_after: int | None


@dataclass
class _AsyncWaiter:
    predicate: CallPredicate
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[ApiCall]


@dataclass(eq=False)
class _Connection:
    """A Socket Mode connection, on the emulator loop."""

    id: str
    seq: int
    ws: web.WebSocketResponse
    transport: asyncio.BaseTransport | None
    peer: tuple[str, int] | None
    ready: bool = False  # hello sent: envelopes may go to it
    open: bool = True
    usable: bool = True  # False once a send failed or the server began closing it
    close_reason: str | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    delivered: list[str] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    disconnects: list[str] = field(default_factory=list)

    def snapshot(self) -> SocketConnection:
        return SocketConnection(
            id=self.id,
            open=self.open,
            peer=self.peer,
            delivered=tuple(self.delivered),
            acked=tuple(self.acked),
            disconnects=tuple(self.disconnects),
            close_reason=self.close_reason,
        )


@dataclass(eq=False)
class _Chain:
    """One payload's deliveries until one is acknowledged (or the emulator gives up), on the emulator loop."""

    first_envelope_id: str
    envelope_type: str
    payload: JSON
    done: asyncio.Future[SocketAck]
    attempt: int = 0
    reason: str = ""
    connection: _Connection | None = None
    ack: SocketAck | None = None
    expired: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


# --------------------------------------------------------------------------------------------------------------------
# Block Kit validation (pure). Each function returns Slack-style problem strings; empty means valid.


def _problem(message: str, pointer: str) -> str:
    return f"[ERROR] {message} [json-pointer:{pointer}]"


def _too_long(limit: int) -> str:
    return f"must be less than {limit + 1} characters"


def _too_many(limit: int) -> str:
    return f"no more than {limit} items allowed"


def _string_problems(value: Any, pointer: str, *, max_chars: int, required: bool = False) -> list[str]:
    if value is None:
        return [_problem("missing required field", pointer)] if required else []
    if not isinstance(value, str):
        return [_problem("must be a string", pointer)]
    if required and not value:
        return [_problem("must be more than 0 characters", pointer)]
    if len(value) > max_chars:
        return [_problem(_too_long(max_chars), pointer)]
    return []


def text_object_problems(
    obj: Any, pointer: str, *, max_chars: int, plain_only: bool = False, required: bool = True
) -> list[str]:
    """Problems of a composition text object (``{"type": "plain_text"|"mrkdwn", "text": ...}``)."""
    if obj is None:
        return [_problem("missing required field", pointer)] if required else []
    if not isinstance(obj, dict):
        return [_problem("must be an object", pointer)]
    allowed = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if obj.get("type") not in allowed:
        return [_problem(f"must be one of {', '.join(allowed)}", f"{pointer}/type")]
    return _string_problems(obj.get("text"), f"{pointer}/text", max_chars=max_chars, required=True)


def _options_problems(options: Any, pointer: str, *, max_items: int, mrkdwn_ok: bool = False) -> list[str]:
    if not isinstance(options, list) or not options:
        return [_problem("must provide at least 1 item", pointer)]
    problems = [_problem(_too_many(max_items), pointer)] if len(options) > max_items else []
    for i, option in enumerate(options):
        op = f"{pointer}/{i}"
        if not isinstance(option, dict):
            problems.append(_problem("must be an object", op))
            continue
        problems += text_object_problems(option.get("text"), f"{op}/text", max_chars=75, plain_only=not mrkdwn_ok)
        problems += _string_problems(option.get("value"), f"{op}/value", max_chars=150, required=True)
        problems += text_object_problems(
            option.get("description"), f"{op}/description", max_chars=75, plain_only=not mrkdwn_ok, required=False
        )
        problems += _string_problems(option.get("url"), f"{op}/url", max_chars=3000)
    return problems


def _initial_option_problems(element: JSON, options: list[Any], pointer: str) -> list[str]:
    """Slack rejects an initial option that is not exactly one of the options (a classic silent-edit bug)."""
    initial = element.get("initial_option")
    initials = [initial] if initial is not None else element.get("initial_options") or []
    problems = []
    for initial in initials:
        if not any(isinstance(o, dict) and o == initial for o in options):
            problems.append(_problem("must match one of the provided options", f"{pointer}/initial_option"))
    return problems


def element_problems(element: Any, pointer: str) -> list[str]:
    """Problems of an interactive (or image) block element."""
    if not isinstance(element, dict):
        return [_problem("must be an object", pointer)]
    kind = element.get("type")
    if kind not in _ELEMENT_TYPES:
        return [_problem(f"unsupported type: {kind}", f"{pointer}/type")]
    problems = _string_problems(element.get("action_id"), f"{pointer}/action_id", max_chars=MAX_ACTION_ID_CHARS)
    problems += text_object_problems(
        element.get("placeholder"), f"{pointer}/placeholder", max_chars=150, plain_only=True, required=False
    )
    confirm = element.get("confirm")
    if confirm is not None and not isinstance(confirm, dict):
        problems.append(_problem("must be an object", f"{pointer}/confirm"))
    elif confirm is not None:
        cp = f"{pointer}/confirm"
        problems += text_object_problems(confirm.get("title"), f"{cp}/title", max_chars=100, plain_only=True)
        problems += text_object_problems(confirm.get("text"), f"{cp}/text", max_chars=300)
        problems += text_object_problems(confirm.get("confirm"), f"{cp}/confirm", max_chars=30, plain_only=True)
        problems += text_object_problems(confirm.get("deny"), f"{cp}/deny", max_chars=30, plain_only=True)
    if kind == "button":
        problems += text_object_problems(element.get("text"), f"{pointer}/text", max_chars=75, plain_only=True)
        problems += _string_problems(element.get("value"), f"{pointer}/value", max_chars=2000)
        problems += _string_problems(element.get("url"), f"{pointer}/url", max_chars=3000)
        if element.get("style") not in (None, "primary", "danger"):
            problems.append(_problem("must be one of primary, danger", f"{pointer}/style"))
    elif kind in _STATIC_SELECTS:
        if "option_groups" in element:
            groups = element["option_groups"]
            if not isinstance(groups, list) or not groups:
                problems.append(_problem("must provide at least 1 item", f"{pointer}/option_groups"))
                groups = []
            elif len(groups) > 100:
                problems.append(_problem(_too_many(100), f"{pointer}/option_groups"))
            all_options: list[Any] = []
            for g, group in enumerate(groups):
                gp = f"{pointer}/option_groups/{g}"
                if not isinstance(group, dict):
                    problems.append(_problem("must be an object", gp))
                    continue
                problems += text_object_problems(group.get("label"), f"{gp}/label", max_chars=75, plain_only=True)
                problems += _options_problems(group.get("options"), f"{gp}/options", max_items=100)
                all_options += group.get("options") or []
            problems += _initial_option_problems(element, all_options, pointer)
        else:
            problems += _options_problems(element.get("options"), f"{pointer}/options", max_items=100)
            problems += _initial_option_problems(element, element.get("options") or [], pointer)
    elif kind == "overflow":
        problems += _options_problems(element.get("options"), f"{pointer}/options", max_items=5)
    elif kind in ("checkboxes", "radio_buttons"):
        problems += _options_problems(element.get("options"), f"{pointer}/options", max_items=10, mrkdwn_ok=True)
        problems += _initial_option_problems(element, element.get("options") or [], pointer)
    elif kind == "plain_text_input":
        for key in ("min_length", "max_length"):
            value = element.get(key)
            if value is not None and (not isinstance(value, int) or not 0 <= value <= 3000):
                problems.append(_problem("must be an integer between 0 and 3000", f"{pointer}/{key}"))
    elif kind == "image":
        problems += _image_problems(element, pointer)
    return problems


def _image_problems(image: JSON, pointer: str) -> list[str]:
    problems = _string_problems(image.get("alt_text"), f"{pointer}/alt_text", max_chars=2000, required=True)
    if "slack_file" not in image:
        problems += _string_problems(image.get("image_url"), f"{pointer}/image_url", max_chars=3000, required=True)
    return problems


def _elements_problems(elements: Any, pointer: str, *, max_items: int) -> list[str]:
    if not isinstance(elements, list) or not elements:
        return [_problem("must provide at least 1 item", pointer)]
    return [_problem(_too_many(max_items), pointer)] if len(elements) > max_items else []


def block_problems(block: Any, pointer: str) -> list[str]:
    """Problems of one layout block (block_id uniqueness is checked by ``blocks_problems``)."""
    if not isinstance(block, dict):
        return [_problem("must be an object", pointer)]
    kind = block.get("type")
    if kind not in _BLOCK_TYPES:
        return [_problem(f"unsupported type: {kind}", f"{pointer}/type")]
    problems = _string_problems(block.get("block_id"), f"{pointer}/block_id", max_chars=MAX_BLOCK_ID_CHARS)
    if kind == "section":
        text, fields = block.get("text"), block.get("fields")
        if text is None and fields is None:
            problems.append(_problem("must provide either text or fields", pointer))
        problems += text_object_problems(text, f"{pointer}/text", max_chars=3000, required=False)
        if fields is not None:
            if not isinstance(fields, list) or not fields:
                problems.append(_problem("must provide at least 1 item", f"{pointer}/fields"))
            else:
                if len(fields) > 10:
                    problems.append(_problem(_too_many(10), f"{pointer}/fields"))
                for i, item in enumerate(fields):
                    problems += text_object_problems(item, f"{pointer}/fields/{i}", max_chars=2000)
        if block.get("accessory") is not None:
            problems += element_problems(block["accessory"], f"{pointer}/accessory")
    elif kind == "header":
        problems += text_object_problems(block.get("text"), f"{pointer}/text", max_chars=150, plain_only=True)
    elif kind == "context":
        elements = block.get("elements")
        problems += _elements_problems(elements, f"{pointer}/elements", max_items=10)
        for i, item in enumerate(elements if isinstance(elements, list) else []):
            ip = f"{pointer}/elements/{i}"
            if isinstance(item, dict) and item.get("type") == "image":
                problems += _image_problems(item, ip)
            else:
                problems += text_object_problems(item, ip, max_chars=3000)
    elif kind == "actions":
        elements = block.get("elements")
        problems += _elements_problems(elements, f"{pointer}/elements", max_items=25)
        action_ids: set[str] = set()
        for i, item in enumerate(elements if isinstance(elements, list) else []):
            problems += element_problems(item, f"{pointer}/elements/{i}")
            action_id = item.get("action_id") if isinstance(item, dict) else None
            if action_id is not None and action_id in action_ids:
                problems.append(_problem("action_id already exists", f"{pointer}/elements/{i}/action_id"))
            action_ids.add(action_id)
    elif kind == "input":
        problems += text_object_problems(block.get("label"), f"{pointer}/label", max_chars=2000, plain_only=True)
        problems += text_object_problems(
            block.get("hint"), f"{pointer}/hint", max_chars=2000, plain_only=True, required=False
        )
        if block.get("element") is None:
            problems.append(_problem("missing required field", f"{pointer}/element"))
        else:
            problems += element_problems(block["element"], f"{pointer}/element")
    elif kind == "image":
        problems += _image_problems(block, pointer)
        problems += text_object_problems(
            block.get("title"), f"{pointer}/title", max_chars=2000, plain_only=True, required=False
        )
    elif kind == "markdown":
        problems += _string_problems(block.get("text"), f"{pointer}/text", max_chars=12_000, required=True)
    return problems


def blocks_problems(blocks: Any, pointer: str, *, max_blocks: int) -> list[str]:
    """Problems of a blocks array: count, each block, and unique block_ids."""
    if not isinstance(blocks, list):
        return [_problem("must be an array", pointer)]
    problems = [_problem(_too_many(max_blocks), pointer)] if len(blocks) > max_blocks else []
    block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        problems += block_problems(block, f"{pointer}/{i}")
        block_id = block.get("block_id") if isinstance(block, dict) else None
        if block_id is not None:
            if block_id in block_ids:
                problems.append(_problem("block_id already exists", f"{pointer}/{i}/block_id"))
            block_ids.add(block_id)
    return problems


def view_problems(view: Any, pointer: str = "/view") -> list[str]:
    """Problems of a modal view payload (views.open, views.push, views.update)."""
    if not isinstance(view, dict):
        return [_problem("must be an object", pointer)]
    if view.get("type") != "modal":
        return [_problem("must be one of modal", f"{pointer}/type")]
    problems = text_object_problems(
        view.get("title"), f"{pointer}/title", max_chars=MAX_VIEW_TEXT_CHARS, plain_only=True
    )
    for key in ("submit", "close"):
        problems += text_object_problems(
            view.get(key), f"{pointer}/{key}", max_chars=MAX_VIEW_TEXT_CHARS, plain_only=True, required=False
        )
    blocks = view.get("blocks")
    if blocks is None:
        problems.append(_problem("missing required field", f"{pointer}/blocks"))
    else:
        problems += blocks_problems(blocks, f"{pointer}/blocks", max_blocks=MAX_VIEW_BLOCKS)
        has_input = isinstance(blocks, list) and any(isinstance(b, dict) and b.get("type") == "input" for b in blocks)
        if has_input and view.get("submit") is None:
            problems.append(_problem("missing required field (a view with input blocks needs submit)", pointer))
    problems += _string_problems(
        view.get("private_metadata"), f"{pointer}/private_metadata", max_chars=MAX_PRIVATE_METADATA_CHARS
    )
    problems += _string_problems(view.get("callback_id"), f"{pointer}/callback_id", max_chars=MAX_CALLBACK_ID_CHARS)
    problems += _string_problems(view.get("external_id"), f"{pointer}/external_id", max_chars=MAX_EXTERNAL_ID_CHARS)
    return problems


def _flag(value: Any) -> bool:
    """A boolean argument as Slack reads it from JSON or form encoding."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def _format_ts(micros: int) -> str:
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


# --------------------------------------------------------------------------------------------------------------------
# The emulator


class SlackEmulator:
    """A strict loopback Slack: Web API under ``/api/<method>``, Socket Mode under ``/socket-mode``.

    ``users``/``channels`` given means a closed world (unknown ids are ``user_not_found``/``channel_not_found``);
    ``None`` accepts any well-formed id. Channel dicts may carry ``is_member`` (default True), ``is_private``,
    ``is_archived`` and ``members`` (user ids, checked by chat.postEphemeral). ``clock`` is the emulator's notion
    of now (message ts, trigger and response_url expiry); ``seed`` makes generated ids reproducible.

    Socket Mode: ``ack_timeout`` is how long (real seconds on the emulator loop) an envelope may wait for its ack
    before it is delivered again; ``None`` means never by itself, only when a test calls ``expire_envelope``.
    ``max_socket_retries`` redeliveries follow the first delivery before the emulator gives up;
    ``max_socket_connections`` connections may be open at once.
    """

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test",
        app_token: str | None = "xapp-test",
        team_id: str = "T0TEAM",
        bot_user_id: str = "U0RAYBOT",
        users: dict[str, dict[str, Any]] | None = None,
        usergroups: dict[str, list[str]] | None = None,
        channels: dict[str, dict[str, Any]] | None = None,
        clock: Clock = time.time,
        seed: int | None = None,
        ack_timeout: float | None = SOCKET_ACK_SECONDS,
        max_socket_retries: int = SOCKET_MAX_RETRIES,
        max_socket_connections: int = MAX_SOCKET_CONNECTIONS,
    ) -> None:
        if ack_timeout is not None and ack_timeout <= 0:
            raise ValueError("ack_timeout must be positive (or None: only expire_envelope times an envelope out)")
        if max_socket_retries < 0 or max_socket_connections < 1:
            raise ValueError("max_socket_retries must be >= 0 and max_socket_connections >= 1")
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self._clock = clock
        self._rng = random.Random(seed)
        self._open_users = users is None
        self._users: dict[str, JSON] = copy.deepcopy(users or {})
        self._usergroups: dict[str, list[str]] = copy.deepcopy(usergroups or {})
        self._open_channels = channels is None
        self._channels: dict[str, JSON] = copy.deepcopy(channels or {})

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._calls: list[ApiCall] = []
        self._waiters: list[_AsyncWaiter] = []
        self._injections: dict[str, deque[_Injection]] = defaultdict(deque)
        self._messages: dict[str, list[JSON]] = defaultdict(list)  # channel -> top-level messages and replies
        self._ephemerals: list[JSON] = []
        self._views: dict[str, JSON] = {}
        self._stacks: dict[str, list[str]] = {}  # root view id -> open view ids, bottom first
        self._triggers: dict[str, _Trigger] = {}
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._tickets: set[str] = set()
        self._last_ts_micros = 0
        self._listeners: list[Callable[[ApiCall], None]] = []

        # Socket Mode. Records (read from any thread) are changed under the lock; the rest only on the emulator loop.
        self.ack_timeout = ack_timeout
        self.max_socket_retries = max_socket_retries
        self.max_socket_connections = max_socket_connections
        self._socket_acks: list[JSON] = []
        self._ack_log: list[SocketAck] = []
        self._deliveries: list[SocketDelivery] = []
        self._give_ups: list[SocketGiveUp] = []
        self._connections: list[_Connection] = []  # every connection ever, in the order they connected
        self._chains: dict[str, _Chain] = {}  # every envelope id sent -> its chain
        self._active: set[_Chain] = set()  # chains waiting for an ack
        self._delivery_waiters: list[tuple[Callable[[SocketDelivery], bool], asyncio.Future[SocketDelivery]]] = []
        self._connections_changed: asyncio.Event | None = None  # replaced by a fresh one at every change
        self._round_robin_last = 0  # seq of the connection that got the last round-robin envelope
        self._stopping = False

        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- lifecycle ---------------------------------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """What ``RAYBOT_SLACK_API_URL`` / ``AsyncWebClient(base_url=...)`` is set to."""
        return f"{self.url}/api/"

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0 picks a free port) in a background thread; returns the base URL."""
        if self._thread is not None:
            raise RuntimeError("SlackEmulator is already started")
        self._loop, self._thread = serve_in_thread("slack-emulator", lambda: self._startup(host, port))
        return self.url

    def stop(self) -> None:
        """Close Socket Mode connections, stop the server and join its thread. Idempotent."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        try:
            stop_thread(loop, thread, self._shutdown(), timeout=15)
        finally:
            self._thread = self._loop = None

    def __enter__(self) -> SlackEmulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _startup(self, host: str, port: int) -> None:
        app = web.Application(client_max_size=4 * 1024 * 1024)  # big enough to answer msg_too_long ourselves
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_get("/socket-mode", self._handle_socket)
        app.router.add_post("/commands/{team}/{hook}/{secret}", self._handle_response_url)
        self._connections_changed = asyncio.Event()
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        self._runner = runner
        bound_port = runner.addresses[0][1]
        public_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        self.url = f"http://{public_host}:{bound_port}"

    async def _shutdown(self) -> None:
        self._stopping = True  # connections closing from here on redeliver nothing
        for chain in list(self._active):
            if chain.task is not None:
                chain.task.cancel()
            if not chain.done.done():
                chain.done.set_exception(SocketModeError("the Slack emulator stopped"))
        self._active.clear()
        for _, future in self._delivery_waiters:
            if not future.done():
                future.set_exception(SocketModeError("the Slack emulator stopped"))
        for conn in self._open_connections(ready_only=False):
            conn.usable = False
            conn.close_reason = conn.close_reason or "emulator stopping"
            await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"emulator stopping")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("SlackEmulator is not started")
        return self._loop

    # -- test hooks: triggers, response_urls, injections -------------------------------------------------------------

    def new_trigger_id(self, *, user: str | None = None, view_id: str | None = None) -> str:
        """A trigger id as Slack sends with an interaction: single use, valid for 3 s of the emulator clock.

        ``view_id`` ties it to an open modal (an interaction inside that modal), which is where views.push pushes.
        """
        trigger_id = f"{self._rng.randrange(10**9, 10**10)}.{self._rng.randrange(10**12, 10**13)}.{self._hex(32)}"
        with self._lock:
            self._triggers[trigger_id] = _Trigger(issued_at=self._clock(), user=user, view_id=view_id)
        return trigger_id

    def new_response_url(
        self, *, channel: str | None = None, user: str | None = None, message_ts: str | None = None
    ) -> str:
        """A response_url accepting 5 posts within 30 minutes; posts are recorded as method ``response_url``.

        ``channel`` receives ``in_channel`` responses, ``user`` the ephemeral ones, ``message_ts`` is the message
        that ``replace_original``/``delete_original`` act on.
        """
        hook = f"{self._rng.randrange(10**12, 10**13)}/{self._hex(24)}"
        url = f"{self.url}/commands/{self.team_id}/{hook}"
        with self._lock:
            self._response_urls[url] = _ResponseUrl(
                issued_at=self._clock(), channel=channel, user=user, message_ts=message_ts
            )
        return url

    def inject(self, method: str, *, error: str | None = None, rate_limited: int | None = None, times: int = 1) -> None:
        """Make the next ``times`` calls of ``method`` fail: ``ok: false`` with ``error``, or HTTP 429 with
        ``Retry-After: rate_limited``. Calls rejected for their token do not consume an injection."""
        if (error is None) == (rate_limited is None):
            raise ValueError("give exactly one of error= or rate_limited=")
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._injections[method].extend([_Injection(error=error, retry_after=rate_limited)] * times)

    def apply_view_response(
        self, view_id: str, response: JSON | None, *, submitted_hash: str | None = None
    ) -> str | None:
        """What Slack does with the app's answer to a view_submission of `view_id`; returns the view now on top.

        `errors`: nothing changes (the errors show under the inputs); `update`: the view is replaced in place;
        `push`: a new view on top; `clear`: the whole stack closes; no response_action (a plain ack): the
        submitted view closes and the one below it (if any) shows again. Views the app sends are validated.

        Slack applies the answer when it arrives, before any views.update the app makes afterwards; a caller
        that applies it later passes the `submitted_hash` of the view it submitted: if the app has updated the
        view since, the answer was already superseded and is not applied again over the newer view.
        """
        action = (response or {}).get("response_action")
        with self._lock:
            root = self._stack_root(view_id)
            if root is None:
                raise KeyError(view_id)
            stack = self._stacks[root]
            if submitted_hash is not None and self._views[view_id].get("hash") != submitted_hash:
                return stack[-1]
            if action == "errors":
                return view_id
            if action == "update":
                view = self._valid_view({"view": response["view"]}, current_view_id=view_id)
                previous = self._views[view_id]
                self._store_view(
                    view_id, view, root_view_id=previous["root_view_id"], previous_view_id=previous["previous_view_id"]
                )
                return view_id
            if action == "push":
                if len(stack) >= 3:
                    raise _MethodFailure("push_limit_reached")
                view = self._valid_view({"view": response["view"]})
                new_id = self._new_view_id()
                self._store_view(new_id, view, root_view_id=root, previous_view_id=stack[-1])
                stack.append(new_id)
                return new_id
            if action == "clear":
                del self._stacks[root]
                return None
            del stack[stack.index(view_id) :]
            if not stack:
                del self._stacks[root]
                return None
            return stack[-1]

    def set_usergroup(self, usergroup: str, members: list[str]) -> None:
        """Change a user group's members, as a workspace admin would."""
        with self._lock:
            self._usergroups[usergroup] = list(members)

    def set_member(self, channel: str, is_member: bool) -> None:
        """Add the bot to `channel` or take it out, as a channel manager would. Out of it, chat.postMessage and
        chat.postEphemeral there answer `not_in_channel` (chat.update of its earlier messages still works)."""
        with self._lock:
            self._channels.setdefault(channel, {"name": channel.lower()})["is_member"] = is_member

    def close_view(self, view_id: str) -> None:
        """Close a modal as the user would: the view and any views pushed on top of it leave their stack."""
        with self._lock:
            for root, stack in list(self._stacks.items()):
                if view_id in stack:
                    del stack[stack.index(view_id) :]
                    if not stack:
                        del self._stacks[root]
                    return
        raise KeyError(view_id)

    # -- test hooks: payload builders --------------------------------------------------------------------------------

    def slash_command_payload(self, command: str, text: str, *, user_id: str, channel_id: str) -> JSON:
        """The form fields Slack sends for a slash command, with a fresh trigger_id and response_url."""
        with self._lock:
            user = dict(self._users.get(user_id, {}))
            channel = dict(self._channels.get(channel_id, {}))
        return {
            "token": "verification-token-unused",
            "team_id": self.team_id,
            "team_domain": "raybot-sandbox",
            "channel_id": channel_id,
            "channel_name": channel.get("name", channel_id.lower()),
            "user_id": user_id,
            "user_name": user.get("name", user_id.lower()),
            "command": command,
            "text": text,
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": self.new_response_url(channel=channel_id, user=user_id),
            "trigger_id": self.new_trigger_id(user=user_id),
        }

    def view_submission_payload(self, view_id: str, *, user_id: str, values: JSON) -> JSON:
        """The ``view_submission`` payload Slack sends when ``user_id`` submits the open view with ``values``
        (``{block_id: {action_id: {"type": ..., "value"|"selected_option"|...}}}``)."""
        with self._lock:
            if view_id not in self._views:
                raise KeyError(view_id)
            view = copy.deepcopy(self._views[view_id])
            user = dict(self._users.get(user_id, {}))
        view["state"] = {"values": copy.deepcopy(values)}
        return {
            "type": "view_submission",
            "team": {"id": self.team_id, "domain": "raybot-sandbox"},
            "user": self._payload_user(user_id, user),
            "api_app_id": APP_ID,
            "token": "verification-token-unused",
            "trigger_id": self.new_trigger_id(user=user_id, view_id=view_id),
            "view": view,
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }

    def _payload_user(self, user_id: str, user: JSON) -> JSON:
        """The `user` object of an interaction payload, as Slack writes it."""
        name = user.get("name", user_id.lower())
        return {"id": user_id, "username": name, "name": name, "team_id": self.team_id}

    def block_actions_payload(
        self,
        action: JSON,
        *,
        user_id: str,
        channel_id: str | None = None,
        message: JSON | None = None,
        view_id: str | None = None,
        state_values: JSON | None = None,
        is_ephemeral: bool = False,
        message_ts: str | None = None,
    ) -> JSON:
        """The ``block_actions`` payload Slack sends when ``user_id`` uses one interactive element.

        ``action`` is the element's entry of ``actions`` (``type``, ``action_id``, ``block_id`` and ``value``, or
        ``selected_option``/``selected_options``); ``action_ts`` is added. In a modal (``view_id``) the payload
        carries the view with ``state_values`` and a trigger id tied to it (where views.push pushes); on a message
        it carries the message (not for an ephemeral one, as Slack), its channel and a fresh response_url.
        """
        with self._lock:
            user = dict(self._users.get(user_id, {}))
            view = copy.deepcopy(self._views[view_id]) if view_id is not None else None
            channel = dict(self._channels.get(channel_id or "", {}))
        if view is None and channel_id is None:
            raise ValueError("give channel_id (a message) or view_id (a modal)")
        payload: JSON = {
            "type": "block_actions",
            "user": self._payload_user(user_id, user),
            "api_app_id": APP_ID,
            "token": "verification-token-unused",
            "trigger_id": self.new_trigger_id(user=user_id, view_id=view_id),
            "team": {"id": self.team_id, "domain": "raybot-sandbox"},
            "enterprise": None,
            "is_enterprise_install": False,
            "actions": [{**copy.deepcopy(action), "action_ts": _format_ts(int(self._clock() * 1_000_000))}],
        }
        if view is not None:
            view["state"] = {"values": copy.deepcopy(state_values or {})}
            payload["container"] = {"type": "view", "view_id": view_id}
            payload["view"] = view
            payload["state"] = {"values": copy.deepcopy(state_values or {})}
            return payload
        ts = message_ts or (message or {}).get("ts")
        container: JSON = {"type": "message", "message_ts": ts, "channel_id": channel_id, "is_ephemeral": is_ephemeral}
        if message and message.get("thread_ts"):
            container["thread_ts"] = message["thread_ts"]
        payload["container"] = container
        payload["channel"] = {"id": channel_id, "name": channel.get("name", str(channel_id).lower())}
        if message is not None and not is_ephemeral:
            payload["message"] = copy.deepcopy(message)
        payload["state"] = {"values": copy.deepcopy(state_values or {})}
        payload["response_url"] = self.new_response_url(
            channel=channel_id, user=user_id, message_ts=None if is_ephemeral else ts
        )
        return payload

    def message_action_payload(self, callback_id: str, message: JSON, *, user_id: str, channel_id: str) -> JSON:
        """The ``message_action`` payload of a message shortcut used by ``user_id`` on ``message``."""
        with self._lock:
            user = dict(self._users.get(user_id, {}))
            channel = dict(self._channels.get(channel_id, {}))
        return {
            "type": "message_action",
            "callback_id": callback_id,
            "trigger_id": self.new_trigger_id(user=user_id),
            "response_url": self.new_response_url(channel=channel_id, user=user_id),
            "team": {"id": self.team_id, "domain": "raybot-sandbox"},
            "channel": {"id": channel_id, "name": channel.get("name", channel_id.lower())},
            "user": {"id": user_id, "name": user.get("name", user_id.lower()), "team_id": self.team_id},
            "message_ts": message["ts"],
            "message": copy.deepcopy(message),
            "token": "verification-token-unused",
            "action_ts": _format_ts(int(self._clock() * 1_000_000)),
            "is_enterprise_install": False,
            "enterprise": None,
        }

    def app_mention_payload(self, message: JSON, *, channel_id: str) -> JSON:
        """The Events API ``event_callback`` of an ``app_mention``: a person's ``message`` that mentions the bot."""
        event: JSON = {
            "type": "app_mention",
            "user": message["user"],
            "text": message["text"],
            "ts": message["ts"],
            "channel": channel_id,
            "event_ts": message["ts"],
        }
        if message.get("thread_ts") and message["thread_ts"] != message["ts"]:
            event["thread_ts"] = message["thread_ts"]
        return {
            "token": "verification-token-unused",
            "team_id": self.team_id,
            "api_app_id": APP_ID,
            "event": event,
            "type": "event_callback",
            "event_id": "Ev" + self._hex(10).upper(),
            "event_time": int(float(message["ts"])),
            "authorizations": [{"team_id": self.team_id, "user_id": self.bot_user_id, "is_bot": True}],
            "is_ext_shared_channel": False,
        }

    def view_closed_payload(self, view_id: str, *, user_id: str, is_cleared: bool) -> JSON:
        """The ``view_closed`` payload Slack sends (for views with ``notify_on_close``) when the user closes one."""
        with self._lock:
            if view_id not in self._views:
                raise KeyError(view_id)
            view = copy.deepcopy(self._views[view_id])
            user = dict(self._users.get(user_id, {}))
        return {
            "type": "view_closed",
            "team": {"id": self.team_id, "domain": "raybot-sandbox"},
            "user": {"id": user_id, "name": user.get("name", user_id.lower()), "team_id": self.team_id},
            "api_app_id": APP_ID,
            "token": "verification-token-unused",
            "view": view,
            "is_cleared": is_cleared,
            "is_enterprise_install": False,
            "enterprise": None,
        }

    # -- sandbox hooks: what people do, and what Slack does with the answers to interactions ---------------------------

    def add_listener(self, callback: Callable[[ApiCall], None]) -> None:
        """Call ``callback(call)`` after every recorded Web API call or response_url post.

        It runs on the emulator's thread with the emulator's lock held: it must return at once (hand the call to
        another loop with ``loop.call_soon_threadsafe``). An exception in it is logged, never raised to Slack clients.
        """
        with self._lock:
            self._listeners.append(callback)

    def post_user_message(self, channel: str, user_id: str, text: str, *, thread_ts: str | None = None) -> JSON:
        """A message a person posts (text as Slack stores it: ``&``, ``<`` and ``>`` already entity-encoded);
        threaded like chat.postMessage. Returns the stored message."""
        with self._lock:
            if not self._user_known(user_id):
                raise KeyError(user_id)
            channel = self._known_channel(channel)
            ts = self._next_ts()
            message: JSON = {"type": "message", "user": user_id, "team": self.team_id, "text": text, "ts": ts}
            if thread_ts:
                root = self._find_message(channel, thread_ts)
                if root is None:
                    raise KeyError(thread_ts)
                root_ts = root.get("thread_ts") or root["ts"]
                parent = self._find_message(channel, root_ts)
                assert parent is not None
                parent["thread_ts"] = root_ts
                parent["reply_count"] = parent.get("reply_count", 0) + 1
                parent["latest_reply"] = ts
                message["thread_ts"] = root_ts
                message["parent_user_id"] = parent.get("user")
            self._messages[channel].append(message)
            return copy.deepcopy(message)

    def post_app_message(self, channel: str, *, bot_id: str, username: str, text: str) -> JSON:
        """A message another app posts (an alerting bot's incoming webhook): subtype ``bot_message``, its
        ``bot_id`` and ``username``, no user, as Slack stores it. Returns the stored message; KeyError for a
        channel the emulator does not know."""
        with self._lock:
            try:
                channel = self._known_channel(channel)
            except _MethodFailure:
                raise KeyError(channel) from None
            message: JSON = {
                "type": "message",
                "subtype": "bot_message",
                "bot_id": bot_id,
                "username": username,
                "text": text,
                "ts": self._next_ts(),
            }
            self._messages[channel].append(message)
            return copy.deepcopy(message)

    def message(self, channel: str, ts: str) -> JSON | None:
        """One stored message (top-level or reply) by its ts, or None."""
        with self._lock:
            found = self._find_message(channel, ts)
            return copy.deepcopy(found) if found is not None else None

    def apply_command_response(self, response_url: str, body: JSON) -> None:
        """Show a slash command's immediate answer (the body of the HTTP response to the command) as Slack does:
        ephemeral to the user unless ``response_type`` is ``in_channel``. It uses none of the response_url's posts."""
        with self._lock:
            hook = self._response_urls.get(response_url)
            if hook is None:
                raise KeyError(response_url)
            self._apply_response(hook, body)

    # -- inspection ---------------------------------------------------------------------------------------------------

    @property
    def calls(self) -> list[ApiCall]:
        """Every Web API call and response_url post so far, oldest first (a snapshot)."""
        with self._lock:
            return list(self._calls)

    def calls_for(self, method: str) -> list[ApiCall]:
        with self._lock:
            return [call for call in self._calls if call.method == method]

    def channel_messages(self, channel: str) -> list[JSON]:
        """Top-level messages of a channel (plus replies broadcast to it), oldest first."""
        with self._lock:
            return copy.deepcopy(
                [
                    m
                    for m in self._messages.get(channel, [])
                    if m.get("thread_ts") in (None, m["ts"]) or m.get("subtype") == "thread_broadcast"
                ]
            )

    def all_messages(self, channel: str) -> list[JSON]:
        """Every message of a channel, thread replies included, oldest first (as currently stored)."""
        with self._lock:
            return copy.deepcopy(self._messages.get(channel, []))

    def thread(self, channel: str, ts: str) -> list[JSON]:
        """The replies in the thread of message ``ts`` (without the parent), oldest first."""
        with self._lock:
            return copy.deepcopy(
                [m for m in self._messages.get(channel, []) if m.get("thread_ts") == ts and m["ts"] != ts]
            )

    @property
    def ephemerals(self) -> list[JSON]:
        """Ephemeral messages (chat.postEphemeral and ephemeral response_url posts), oldest first."""
        with self._lock:
            return copy.deepcopy(self._ephemerals)

    @property
    def views(self) -> dict[str, JSON]:
        """Every view ever opened or pushed, by view id, as currently stored (closed ones included)."""
        with self._lock:
            return copy.deepcopy(self._views)

    @property
    def view_stacks(self) -> dict[str, list[str]]:
        """Open modal stacks: root view id -> view ids, bottom first."""
        with self._lock:
            return copy.deepcopy(self._stacks)

    @property
    def socket_acks(self) -> list[JSON]:
        """Every Socket Mode ack received, oldest first."""
        with self._lock:
            return copy.deepcopy(self._socket_acks)

    async def wait_for(self, predicate: CallPredicate, timeout: float = 5.0) -> ApiCall:  # noqa: ASYNC109 (API)
        """The first recorded call matching ``predicate``, waiting up to ``timeout`` s for it. Any event loop."""
        loop = asyncio.get_running_loop()
        with self._lock:
            for call in self._calls:
                if predicate(call):
                    return call
            waiter = _AsyncWaiter(predicate=predicate, loop=loop, future=loop.create_future())
            self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(waiter.future, timeout)
        except TimeoutError:
            raise TimeoutError(f"no matching Slack call within {timeout}s; saw {self._call_summary()}") from None
        finally:
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def wait_for_sync(self, predicate: CallPredicate, timeout: float = 5.0) -> ApiCall:
        """``wait_for`` for synchronous code (never from the emulator's own thread)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("wait_for_sync would block the emulator's own loop")
        deadline = time.monotonic() + timeout  # real time: this bounds how long the caller blocks
        checked = 0
        with self._changed:
            while True:
                for call in self._calls[checked:]:
                    if predicate(call):
                        return call
                checked = len(self._calls)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no matching Slack call within {timeout}s; saw {self._call_summary()}")
                self._changed.wait(remaining)

    def _call_summary(self) -> str:
        with self._lock:
            return ", ".join(f"{c.method}({c.error or 'ok'})" for c in self._calls) or "no calls"

    def _record(self, call: ApiCall) -> None:
        resolved: list[tuple[_AsyncWaiter, ApiCall | BaseException]] = []
        with self._changed:
            self._calls.append(call)
            for waiter in list(self._waiters):
                try:
                    matched = waiter.predicate(call)
                except Exception as exc:  # a broken predicate fails its waiter rather than the emulator
                    resolved.append((waiter, exc))
                    self._waiters.remove(waiter)
                    continue
                if matched:
                    resolved.append((waiter, call))
                    self._waiters.remove(waiter)
            self._changed.notify_all()
        for waiter, outcome in resolved:
            try:
                waiter.loop.call_soon_threadsafe(_settle, waiter.future, outcome)
            except RuntimeError:  # the waiter's loop is closed: nobody is waiting any more
                pass
        for listener in list(self._listeners):
            try:
                listener(call)
            except Exception:  # a broken listener must not break the Web API
                logger.exception("a Slack emulator listener failed")

    # -- Socket Mode (test side) -------------------------------------------------------------------------------------
    #
    # Every hook may be awaited from any event loop: the work runs on the emulator loop (`_on_loop`).

    @property
    def socket_client_count(self) -> int:
        """How many Socket Mode connections are open (and greeted with hello)."""
        with self._lock:
            return sum(1 for conn in self._connections if conn.open and conn.ready)

    @property
    def socket_connection_ids(self) -> list[str]:
        """The ids of the open connections, oldest first."""
        with self._lock:
            return [conn.id for conn in self._connections if conn.open and conn.ready]

    @property
    def socket_connections(self) -> list[SocketConnection]:
        """Every connection so far, open or closed, oldest first, with its deliveries, acks and disconnects."""
        with self._lock:
            return [conn.snapshot() for conn in self._connections]

    def socket_connection(self, connection_id: str) -> SocketConnection:
        with self._lock:
            return self._connection(connection_id).snapshot()

    @property
    def socket_deliveries(self) -> list[SocketDelivery]:
        """Every envelope sent, redeliveries included, oldest first."""
        with self._lock:
            return list(self._deliveries)

    @property
    def socket_ack_log(self) -> list[SocketAck]:
        """Every ack received, with the connection it came on and the chain it acknowledged, oldest first."""
        with self._lock:
            return list(self._ack_log)

    @property
    def socket_give_ups(self) -> list[SocketGiveUp]:
        """Envelopes delivered 1 + ``max_socket_retries`` times without an ack."""
        with self._lock:
            return list(self._give_ups)

    async def wait_for_socket_client(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 (API)
        """Wait until at least one Socket Mode client is connected."""
        await self._on_loop(self._await_connections(lambda n: n >= 1, "a Socket Mode client connected", timeout))

    async def wait_for_socket_clients(self, count: int, timeout: float = 5.0) -> list[str]:  # noqa: ASYNC109 (API)
        """Wait until exactly ``count`` connections are open; returns their ids, oldest first."""
        await self._on_loop(
            self._await_connections(lambda n: n == count, f"exactly {count} Socket Mode connection(s) open", timeout)
        )
        return self.socket_connection_ids

    async def wait_for_socket_connection(self, connection_id: str, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until the connection ``connection_id`` is open (ids are given in order: the next is predictable)."""

        def is_open(_: int) -> bool:
            return any(conn.id == connection_id for conn in self._open_connections())

        await self._on_loop(self._await_connections(is_open, f"connection {connection_id} open", timeout))

    async def send_socket_event(
        self,
        envelope_type: str,
        payload: JSON,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 (part of the emulator API)
        connection: str | None = None,
    ) -> JSON:
        """Deliver an envelope (to ``connection``, else to the next open connection round-robin) and return its
        ack (``{"envelope_id": ..., "payload"?: ...}``), which may be the ack of a redelivery. Raises
        SocketModeError without a (such) client or when the emulator gives up, TimeoutError without an ack in
        ``timeout`` s (the envelope's redeliveries go on regardless)."""
        connections = [connection] if connection is not None else None
        return await self._on_loop(self._send_and_wait(envelope_type, copy.deepcopy(payload), connections, timeout))

    async def deliver_socket_event(
        self,
        envelope_type: str,
        payload: JSON,
        *,
        connections: list[str] | None = None,
        copies: int = 1,
    ) -> list[str]:
        """Send ``payload`` without waiting for acks; returns the envelope id of each copy.

        With ``connections``, one copy goes to each connection named; otherwise ``copies`` copies go to as many
        different open connections, round-robin. Copies are Slack's duplicate deliveries: the same payload (the
        same event_id or trigger_id) in envelopes with distinct ids, each acknowledged and redelivered on its own.
        Await ``wait_for_ack`` with the ids returned."""
        return await self._on_loop(self._deliver(envelope_type, copy.deepcopy(payload), connections, copies))

    async def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> SocketAck:  # noqa: ASYNC109 (API)
        """The ack of the envelope ``envelope_id`` or of any redelivery of it. Raises SocketModeError if the
        emulator gave it up, KeyError for an envelope id never sent, TimeoutError after ``timeout`` s."""
        return await self._on_loop(self._await_ack(envelope_id, timeout))

    async def wait_for_delivery(
        self,
        predicate: Callable[[SocketDelivery], bool],
        timeout: float = 5.0,  # noqa: ASYNC109 (part of the emulator API)
    ) -> SocketDelivery:
        """The first delivery (already made, or made within ``timeout`` s) matching ``predicate``."""
        return await self._on_loop(self._await_delivery(predicate, timeout))

    async def expire_envelope(self, envelope_id: str) -> None:
        """Treat the envelope chain of ``envelope_id`` as not acknowledged in time, now: it is delivered again (or
        given up) at once, as if ``ack_timeout`` had passed. A chain already acknowledged is left alone."""
        await self._on_loop(self._expire(envelope_id))

    async def send_socket_disconnect(self, connection_id: str, reason: str = "warning") -> None:
        """Send the ``disconnect`` message Slack sends before it closes a connection (``warning``: in about 10 s;
        ``refresh_requested``: the client should reconnect now; ``link_disabled``: Socket Mode was turned off).
        The connection stays open and keeps receiving envelopes until it closes; ``close_socket_connection``
        closes it from the server side."""
        if reason not in DISCONNECT_REASONS:
            raise ValueError(f"unknown disconnect reason {reason!r}")
        await self._on_loop(self._send_disconnect(connection_id, reason))

    async def close_socket_connection(self, connection_id: str, *, abrupt: bool = False) -> None:
        """Close a connection from the server side, as a replica losing its socket sees it: with a close frame
        (going away), or ``abrupt``ly (the TCP connection dropped without one). Returns once the emulator has
        seen it closed, so that its unacknowledged envelopes are already on their way to another connection."""
        await self._on_loop(self._close_connection(connection_id, abrupt))

    # Socket Mode internals: everything below runs on the emulator loop.

    async def _on_loop(self, coro: Any) -> Any:
        """Run ``coro`` on the emulator loop and await it from the caller's loop."""
        try:
            loop = self._require_loop()
        except RuntimeError:
            coro.close()
            raise
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    def _connection(self, connection_id: str) -> _Connection:
        found = next((conn for conn in self._connections if conn.id == connection_id), None)
        if found is None:
            raise KeyError(f"no Socket Mode connection {connection_id!r}")
        return found

    def _open_connections(self, *, ready_only: bool = True) -> list[_Connection]:
        return [c for c in self._connections if c.open and c.usable and (c.ready or not ready_only)]

    def _connections_changed_now(self) -> None:
        assert self._connections_changed is not None
        self._connections_changed.set()
        self._connections_changed = asyncio.Event()

    async def _await_connections(self, wanted: Callable[[int], bool], description: str, wait_seconds: float) -> None:
        async def until() -> None:
            while not wanted(len(self._open_connections())):
                assert self._connections_changed is not None
                await self._connections_changed.wait()

        try:
            await asyncio.wait_for(until(), wait_seconds)
        except TimeoutError:
            open_now = ", ".join(conn.id for conn in self._open_connections()) or "none"
            raise TimeoutError(f"not {description} within {wait_seconds}s (open: {open_now})") from None

    def _round_robin(self, exclude: set[_Connection]) -> _Connection | None:
        """The next open connection after the last one chosen, skipping ``exclude``."""
        live = [conn for conn in self._open_connections() if conn not in exclude]
        if not live:
            return None
        conn = next((c for c in live if c.seq > self._round_robin_last), live[0])
        self._round_robin_last = conn.seq
        return conn

    async def _send_and_wait(
        self, envelope_type: str, payload: JSON, connections: list[str] | None, wait_seconds: float
    ) -> JSON:
        [envelope_id] = await self._deliver(envelope_type, payload, connections, 1)
        try:
            ack = await self._await_ack(envelope_id, wait_seconds)
        except TimeoutError:
            raise TimeoutError(f"no ack for {envelope_type} envelope within {wait_seconds}s") from None
        return copy.deepcopy(ack.message)

    async def _deliver(
        self, envelope_type: str, payload: JSON, connection_ids: list[str] | None, copies: int
    ) -> list[str]:
        if envelope_type not in SOCKET_ENVELOPE_TYPES:
            raise ValueError(f"unknown envelope type {envelope_type!r}")
        if self._stopping:
            raise SocketModeError("the Slack emulator is stopping")
        targets: list[_Connection] = []
        if connection_ids is not None:
            if len(set(connection_ids)) != len(connection_ids) or not connection_ids:
                raise ValueError("name each connection once, and at least one")
            for connection_id in connection_ids:
                conn = self._connection(connection_id)
                if conn not in self._open_connections():
                    raise SocketModeError(f"Socket Mode connection {connection_id} is not open")
                targets.append(conn)
        else:
            if copies < 1:
                raise ValueError("copies must be at least 1")
            for _ in range(copies):
                conn = self._round_robin(exclude=set(targets))
                if conn is None:
                    have = len(self._open_connections())
                    raise SocketModeError(
                        "no Socket Mode client is connected"
                        if have == 0
                        else f"{copies} copies need {copies} open connections; {have} open"
                    )
                targets.append(conn)
        loop = asyncio.get_running_loop()
        chains = []
        for conn in targets:
            done: asyncio.Future[SocketAck] = loop.create_future()
            done.add_done_callback(_retrieve)
            chain = _Chain(
                first_envelope_id=str(uuid.uuid4()),
                envelope_type=envelope_type,
                payload=copy.deepcopy(payload),
                done=done,
            )
            chains.append(chain)
            self._active.add(chain)
            await self._send_envelope(chain, conn, chain.first_envelope_id)
            chain.task = loop.create_task(self._follow(chain), name=f"socket-envelope-{chain.first_envelope_id}")
        return [chain.first_envelope_id for chain in chains]

    async def _send_envelope(self, chain: _Chain, conn: _Connection, envelope_id: str) -> None:
        """Record and send one delivery of ``chain`` on ``conn``; a failed send is a connection that closed."""
        envelope: JSON = {
            "envelope_id": envelope_id,
            "type": chain.envelope_type,
            "payload": chain.payload,
            "accepts_response_payload": chain.envelope_type != "events_api",
        }
        if chain.envelope_type == "events_api" or chain.attempt > 0:
            envelope |= {"retry_attempt": chain.attempt, "retry_reason": chain.reason}
        delivery = SocketDelivery(
            envelope_id=envelope_id,
            first_envelope_id=chain.first_envelope_id,
            envelope_type=chain.envelope_type,
            connection_id=conn.id,
            retry_attempt=chain.attempt,
            retry_reason=chain.reason,
            payload=copy.deepcopy(chain.payload),
        )
        chain.connection = conn
        chain.expired = False
        self._chains[envelope_id] = chain
        with self._lock:
            self._deliveries.append(delivery)
            conn.delivered.append(envelope_id)
        for waiter in list(self._delivery_waiters):
            predicate, future = waiter
            if future.done():
                self._delivery_waiters.remove(waiter)
                continue
            try:
                matched = predicate(delivery)
            except Exception as exc:  # a broken predicate fails its waiter rather than the emulator
                future.set_exception(exc)
                self._delivery_waiters.remove(waiter)
                continue
            if matched:
                future.set_result(delivery)
                self._delivery_waiters.remove(waiter)
        try:
            await conn.ws.send_str(json.dumps(envelope))
        except Exception as exc:  # the connection is going away under us
            logger.info("Socket Mode send on %s failed (%s): it counts as closed", conn.id, type(exc).__name__)
            conn.usable = False
            chain.wake.set()

    async def _follow(self, chain: _Chain) -> None:
        """Wait for ``chain``'s ack; deliver it again while it has none, up to ``max_socket_retries`` times."""
        while True:
            reason = await self._missed_ack(chain)
            if reason is None:
                return
            assert chain.connection is not None
            if chain.attempt >= self.max_socket_retries:
                give_up = SocketGiveUp(
                    first_envelope_id=chain.first_envelope_id,
                    envelope_type=chain.envelope_type,
                    deliveries=chain.attempt + 1,
                    last_reason=reason,
                )
                with self._lock:
                    self._give_ups.append(give_up)
                self._active.discard(chain)
                logger.warning(
                    "Socket Mode envelope %s given up after %d deliveries",
                    give_up.first_envelope_id,
                    give_up.deliveries,
                )
                chain.done.set_exception(
                    SocketModeError(
                        f"{chain.envelope_type} envelope {chain.first_envelope_id} was not acknowledged in "
                        f"{give_up.deliveries} deliveries (last: {reason})"
                    )
                )
                return
            previous = chain.connection
            conn = self._round_robin(exclude={previous}) or self._round_robin(exclude=set())
            while conn is None:  # nobody connected: the next connection gets it
                assert self._connections_changed is not None
                await self._connections_changed.wait()
                conn = self._round_robin(exclude={previous}) or self._round_robin(exclude=set())
            if chain.ack is not None:  # a late ack of an earlier delivery came while no connection was open
                return
            chain.attempt += 1
            chain.reason = reason
            await self._send_envelope(chain, conn, str(uuid.uuid4()))

    async def _missed_ack(self, chain: _Chain) -> str | None:
        """None once ``chain`` is acknowledged, else why its current delivery missed the ack."""
        conn = chain.connection
        assert conn is not None
        deadline = None if self.ack_timeout is None else asyncio.get_running_loop().time() + self.ack_timeout
        while True:
            if chain.ack is not None:
                return None
            if chain.expired:
                return RETRY_TIMEOUT
            if not conn.open or not conn.usable:
                return RETRY_CONNECTION_CLOSED
            chain.wake.clear()
            remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
            try:
                await asyncio.wait_for(chain.wake.wait(), remaining)
            except TimeoutError:
                if chain.ack is None:
                    return RETRY_TIMEOUT

    async def _await_ack(self, envelope_id: str, wait_seconds: float) -> SocketAck:
        chain = self._chains.get(envelope_id)
        if chain is None:
            raise KeyError(f"no envelope {envelope_id!r} was sent")
        try:
            return await asyncio.wait_for(asyncio.shield(chain.done), wait_seconds)
        except TimeoutError:
            tried = [d.connection_id for d in self.socket_deliveries if d.first_envelope_id == chain.first_envelope_id]
            raise TimeoutError(
                f"no ack for {chain.envelope_type} envelope {envelope_id} within {wait_seconds}s "
                f"(delivered to {', '.join(tried)})"
            ) from None

    async def _await_delivery(self, predicate: Callable[[SocketDelivery], bool], wait_seconds: float) -> SocketDelivery:
        for delivery in self.socket_deliveries:
            if predicate(delivery):
                return delivery
        future: asyncio.Future[SocketDelivery] = asyncio.get_running_loop().create_future()
        waiter = (predicate, future)
        self._delivery_waiters.append(waiter)
        try:
            return await asyncio.wait_for(future, wait_seconds)
        except TimeoutError:
            seen = ", ".join(f"{d.envelope_type}#{d.retry_attempt}->{d.connection_id}" for d in self.socket_deliveries)
            raise TimeoutError(
                f"no matching Socket Mode delivery within {wait_seconds}s; saw {seen or 'none'}"
            ) from None
        finally:
            if waiter in self._delivery_waiters:
                self._delivery_waiters.remove(waiter)

    async def _expire(self, envelope_id: str) -> None:
        chain = self._chains.get(envelope_id)
        if chain is None:
            raise KeyError(f"no envelope {envelope_id!r} was sent")
        if chain.ack is None and not chain.done.done():
            chain.expired = True
            chain.wake.set()

    async def _send_disconnect(self, connection_id: str, reason: str) -> None:
        conn = self._connection(connection_id)
        if not conn.open:
            raise SocketModeError(f"Socket Mode connection {connection_id} is not open")
        with self._lock:
            conn.disconnects.append(reason)
        await conn.ws.send_str(
            json.dumps({"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-emulator"}})
        )

    async def _close_connection(self, connection_id: str, abrupt: bool) -> None:
        conn = self._connection(connection_id)
        if conn.open:
            conn.usable = False
            with self._lock:
                conn.close_reason = "dropped by the server" if abrupt else "closed by the server"
            self._connections_changed_now()
            if abrupt and conn.transport is not None:
                conn.transport.abort()
            else:
                await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"closed by the Slack emulator")
        await conn.closed.wait()

    # -- HTTP edge ---------------------------------------------------------------------------------------------------

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        try:
            args, token = await _read_api_request(request)
        except _MethodFailure as failure:
            status, body, headers = 200, _failure_body(failure), {}
            self._record(ApiCall(method, {}, None, False, failure.error, body))
        else:
            status, body, headers = self._dispatch(method, args, token)
        return web.json_response(body, status=status, headers=headers)

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        url = f"{self.url}{request.path}"
        try:
            body = await request.json()
        except ValueError:
            body = None
        status, answer = self._post_response_url(url, body)
        return web.json_response(answer, status=status)

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        with self._lock:
            known = ticket in self._tickets
            self._tickets.discard(ticket)  # a connection URL is good for one connection
        if not known:
            return web.json_response({"ok": False, "error": "invalid_ticket"}, status=401)
        ws = web.WebSocketResponse(autoping=True)  # autoping answers the client's pings with pongs
        await ws.prepare(request)
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        with self._lock:
            conn = _Connection(
                id=f"conn-{len(self._connections) + 1}",
                seq=len(self._connections) + 1,
                ws=ws,
                transport=request.transport,
                peer=(str(peer[0]), int(peer[1])) if peer else None,
            )
            self._connections.append(conn)
        try:
            if self._stopping or len(self._open_connections()) >= self.max_socket_connections:
                reason = "too_many_websockets" if not self._stopping else "link_disabled"
                conn.usable = False
                conn.close_reason = reason
                conn.disconnects.append(reason)
                await ws.send_str(json.dumps({"type": "disconnect", "reason": reason}))
                await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=reason.encode())
                return ws
            await ws.send_str(
                json.dumps(
                    {
                        "type": "hello",
                        "num_connections": len(self._open_connections()) + 1,
                        "debug_info": {
                            "host": "applink-emulator",
                            "build_number": 1,
                            "approximate_connection_time": 18060,
                            "connection_id": conn.id,  # the emulator's own: which connection this is
                        },
                        "connection_info": {"app_id": APP_ID},
                    }
                )
            )
            conn.ready = True
            self._connections_changed_now()
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self._on_socket_text(conn, message.data)
        finally:
            with self._lock:
                conn.open = False
                if conn.close_reason is None:
                    code = ws.close_code
                    conn.close_reason = f"closed by the client ({code})" if code is not None else "connection lost"
            conn.closed.set()
            for chain in list(self._active):
                if chain.connection is conn:
                    chain.wake.set()  # its envelope goes to another connection
            if self._connections_changed is not None:
                self._connections_changed_now()
        return ws

    def _on_socket_text(self, conn: _Connection, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            logger.warning("Socket Mode client sent a frame that is not JSON")
            return
        if not isinstance(message, dict) or "envelope_id" not in message:
            return
        envelope_id = str(message["envelope_id"])
        chain = self._chains.get(envelope_id)
        ack = SocketAck(
            envelope_id=envelope_id,
            first_envelope_id=chain.first_envelope_id if chain is not None else None,
            connection_id=conn.id,
            message=message,
        )
        with self._lock:
            self._socket_acks.append(message)
            self._ack_log.append(ack)
            conn.acked.append(envelope_id)
        if chain is not None and chain.ack is None and not chain.done.done():
            chain.ack = ack
            self._active.discard(chain)
            chain.done.set_result(ack)
            chain.wake.set()

    # -- the Web API core (synchronous, on the emulator loop, under the lock) ----------------------------------------

    def _dispatch(self, method: str, args: JSON, token: str | None) -> tuple[int, JSON, dict[str, str]]:
        handler = self._handlers().get(method)
        status, headers = 200, {}
        with self._lock:
            try:
                if handler is None:
                    raise _MethodFailure("unknown_method")
                self._check_token(method, token)
                injections = self._injections.get(method)
                injection = injections.popleft() if injections else None
                if injection is not None and injection.retry_after is not None:
                    status, headers = 429, {"Retry-After": str(injection.retry_after)}
                    raise _MethodFailure("ratelimited")
                if injection is not None and injection.error is not None:
                    raise _MethodFailure(injection.error)
                body = {"ok": True} | handler(args)
            except _MethodFailure as failure:
                body = _failure_body(failure)
                if failure.error == "unknown_method":
                    body["req_method"] = method
            self._record(
                ApiCall(
                    method=method,
                    args=copy.deepcopy(args),
                    token=token,
                    ok=body["ok"],
                    error=body.get("error"),
                    response=copy.deepcopy(body),
                    status=status,
                )
            )
        return status, body, headers

    def _handlers(self) -> dict[str, Callable[[JSON], JSON]]:
        return {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "views.open": self._views_open,
            "views.update": self._views_update,
            "views.push": self._views_push,
            "usergroups.users.list": self._usergroups_users_list,
            "users.info": self._users_info,
            "conversations.info": self._conversations_info,
            "apps.connections.open": self._apps_connections_open,
        }

    def _check_token(self, method: str, token: str | None) -> None:
        if not token:
            raise _MethodFailure("not_authed")
        expected = self.app_token if method in _METHODS_FOR_APP_TOKEN else self.bot_token
        if expected is not None and token == expected:
            return
        if token in (self.bot_token, self.app_token):
            raise _MethodFailure("not_allowed_token_type")
        raise _MethodFailure("invalid_auth")

    def _auth_test(self, args: JSON) -> JSON:
        return {
            "url": "https://raybot-sandbox.slack.com/",
            "team": "raybot sandbox",
            "user": "raybot",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    # chat.*

    def _chat_post_message(self, args: JSON) -> JSON:
        channel = self._postable_channel(args.get("channel"))
        content = _message_content(args)
        ts = self._next_ts()
        message: JSON = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": BOT_ID,
            "app_id": APP_ID,
            "team": self.team_id,
            "ts": ts,
            **content,
        }
        if args.get("metadata") is not None:
            message["metadata"] = args["metadata"]
        thread_ts = args.get("thread_ts")
        if thread_ts:
            parent = self._find_message(channel, str(thread_ts))
            if parent is None:
                # Slack accepts this and the reply is lost from view; failing loudly is more useful here.
                raise _MethodFailure("thread_not_found", [f"[ERROR] no message {thread_ts} in channel {channel}"])
            root_ts = parent.get("thread_ts") or parent["ts"]  # Slack threads a reply-to-a-reply under the parent
            root = self._find_message(channel, root_ts)
            assert root is not None
            root["thread_ts"] = root_ts
            root["reply_count"] = root.get("reply_count", 0) + 1
            root["latest_reply"] = ts
            message["thread_ts"] = root_ts
            message["parent_user_id"] = root.get("user")
            if _flag(args.get("reply_broadcast")):
                message["subtype"] = "thread_broadcast"
        self._messages[channel].append(message)
        return {"channel": channel, "ts": ts, "message": copy.deepcopy(message)}

    def _chat_update(self, args: JSON) -> JSON:
        channel = self._known_channel(args.get("channel"))
        ts = args.get("ts")
        if not ts:
            raise _MethodFailure("message_not_found")
        message = self._find_message(channel, str(ts))
        if message is None:
            raise _MethodFailure("message_not_found")
        if message.get("bot_id") != BOT_ID:
            raise _MethodFailure("cant_update_message")
        message.update(_message_content(args))  # blocks not given: Slack keeps the previous ones
        message["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
        return {"channel": channel, "ts": message["ts"], "text": message["text"], "message": copy.deepcopy(message)}

    def _chat_post_ephemeral(self, args: JSON) -> JSON:
        channel = self._postable_channel(args.get("channel"))
        user = args.get("user")
        if not user or not self._user_known(str(user)):
            raise _MethodFailure("user_not_found")
        members = self._channels.get(channel, {}).get("members")
        if members is not None and user not in members:
            raise _MethodFailure("user_not_in_channel")
        content = _message_content(args)
        message_ts = self._next_ts()
        self._ephemerals.append(
            {"channel": channel, "user": user, "thread_ts": args.get("thread_ts"), "message_ts": message_ts, **content}
        )
        return {"message_ts": message_ts}

    # views.*

    def _views_open(self, args: JSON) -> JSON:
        view = self._valid_view(args)
        self._exchange_trigger(args.get("trigger_id"))
        view_id = self._new_view_id()
        stored = self._store_view(view_id, view, root_view_id=view_id, previous_view_id=None)
        self._stacks[view_id] = [view_id]
        return {"view": copy.deepcopy(stored)}

    def _views_push(self, args: JSON) -> JSON:
        view = self._valid_view(args)
        trigger = self._exchange_trigger(args.get("trigger_id"))
        root = self._stack_root(trigger.view_id) if trigger.view_id else next(reversed(self._stacks), None)
        if root is None:
            raise _MethodFailure("not_found", ["[ERROR] no open modal to push onto"])
        stack = self._stacks[root]
        if len(stack) >= MAX_VIEW_STACK:
            raise _MethodFailure("push_limit_reached")
        view_id = self._new_view_id()
        stored = self._store_view(view_id, view, root_view_id=root, previous_view_id=stack[-1])
        stack.append(view_id)
        return {"view": copy.deepcopy(stored)}

    def _views_update(self, args: JSON) -> JSON:
        view_id, external_id = args.get("view_id"), args.get("external_id")
        if bool(view_id) == bool(external_id):
            raise _MethodFailure("invalid_arguments", ["[ERROR] exactly one of view_id or external_id is required"])
        if external_id:
            view_id = next((vid for vid, v in self._views.items() if v.get("external_id") == external_id), None)
        if view_id not in self._views or self._stack_root(str(view_id)) is None:
            raise _MethodFailure("not_found")
        view = self._valid_view(args, current_view_id=str(view_id))
        current = self._views[str(view_id)]
        if args.get("hash") and args["hash"] != current["hash"]:
            raise _MethodFailure("hash_conflict")
        stored = self._store_view(
            str(view_id), view, root_view_id=current["root_view_id"], previous_view_id=current["previous_view_id"]
        )
        return {"view": copy.deepcopy(stored)}

    def _valid_view(self, args: JSON, *, current_view_id: str | None = None) -> JSON:
        view = args.get("view")
        if view is None:
            raise _MethodFailure("invalid_arguments", ["[ERROR] missing required field: view"])
        if len(json.dumps(view)) > MAX_VIEW_BYTES:
            raise _MethodFailure("view_too_large")
        problems = view_problems(view)
        if problems:
            raise _MethodFailure("invalid_arguments", problems)
        external_id = view.get("external_id")
        if external_id and any(
            v.get("external_id") == external_id for vid, v in self._views.items() if vid != current_view_id
        ):
            raise _MethodFailure("duplicate_external_id")
        return view

    def _exchange_trigger(self, trigger_id: Any) -> _Trigger:
        if not trigger_id:
            raise _MethodFailure("invalid_arguments", ["[ERROR] missing required field: trigger_id"])
        trigger = self._triggers.get(str(trigger_id))
        if trigger is None:
            raise _MethodFailure("invalid_trigger_id")
        if trigger.used:
            raise _MethodFailure("exchanged_trigger_id")
        if self._clock() - trigger.issued_at > TRIGGER_TTL_SECONDS:
            raise _MethodFailure("expired_trigger_id")
        trigger.used = True
        return trigger

    def _store_view(self, view_id: str, view: JSON, *, root_view_id: str, previous_view_id: str | None) -> JSON:
        stored = copy.deepcopy(view) | {
            "id": view_id,
            "team_id": self.team_id,
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "external_id": view.get("external_id", ""),
            "state": {"values": {}},
            "hash": f"{int(self._clock())}.{self._hex(8)}",
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "root_view_id": root_view_id,
            "previous_view_id": previous_view_id,
            "app_id": APP_ID,
            "app_installed_team_id": self.team_id,
            "bot_id": BOT_ID,
        }
        self._views[view_id] = stored
        return stored

    def _stack_root(self, view_id: str) -> str | None:
        return next((root for root, stack in self._stacks.items() if view_id in stack), None)

    # users, usergroups, conversations

    def _usergroups_users_list(self, args: JSON) -> JSON:
        usergroup = args.get("usergroup")
        if not usergroup:
            raise _MethodFailure("invalid_arguments", ["[ERROR] missing required field: usergroup"])
        if usergroup not in self._usergroups:
            raise _MethodFailure("no_such_subteam")
        return {"users": list(self._usergroups[usergroup])}

    def _users_info(self, args: JSON) -> JSON:
        user_id = args.get("user")
        if not user_id or not self._user_known(str(user_id)):
            raise _MethodFailure("user_not_found")
        info = self._users.get(user_id, {})
        is_bot = user_id == self.bot_user_id
        name = info.get("name", "raybot" if is_bot else str(user_id).lower())
        real_name = info.get("real_name", name)
        user: JSON = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "real_name": real_name,
            "deleted": False,
            "is_bot": is_bot,
            "is_admin": False,
            "tz": info.get("tz", "UTC"),
            "profile": {"real_name": real_name, "display_name": info.get("display_name", name)},
        }
        return {"user": user | {k: v for k, v in info.items() if k not in user}}

    def _conversations_info(self, args: JSON) -> JSON:
        channel_id = self._known_channel(args.get("channel"))
        info = self._channels.get(channel_id, {})
        is_im = channel_id.startswith("D")
        is_private = bool(info.get("is_private", channel_id.startswith("G")))
        channel: JSON = {
            "id": channel_id,
            "name": info.get("name", channel_id.lower()),
            "is_channel": not is_im and not is_private,
            "is_group": False,
            "is_im": is_im,
            "is_private": is_private,
            "is_archived": bool(info.get("is_archived", False)),
            "is_member": bool(info.get("is_member", True)),
            "created": 0,
        }
        return {"channel": channel | {k: v for k, v in info.items() if k not in channel and k != "members"}}

    def _apps_connections_open(self, args: JSON) -> JSON:
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        ws_url = self.url.replace("http://", "ws://", 1)
        return {"url": f"{ws_url}/socket-mode?ticket={ticket}&app_id={APP_ID}"}

    # response_url

    def _post_response_url(self, url: str, body: Any) -> tuple[int, JSON]:
        status, answer = 200, {"ok": True}
        with self._lock:
            hook = self._response_urls.get(url)
            if hook is None:
                status, answer = 404, {"ok": False, "error": "no_service"}
            elif self._clock() - hook.issued_at > RESPONSE_URL_TTL_SECONDS:
                status, answer = 404, {"ok": False, "error": "expired_url"}
            elif hook.uses >= RESPONSE_URL_USES:
                status, answer = 404, {"ok": False, "error": "used_url"}
            elif not isinstance(body, dict):
                hook.uses += 1
                status, answer = 400, {"ok": False, "error": "invalid_payload"}
            else:
                hook.uses += 1
                try:
                    self._apply_response(hook, body)
                except _MethodFailure as failure:
                    status, answer = 400, _failure_body(failure)
            self._record(
                ApiCall(
                    method="response_url",
                    args=copy.deepcopy(body) if isinstance(body, dict) else {},
                    token=None,
                    ok=answer["ok"],
                    error=answer.get("error"),
                    response=copy.deepcopy(answer),
                    status=status,
                    url=url,
                )
            )
        return status, answer

    def _apply_response(self, hook: _ResponseUrl, body: JSON) -> None:
        original = self._find_message(hook.channel, hook.message_ts) if hook.channel and hook.message_ts else None
        if _flag(body.get("delete_original")):
            if original is not None:
                self._messages[str(hook.channel)].remove(original)
            return
        content = _message_content(body)
        if _flag(body.get("replace_original")) and original is not None:
            original.update(content)
            return
        if body.get("response_type") == "in_channel" and hook.channel:
            message = {"type": "message", "user": self.bot_user_id, "bot_id": BOT_ID, "ts": self._next_ts(), **content}
            if body.get("thread_ts"):
                message["thread_ts"] = body["thread_ts"]
            self._messages[hook.channel].append(message)
        else:
            self._ephemerals.append(
                {"channel": hook.channel, "user": hook.user, "thread_ts": body.get("thread_ts"), **content}
            )

    # shared helpers

    def _known_channel(self, ref: Any) -> str:
        """The channel id ``ref`` names (an id, ``#name``/name, or a user id for the bot's DM with them)."""
        if not isinstance(ref, str) or not ref:
            raise _MethodFailure("channel_not_found")
        if _USER_ID.match(ref) and self._user_known(ref):
            dm = "D" + ref[1:]
            self._channels.setdefault(dm, {"name": ref, "user": ref, "members": [ref, self.bot_user_id]})
            return dm
        if ref in self._channels:
            return ref
        name = ref.removeprefix("#")
        by_name = next((cid for cid, info in self._channels.items() if info.get("name") == name), None)
        if by_name is not None:
            return by_name
        if self._open_channels and _CONVERSATION_ID.match(ref):
            self._channels[ref] = {"name": ref.lower()}
            return ref
        raise _MethodFailure("channel_not_found")

    def _postable_channel(self, ref: Any) -> str:
        channel = self._known_channel(ref)
        info = self._channels.get(channel, {})
        if info.get("is_archived"):
            raise _MethodFailure("is_archived")
        if not info.get("is_member", True):
            raise _MethodFailure("not_in_channel")
        return channel

    def _user_known(self, user_id: str) -> bool:
        if user_id == self.bot_user_id or user_id in self._users:
            return True
        return self._open_users and bool(_USER_ID.match(user_id))

    def _find_message(self, channel: str | None, ts: str | None) -> JSON | None:
        return next((m for m in self._messages.get(str(channel), []) if m["ts"] == ts), None)

    def _next_ts(self) -> str:
        # Strictly increasing even when the clock stands still (a fake clock, or two posts in one microsecond).
        self._last_ts_micros = max(int(self._clock() * 1_000_000), self._last_ts_micros + 1)
        return _format_ts(self._last_ts_micros)

    def _new_view_id(self) -> str:
        while True:
            view_id = "V0" + "".join(self._rng.choice(_ID_ALPHABET) for _ in range(9))
            if view_id not in self._views:
                return view_id

    def _hex(self, digits: int) -> str:
        return f"{self._rng.getrandbits(4 * digits):0{digits}x}"


def _settle(future: asyncio.Future[ApiCall], outcome: ApiCall | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen: an envelope given up with nobody waiting is no error of the loop."""
    if not future.cancelled():
        future.exception()


def _failure_body(failure: _MethodFailure) -> JSON:
    body: JSON = {"ok": False, "error": failure.error}
    if failure.messages:
        body["errors"] = [m.removeprefix("[ERROR] ") for m in failure.messages]
        body["response_metadata"] = {"messages": list(failure.messages)}
    return body


def _message_content(args: JSON) -> JSON:
    """text/blocks/attachments of a message, checked against Slack's message limits."""
    text, blocks, attachments = args.get("text"), args.get("blocks"), args.get("attachments")
    if text is not None and not isinstance(text, str):
        raise _MethodFailure("invalid_arguments", ["[ERROR] must be a string [json-pointer:/text]"])
    if not text and not blocks and not attachments:
        raise _MethodFailure("no_text")
    if text and len(text) > MAX_MESSAGE_TEXT_CHARS:
        raise _MethodFailure("msg_too_long", [_problem(_too_long(MAX_MESSAGE_TEXT_CHARS), "/text")])
    content: JSON = {"text": text or ""}
    if blocks is not None:
        problems = blocks_problems(blocks, "/blocks", max_blocks=MAX_MESSAGE_BLOCKS)
        if problems:
            raise _MethodFailure("invalid_blocks", problems)
        content["blocks"] = copy.deepcopy(blocks)
    if attachments is not None:
        if not isinstance(attachments, list):
            raise _MethodFailure("invalid_attachments")
        content["attachments"] = copy.deepcopy(attachments)
    return content


async def _read_api_request(request: web.Request) -> tuple[JSON, str | None]:
    """The arguments and token of a Web API request: query string, then a form or JSON body.

    Like Slack, a JSON body cannot carry the token (it must be in the Authorization header), while query and
    form arguments can. JSON-valued arguments sent as strings (form encoding) are decoded.
    """
    args: JSON = dict(request.query)
    arg_token = args.pop("token", None)
    if request.method == "POST" and request.body_exists:
        content_type = request.content_type
        if content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise _MethodFailure("invalid_json") from None
            if not isinstance(body, dict):
                raise _MethodFailure("invalid_json")
            body.pop("token", None)
            args.update(body)
        elif content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            args.update({k: v for k, v in form.items() if isinstance(v, str)})
            arg_token = args.pop("token", arg_token)
        elif content_type == "application/octet-stream" and not request.headers.get("Content-Type"):
            raise _MethodFailure("missing_post_type")
        else:
            raise _MethodFailure("invalid_post_type")
    for key in _JSON_ARGS:
        if isinstance(args.get(key), str):
            try:
                args[key] = json.loads(args[key])
            except ValueError:
                error = "invalid_blocks_format" if key == "blocks" else "invalid_arguments"
                raise _MethodFailure(error, [_problem("must be valid JSON", f"/{key}")]) from None
    authorization = request.headers.get("Authorization", "")
    token = authorization[len("Bearer ") :].strip() if authorization.startswith("Bearer ") else arg_token
    return args, token


def main(argv: list[str] | None = None) -> None:
    """``python -m bot.sandbox.slack_server [--port N]``: serve until interrupted."""
    parser = argparse.ArgumentParser(description="Loopback Slack Web API + Socket Mode emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--team-id", default="T0TEAM")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    emulator = SlackEmulator(
        bot_token=os.environ.get("SLACK_BOT_TOKEN", "xoxb-test"),
        app_token=os.environ.get("SLACK_APP_TOKEN", "xapp-test"),
        team_id=options.team_id,
    )
    emulator.start(options.host, options.port)
    print(f"Slack emulator at {emulator.url}  (RAYBOT_SLACK_API_URL={emulator.api_url})", flush=True)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())  # background jobs ignore SIGINT; honour TERM
    try:
        stopping.wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
