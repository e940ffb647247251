"""Slack mrkdwn that user-controlled text cannot break out of.

Slack parses `<…>` as links and mentions (`<!channel>`, `<@U123>`, `<!subteam^S1>`)
and `&` as the start of an entity; escaping those three characters turns them into
plain text. Mentions raybot means to make are built by `user`/`channel`/`usergroup`,
which accept only well-formed ids, so an id from config cannot carry markup.
"""

from __future__ import annotations

import re

ELLIPSIS = "…"
_BROADCAST = re.compile(r"@(channel|here|everyone)", re.IGNORECASE)
_WORD_JOINER = "\u2060"
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,20}")
_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,20}")
_USERGROUP_ID = re.compile(r"S[A-Z0-9]{2,20}")


def escape(text: str) -> str:
    """Escape &, < and > as Slack requires, so the text shows literally and cannot mention or link anyone.

    A bare "@channel" is also broken with an invisible word joiner: blocks raybot
    builds are `verbatim`, but text posted elsewhere may be auto-parsed.
    """
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _BROADCAST.sub(lambda m: "@" + _WORD_JOINER + m.group(1), escaped)


def one_line(text: str) -> str:
    """`text` with its line breaks turned into spaces, for a name or summary shown inside a sentence.

    A line break there would let user text start a line of its own in raybot's message (a fake "✅ …"
    line, or a `>` quote), and ends the *bold* around a name. Not escaped: pass the result to `escape`.
    """
    return " ".join(text.splitlines())


def _plain_backticks(text: str) -> str:
    # mrkdwn has no way to escape a backtick inside code; a look-alike keeps the text readable.
    return text.replace("`", "\u02cb")


def code(text: str, limit: int | None = None) -> str:
    """`text` as inline code, escaped; backticks and line breaks inside cannot end it early.

    With `limit`, the escaped text inside the backticks is cut to that many characters.
    """
    inner = _plain_backticks(escape(one_line(text)))
    if limit is not None:
        inner = truncate(inner, limit)
    return f"`{inner or ' '}`"


def preformatted(text: str) -> str:
    """`text` as a preformatted block, escaped; a backtick fence inside cannot end it early."""
    return f"```\n{_plain_backticks(escape(text))}\n```"


def user(user_id: str) -> str:
    """A mention of a Slack user; raises ValueError unless `user_id` looks like U…/W…."""
    if not _USER_ID.fullmatch(user_id):
        raise ValueError(f"not a Slack user id: {user_id!r}")
    return f"<@{user_id}>"


def channel(channel_id: str) -> str:
    """A link to a Slack conversation; raises ValueError unless `channel_id` looks like C…/G…/D…."""
    if not _CHANNEL_ID.fullmatch(channel_id):
        raise ValueError(f"not a Slack channel id: {channel_id!r}")
    return f"<#{channel_id}>"


def usergroup(usergroup_id: str) -> str:
    """A mention of a Slack user group (it notifies its members); raises ValueError unless the id looks like S…."""
    if not _USERGROUP_ID.fullmatch(usergroup_id):
        raise ValueError(f"not a Slack user group id: {usergroup_id!r}")
    return f"<!subteam^{usergroup_id}>"


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, ending in an ellipsis when cut.

    Safe on escaped mrkdwn: a cut never splits an entity (`&amp;`) or a `<…>`
    mention or link; it backs off to before it instead.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    if len(text) <= limit:
        return text
    kept = text[: limit - len(ELLIPSIS)]
    amp = kept.rfind("&")
    if amp != -1 and ";" not in kept[amp:]:
        kept = kept[:amp]
    angle = kept.rfind("<")
    if angle != -1 and ">" not in kept[angle:]:
        kept = kept[:angle]
    return kept + ELLIPSIS
