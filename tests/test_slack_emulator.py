"""The Slack emulator, exercised over real loopback sockets with slack_sdk and slack_bolt as clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import websockets.asyncio.client
import websockets.exceptions
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import builtin_async_handlers
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient
from websockets.asyncio.client import ClientConnection

from bot.sandbox.slack_server import ApiCall, SlackEmulator, SocketGiveUp, SocketModeError

BOT_TOKEN = "xoxb-emulator-test"
APP_TOKEN = "xapp-emulator-test"
CHANNEL = "C0OPS"
ALICE = "U0ALICE"
BOB = "U0BOB"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


class FakeClock:
    """The emulator's notion of now, moved by the test."""

    def __init__(self, now: float = 1_732_600_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> Iterator[SlackEmulator]:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    emu = SlackEmulator(
        bot_token=BOT_TOKEN,
        app_token=APP_TOKEN,
        users={ALICE: {"name": "alice", "real_name": "Alice A", "tz": "Europe/Berlin"}, BOB: {"name": "bob"}},
        usergroups={"S0ONCALL": [ALICE, BOB]},
        channels={CHANNEL: {"name": "ray-ops", "members": [ALICE]}, "C0QUIET": {"name": "quiet", "is_member": False}},
        clock=clock,
        seed=7,
    )
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture
def client(emulator: SlackEmulator) -> AsyncWebClient:
    return AsyncWebClient(token=BOT_TOKEN, base_url=emulator.api_url)


def modal(title: str = "Resize prod", blocks: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "type": "modal",
        "title": {"type": "plain_text", "text": title},
        "blocks": blocks if blocks is not None else [section("Loading…")],
        **extra,
    }


def section(text: str, block_id: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "section", "text": {"type": "mrkdwn", "text": text}}
    if block_id is not None:
        block["block_id"] = block_id
    return block


async def slack_error(call: Any) -> dict[str, Any]:
    """The response data of a call that must fail with SlackApiError."""
    with pytest.raises(SlackApiError) as failure:
        await call
    return failure.value.response.data


# -- auth ----------------------------------------------------------------------------------------------------------


async def test_auth_test_answers_for_the_bot(emulator: SlackEmulator, client: AsyncWebClient) -> None:
    response = await client.auth_test()
    assert response["team_id"] == "T0TEAM"
    assert response["user_id"] == "U0RAYBOT"
    assert response["bot_id"].startswith("B")
    assert response["url"].startswith("https://")
    call = emulator.calls_for("auth.test")[0]
    assert call.ok and call.token == BOT_TOKEN
    assert BOT_TOKEN not in repr(call)


async def test_tokens_are_checked(emulator: SlackEmulator) -> None:
    wrong = AsyncWebClient(token="xoxb-wrong", base_url=emulator.api_url)
    assert (await slack_error(wrong.auth_test()))["error"] == "invalid_auth"
    anonymous = AsyncWebClient(base_url=emulator.api_url)
    assert (await slack_error(anonymous.auth_test()))["error"] == "not_authed"
    with_app_token = AsyncWebClient(token=APP_TOKEN, base_url=emulator.api_url)
    error = await slack_error(with_app_token.chat_postMessage(channel=CHANNEL, text="hi"))
    assert error["error"] == "not_allowed_token_type"
    bot = AsyncWebClient(token=BOT_TOKEN, base_url=emulator.api_url)
    assert (await slack_error(bot.apps_connections_open(app_token=BOT_TOKEN)))["error"] == "not_allowed_token_type"
    assert (await slack_error(bot.api_call("chat.fly")))["error"] == "unknown_method"
    assert emulator.channel_messages(CHANNEL) == []


async def test_form_encoded_call_with_token_argument(emulator: SlackEmulator) -> None:
    blocks = '[{"type": "divider"}]'
    async with aiohttp.ClientSession() as session:
        async with session.post(
            emulator.api_url + "chat.postMessage",
            data={"token": BOT_TOKEN, "channel": CHANNEL, "text": "form", "blocks": blocks},
        ) as response:
            body = await response.json()
    assert body["ok"] is True
    call = emulator.calls_for("chat.postMessage")[0]
    assert call.args["blocks"] == [{"type": "divider"}]
    assert "token" not in call.args and call.token == BOT_TOKEN


# -- chat.* ----------------------------------------------------------------------------------------------------------


async def test_post_message_threads_and_update(emulator: SlackEmulator, client: AsyncWebClient) -> None:
    root = await client.chat_postMessage(channel=CHANNEL, text="Resizing prod", blocks=[section("Resizing *prod*")])
    reply = await client.chat_postMessage(channel=CHANNEL, text="done", thread_ts=root["ts"])
    nested = await client.chat_postMessage(channel=CHANNEL, text="nested", thread_ts=reply["ts"])
    broadcast = await client.chat_postMessage(
        channel=CHANNEL, text="also in channel", thread_ts=root["ts"], reply_broadcast=True
    )
    timestamps = [root["ts"], reply["ts"], nested["ts"], broadcast["ts"]]
    assert all(ts.count(".") == 1 and len(ts.split(".")[1]) == 6 for ts in timestamps)
    assert timestamps == sorted(timestamps, key=float) and len(set(timestamps)) == 4
    assert root["channel"] == CHANNEL and root["message"]["text"] == "Resizing prod"

    assert [m["text"] for m in emulator.thread(CHANNEL, root["ts"])] == ["done", "nested", "also in channel"]
    assert [m["text"] for m in emulator.channel_messages(CHANNEL)] == ["Resizing prod", "also in channel"]
    assert emulator.channel_messages(CHANNEL)[0]["reply_count"] == 3

    updated = await client.chat_update(channel=CHANNEL, ts=root["ts"], text="Resized prod")
    assert updated["ts"] == root["ts"]
    message = emulator.channel_messages(CHANNEL)[0]
    assert message["text"] == "Resized prod"
    assert message["blocks"] == [section("Resizing *prod*")], "blocks not given to chat.update are kept"
    assert "edited" in message

    error = await slack_error(client.chat_update(channel=CHANNEL, ts="1.000001", text="x"))
    assert error["error"] == "message_not_found"
    error = await slack_error(client.chat_postMessage(channel=CHANNEL, text="lost", thread_ts="1.000001"))
    assert error["error"] == "thread_not_found"


async def test_another_apps_message_can_be_threaded_and_shortcut_but_not_updated(
    emulator: SlackEmulator, client: AsyncWebClient
) -> None:
    alert = emulator.post_app_message(CHANNEL, bot_id="B0ALERTS", username="Alertmanager", text="prod *is* slow")
    assert alert["subtype"] == "bot_message" and "user" not in alert  # as an incoming webhook's message is stored
    assert (alert["bot_id"], alert["username"]) == ("B0ALERTS", "Alertmanager")
    payload = emulator.message_action_payload("raybot_message_action", alert, user_id=ALICE, channel_id=CHANNEL)
    assert payload["message"] == alert and payload["message_ts"] == alert["ts"]
    await client.chat_postMessage(channel=CHANNEL, text="resized", thread_ts=alert["ts"])
    assert emulator.message(CHANNEL, alert["ts"])["reply_count"] == 1
    error = await slack_error(client.chat_update(channel=CHANNEL, ts=alert["ts"], text="mine now"))
    assert error["error"] == "cant_update_message"  # raybot cannot edit another app's message
    with pytest.raises(KeyError):
        emulator.post_app_message("C0NOWHERE", bot_id="B0ALERTS", username="Alertmanager", text="x")


async def test_post_message_rejects_what_slack_rejects(client: AsyncWebClient) -> None:
    assert (await slack_error(client.chat_postMessage(channel="C0NOPE", text="x")))["error"] == "channel_not_found"
    with pytest.warns(UserWarning, match="`text` argument is missing"):  # slack_sdk warns, Slack refuses
        assert (await slack_error(client.chat_postMessage(channel=CHANNEL)))["error"] == "no_text"
    assert (await slack_error(client.chat_postMessage(channel="C0QUIET", text="x")))["error"] == "not_in_channel"
    too_long = await slack_error(client.chat_postMessage(channel=CHANNEL, text="x" * 40_001))
    assert too_long["error"] == "msg_too_long"
    by_name = await client.chat_postMessage(channel="#ray-ops", text="by name")
    assert by_name["channel"] == CHANNEL
    dm = await client.chat_postMessage(channel=ALICE, text="psst")
    assert dm["channel"].startswith("D")


async def test_the_bot_taken_out_of_a_channel_cannot_post_there(emulator: SlackEmulator, client: AsyncWebClient):
    posted = await client.chat_postMessage(channel=CHANNEL, text="before")
    emulator.set_member(CHANNEL, False)
    assert (await slack_error(client.chat_postMessage(channel=CHANNEL, text="x")))["error"] == "not_in_channel"
    error = await slack_error(client.chat_postEphemeral(channel=CHANNEL, user=ALICE, text="x"))
    assert error["error"] == "not_in_channel"
    assert (await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="edited"))["ok"]
    assert (await client.conversations_info(channel=CHANNEL))["channel"]["is_member"] is False
    emulator.set_member(CHANNEL, True)
    assert (await client.chat_postMessage(channel=CHANNEL, text="back"))["ok"]


