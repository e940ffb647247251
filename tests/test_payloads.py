"""bot.slack.payloads: what raybot reads out of Slack's payloads, and the typed refusal of anything else."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import pytest

from bot.errors import MalformedPayload
from bot.slack import payloads
from bot.slack.payloads import UnreadableRequest


def clicked(value: Any = "7", **over: Any) -> dict[str, Any]:
    """A block_actions payload as Slack sends it for a click on a raybot button carrying `value`."""
    action: dict[str, Any] = {"action_id": "raybot_undo", "block_id": "raybot", "type": "button"}
    if value is not ...:
        action["value"] = value
    body = {
        "type": "block_actions",
        "user": {"id": "U0ONCALL1", "team_id": "T0TEAM"},
        "team": {"id": "T0TEAM"},
        "channel": {"id": "C0ONCALL01"},
        "container": {"type": "message", "message_ts": "1732600000.000100", "channel_id": "C0ONCALL01"},
        "trigger_id": "1.2.3",
        "actions": [action],
    }
    return body | over


# --- row ids in button values -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("1", 1), ("7", 7), ("123456", 123456), (str(2**53 - 1), 2**53 - 1)])
def test_button_value_id_reads_the_ids_raybot_writes(value: str, expected: int) -> None:
    assert payloads.button_value_id(clicked(value)) == expected


@pytest.mark.parametrize(
    "value",
    [
        str(2**63),  # OverflowError in SQLite
        str(2**53),
        "2**63",
        "9" * 5000,  # int() refuses more than 4300 digits
        "0",
        "-1",
        "+1",
        " 1",
        "1 ",
        "1\n",
        "1e3",
        "0x10",
        "1_000",
        "#²",
        "²",  # str.isdigit() says yes, int() says no
        "１２",  # full-width digits: isdigit() and int() both say yes
        "٣",
        "\ud800",
        "",
        "NaN",
    ],
)
def test_button_value_id_refuses_anything_else_with_a_typed_error(value: str) -> None:
    with pytest.raises(MalformedPayload) as raised:
        payloads.button_value_id(clicked(value))
    assert raised.value.what == "button" and raised.value.field == "value"


@pytest.mark.parametrize("value", [None, 7, 7.0, True, [], {}, ["7"], ...])
def test_a_button_value_that_is_not_text_is_malformed(value: Any) -> None:
    with pytest.raises(MalformedPayload):
        payloads.button_value_id(clicked(value))


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"actions": []},
        {"actions": "7"},
        {"actions": [7]},
        {"actions": [None]},
        [],
        None,
        "x",
    ],
)
def test_a_payload_without_one_action_is_malformed(body: Any) -> None:
    with pytest.raises(MalformedPayload):
        payloads.button_value_id(body)


def test_the_shown_value_is_short_printable_and_never_the_whole_input() -> None:
    with pytest.raises(MalformedPayload) as raised:
        payloads.button_value_id(clicked("\ud800" + "x" * 10_000))
    shown = raised.value.shown
    assert shown is not None and len(shown) <= payloads.PREVIEW_CHARS
    shown.encode("utf-8")  # no lone surrogate left: it can be sent to Slack
    assert shown.startswith("?x")
    assert payloads.shown("#²") == "#²"
    assert payloads.shown(None) == "null" and payloads.shown([1]) == "a list" and payloads.shown({}) == "an object"


# --- JSON button values -----------------------------------------------------------------------------------------------


def test_json_button_value_reads_an_object() -> None:
    value = json.dumps({"alias": "prod", "thread_ts": "1732600000.000100"})
    assert payloads.json_button_value(clicked(value)) == {"alias": "prod", "thread_ts": "1732600000.000100"}


@pytest.mark.parametrize("value", ["{", "[]", "null", "1", '"x"', "[" * 5000, "", "\ud800"])
def test_json_button_value_refuses_what_is_not_an_object(value: str) -> None:
    with pytest.raises(MalformedPayload):
        payloads.json_button_value(clicked(value))


def test_text_fields_of_a_value_are_checked() -> None:
    assert payloads.text({"alias": "prod"}, "alias", "button") == "prod"
    for value in ({"alias": 5}, {"alias": ""}, {}, {"alias": "\ud800"}, {"alias": "x" * 50_000}):
        with pytest.raises(MalformedPayload):
            payloads.text(value, "alias", "button")
    with pytest.raises(MalformedPayload):
        payloads.text("not an object", "alias", "button")
    assert payloads.optional_text({"a": "\ud800"}, "a") is None and payloads.optional_text({"a": 5}, "a") is None
    assert payloads.optional_ts({"ts": "1732600000.000100"}, "ts") == "1732600000.000100"
    for ts in ("", "x", "１７３２.１", "1.2.3", 1.5):
        assert payloads.optional_ts({"ts": ts}, "ts") is None


# --- who and where ----------------------------------------------------------------------------------------------------


def test_user_channel_and_team_of_an_interaction() -> None:
    body = clicked()
    assert payloads.user_id(body) == "U0ONCALL1"
    assert payloads.channel_id(body) == "C0ONCALL01"
    assert payloads.team_id(body) == "T0TEAM"
    # A button on an ephemeral message: no channel object, the container says where.
    assert payloads.channel_id({k: v for k, v in body.items() if k != "channel"}) == "C0ONCALL01"


@pytest.mark.parametrize(
    "user",
    [None, {}, {"id": None}, {"id": 5}, {"id": ""}, {"id": "u0lower"}, {"id": "X0NOTAUSER"}, {"id": "U0\ud800"}, "U1"],
)
def test_an_unreadable_user_is_malformed(user: Any) -> None:
    with pytest.raises(MalformedPayload) as raised:
        payloads.user_id(clicked(user=user))
    assert raised.value.field == "user.id"


@pytest.mark.parametrize("user_id", ["U0ONCALL1<!channel>", "<@U0ONCALL1>", "U" + "1" * 40, "U0ONCALL1\n"])
def test_a_user_id_that_could_carry_markup_is_refused(user_id: str) -> None:
    with pytest.raises(MalformedPayload):
        payloads.user_id(clicked(user={"id": user_id}))


def test_an_unreadable_channel_is_malformed_and_an_odd_team_is_left_out() -> None:
    for channel in ({"id": "U0NOTACHANNEL"}, {"id": 5}, "C0ONCALL01"):
        body = clicked(channel=channel, container={})
        with pytest.raises(MalformedPayload):
            payloads.channel_id(body)
    assert payloads.team_id(clicked(team={"id": "not a team"})) is None
    assert payloads.team_id(clicked(team="T0TEAM")) is None
    assert payloads.loggable_id("U0ONCALL1") == "U0ONCALL1"
    assert payloads.loggable_id("U0ONCALL1 and more") is None and payloads.loggable_id(5) is None


# --- editor fields ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["AAAAAAAAAAAAAAAAAAAAAA", "k-1", "a_b-C9", "x" * 64])
def test_draft_keys_raybot_writes_pass(key: str) -> None:
    assert payloads.draft_key(key) == key


@pytest.mark.parametrize("key", ["", "x" * 65, "\ud800", "ｋｅｙ", "../x", "a b", "a/b", "a.b", None, 5, ["k"]])
def test_other_draft_keys_are_refused_before_the_store_sees_them(key: Any) -> None:
    with pytest.raises(MalformedPayload) as raised:
        payloads.draft_key(key)
    assert raised.value.what == "editor"


def test_view_fields() -> None:
    view = {"id": "V0A", "private_metadata": "k-1", "state": {"values": {"pick": {}}}}
    assert payloads.view_id(view) == "V0A"
    assert payloads.view_draft_key(view) == "k-1"
    assert payloads.state_values(view) == {"pick": {}}
    for broken in ({}, {"state": "x"}, {"state": {"values": [1]}}, "x"):
        with pytest.raises(MalformedPayload):
            payloads.state_values(broken)
    with pytest.raises(MalformedPayload):
        payloads.view_id({"id": 5})
    assert payloads.selected_value(clicked(..., actions=[{"action_id": "g", "selected_option": {"value": "0"}}])) == "0"
    with pytest.raises(MalformedPayload):
        payloads.selected_value(clicked(..., actions=[{"action_id": "g", "selected_option": "0"}]))
    with pytest.raises(MalformedPayload):
        payloads.trigger_id({"trigger_id": 5})


# --- the request body -------------------------------------------------------------------------------------------------


def form(**fields: str) -> bytes:
    return urllib.parse.urlencode(fields).encode()


def test_read_request_reads_what_slack_sends() -> None:
    command = payloads.read_request(form(command="/ray", text="help", user_id="U1", channel_id="C1"), payloads.FORM)
    assert command["command"] == "/ray" and command["text"] == "help"
    interaction = payloads.read_request(form(payload=json.dumps(clicked())), payloads.FORM + "; charset=utf-8")
    assert interaction == clicked()
    event = {"type": "event_callback", "event": {"type": "app_mention", "user": "U1", "text": "hi"}}
    assert payloads.read_request(json.dumps(event).encode(), "application/json") == event
    assert payloads.read_request(form(ssl_check="1", token="x"), payloads.FORM) == {"ssl_check": "1", "token": "x"}


def test_a_command_that_mentions_payload_is_still_a_command() -> None:
    # Bolt's own parser takes any form body containing "payload" for an interaction (and sees {}).
    body = form(command="/ray", text="show payload-processor", user_id="U1", channel_id="C1")
    assert payloads.read_request(body, payloads.FORM)["text"] == "show payload-processor"


@pytest.mark.parametrize(
    ("raw", "content_type", "reason"),
    [
        (b"\xff\xfe", payloads.FORM, "not UTF-8"),
        (b"payload=%7B%7D\xc3\x28", payloads.FORM, "not UTF-8"),
        (b"[]", "application/json", "not an object"),
        (b"1", "application/json", "not an object"),
        (b'"x"', "application/json", "not an object"),
        (b"null", "application/json", "not an object"),
        (b"{", "application/json", "not valid JSON"),
        (b"", "application/json", "not valid JSON"),
        (b"[" * 100_000, "application/json", "nested too deeply"),
        (b"payload=%5B%5D", payloads.FORM, "payload field is JSON but not an object"),
        (b"payload=%7B", payloads.FORM, "payload field is not valid JSON"),
        (b"a=b", payloads.FORM, "no payload field"),
        (b"", payloads.FORM, "no payload field"),
        (b'{"type": "block_actions"}', "text/plain", "content type"),
        (b'{"type": "block_actions"}', None, "content type"),
        (b"{}", "application/json", "no type"),
    ],
)
def test_read_request_refuses_what_slack_does_not_send(raw: bytes, content_type: str | None, reason: str) -> None:
    with pytest.raises(UnreadableRequest) as raised:
        payloads.read_request(raw, content_type)
    assert reason in raised.value.reason
    assert len(raised.value.reason) < 100


@pytest.mark.parametrize(
    "change",
    [
        {"type": 5},
        {"type": "interactive_message"},
        {"type": "workflow_step_edit"},
        {"actions": []},
        {"actions": [1]},
        {"actions": "x"},
        {"actions": [{"value": "1"}]},
        {"user": 5},
        {"user": {"id": 5}},
        {"channel": [1]},
        {"team": 5},
        {"enterprise": 1.5},
        {"authorizations": "x"},
        {"authorizations": [1]},
        {"authorizations": [{"team_id": 5}]},
        {"response_urls": [None]},
        {"event": "x"},
        {"event": {"type": 5}},
        {"message": "x"},
        {"message": {"user": ["U1"]}},
        {"view": "x"},
        {"view": {"callback_id": 5, "type": "modal"}},
        {"view": {"callback_id": "cb"}},
        {"view": {"callback_id": "cb", "type": "workflow_step"}},
        {"view": {"callback_id": "cb", "type": "modal", "app_installed_team_id": 5}},
        {"trigger_id": 5},
        {"response_url": ["x"]},
        {"thread_ts": 1.5},
    ],
)
def test_the_envelope_bolt_reads_must_have_slack_types(change: dict[str, Any]) -> None:
    body = clicked() | change
    with pytest.raises(UnreadableRequest):
        payloads.check_envelope(body)


def test_a_well_formed_envelope_passes_whatever_its_values_say() -> None:
    payloads.check_envelope(clicked("2**63", user={"id": "not an id"}, container="x", channel={}))
    payloads.check_envelope({"type": "url_verification", "challenge": "c"})
    payloads.check_envelope({"type": "event_callback", "event": {"type": "app_mention", "user": "U1"}})
    payloads.check_envelope({"command": "/ray", "text": "x" * 50_000})
