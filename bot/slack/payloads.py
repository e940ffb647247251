"""Reading what raybot needs out of what Slack sends, and refusing anything Slack would not send.

Two layers, both pure (no I/O):

* `read_request(raw, content_type)`: the body of a signed HTTP request → the payload dict, or `UnreadableRequest`
  (bot.server answers it 400, and hands Bolt exactly this dict). It checks the envelope: the fields Bolt itself
  reads while it builds its context and matches listeners have the types Slack gives them, so no hostile shape
  can make Bolt raise before a listener runs.
* Field readers for listeners (`button_value_id`, `json_button_value`, `user_id`, `draft_key`, …): each returns
  the value or raises `bot.errors.MalformedPayload`, which `bot.dispatch.describe_error` turns into "raybot could
  not read that …". Listeners call them inside `serve(...)` (or their own try block) so that a forged value ends
  in that message, never in Bolt's error path.

Slack's ids are checked against the shapes `bot.slack.mrkdwn` accepts for mentions, so an id raybot read can
always be mentioned back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from bot.errors import MalformedPayload

# Row ids of raybot's own store: SQLite INTEGER PRIMARY KEYs, which start at 1. Capped well below SQLite's 2**63 (an
# OverflowError in the driver) and at what a JSON number holds exactly.
MAX_ROW_ID = 2**53 - 1
_ROW_ID = re.compile(r"[0-9]{1,16}")  # ASCII digits only: "１２" and "²" pass str.isdigit(), not this
# The same shapes as bot.slack.mrkdwn's user/channel mentions; teams and enterprises likewise.
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,20}")
_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,20}")
_TEAM_ID = re.compile(r"[TE][A-Z0-9]{2,20}")
_ANY_ID = re.compile(r"[A-Z][A-Z0-9]{2,20}")
# Draft keys are secrets.token_urlsafe(...) made by raybot (bot.store.MAX_DRAFT_KEY characters at most).
_DRAFT_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TS = re.compile(r"[0-9]{1,12}\.[0-9]{1,9}")
MAX_TEXT = 40_000  # longer than any text field Slack sends (a message is at most 40 000 characters)
PREVIEW_CHARS = 24

FORM = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"


# --- the request ------------------------------------------------------------------------------------------------------


class UnreadableRequest(Exception):
    """A signed request whose body is not what Slack sends; `reason` is short, plain and quotes none of the body."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


# What Slack sends raybot: its buttons, selects, modals, message shortcut and app_mention events, the Events API's
# own notices, and slash commands and ssl_check (which have no type). Legacy attachments, dialogs and workflow
# steps are none of raybot's: Bolt reads their own fields unchecked (`workflow_step`, `actions` …), so they go.
PAYLOAD_TYPES = frozenset(
    {
        "block_actions",
        "view_submission",
        "view_closed",
        "message_action",
        "shortcut",
        "event_callback",
        "url_verification",
        "app_rate_limited",
    }
)

# Fields Bolt reads as strings (comparing, logging, putting them in its context) wherever they appear.
_TEXT_FIELDS = (
    "type",
    "token",
    "team_id",
    "user_id",
    "channel_id",
    "enterprise_id",
    "api_app_id",
    "callback_id",
    "trigger_id",
    "response_url",
    "thread_ts",
    "command",
    "text",
    "event_id",
    "action_id",
    "function_execution_id",
    "bot_access_token",
    "context_team_id",
    "context_enterprise_id",
    "user_team",
    "app_installed_team_id",
    "bot_id",
    "ssl_check",
    "challenge",
)
# Fields Bolt reads as an id string or as an object with an `id`.
_ID_FIELDS = ("user", "channel", "team", "enterprise")
# Objects Bolt looks into (with the same rules, recursively).
_NESTED = ("event", "message", "previous_message", "item", "assistant_thread")
_MAX_DEPTH = 3