async def test_post_ephemeral(emulator: SlackEmulator, client: AsyncWebClient) -> None:
    root = await client.chat_postMessage(channel=CHANNEL, text="root")
    response = await client.chat_postEphemeral(channel=CHANNEL, user=ALICE, text="only you", thread_ts=root["ts"])
    assert float(response["message_ts"]) > float(root["ts"])
    assert emulator.ephemerals == [
        {
            "channel": CHANNEL,
            "user": ALICE,
            "thread_ts": root["ts"],
            "message_ts": response["message_ts"],
            "text": "only you",
        }
    ]
    error = await slack_error(client.chat_postEphemeral(channel=CHANNEL, user=BOB, text="x"))
    assert error["error"] == "user_not_in_channel"
    assert (await slack_error(client.chat_postEphemeral(channel=CHANNEL, user="U0GHOST", text="x")))[
        "error"
    ] == "user_not_found"


# -- views.* ---------------------------------------------------------------------------------------------------------


async def test_trigger_ids_are_single_use_and_expire(
    emulator: SlackEmulator, client: AsyncWebClient, clock: FakeClock
) -> None:
    trigger = emulator.new_trigger_id(user=ALICE)
    opened = await client.views_open(trigger_id=trigger, view=modal())
    view = opened["view"]
    assert view["id"].startswith("V0") and view["hash"] and view["root_view_id"] == view["id"]
    assert emulator.views[view["id"]]["title"]["text"] == "Resize prod"

    assert (await slack_error(client.views_open(trigger_id=trigger, view=modal())))["error"] == "exchanged_trigger_id"
    assert (await slack_error(client.views_open(trigger_id="1.2.abc", view=modal())))["error"] == "invalid_trigger_id"

    late = emulator.new_trigger_id()
    clock.advance(3.01)
    assert (await slack_error(client.views_open(trigger_id=late, view=modal())))["error"] == "expired_trigger_id"
    in_time = emulator.new_trigger_id()
    clock.advance(2.9)
    assert (await client.views_open(trigger_id=in_time, view=modal()))["ok"]


