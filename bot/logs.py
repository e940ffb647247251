"""Logging for a service: one JSON object a line (or plain text on a terminal), secrets masked.

`configure_logging()` installs one handler on the root logger. Every record that
reaches it passes `Redactor` first, which masks Slack tokens, Authorization and
x-acs-security-token header values, ACS3 signatures and every value registered with
`register_secret()` or `hold_secret()` — in the message, its %-args, the extra fields and the
exception text — so no code path has to remember to be careful.

Context fields (Slack team, channel and user ids, the change id, the cloud
requestId, the cluster, the action) come from `extra={...}` or from
`log_context(...)`, which binds them for everything logged in the block (and in
tasks created inside it, as asyncio copies the context).
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import MappingProxyType
from typing import IO, Any, Literal

LogFormat = Literal["json", "text"]
LOG_FORMAT_ENV = "RAYBOT_LOG_FORMAT"
MASK = "[REDACTED]"

# The fields a record may carry besides its message; only these reach the output.
CONTEXT_FIELDS: tuple[str, ...] = (
    "team",
    "channel",
    "user",
    "change_id",
    "request_id",
    "cluster",
    "cluster_id",
    "workspace",
    "action",
    "code",
    "duration_ms",
)

# Shorter values would mask ordinary words everywhere; real secrets are far longer.
MIN_SECRET_LENGTH = 6
# The base credentials chain rotates its STS credential about hourly for as long as the process lives: of what
# `register_secret` is told, keep the newest ones only (a dropped one has long expired), so redaction stays cheap.
# Secrets with an owner that knows when they die (assumed roles, the Slack tokens) are held, outside this bound.
MAX_SECRETS = 64

_QUOTED_HEADER = re.compile(
    r"""(?P<name>(?:authorization|x-acs-security-token)['"]?\s*[:=]\s*)(?P<q>['"])(?P<value>.*?)(?P=q)""",
    re.IGNORECASE,
)
_BARE_HEADER = re.compile(
    r"""(?P<name>(?:authorization|x-acs-security-token)\s*[:=]\s*)(?!['"]|\[REDACTED\])[^\r\n]+""", re.IGNORECASE
)
_SIGNATURE = re.compile(r"(?P<name>Signature=)(?!\[REDACTED\])[^\s,;&'\"]+")
# Bot, user, app-config and refresh tokens (xoxb-, xoxp-, xoxa-, xoxr-, xoxe-, xoxe.xoxp-) and app tokens (xapp-).
_SLACK_TOKEN = re.compile(r"\b(?P<prefix>xox[a-z](?:\.xox[a-z])?-|xapp-)(?!\[REDACTED\])[A-Za-z0-9-]+")

_secrets: dict[str, None] = {}  # an ordered set: oldest first
_held: dict[str, int] = {}  # value → how many holders
# Past this many secrets, `redact` first finds which of them a text may hold by their first MIN_SECRET_LENGTH
# characters (one dict look-up per position) rather than searching the text once per secret.
INDEX_ABOVE = 128
# What `redact` masks, longest first, and those secrets by their first characters: rebuilt together on each
# change (rare), and read as one tuple by any thread (no lock needed).
_masked: tuple[tuple[str, ...], dict[str, tuple[str, ...]]] = ((), {})
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "raybot_log_context", default=MappingProxyType({})
)

# Attributes every LogRecord has; anything else on a record came from `extra`.
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def _rebuild() -> None:
    global _masked
    # Longest first, so a secret that contains another is masked whole.
    ordered = tuple(sorted(set(_secrets) | set(_held), key=len, reverse=True))
    index: dict[str, list[str]] = {}
    if len(ordered) > INDEX_ABOVE:
        for secret in ordered:
            index.setdefault(secret[:MIN_SECRET_LENGTH], []).append(secret)
    _masked = (ordered, {prefix: tuple(found) for prefix, found in index.items()})


def register_secret(value: str | None) -> None:
    """Mask `value` wherever it appears in a log record from now on; of these, the newest MAX_SECRETS are kept
    (what the base credentials chain hands out: it rotates for the process's life). See `hold_secret`."""
    if value and len(value) >= MIN_SECRET_LENGTH:
        changed = value not in _secrets
        _secrets.pop(value, None)  # moved to the newest end
        _secrets[value] = None
        while len(_secrets) > MAX_SECRETS:
            del _secrets[next(iter(_secrets))]
            changed = True
        if changed:
            _rebuild()


