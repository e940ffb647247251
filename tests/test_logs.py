"""bot.logs: JSON lines, context fields, text format, and secrets masked wherever they hide."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from bot.logs import (
    INDEX_ABOVE,
    MASK,
    MAX_SECRETS,
    clear_secrets,
    configure_logging,
    default_format,
    hold_secret,
    log_context,
    redact,
    register_secret,
    release_secret,
)

BOT_TOKEN = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx"
APP_TOKEN = "xapp-1-A0123456789-1234567890123-0a1b2c3d4e5f"
USER_TOKEN = "xoxp-2222-3333-4444-deadbeefcafe"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
AK_SECRET = "YpA1y2B3z4C5x6D7w8E9v0F1u2G3t4"
STS_TOKEN = "CAIS+gF1q6Ft5B2yfSjIr5bSEtXlmf1Ff5uM"
SIGNATURE = "5d3c1b46c9f7a1cdbf1c1e1f8e6a4b2d0c9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a"
AUTHORIZATION = f"ACS3-HMAC-SHA256 Credential=LTAI5tExample,SignedHeaders=host;x-acs-date,Signature={SIGNATURE}"
EVERY_SECRET = (BOT_TOKEN, APP_TOKEN, USER_TOKEN, SIGNING_SECRET, AK_SECRET, STS_TOKEN, SIGNATURE)
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    clear_secrets()


def json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_have_the_documented_shape() -> None:
    out = io.StringIO()
    configure_logging("json", stream=out)
    log = logging.getLogger("raybot.flow")
    log.info("resized %s to %d", "prod", 10, extra={"team": "T1", "channel": "C0ONCALL01", "user": "U1"})
    log.debug("not shown at INFO")
    log.warning(
        "change done", extra={"change_id": "ch-7", "request_id": "RID-1", "cluster": "prod", "action": "resize"}
    )

    first, second = json_lines(out)
    assert first == {
        "ts": first["ts"],
        "level": "INFO",
        "logger": "raybot.flow",
        "message": "resized prod to 10",
        "team": "T1",
        "channel": "C0ONCALL01",
        "user": "U1",
    }
    assert TS.match(first["ts"])
    assert second["level"] == "WARNING"
    assert {k: second[k] for k in ("change_id", "request_id", "cluster", "action")} == {
        "change_id": "ch-7",
        "request_id": "RID-1",
        "cluster": "prod",
        "action": "resize",
    }
    assert "team" not in second  # absent fields are left out, not null


def test_a_newline_in_a_message_stays_inside_one_line() -> None:
    out = io.StringIO()
    configure_logging("json", stream=out)
    logging.getLogger("raybot").error("two\nlines and a \u2713")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["message"] == "two\nlines and a \u2713"


def test_exceptions_become_one_string_field() -> None:
    out = io.StringIO()
    configure_logging("json", stream=out, level="DEBUG")
    try:
        raise ValueError("bad spec")
    except ValueError:
        logging.getLogger("raybot.x").exception("failed")
    (entry,) = json_lines(out)
    assert entry["level"] == "ERROR"
    assert entry["exc"].startswith("Traceback (most recent call last):")
    assert entry["exc"].endswith("ValueError: bad spec")


async def test_log_context_binds_fields_for_the_block_and_its_tasks() -> None:
    out = io.StringIO()
    configure_logging("json", stream=out)
    log = logging.getLogger("raybot.flow")

    async def worker() -> None:
        log.info("in a task")

    with log_context(team="T1", channel="C1", user="U1", change_id=None):
        await asyncio.create_task(worker())
        with log_context(change_id="ch-1"):
            log.info("inner", extra={"user": "U2"})  # an explicit extra wins over the bound value
    log.info("outside")

    task_entry, inner, outside = json_lines(out)
    assert (task_entry["team"], task_entry["channel"], task_entry["user"]) == ("T1", "C1", "U1")
    assert "change_id" not in task_entry
    assert (inner["change_id"], inner["user"], inner["team"]) == ("ch-1", "U2", "T1")
    assert not {"team", "channel", "user", "change_id"} & outside.keys()


def test_text_format_for_a_terminal() -> None:
    out = io.StringIO()
    configure_logging("text", stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("raybot.server").exception("listening failed", extra={"team": "T1", "request_id": "R-9"})
    first, *rest = out.getvalue().splitlines()
    stamp, level, logger, message = first.split(" ", 3)
    assert TS.match(stamp)
    assert (level, logger) == ("ERROR", "raybot.server")
    assert message == "listening failed team=T1 request_id=R-9"
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "RuntimeError: boom"


def test_configuring_again_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("json", stream=first)
    configure_logging("text", stream=second)
    logging.getLogger("raybot").warning("once")
    assert first.getvalue() == ""
    assert second.getvalue().count("once") == 1


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_default_format_is_text_on_a_terminal_json_elsewhere_unless_the_environment_says() -> None:
    assert default_format(Terminal(), env={}) == "text"
    assert default_format(io.StringIO(), env={}) == "json"
    assert default_format(Terminal(), env={"RAYBOT_LOG_FORMAT": "json"}) == "json"
    assert default_format(io.StringIO(), env={"RAYBOT_LOG_FORMAT": " TEXT "}) == "text"
    with pytest.raises(ValueError, match="RAYBOT_LOG_FORMAT"):
        default_format(io.StringIO(), env={"RAYBOT_LOG_FORMAT": "xml"})


def test_configure_logging_reads_the_environment_and_rejects_bad_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYBOT_LOG_FORMAT", "text")
    out = io.StringIO()
    configure_logging(stream=out)
    logging.getLogger("raybot").info("hello")
    assert not out.getvalue().startswith("{")
    with pytest.raises(ValueError, match="level"):
        configure_logging("json", level="LOUD", stream=io.StringIO())


# --- redaction ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (f"token {BOT_TOKEN} rejected", "token xoxb-" + MASK + " rejected"),
        (f"socket {APP_TOKEN}", "socket xapp-" + MASK),
        (f"user token {USER_TOKEN}.", "user token xoxp-" + MASK + "."),
        ("refresh xoxe.xoxp-1-Mi0yLTEyMzQ1", "refresh xoxe.xoxp-" + MASK),
        (f"Authorization: Bearer {BOT_TOKEN}", "Authorization: " + MASK),
        (
            f"headers={{'Authorization': '{AUTHORIZATION}', 'host': 'h'}}",
            f"headers={{'Authorization': '{MASK}', 'host': 'h'}}",
        ),
        (f'{{"authorization": "{AUTHORIZATION}"}}', f'{{"authorization": "{MASK}"}}'),
        (f"x-acs-security-token: {STS_TOKEN}", "x-acs-security-token: " + MASK),
        (f"SignedHeaders=host,Signature={SIGNATURE} end", f"SignedHeaders=host,Signature={MASK} end"),
    ],
)
def test_each_kind_of_secret_is_masked(text: str, kept: str) -> None:
    assert redact(text) == kept


def test_registered_secrets_are_masked_and_short_values_are_not_registered() -> None:
    register_secret(SIGNING_SECRET)
    register_secret(AK_SECRET)
    register_secret("")
    register_secret(None)
    register_secret("abc")  # would mask every "abc" in every line
    assert redact(f"secret={SIGNING_SECRET} ak={AK_SECRET} abc") == f"secret={MASK} ak={MASK} abc"


def test_rotated_secrets_are_remembered_up_to_a_bound_newest_first() -> None:
    register_secret("first-secret-value")
    for i in range(MAX_SECRETS - 1):
        register_secret(f"sts-token-{i:04d}")
    register_secret("first-secret-value")  # registered again: now the newest
    register_secret("one-more-token")
    assert redact("first-secret-value one-more-token") == f"{MASK} {MASK}"
    assert redact("sts-token-0000") == "sts-token-0000"  # the oldest was dropped
    assert redact("sts-token-0001") == MASK


def test_held_secrets_stay_masked_whatever_rotates_until_each_holder_released_them() -> None:
    hold_secret(SIGNING_SECRET)
    hold_secret("held-twice-secret")
    hold_secret("held-twice-secret")
    for i in range(2 * MAX_SECRETS):  # the base chain rotating for days: held ones are outside its bound
        register_secret(f"sts-token-{i:04d}")
    assert redact(f"{SIGNING_SECRET} held-twice-secret") == f"{MASK} {MASK}"
    release_secret("held-twice-secret")
    assert redact("held-twice-secret") == MASK  # one holder left
    release_secret("held-twice-secret")
    release_secret("never-held-value")
    assert redact("held-twice-secret") == "held-twice-secret"
    register_secret(AK_SECRET)
    hold_secret(AK_SECRET)
    release_secret(AK_SECRET)
    assert redact(AK_SECRET) == MASK  # still registered


def test_many_held_secrets_are_found_through_their_index_longest_first() -> None:
    tokens = [f"CAIS{i:05d}-sts-token-value" for i in range(INDEX_ABOVE + 10)]
    for token in tokens:
        hold_secret(token)
    hold_secret("CAIS00007-sts-token-value-and-longer")  # contains another held secret: masked whole
    line = f"a={tokens[0]} b=CAIS00007-sts-token-value-and-longer end{tokens[-1]}"
    assert redact(line) == f"a={MASK} b={MASK} end{MASK}"
    assert redact("CAIS99999-sts-token-value CAIS0") == "CAIS99999-sts-token-value CAIS0"  # never held
    release_secret(tokens[-1])
    assert redact(tokens[-1]) == tokens[-1]


def test_secrets_are_masked_in_message_args_extras_and_exceptions() -> None:
    register_secret(SIGNING_SECRET)
    register_secret(AK_SECRET)
    register_secret(STS_TOKEN)
    out = io.StringIO()
    configure_logging("json", stream=out, level="DEBUG")
    log = logging.getLogger("slack_sdk.web.async_base_client")
    log.debug("Sending a request - headers: %s", {"Authorization": f"Bearer {BOT_TOKEN}"})
    log.info("signing with %s and %r", SIGNING_SECRET, {"sts": STS_TOKEN})
    log.warning("socket %s", APP_TOKEN, extra={"request_id": f"R-{AK_SECRET}", "team": USER_TOKEN})
    try:
        raise RuntimeError(f"401 for Authorization={AUTHORIZATION} with {AK_SECRET}")
    except RuntimeError:
        log.exception("cloud call failed")
    logging.getLogger("raybot").info(
        "stack %s", "here", stack_info=True, extra={"cluster": f"prod Signature={SIGNATURE}"}
    )

    text = out.getvalue()
    for secret in EVERY_SECRET:
        assert secret not in text
    entries = json_lines(out)
    assert len(entries) == 5
    assert entries[0]["message"] == f"Sending a request - headers: {{'Authorization': '{MASK}'}}"
    assert entries[1]["message"] == f"signing with {MASK} and {{'sts': '{MASK}'}}"
    assert entries[2]["request_id"] == f"R-{MASK}"
    assert entries[2]["team"] == f"xoxp-{MASK}"
    assert entries[3]["exc"].endswith(f"RuntimeError: 401 for Authorization={MASK}")
    assert "stack" in entries[4]


def test_text_output_is_masked_too() -> None:
    register_secret(AK_SECRET)
    out = io.StringIO()
    configure_logging("text", stream=out)
    logging.getLogger("raybot").error("ak %s token %s", AK_SECRET, BOT_TOKEN, extra={"user": APP_TOKEN})
    assert all(secret not in out.getvalue() for secret in EVERY_SECRET)
    assert MASK in out.getvalue()


def test_a_broken_format_string_is_logged_rather_than_lost() -> None:
    out = io.StringIO()
    handler = configure_logging("json", stream=out)
    # Not through the root: pytest's capture handler there would raise on the broken record first.
    log = logging.getLogger("raybot.broken")
    log.propagate = False
    log.addHandler(handler)
    try:
        log.info("%d apples %s", "not a number", BOT_TOKEN)
    finally:
        log.removeHandler(handler)
        log.propagate = True
    (entry,) = json_lines(out)
    assert "apples" in entry["message"]
    assert BOT_TOKEN not in entry["message"]