async def test_views_update_checks_hash_and_external_id(emulator: SlackEmulator, client: AsyncWebClient) -> None:
    view = (await client.views_open(trigger_id=emulator.new_trigger_id(), view=modal(external_id="draft-1")))["view"]
    updated = (
        await client.views_update(
            view_id=view["id"], hash=view["hash"], view=modal(blocks=[section("Ready")], external_id="draft-1")
        )
    )["view"]
    assert updated["id"] == view["id"] and updated["hash"] != view["hash"]
    assert emulator.views[view["id"]]["blocks"] == [section("Ready")]

    stale = await slack_error(client.views_update(view_id=view["id"], hash=view["hash"], view=modal()))
    assert stale["error"] == "hash_conflict"
    by_external = await client.views_update(external_id="draft-1", view=modal(title="Edit", external_id="draft-1"))
    assert by_external["view"]["id"] == view["id"]
    assert (await slack_error(client.views_update(view_id="V0MISSING", view=modal())))["error"] == "not_found"
    duplicate = await slack_error(
        client.views_open(trigger_id=emulator.new_trigger_id(), view=modal(external_id="draft-1"))
    )
    assert duplicate["error"] == "duplicate_external_id"

    emulator.close_view(view["id"])
    closed = await slack_error(client.views_update(view_id=view["id"], view=modal()))
    assert closed["error"] == "not_found"


async def test_views_push_stack_is_limited_to_three(emulator: SlackEmulator, client: AsyncWebClient) -> None:
    root = (await client.views_open(trigger_id=emulator.new_trigger_id(), view=modal(title="Overview")))["view"]
    second = (
        await client.views_push(trigger_id=emulator.new_trigger_id(view_id=root["id"]), view=modal(title="Group 1"))
    )["view"]
    third = (
        await client.views_push(trigger_id=emulator.new_trigger_id(view_id=second["id"]), view=modal(title="Confirm"))
    )["view"]
    assert second["root_view_id"] == root["id"] and second["previous_view_id"] == root["id"]
    assert third["previous_view_id"] == second["id"]
    assert emulator.view_stacks == {root["id"]: [root["id"], second["id"], third["id"]]}

    fourth = await slack_error(
        client.views_push(trigger_id=emulator.new_trigger_id(view_id=third["id"]), view=modal(title="Too deep"))
    )
    assert fourth["error"] == "push_limit_reached"
    reused = await slack_error(
        client.views_push(trigger_id=emulator.calls_for("views.push")[0].args["trigger_id"], view=modal())
    )
    assert reused["error"] == "exchanged_trigger_id"


# -- limits ----------------------------------------------------------------------------------------------------------


async def test_block_and_view_limits(emulator: SlackEmulator, client: AsyncWebClient) -> None:
    fifty = [section(f"row {i}") for i in range(50)]
    assert (await client.chat_postMessage(channel=CHANNEL, text="50 blocks", blocks=fifty))["ok"]
    too_many = await slack_error(client.chat_postMessage(channel=CHANNEL, text="51", blocks=[*fifty, section("x")]))
    assert too_many["error"] == "invalid_blocks"
    assert too_many["response_metadata"]["messages"] == ["[ERROR] no more than 50 items allowed [json-pointer:/blocks]"]

    def open_modal(view: dict[str, Any]) -> Any:
        return client.views_open(trigger_id=emulator.new_trigger_id(), view=view)

    assert (await open_modal(modal(title="x" * 24)))["ok"]
    long_title = await slack_error(open_modal(modal(title="x" * 25)))
    assert long_title["error"] == "invalid_arguments"
    assert long_title["response_metadata"]["messages"] == [
        "[ERROR] must be less than 25 characters [json-pointer:/view/title/text]"
    ]
    assert (await open_modal(modal(private_metadata="m" * 3000)))["ok"]
    metadata = await slack_error(open_modal(modal(private_metadata="m" * 3001)))
    assert metadata["error"] == "invalid_arguments"
    assert "/view/private_metadata" in metadata["response_metadata"]["messages"][0]
    callback = await slack_error(open_modal(modal(callback_id="c" * 256)))
    assert "/view/callback_id" in callback["response_metadata"]["messages"][0]
    blocks = await slack_error(open_modal(modal(blocks=[section(str(i)) for i in range(101)])))
    assert "no more than 100 items allowed [json-pointer:/view/blocks]" in blocks["response_metadata"]["messages"][0]
    assert len(emulator.views) == 2, "rejected views are not stored"