def hold_secret(value: str | None) -> None:
    """Mask `value` until as many `release_secret(value)` as holds (no bound: the holder bounds what it holds).

    For secrets whose owner knows their life: a cached role credential, the Slack tokens (held for good).
    """
    if value and len(value) >= MIN_SECRET_LENGTH:
        _held[value] = _held.get(value, 0) + 1
        if _held[value] == 1:
            _rebuild()


def release_secret(value: str | None) -> None:
    """Undo one `hold_secret(value)`; the value stays masked while someone else holds or registered it."""
    if value and value in _held:
        _held[value] -= 1
        if _held[value] <= 0:
            del _held[value]
            _rebuild()


def clear_secrets() -> None:
    """Forget every registered and held secret (tests)."""
    _secrets.clear()
    _held.clear()
    _rebuild()


def redact(text: str) -> str:
    """`text` with every secret the module knows of replaced by [REDACTED]."""
    # Registered and held values first, longest first (see `_rebuild`).
    ordered, index = _masked
    if index:
        width = MIN_SECRET_LENGTH
        found = {s for i in range(len(text) - width + 1) for s in index.get(text[i : i + width], ())}
        ordered = tuple(sorted(found, key=len, reverse=True)) if found else ()
    for secret in ordered:
        if secret in text:
            text = text.replace(secret, MASK)
    text = _QUOTED_HEADER.sub(lambda m: f"{m['name']}{m['q']}{MASK}{m['q']}", text)
    text = _BARE_HEADER.sub(lambda m: f"{m['name']}{MASK}", text)
    text = _SIGNATURE.sub(lambda m: f"{m['name']}{MASK}", text)
    return _SLACK_TOKEN.sub(lambda m: f"{m['prefix']}{MASK}", text)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add `fields` (team=, channel=, user=, change_id=, ...) to every record logged inside the block."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class Redactor(logging.Filter):
    """Masks secrets in a record in place, and adds the fields bound with `log_context`.

    It renders the message (%-args included) and the exception text once, masked, so
    every formatter downstream sees only the masked text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep what there is rather than lose the record
            message = f"{record.msg!r} % {record.args!r}"
        record.msg = redact(message)
        record.args = None
        for key, value in list(record.__dict__.items()):
            if key in _RECORD_ATTRS or value is None or isinstance(value, bool | int | float):
                continue
            record.__dict__[key] = redact(value if isinstance(value, str) else str(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(record.msecs):03d}Z"


def _context_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in CONTEXT_FIELDS if getattr(record, name, None) is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts (ISO 8601 UTC), level, logger, message, context fields, exc, stack."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_context_fields(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        # ensure_ascii keeps every line one line whatever the message holds; default=str for odd extras.
        return json.dumps(entry, ensure_ascii=True, default=str)


class TextFormatter(logging.Formatter):
    """For a terminal: `ts LEVEL logger message key=value ...`, then the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in _context_fields(record).items())
        line = f"{_timestamp(record)} {record.levelname} {record.name} {record.getMessage()}"
        if fields:
            line += f" {fields}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


def default_format(stream: IO[str], env: Mapping[str, str] | None = None) -> LogFormat:
    """RAYBOT_LOG_FORMAT when set; else text on a terminal and JSON elsewhere (containers, files, pipes)."""
    env = os.environ if env is None else env
    chosen = env.get(LOG_FORMAT_ENV, "").strip().lower()
    if chosen in ("json", "text"):
        return chosen  # type: ignore[return-value]
    if chosen:
        raise ValueError(f"{LOG_FORMAT_ENV} must be json or text, not {chosen!r}")
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


class _RaybotHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler configure_logging installed, so calling it again replaces it."""


QUIET_LIBRARIES = ("aiosqlite", "sqlalchemy", "alembic", "psycopg")


def configure_logging(
    fmt: LogFormat | None = None, level: str | int = "INFO", stream: IO[str] | None = None
) -> logging.Handler:
    """Send every log record to `stream` (stderr by default) as JSON lines or text, secrets masked.

    `fmt` None: RAYBOT_LOG_FORMAT, else text on a TTY and JSON elsewhere. Calling it
    again replaces the handler it installed before. Raises ValueError for an unknown
    format or level.
    """
    stream = sys.stderr if stream is None else stream
    chosen = fmt or default_format(stream)
    if chosen not in ("json", "text"):
        raise ValueError(f"log format must be json or text, not {chosen!r}")
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}: use DEBUG, INFO, WARNING or ERROR")
    handler = _RaybotHandler(stream)
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    handler.addFilter(Redactor())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _RaybotHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # The database libraries log every statement (with its parameters: people's input) and cursor step at INFO
    # and DEBUG: raybot's own lines would drown, and user data would reach the log. Their warnings still come.
    for noisy in QUIET_LIBRARIES:
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    return handler