def read_request(raw: bytes, content_type: str | None) -> dict[str, Any]:
    """The payload of a signed request body, as Slack sends it; raises UnreadableRequest.

    Slack posts slash commands (and `ssl_check`) as a form, interactions as a form whose `payload` field is a JSON
    object, and Events API callbacks as a JSON object; nothing else is a Slack request.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableRequest("the body is not UTF-8") from None
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == JSON_TYPE:
        body = _json_object(text, "the body")
    elif kind == FORM:
        fields = dict(parse_qsl(text, keep_blank_values=True))
        if "payload" in fields:
            body = _json_object(fields["payload"], "the payload field")
        elif "command" in fields or "ssl_check" in fields:
            body = fields
        else:
            raise UnreadableRequest("the form has no payload field and is not a slash command")
    else:
        raise UnreadableRequest("the content type is neither a form nor JSON")
    check_envelope(body)
    return body


def _json_object(text: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:  # JSONDecodeError
        raise UnreadableRequest(f"{where} is not valid JSON") from None
    except RecursionError:
        raise UnreadableRequest(f"{where} is nested too deeply") from None
    if not isinstance(value, dict):
        raise UnreadableRequest(f"{where} is JSON but not an object")
    return value


def check_envelope(body: Mapping[str, Any]) -> None:
    """Raise UnreadableRequest unless the fields Bolt reads before any listener runs have Slack's types.

    Bolt builds its context from team/user/channel/enterprise ids, `authorizations`, `event`, `response_urls` …
    and matches listeners on `command`, `actions[0].action_id`, `view.callback_id`, `event.type`, `callback_id`;
    a list where it expects an object, or a number where it expects a string, makes it raise (a 500 and a
    traceback) before raybot's code could answer.
    """
    if not any(isinstance(body.get(key), str) for key in ("type", "command", "ssl_check")):
        raise UnreadableRequest("the payload has no type")
    if "type" in body and body["type"] not in PAYLOAD_TYPES:
        raise UnreadableRequest("raybot takes no payload of this type")
    _check_fields(body, "payload", 0)
    for key in ("authorizations", "response_urls"):
        if key in body:
            items = body[key]
            if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
                raise UnreadableRequest(f"{key} is not a list of objects")
            for item in items[:1]:  # Bolt reads only the first one
                _check_fields(item, key, 1)
    kind = body.get("type")
    if kind == "event_callback" or "event" in body:
        event = body.get("event")
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise UnreadableRequest("event is not an object with a type")
    if kind == "block_actions" or "actions" in body:
        actions = body.get("actions")
        if not isinstance(actions, list) or not actions:
            raise UnreadableRequest("actions is not a list of actions")
        if not all(isinstance(a, dict) and isinstance(a.get("action_id"), str) for a in actions):
            raise UnreadableRequest("an action has no action_id")
    if kind in ("view_submission", "view_closed") or "view" in body:
        view = body.get("view")
        if not isinstance(view, dict) or not isinstance(view.get("callback_id"), str):
            raise UnreadableRequest("view is not an object with a callback_id")
        if not isinstance(view.get("type"), str) or view["type"] == "workflow_step":
            raise UnreadableRequest("view is not a modal")  # Bolt reads a workflow step's own fields from those
        _check_fields(view, "view", _MAX_DEPTH)  # Bolt reads the view's team ids too


def _check_fields(obj: Mapping[str, Any], where: str, depth: int) -> None:
    for key in _TEXT_FIELDS:
        value = obj.get(key)
        if value is None or isinstance(value, str):
            continue
        raise UnreadableRequest(f"{where}.{key} is not a string")
    for key in _ID_FIELDS:
        value = obj.get(key)
        if value is None or isinstance(value, str):
            continue
        if not isinstance(value, dict):
            raise UnreadableRequest(f"{where}.{key} is neither an id nor an object")
        if not isinstance(value.get("id"), str | None):
            raise UnreadableRequest(f"{where}.{key}.id is not a string")
    if depth >= _MAX_DEPTH:
        return
    for key in _NESTED:
        value = obj.get(key)
        if value is not None and not isinstance(value, dict):
            raise UnreadableRequest(f"{where}.{key} is not an object")
        if value is not None:
            _check_fields(value, f"{where}.{key}", depth + 1)


# --- fields for listeners ---------------------------------------------------------------------------------------------


def shown(value: Any) -> str:
    """A short, printable preview of a value for a message: never the whole of a huge or hostile string."""
    if isinstance(value, str):
        printable = "".join(c if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF else "?" for c in value)
        return printable if len(printable) <= PREVIEW_CHARS else printable[: PREVIEW_CHARS - 1] + "…"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return shown(str(value))
    return "a list" if isinstance(value, list) else "an object"


def _object(value: Any, what: str, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MalformedPayload(what, field, "is missing or not an object")
    return value


def text(container: Any, key: str, what: str, *, field: str | None = None) -> str:
    """`container[key]` as a non-empty string of a sane length; raises MalformedPayload."""
    name = field or key
    value = _object(container, what, name.rsplit(".", 1)[0]).get(key)
    if not isinstance(value, str) or not value:
        raise MalformedPayload(what, name, "is missing or not text")
    if len(value) > MAX_TEXT or not _encodable(value):
        raise MalformedPayload(what, name, "is not text raybot can read", shown(value))
    return value


def usable_text(value: Any) -> str | None:
    """`value` when it is a non-empty string raybot can store and send, else None."""
    if isinstance(value, str) and value and len(value) <= MAX_TEXT and _encodable(value):
        return value
    return None


def optional_text(container: Any, key: str) -> str | None:
    """`container[key]` when it is a usable string, else None: for fields raybot can do without."""
    return usable_text(container.get(key) if isinstance(container, Mapping) else None)


def optional_ts(container: Any, key: str) -> str | None:
    """A Slack message timestamp ("1732600999.000100") at `container[key]`, or None when absent or not one."""
    value = optional_text(container, key)
    return value if value is not None and _TS.fullmatch(value) else None


def _encodable(value: str) -> bool:
    # A lone surrogate (JSON "\ud800") is a str in Python but cannot be stored or sent: SQLite and UTF-8 refuse it.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _slack_id(value: Any, pattern: re.Pattern[str], what: str, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise MalformedPayload(what, field, "is missing")
    if not pattern.fullmatch(value):
        raise MalformedPayload(what, field, "is not a Slack id", shown(value))
    return value


def user_id_of(value: Any, what: str, field: str) -> str:
    """A Slack user id (U…/W…); raises MalformedPayload."""
    return _slack_id(value, _USER_ID, what, field)


def channel_id_of(value: Any, what: str, field: str) -> str:
    """A Slack conversation id (C…/G…/D…); raises MalformedPayload."""
    return _slack_id(value, _CHANNEL_ID, what, field)


def loggable_id(value: Any) -> str | None:
    """`value` when it looks like any Slack id (so it may label a log line), else None: a payload's ids reach the
    log as context fields, and a forged one must not carry text (or a log line's worth of it) there."""
    return value if isinstance(value, str) and _ANY_ID.fullmatch(value) else None


def team_id_of(value: Any) -> str | None:
    """A Slack team or enterprise id, or None when absent or not one (raybot only labels logs with it)."""
    return value if isinstance(value, str) and _TEAM_ID.fullmatch(value) else None


def user_id(body: Any, what: str = "request") -> str:
    """Who used an interaction: `user.id`."""
    user = _object(body, what, "payload").get("user")
    return user_id_of(user.get("id") if isinstance(user, Mapping) else None, what, "user.id")


def channel_id(body: Any, what: str = "request") -> str:
    """Where an interaction happened: `channel.id`, else `container.channel_id` (a button on an ephemeral)."""
    payload = _object(body, what, "payload")
    channel = payload.get("channel")
    if isinstance(channel, Mapping) and channel.get("id") is not None:
        return channel_id_of(channel.get("id"), what, "channel.id")
    container = payload.get("container")
    found = container.get("channel_id") if isinstance(container, Mapping) else None
    return channel_id_of(found, what, "channel.id")


def team_id(body: Any) -> str | None:
    """The workspace of an interaction (`team.id`), or None."""
    team = body.get("team") if isinstance(body, Mapping) else None
    return team_id_of(team.get("id")) if isinstance(team, Mapping) else None


def first_action(body: Any, what: str = "button") -> Mapping[str, Any]:
    """The one action of a block_actions payload (Slack sends exactly one)."""
    actions = _object(body, what, "payload").get("actions")
    if not isinstance(actions, list) or not actions:
        raise MalformedPayload(what, "actions", "is missing")
    return _object(actions[0], what, "actions[0]")


def button_value(body: Any, what: str = "button") -> str:
    """The `value` of the clicked button."""
    return text(first_action(body, what), "value", what, field="value")


def button_value_id(body: Any, what: str = "button") -> int:
    """The row id a raybot button carries (a change, an approval, a scheduled revert): ASCII digits, 1 ≤ n ≤ 2**53−1.

    Anything else is forged or corrupted: "-1", "1e3", "２" and "²" (which str.isdigit() accepts), and numbers past
    what the store can look up (2**63 overflows SQLite's integer).
    """
    value = button_value(body, what)
    if not _ROW_ID.fullmatch(value) or not 1 <= int(value) <= MAX_ROW_ID:
        raise MalformedPayload(what, "value", "is not a number raybot wrote", shown(value))
    return int(value)


def json_button_value(body: Any, what: str = "button") -> dict[str, Any]:
    """The JSON object a raybot button carries as its value (the stop confirmation, "Open the editor")."""
    value = button_value(body, what)
    try:
        decoded = json.loads(value)
    except (ValueError, RecursionError):
        raise MalformedPayload(what, "value", "is not what raybot wrote", shown(value)) from None
    if not isinstance(decoded, dict):
        raise MalformedPayload(what, "value", "is not what raybot wrote", shown(value))
    return decoded


def selected_value(body: Any, what: str = "editor") -> str:
    """The value of the option chosen in a select (`actions[0].selected_option.value`)."""
    option = first_action(body, what).get("selected_option")
    return text(option, "value", what, field="selected_option.value")


def trigger_id(body: Any, what: str = "request") -> str:
    """The trigger id an interaction carries (only a trigger opens a modal)."""
    return text(body, "trigger_id", what)


def draft_key(value: Any, what: str = "editor") -> str:
    """A draft key as raybot writes it (URL-safe ASCII, at most 64 characters): checked before the store sees it."""
    if not isinstance(value, str) or not _DRAFT_KEY.fullmatch(value):
        raise MalformedPayload(what, "private_metadata", "is not an editor raybot opened", shown(value))
    return value


def view_draft_key(view: Any) -> str:
    """The draft key a raybot modal carries in `private_metadata`."""
    return draft_key(_object(view, "editor", "view").get("private_metadata"))


def view_id(view: Any) -> str:
    """The id of a submitted or acted-on view."""
    return text(view, "id", "editor", field="view.id")


def state_values(view: Any) -> Mapping[str, Any]:
    """`view.state.values`: the inputs of a submitted modal, by block id."""
    state = _object(_object(view, "editor", "view").get("state"), "editor", "view.state")
    return _object(state.get("values"), "editor", "view.state.values")