async def test_block_contents_are_validated(client: AsyncWebClient) -> None:
    option = {"text": {"type": "plain_text", "text": "prod"}, "value": "prod"}
    other = {"text": {"type": "plain_text", "text": "staging"}, "value": "staging"}
    select = {"type": "static_select", "action_id": "cluster", "options": [option], "initial_option": other}
    cases = {
        "/blocks/1/block_id": [section("a", block_id="b1"), section("b", block_id="b1")],
        "/blocks/0/text/text": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
        "/blocks/0/elements/0/initial_option": [{"type": "actions", "elements": [select]}],
        "/blocks/0/type": [{"type": "carousel"}],
        "/blocks/0/text/type": [{"type": "header", "text": {"type": "mrkdwn", "text": "*h*"}}],
    }
    for pointer, blocks in cases.items():
        error = await slack_error(client.chat_postMessage(channel=CHANNEL, text="x", blocks=blocks))
        assert error["error"] == "invalid_blocks", pointer
        assert any(pointer in m for m in error["response_metadata"]["messages"]), (pointer, error)
    select["initial_option"] = option
    assert (
        await client.chat_postMessage(channel=CHANNEL, text="x", blocks=[{"type": "actions", "elements": [select]}])
    )["ok"]


# -- users, groups, conversations ------------------------------------------------------------------------------------


async def test_users_usergroups_and_conversations(client: AsyncWebClient) -> None:
    assert (await client.usergroups_users_list(usergroup="S0ONCALL"))["users"] == [ALICE, BOB]
    assert (await slack_error(client.usergroups_users_list(usergroup="S0NOPE")))["error"] == "no_such_subteam"
    user = (await client.users_info(user=ALICE))["user"]
    assert (user["id"], user["name"], user["real_name"], user["tz"]) == (ALICE, "alice", "Alice A", "Europe/Berlin")
    assert (await slack_error(client.users_info(user="U0GHOST")))["error"] == "user_not_found"
    channel = (await client.conversations_info(channel=CHANNEL))["channel"]
    assert (channel["id"], channel["name"], channel["is_member"]) == (CHANNEL, "ray-ops", True)
    assert (await slack_error(client.conversations_info(channel="C0NOPE")))["error"] == "channel_not_found"


# -- failure injection -----------------------------------------------------------------------------------------------


async def test_rate_limit_is_retried_by_the_sdk_handler(
    emulator: SlackEmulator, client: AsyncWebClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []

    async def record_sleep(seconds: float) -> None:
        slept.append(seconds)

    # The handler sleeps Retry-After plus jitter; record the sleep instead of taking it.
    monkeypatch.setattr(builtin_async_handlers.asyncio, "sleep", record_sleep)
    emulator.inject("chat.postMessage", rate_limited=7)
    retrying = AsyncWebClient(
        token=BOT_TOKEN, base_url=emulator.api_url, retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)]
    )
    response = await retrying.chat_postMessage(channel=CHANNEL, text="after the storm")
    assert response["ok"]
    attempts = emulator.calls_for("chat.postMessage")
    assert [(c.status, c.error) for c in attempts] == [(429, "ratelimited"), (200, None)]
    assert len(slept) == 1 and 7 <= slept[0] < 8
    assert [m["text"] for m in emulator.channel_messages(CHANNEL)] == ["after the storm"]


async def test_rate_limit_without_retry_handler_surfaces(emulator: SlackEmulator, client: AsyncWebClient) -> None:
    emulator.inject("views.open", rate_limited=30)
    with pytest.raises(SlackApiError) as failure:
        await client.views_open(trigger_id=emulator.new_trigger_id(), view=modal())
    assert failure.value.response.status_code == 429
    assert failure.value.response.headers["Retry-After"] == "30"
    assert failure.value.response["error"] == "ratelimited"


async def test_injected_errors_surface_as_slack_api_error(emulator: SlackEmulator, client: AsyncWebClient) -> None:
    emulator.inject("users.info", error="fatal_error", times=2)
    for _ in range(2):
        assert (await slack_error(client.users_info(user=ALICE)))["error"] == "fatal_error"
    assert (await client.users_info(user=ALICE))["ok"]
    with pytest.raises(ValueError):
        emulator.inject("users.info")


# -- response_url ----------------------------------------------------------------------------------------------------


