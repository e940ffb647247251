"""Hostile input below the HTTP layer: the modal parsers' indexes, Invocation construction, Slack's signature,
and the one place errors become messages (describe_error, report)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.dispatch import describe_error, outcome_of, report
from bot.errors import MalformedPayload
from bot.server import slack_signature_ok
from bot.slack import modals
from bot.slack.conversation import Invocation, Replies, ResponseUrlError, invocation_or_none
from tests import e2e_world as world
from tests.test_modals import cluster, draft_of, state_of

# --- item 16: non-ASCII digits in the modal parsers -------------------------------------------------------------------


def test_the_cluster_picker_takes_only_ascii_indexes() -> None:
    aliases = ["prod", "staging"]
    view = modals.picker_view([f"c{i}" for i in range(150)], "k-9")  # a text input: people type "#1"
    assert modals.parse_picker(state_of(view, pick="#1"), aliases).alias == "staging"
    for typed in ("#²", "#１", "#٣", "#" + "9" * 5000, "#-1", "#"):
        result = modals.parse_picker(state_of(view, pick=typed), aliases)
        assert result.alias is None and "is not a cluster this channel may edit" in result.errors["pick"], typed


def test_group_selects_take_only_ascii_indexes() -> None:
    draft = draft_of(cluster(3))
    assert modals.selected_group(draft, "1") == "g2"
    for value in ("²", "１", "٣", "9" * 5000, "-1", "", " 1"):
        with pytest.raises(modals.UnknownGroupError):
            modals.selected_group(draft, value)


def test_a_group_editor_with_a_forged_index_finds_its_group_by_digest() -> None:
    draft = draft_of(cluster(3))
    view = modals.group_view(draft, "g2")
    for block in view["blocks"]:
        if str(block.get("block_id", "")).startswith("target."):
            _, index, digest = block["block_id"].split(".", 2)
            block["block_id"] = f"target.²{index}.{digest}"  # isdigit() says yes, int() would raise
    assert modals.group_target(view, draft) == "g2"


def test_memory_with_thousands_of_digits_is_an_input_error() -> None:
    draft = draft_of(cluster(2))
    view = modals.overview_view(draft)
    result = modals.parse_overview(state_of(view, **{modals.BLOCK_HEAD_MEMORY: "9" * 5000}), draft)
    assert not result.ok and modals.BLOCK_HEAD_MEMORY in result.errors


# --- who asked, and where ---------------------------------------------------------------------------------------------


def test_invocations_read_who_and_where_strictly_and_the_rest_leniently() -> None:
    body = {
        "user": {"id": "U0ONCALL1"},
        "channel": {"id": "C0ONCALL01"},
        "team": {"id": 5},
        "message": {"ts": "1732600000.000100", "thread_ts": "\ud800"},
        "container": "x",
        "trigger_id": ["x"],
    }
    inv = Invocation.from_block_action(body)
    assert (inv.user_id, inv.channel_id, inv.team_id, inv.trigger_id) == ("U0ONCALL1", "C0ONCALL01", None, None)
    assert inv.thread_ts == "1732600000.000100"

    slash = Invocation.from_slash_command(
        {"user_id": "U0A1", "channel_id": "C0B1", "text": 5, "trigger_id": "\ud800", "response_url": ""}
    )
    assert (slash.text, slash.trigger_id, slash.dedup_key, slash.response_url) == ("", None, None, None)

    mention = Invocation.from_mention({"user": "U0A1", "channel": "C0B1", "ts": "x"}, "help", "T0T", "\ud800")
    assert mention.thread_ts is None and mention.dedup_key is None

    shortcut = Invocation.from_message_shortcut(
        {"user": {"id": "U0A1"}, "channel": {"id": "C0B1"}, "message": {"ts": "1732600000.000100"}}
    )
    assert shortcut.thread_ts == "1732600000.000100"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"user": {"id": "U0A1"}},
        {"user": {"id": "U0A1"}, "channel": {"id": "not a channel"}},
        {"user": "U0A1", "channel": {"id": "C0B1"}},
        {"user": {"id": "U0A1\ud800"}, "channel": {"id": "C0B1"}},
    ],
)
def test_without_who_and_where_there_is_nobody_to_answer(body, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        assert invocation_or_none(Invocation.from_block_action, body) is None
    [record] = caplog.records
    assert record.exc_info is None and "nobody to answer" in record.getMessage()
    assert "\ud800" not in record.getMessage()


# --- Slack's signature ------------------------------------------------------------------------------------------------


def signature(body: bytes, timestamp: str, secret: str = "s3cret") -> str:
    return "v0=" + hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()


def test_the_signature_is_checked_on_raw_bytes_and_nothing_raises() -> None:
    body, now = b"payload=%7B%7D\xff", 1_732_600_000
    ts = str(now)
    assert slack_signature_ok("s3cret", ts, signature(body, ts), body, now=now)
    assert not slack_signature_ok("s3cret", ts, signature(body, ts, "other"), body, now=now)
    assert not slack_signature_ok("s3cret", ts, signature(body + b"x", ts), body, now=now)
    assert not slack_signature_ok("s3cret", str(now - 301), signature(body, str(now - 301)), body, now=now)
    assert slack_signature_ok("s3cret", str(now - 299), signature(body, str(now - 299)), body, now=now)
    for bad in ("abc", "", "1e9", "-5", "١٢٣", "+" + ts, ts + " ", "9" * 50, None):
        assert not slack_signature_ok("s3cret", bad, signature(body, bad or ""), body, now=now), bad
    for forged in ("v0=é", "", None, "v0=" + "0" * 64):
        assert not slack_signature_ok("s3cret", ts, forged, body, now=now)
    assert not slack_signature_ok("s3cret", str(int(time.time())), None, body)


# --- the one place errors become messages -----------------------------------------------------------------------------


def test_a_malformed_payload_is_told_plainly_escaped_and_not_logged(caplog) -> None:
    error = MalformedPayload("button", "value", "is not a number raybot wrote", "<!channel>`2**63")
    with caplog.at_level(logging.DEBUG):
        text, blocks = describe_error(error)
    assert text.startswith("🚫 raybot could not read that button: value is not a number raybot wrote")
    assert text.endswith("Nothing was changed.")
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text
    assert "Something went wrong" not in text and blocks
    assert caplog.records == []
    assert outcome_of(error) == "invalid"
    assert outcome_of(ResponseUrlError(None, "InvalidURL")) == "failed"


@pytest.fixture
async def web(slack):
    client = AsyncWebClient(token=world.BOT_TOKEN, base_url=slack.api_url)
    yield client


@pytest.mark.parametrize("response_url", ["not a url", "ftp://127.0.0.1/x", "http://[::1", "used"])
async def test_report_survives_an_unusable_response_url(slack, web, caplog, response_url) -> None:
    if response_url == "used":
        response_url = slack.new_response_url(channel=world.ONCALL_CHANNEL, user=world.ONCALL_USER)
        for _ in range(5):  # a response_url takes five answers
            await Replies(
                web, Invocation(world.ONCALL_USER, world.ONCALL_CHANNEL, "", response_url=response_url)
            ).ephemeral("x")
    invocation = Invocation(
        world.ONCALL_USER, world.ONCALL_CHANNEL, "", thread_ts="1732600000.000100", response_url=response_url
    )
    before = len(slack.calls)
    with caplog.at_level(logging.WARNING):
        await report(Replies(web, invocation), MalformedPayload("button", "value", "is not a number raybot wrote"))
    [note] = [c for c in slack.calls[before:] if c.method == "chat.postEphemeral"]
    assert note.args["user"] == world.ONCALL_USER and note.args["thread_ts"] == "1732600000.000100"
    assert "raybot could not read that button" in note.args["text"]
    [line] = caplog.records
    assert line.levelno == logging.WARNING and line.exc_info is None
    assert "chat.postEphemeral" in line.getMessage() and response_url not in line.getMessage()
