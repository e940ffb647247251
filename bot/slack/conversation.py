"""Where an answer goes: the invocation (who asked, where) and the status-message thread of a change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

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

    @classmethod
    def from_slash_command(cls, body: dict[str, Any]) -> Invocation:
        return cls(
            user_id=body["user_id"],
            channel_id=body["channel_id"],
            text=body.get("text") or "",
            team_id=body.get("team_id"),
            response_url=body.get("response_url"),
            trigger_id=body.get("trigger_id"),
            dedup_key=f"slash:{body.get('team_id')}:{body['trigger_id']}" if body.get("trigger_id") else None,
        )

    @classmethod
    def from_block_action(cls, body: dict[str, Any]) -> Invocation:
        """A button click: answers go to the thread of the message that holds the button."""
        message = body.get("message") or {}
        container = body.get("container") or {}
        return cls(
            user_id=body["user"]["id"],
            channel_id=(body.get("channel") or {}).get("id") or container["channel_id"],
            text="",
            team_id=(body.get("team") or {}).get("id"),
            thread_ts=message.get("thread_ts") or container.get("thread_ts") or message.get("ts"),
            trigger_id=body.get("trigger_id"),
        )

    @classmethod
    def from_mention(cls, event: dict[str, Any], text: str, team_id: str | None, event_id: str | None) -> Invocation:
        # Without an event id, the message itself identifies the request.
        key = f"event:{event_id}" if event_id else f"mention:{event['channel']}:{event['ts']}"
        return cls(
            user_id=event["user"],
            channel_id=event["channel"],
            text=text,
            team_id=team_id,
            thread_ts=event.get("thread_ts") or event["ts"],
            dedup_key=key,
        )


class ResponseUrlError(Exception):
    """Slack did not accept a post to a response_url."""

    def __init__(self, status: int, body: str) -> None:
        self.status = status
        self.body = body
        super().__init__(f"response_url answered HTTP {status}: {body[:200]}")


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
            resp = await webhook.send(text=text, blocks=blocks, response_type="ephemeral", replace_original=False)
            if resp.status_code != 200:
                raise ResponseUrlError(resp.status_code, resp.body)
            return
        await self.client.chat_postEphemeral(
            channel=inv.channel_id, user=inv.user_id, text=text, blocks=blocks, thread_ts=inv.thread_ts
        )

    async def open_thread(self, text: str, blocks: Blocks | None = None) -> StatusThread:
        """Post the root status message of a change (in the request's thread when it came from one)."""
        inv = self.invocation
        resp = await self.client.chat_postMessage(
            channel=inv.channel_id, text=text, blocks=blocks, thread_ts=inv.thread_ts
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