async def test_response_url_is_recorded_and_limited(emulator: SlackEmulator, clock: FakeClock) -> None:
    url = emulator.new_response_url(channel=CHANNEL, user=ALICE)
    webhook = AsyncWebhookClient(url)
    first = await webhook.send(text="working…")
    assert first.status_code == 200
    assert (await webhook.send(text="done", response_type="in_channel")).status_code == 200
    for _ in range(3):
        assert (await webhook.send(text="more")).status_code == 200
    sixth = await webhook.send(text="one too many")
    assert sixth.status_code == 404 and "used_url" in sixth.body

    posts = emulator.calls_for("response_url")
    assert [(c.ok, c.error) for c in posts] == [(True, None)] * 5 + [(False, "used_url")]
    assert posts[0].args["text"] == "working…" and posts[0].url == url
    assert [m["text"] for m in emulator.channel_messages(CHANNEL)] == ["done"]
    assert [e["text"] for e in emulator.ephemerals] == ["working…", "more", "more", "more"]

    stale = AsyncWebhookClient(emulator.new_response_url(channel=CHANNEL))
    clock.advance(30 * 60 + 1)
    expired = await stale.send(text="late")
    assert expired.status_code == 404 and "expired_url" in expired.body


# -- waiting -----------------------------------------------------------------------------------------------------------


async def test_wait_for_sees_calls_made_after_it_started(emulator: SlackEmulator, client: AsyncWebClient) -> None:
    def is_update(call: ApiCall) -> bool:
        return call.method == "chat.update"

    waiting = asyncio.ensure_future(emulator.wait_for(is_update))
    await asyncio.sleep(0)  # let the waiter register before the call exists
    root = await client.chat_postMessage(channel=CHANNEL, text="a")
    await client.chat_update(channel=CHANNEL, ts=root["ts"], text="b")
    call = await waiting
    assert call.args["ts"] == root["ts"] and call.ok
    assert (await emulator.wait_for(is_update)) is call, "an already recorded call is returned at once"
    with pytest.raises(TimeoutError):
        await emulator.wait_for(lambda c: c.method == "views.open", timeout=0.05)


async def test_wait_for_sync_from_another_thread(emulator: SlackEmulator, client: AsyncWebClient) -> None:
    waiting = asyncio.get_running_loop().run_in_executor(
        None, emulator.wait_for_sync, lambda c: c.method == "auth.test"
    )
    await client.auth_test()
    call = await waiting
    assert call.method == "auth.test" and call.ok


# -- Socket Mode -------------------------------------------------------------------------------------------------------


async def test_socket_event_needs_a_connected_client(emulator: SlackEmulator) -> None:
    with pytest.raises(SocketModeError):
        await emulator.send_socket_event("events_api", {"type": "event_callback"})
    with pytest.raises(TimeoutError):
        await emulator.wait_for_socket_client(timeout=0.05)


async def test_bolt_socket_mode_handler_acks_and_runs_the_listener(emulator: SlackEmulator) -> None:
    app = AsyncApp(client=AsyncWebClient(token=BOT_TOKEN, base_url=emulator.api_url), signing_secret="unused")
    listener_done = asyncio.Event()

    @app.command("/ray")
    async def ray(ack: Any, command: dict[str, Any], client: AsyncWebClient) -> None:
        await ack(f"Working on `{command['text']}`")
        await client.chat_postMessage(channel=command["channel_id"], text=f"resized {command['text']}")
        listener_done.set()

    handler = AsyncSocketModeHandler(app, app_token=APP_TOKEN)
    await handler.connect_async()
    try:
        await emulator.wait_for_socket_client()
        assert emulator.calls_for("apps.connections.open")[0].token == APP_TOKEN
        payload = emulator.slash_command_payload("/ray", "resize prod", user_id=ALICE, channel_id=CHANNEL)
        ack = await emulator.send_socket_event("slash_commands", payload)
        assert ack["payload"] == {"text": "Working on `resize prod`"}
        assert ack["envelope_id"] == emulator.socket_acks[0]["envelope_id"]

        posted = await emulator.wait_for(lambda c: c.method == "chat.postMessage")
        assert posted.ok
        assert (posted.args["channel"], posted.args["text"]) == (CHANNEL, "resized resize prod")
        await listener_done.wait()
        assert [m["text"] for m in emulator.channel_messages(CHANNEL)] == ["resized resize prod"]
    finally:
        await handler.close_async()
        socket_client = handler.client
        background = [
            socket_client.message_processor,
            socket_client.current_session_monitor,
            socket_client.message_receiver,
        ]
        await asyncio.gather(*(task for task in background if task is not None), return_exceptions=True)


# -- Socket Mode: several connections, acknowledgement, redelivery ----------------------------------------------------


