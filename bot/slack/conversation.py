"""Where an answer goes: the invocation (who asked, where) and the status-message thread of a change."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.errors import MalformedPayload
from bot.slack import payloads

log = logging.getLogger("raybot.slack")

Blocks = list[dict[str, Any]]


@dataclass(frozen=True)
class Invocation:
    """One request from Slack: who asked, in which channel (and thread), and the handles to answer it."""

    user_id: str
    channel_id: str
    text: str
    team_id: str | None = None
    thread_ts: str | None = None  # the thread the request came from (mentions, shortcuts); slash commands have none
    response_url: str | None = None
    trigger_id: str | None = None
    # The same for every delivery of this one request (Slack retries, Socket Mode redelivery): exactly-once key.
    dedup_key: str | None = None

    # Each constructor reads who asked and where strictly (raising MalformedPayload: without them there is nobody
    # to answer) and everything else leniently (a handle that is missing or not what Slack sends is left out).

    @classmethod
    def from_slash_command(cls, body: Mapping[str, Any]) -> Invocation:
        trigger_id = payloads.optional_text(body, "trigger_id")
        team_id = payloads.team_id_of(body.get("team_id"))
        return cls(
            user_id=payloads.user_id_of(body.get("user_id"), "request", "user_id"),
            channel_id=payloads.channel_id_of(body.get("channel_id"), "request", "channel_id"),
            text=payloads.optional_text(body, "text") or "",
            team_id=team_id,
            response_url=payloads.optional_text(body, "response_url"),
            trigger_id=trigger_id,
            dedup_key=f"slash:{team_id}:{trigger_id}" if trigger_id else None,
        )

    @classmethod
    def from_block_action(cls, body: Mapping[str, Any]) -> Invocation:
        """A button click: answers go to the thread of the message that holds the button."""
        message = body.get("message") or {}
        container = body.get("container") or {}
        return cls(
            user_id=payloads.user_id(body),
            channel_id=payloads.channel_id(body),
            text="",
            team_id=payloads.team_id(body),
            thread_ts=(
                payloads.optional_ts(message, "thread_ts")
                or payloads.optional_ts(container, "thread_ts")
                or payloads.optional_ts(message, "ts")
            ),
            trigger_id=payloads.optional_text(body, "trigger_id"),
        )

    @classmethod
    def from_message_shortcut(cls, body: Mapping[str, Any]) -> Invocation:
        """A message shortcut: answers go to the thread of the message it was used on."""
        message = body.get("message") or {}
        return cls(
            user_id=payloads.user_id(body),
            channel_id=payloads.channel_id(body),
            text="",
            team_id=payloads.team_id(body),
            thread_ts=payloads.optional_ts(message, "thread_ts") or payloads.optional_ts(message, "ts"),
            trigger_id=payloads.optional_text(body, "trigger_id"),
        )

    @classmethod
    def from_mention(cls, event: Mapping[str, Any], text: str, team_id: str | None, event_id: str | None) -> Invocation:
        ts = payloads.optional_ts(event, "ts")
        channel_id = payloads.channel_id_of(event.get("channel"), "request", "event.channel")
        # Without an event id, the message itself identifies the request.
        event_key = payloads.usable_text(event_id)
        key = f"event:{event_key}" if event_key else (f"mention:{channel_id}:{ts}" if ts else None)
        return cls(
            user_id=payloads.user_id_of(event.get("user"), "request", "event.user"),
            channel_id=channel_id,
            text=text,
            team_id=payloads.team_id_of(team_id),
            thread_ts=payloads.optional_ts(event, "thread_ts") or ts,
            dedup_key=key,
        )


def invocation_or_none(build: Callable[[Any], Invocation], body: Any) -> Invocation | None:
    """`build(body)`, or None when not even who asked and where can be read: then there is nobody to answer, and
    one warning line (naming the field, quoting nothing) is all that is left to do."""
    try:
        return build(body)
    except MalformedPayload as error:
        log.warning("ignored a Slack request: its %s is unreadable, so there is nobody to answer", error.field)
        return None


class ResponseUrlError(Exception):
    """A post to a response_url failed: Slack answered `status` with `body`, or (status None) it never got there,
    `body` saying why (a URL that is not one, a refused connection …)."""

    def __init__(self, status: int | None, body: str) -> None:
        self.status = status
        self.body = body
        said = f"answered HTTP {status}" if status is not None else "could not be reached"
        super().__init__(f"response_url {said}: {body[:200]}")


class Replies:
    """Answers to one invocation: ephemeral notes to the requester, and change threads in the channel."""

    def __init__(self, client: AsyncWebClient, invocation: Invocation) -> None:
        self.client = client
        self.invocation = invocation

    async def ephemeral(self, text: str, blocks: Blocks | None = None) -> None:
        """Only the requester sees it: through response_url when Slack gave one, else chat.postEphemeral."""
        inv = self.invocation
        if inv.response_url:
            webhook = AsyncWebhookClient(inv.response_url, retry_handlers=self.client.retry_handlers)
            try:
                resp = await webhook.send(text=text, blocks=blocks, response_type="ephemeral", replace_original=False)
            except Exception as error:  # noqa: BLE001 - whatever the URL did (invalid, unreachable), it is this error
                raise ResponseUrlError(None, type(error).__name__) from None
            if resp.status_code != 200:
                raise ResponseUrlError(resp.status_code, resp.body)
            return
        await self.client.chat_postEphemeral(
            channel=inv.channel_id, user=inv.user_id, text=text, blocks=blocks, thread_ts=inv.thread_ts
        )

    def without_response_url(self) -> Replies:
        """The same answers through chat.postEphemeral (to the user, in the channel and thread), not response_url."""
        return Replies(self.client, replace(self.invocation, response_url=None))

    async def open_thread(self, text: str, blocks: Blocks | None = None, *, broadcast: bool = False) -> StatusThread:
        """Post the root status message of a change (in the request's thread when it came from one; `broadcast`
        shows that reply in the channel too, as one message updated in both places)."""
        inv = self.invocation
        resp = await self.client.chat_postMessage(
            channel=inv.channel_id,
            text=text,
            blocks=blocks,
            thread_ts=inv.thread_ts,
            reply_broadcast=True if broadcast and inv.thread_ts else None,
        )
        root_ts = resp["ts"]
        return StatusThread(self.client, resp.get("channel") or inv.channel_id, root_ts, inv.thread_ts or root_ts)


@dataclass
class StatusThread:
    """The status message of one change and the thread its answers go to."""

    client: AsyncWebClient
    channel_id: str
    root_ts: str
    thread_ts: str

    async def set_status(self, text: str, blocks: Blocks | None = None) -> None:
        await self.client.chat_update(channel=self.channel_id, ts=self.root_ts, text=text, blocks=blocks)

    async def reply(self, text: str, blocks: Blocks | None = None) -> str:
        resp = await self.client.chat_postMessage(
            channel=self.channel_id, thread_ts=self.thread_ts, text=text, blocks=blocks
        )
        return resp["ts"]


def slack_error_text(error: SlackApiError) -> str:
    """What Slack said, for a person: the error code and any explanation Slack gave."""
    data = error.response.data if isinstance(error.response.data, dict) else {}
    code = data.get("error") or f"HTTP {error.response.status_code}"
    details = (data.get("response_metadata") or {}).get("messages") or []
    needed = data.get("needed")
    extra = f" (needed scope: {needed})" if needed else ""
    return f"{code}{extra}" + (f": {'; '.join(details)}" if details else "")