class SocketClient:
    """A bare Socket Mode client over `websockets`: it acknowledges an envelope only when the test says so."""

    def __init__(self, ws: ClientConnection, hello: dict[str, Any]) -> None:
        self.ws = ws
        self.hello = hello
        self.id: str = hello["debug_info"]["connection_id"]

    @classmethod
    async def connect(cls, emulator: SlackEmulator) -> SocketClient:
        ws = await cls.open_raw(emulator)
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello", hello
        return cls(ws, hello)

    @staticmethod
    async def open_raw(emulator: SlackEmulator) -> ClientConnection:
        opened = await AsyncWebClient(token=APP_TOKEN, base_url=emulator.api_url).apps_connections_open(
            app_token=APP_TOKEN
        )
        return await websockets.asyncio.client.connect(opened["url"], proxy=None, open_timeout=5)

    async def receive(self) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.ws.recv(), 5))

    async def ack(self, envelope: dict[str, Any], payload: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"envelope_id": envelope["envelope_id"]}
        if payload is not None:
            message["payload"] = payload
        await self.ws.send(json.dumps(message))


class SocketWorld:
    """Emulators and bare clients made by one test, all closed after it."""

    def __init__(self) -> None:
        self.emulators: list[SlackEmulator] = []
        self.clients: list[SocketClient] = []

    def emulator(self, **options: Any) -> SlackEmulator:
        emulator = SlackEmulator(bot_token=BOT_TOKEN, app_token=APP_TOKEN, seed=7, **options)
        emulator.start()
        self.emulators.append(emulator)
        return emulator

    async def connect(self, emulator: SlackEmulator) -> SocketClient:
        client = await SocketClient.connect(emulator)
        self.clients.append(client)
        return client


@pytest.fixture
async def socket_world() -> AsyncIterator[SocketWorld]:
    world = SocketWorld()
    yield world
    for client in world.clients:
        await client.ws.close()
    for emulator in world.emulators:
        emulator.stop()


def mention(n: int) -> dict[str, Any]:
    """An events_api payload; copies of it share its event_id, as Slack's duplicate deliveries do."""
    return {"type": "event_callback", "event_id": f"Ev{n:04d}", "event": {"type": "app_mention", "text": f"#{n}"}}


def chain_of(emulator: SlackEmulator, first_envelope_id: str) -> list[tuple[str, int, str]]:
    """(connection, retry_attempt, retry_reason) of every delivery of one envelope, oldest first."""
    return [
        (d.connection_id, d.retry_attempt, d.retry_reason)
        for d in emulator.socket_deliveries
        if d.first_envelope_id == first_envelope_id
    ]


async def test_envelopes_go_round_robin_over_the_open_connections(socket_world: SocketWorld) -> None:
    emulator = socket_world.emulator(ack_timeout=None)
    clients = [await socket_world.connect(emulator) for _ in range(3)]
    assert [c.id for c in clients] == ["conn-1", "conn-2", "conn-3"]
    assert [c.hello["num_connections"] for c in clients] == [1, 2, 3]
    assert await emulator.wait_for_socket_clients(3) == ["conn-1", "conn-2", "conn-3"]
    assert emulator.socket_client_count == 3

    envelope_ids = [(await emulator.deliver_socket_event("events_api", mention(n)))[0] for n in range(6)]
    received: dict[str, list[str]] = {}
    for client in clients:
        for _ in range(2):
            envelope = await client.receive()
            assert envelope["type"] == "events_api" and envelope["accepts_response_payload"] is False
            assert (envelope["retry_attempt"], envelope["retry_reason"]) == (0, "")
            received.setdefault(client.id, []).append(envelope["payload"]["event"]["text"])
            await client.ack(envelope)
    assert received == {"conn-1": ["#0", "#3"], "conn-2": ["#1", "#4"], "conn-3": ["#2", "#5"]}

    acks = [await emulator.wait_for_ack(envelope_id) for envelope_id in envelope_ids]
    assert [a.connection_id for a in acks] == ["conn-1", "conn-2", "conn-3"] * 2
    assert [a.envelope_id for a in acks] == envelope_ids
    connections = emulator.socket_connections
    assert [c.delivered for c in connections] == [tuple(envelope_ids[i::3]) for i in range(3)]
    assert [c.acked for c in connections] == [c.delivered for c in connections]
    assert emulator.socket_give_ups == []


async def test_an_envelope_may_go_to_a_chosen_connection_or_to_several(socket_world: SocketWorld) -> None:
    emulator = socket_world.emulator(ack_timeout=None)
    first, second = [await socket_world.connect(emulator) for _ in range(2)]

    sending = asyncio.ensure_future(emulator.send_socket_event("slash_commands", {"text": "hi"}, connection="conn-2"))
    envelope = await second.receive()
    assert envelope["type"] == "slash_commands" and envelope["accepts_response_payload"] is True
    assert "retry_attempt" not in envelope, "only events carry retry fields on their first delivery"
    await second.ack(envelope, {"text": "Working…"})
    assert await sending == {"envelope_id": envelope["envelope_id"], "payload": {"text": "Working…"}}

    copies = await emulator.deliver_socket_event("events_api", mention(7), copies=2)
    one, other = await first.receive(), await second.receive()
    assert {one["envelope_id"], other["envelope_id"]} == set(copies) and len(set(copies)) == 2
    assert one["payload"] == other["payload"] == mention(7)
    await first.ack(one)
    await second.ack(other)
    acks = [await emulator.wait_for_ack(envelope_id) for envelope_id in copies]
    assert {a.connection_id for a in acks} == {"conn-1", "conn-2"}

    named = await emulator.deliver_socket_event("interactive", {"type": "block_actions"}, connections=["conn-1"])
    assert (await first.receive())["envelope_id"] == named[0]

    with pytest.raises(SocketModeError, match="3 copies need 3 open connections; 2 open"):
        await emulator.deliver_socket_event("events_api", mention(8), copies=3)
    with pytest.raises(KeyError):
        await emulator.deliver_socket_event("events_api", mention(8), connections=["conn-9"])
    with pytest.raises(ValueError):
        await emulator.deliver_socket_event("alerts", mention(8))
    await first.ws.close()
    await emulator.wait_for_socket_clients(1)
    with pytest.raises(SocketModeError, match="conn-1 is not open"):
        await emulator.send_socket_event("events_api", mention(8), connection="conn-1")


async def test_an_envelope_not_acknowledged_in_time_goes_to_another_connection(socket_world: SocketWorld) -> None:
    emulator = socket_world.emulator(ack_timeout=None)  # only expire_envelope times an envelope out
    slow, quick = [await socket_world.connect(emulator) for _ in range(2)]
    [first_id] = await emulator.deliver_socket_event("events_api", mention(1), connections=[slow.id])
    first = await slow.receive()

    await emulator.expire_envelope(first_id)
    again = await quick.receive()
    assert again["envelope_id"] != first_id, "a redelivery is a new envelope"
    assert (again["retry_attempt"], again["retry_reason"]) == (1, "timeout")
    assert again["payload"] == first["payload"]
    await quick.ack(again)
    ack = await emulator.wait_for_ack(first_id)
    assert (ack.envelope_id, ack.first_envelope_id, ack.connection_id) == (again["envelope_id"], first_id, quick.id)
    assert chain_of(emulator, first_id) == [("conn-1", 0, ""), ("conn-2", 1, "timeout")]

    # The slow replica's late ack is recorded and changes nothing. A round trip on the same connection after it
    # proves the emulator has read it (frames of one connection are read in order).
    await slow.ack(first)
    [probe] = await emulator.deliver_socket_event("events_api", mention(2), connections=[slow.id])
    await slow.ack(await slow.receive())
    await emulator.wait_for_ack(probe)
    late = [a for a in emulator.socket_ack_log if a.envelope_id == first_id]
    assert [(a.first_envelope_id, a.connection_id) for a in late] == [(first_id, slow.id)]
    assert chain_of(emulator, first_id) == [("conn-1", 0, ""), ("conn-2", 1, "timeout")]


async def test_the_ack_timer_runs_by_itself(socket_world: SocketWorld) -> None:
    emulator = socket_world.emulator(ack_timeout=0.2)
    silent, answering = [await socket_world.connect(emulator) for _ in range(2)]
    [first_id] = await emulator.deliver_socket_event("slash_commands", {"text": "x"}, connections=[silent.id])
    redelivery = await emulator.wait_for_delivery(lambda d: d.first_envelope_id == first_id and d.retry_attempt == 1)
    assert (redelivery.connection_id, redelivery.retry_reason) == (answering.id, "timeout")
    envelope = await answering.receive()
    assert (envelope["retry_attempt"], envelope["retry_reason"]) == (1, "timeout"), "redeliveries say so, any type"
    await answering.ack(envelope, {"text": "ok"})
    ack = await emulator.wait_for_ack(first_id)
    assert ack.message["payload"] == {"text": "ok"}
    assert silent.id not in {a.connection_id for a in emulator.socket_ack_log}


async def test_a_closed_connection_s_envelopes_go_to_another_connection_at_once(socket_world: SocketWorld) -> None:
    emulator = socket_world.emulator(ack_timeout=None)
    clients = {c.id: c for c in [await socket_world.connect(emulator) for _ in range(3)]}

    [lost] = await emulator.deliver_socket_event("events_api", mention(1), connections=["conn-1"])
    await clients["conn-1"].receive()
    await clients["conn-1"].ws.close()  # the replica goes away without acknowledging
    moved = await emulator.wait_for_delivery(lambda d: d.first_envelope_id == lost and d.retry_attempt == 1)
    assert moved.retry_reason == "connection_closed" and moved.connection_id != "conn-1"
    taker = clients[moved.connection_id]
    await taker.ack(await taker.receive())
    assert (await emulator.wait_for_ack(lost)).connection_id == taker.id
    closed = emulator.socket_connection("conn-1")
    assert not closed.open and closed.close_reason == "closed by the client (1000)"
    assert closed.delivered == (lost,) and closed.acked == ()

    # The server drops a connection (no close frame), as when a replica's network goes.
    [dropped] = await emulator.deliver_socket_event("events_api", mention(2), connections=[taker.id])
    await emulator.close_socket_connection(taker.id, abrupt=True)
    assert emulator.socket_connection(taker.id).close_reason == "dropped by the server"
    [survivor] = [c for c in clients.values() if c.id not in ("conn-1", taker.id)]
    envelope = await survivor.receive()
    assert (envelope["payload"], envelope["retry_reason"]) == (mention(2), "connection_closed")
    await survivor.ack(envelope)
    assert (await emulator.wait_for_ack(dropped)).connection_id == survivor.id
    assert await emulator.wait_for_socket_clients(1) == [survivor.id]


async def test_with_no_connection_open_a_redelivery_waits_for_the_next_one(socket_world: SocketWorld) -> None:
    emulator = socket_world.emulator(ack_timeout=None)
    only = await socket_world.connect(emulator)
    [envelope_id] = await emulator.deliver_socket_event("events_api", mention(1))
    await only.receive()
    await only.ws.close()
    await emulator.wait_for_socket_clients(0)

    restarted = await socket_world.connect(emulator)
    envelope = await restarted.receive()
    assert (envelope["retry_attempt"], envelope["retry_reason"]) == (1, "connection_closed")
    await restarted.ack(envelope)
    assert (await emulator.wait_for_ack(envelope_id)).connection_id == restarted.id == "conn-2"


async def test_the_emulator_gives_up_after_three_retries(socket_world: SocketWorld) -> None:
    emulator = socket_world.emulator(ack_timeout=None)
    only = await socket_world.connect(emulator)
    [envelope_id] = await emulator.deliver_socket_event("events_api", mention(1))
    for attempt in range(4):
        envelope = await only.receive()  # no other connection: the same one gets it again
        assert envelope["retry_attempt"] == attempt
        await emulator.expire_envelope(envelope_id)
    with pytest.raises(SocketModeError, match="not acknowledged in 4 deliveries"):
        await emulator.wait_for_ack(envelope_id)
    assert emulator.socket_give_ups == [SocketGiveUp(envelope_id, "events_api", 4, "timeout")]
    assert chain_of(emulator, envelope_id) == [("conn-1", 0, "")] + [("conn-1", n, "timeout") for n in (1, 2, 3)]
    with pytest.raises(TimeoutError):
        await emulator.wait_for_delivery(lambda d: d.retry_attempt == 4, timeout=0.05)


async def test_disconnect_message_then_server_side_close(socket_world: SocketWorld) -> None:
    emulator = socket_world.emulator()
    client = await socket_world.connect(emulator)
    await emulator.send_socket_disconnect(client.id, "warning")
    assert await client.receive() == {
        "type": "disconnect",
        "reason": "warning",
        "debug_info": {"host": "applink-emulator"},
    }
    assert emulator.socket_connection(client.id).disconnects == ("warning",)
    assert emulator.socket_client_count == 1, "the connection stays until it is closed"
    with pytest.raises(ValueError):
        await emulator.send_socket_disconnect(client.id, "bored")

    await emulator.close_socket_connection(client.id)
    with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
        await client.receive()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert emulator.socket_connection(client.id).close_reason == "closed by the server"
    assert await emulator.wait_for_socket_clients(0) == []


async def test_connections_past_the_limit_are_told_too_many_websockets(socket_world: SocketWorld) -> None:
    emulator = socket_world.emulator(max_socket_connections=2)
    [await socket_world.connect(emulator) for _ in range(2)]
    third = await SocketClient.open_raw(emulator)
    try:
        assert json.loads(await third.recv()) == {"type": "disconnect", "reason": "too_many_websockets"}
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            await third.recv()
    finally:
        await third.close()
    assert emulator.socket_connection_ids == ["conn-1", "conn-2"]
    assert emulator.socket_connection("conn-3").close_reason == "too_many_websockets"


async def test_bolt_moves_to_a_new_connection_when_told_to_disconnect(socket_world: SocketWorld) -> None:
    emulator = socket_world.emulator()
    app = AsyncApp(client=AsyncWebClient(token=BOT_TOKEN, base_url=emulator.api_url), signing_secret="unused")

    @app.command("/ray")
    async def ray(ack: Any, command: dict[str, Any]) -> None:
        await ack(f"on it: {command['text']}")

    handler = AsyncSocketModeHandler(app, app_token=APP_TOKEN)
    await handler.connect_async()
    try:
        await emulator.wait_for_socket_connection("conn-1")
        await emulator.send_socket_disconnect("conn-1", "refresh_requested")
        await emulator.wait_for_socket_connection("conn-2")
        assert await emulator.wait_for_socket_clients(1) == ["conn-2"]
        assert len(emulator.calls_for("apps.connections.open")) == 2
        payload = emulator.slash_command_payload("/ray", "list", user_id="U0ALICE", channel_id="C0OPS")
        ack = await emulator.send_socket_event("slash_commands", payload)
        assert ack["payload"] == {"text": "on it: list"}
        assert emulator.socket_ack_log[-1].connection_id == "conn-2"
    finally:
        await handler.close_async()
        socket_client = handler.client
        background = [
            socket_client.message_processor,
            socket_client.current_session_monitor,
            socket_client.message_receiver,
        ]
        await asyncio.gather(*(task for task in background if task is not None), return_exceptions=True)
