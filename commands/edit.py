"""/ray edit <cluster> (action `edit`): the whole UpdateRayCluster request in a modal.

    /ray edit prod   views.open("Loading…") with the trigger at once → GetRayCluster → views.update(overview)
    @raybot edit     (no trigger_id in mentions) an ephemeral button that opens the same editor
    overview         pick a group → views.push(group editor); Add group → push; Remove group… → update
    Review           inline errors, or push the confirmation (diff before → after, Apply)
    Apply            the result goes to the channel (and thread) the editor was opened from, like a quick
                     change; if the cluster changed since the editor opened, nothing is sent: the modal shows
                     what changed and "Review again" shows the edit on the cluster as it is now

The draft lives in the store; the views carry only its key. Permission is asked again on every
submission and on Apply, for the channel the draft carries.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError

from bot.dispatch import CommandContext, describe_error, serve
from bot.emr.changes import ChangeError, DiffEntry
from bot.emr.errors import EmrError
from bot.emr.models import ClusterFields, RayCluster
from bot.errors import ActionRefused, MalformedPayload
from bot.flow import ChangeRequest, cost_text, run_change
from bot.grammar import Edit
from bot.permissions import Subject, check_change
from bot.replay import changes_replay
from bot.services import Services
from bot.slack import blocks, modals, mrkdwn, payloads
from bot.slack.conversation import Invocation, invocation_or_none
from bot.slack.words import change_in_words

log = logging.getLogger("raybot.edit")

OPEN_EDITOR_ACTION = "raybot_edit_open"
DRAFT_TTL_SECONDS = 3600.0
STALE_MESSAGE = "this editor is closed: it was applied already, or open too long; open it again if needed"


class StaleDraft(Exception):
    """The cluster changed since the editor opened: nothing is sent; the modal shows what changed."""

    def __init__(self, fresh: RayCluster, entries: list[DiffEntry]) -> None:
        self.fresh = fresh
        self.entries = entries
        super().__init__("the cluster changed since the editor opened")


# --- drafts ----------------------------------------------------------------------------------------------------------


async def save(services: Services, draft: modals.Draft) -> None:
    await services.store.put_draft(
        draft.model_dump(mode="json"), user_id=draft.user_id, key=draft.key, ttl=DRAFT_TTL_SECONDS
    )


async def load(services: Services, key: Any, user_id: str) -> modals.Draft:
    """The draft `key` (a view's private_metadata) of `user_id`; raises MalformedPayload for a key raybot never
    made, ActionRefused when it is gone or someone else's."""
    data = await services.store.get_draft(payloads.draft_key(key))
    if data is None:
        raise ActionRefused(STALE_MESSAGE)
    draft = modals.Draft.model_validate(data)
    if draft.user_id != user_id:
        raise ActionRefused("this editor belongs to someone else")
    return draft


# --- opening ---------------------------------------------------------------------------------------------------------


async def open_editor(
    services: Services, *, user_id: str, channel_id: str, thread_ts: str | None, alias: str, trigger_id: str
) -> None:
    """Open the loading modal at once (the trigger is single use and lives 3 s), then fill it."""
    opened = await services.slack.views_open(trigger_id=trigger_id, view=modals.loading_view(alias))
    await fill_editor(
        services,
        view_id=opened["view"]["id"],
        user_id=user_id,
        channel_id=channel_id,
        thread_ts=thread_ts,
        alias=alias,
    )


async def fill_from_read(
    services: Services,
    *,
    view_id: str,
    user_id: str,
    channel_id: str,
    alias: str,
    action: str,
    build: Callable[[Subject, RayCluster], Awaitable[dict[str, Any]]],
) -> None:
    """Read the cluster as `user_id` may for `action`, then turn the loading modal into `build`'s view.

    Every failure (permission, the read, the cloud's refusal) ends in the modal as a readable error, never in
    a spinner.
    """
    try:
        subject = await services.subject(user_id, channel_id)
        target = services.cluster(subject, alias, action)
        services.require(subject, action, alias)
        cluster = await services.emr.get_cluster(
            target.workspace, target.cluster_id, region=target.region, acting=target.acting
        )
    except EmrError as error:
        view = modals.error_view(alias, error.code, error.message, error.request_id)
    except Exception as error:  # noqa: BLE001 - every failure ends in the modal, never in a spinner
        view = modals.result_view(alias, describe_error(error)[0])
    else:
        view = await build(subject, cluster)
    await services.slack.views_update(view_id=view_id, view=view)


async def fill_editor(
    services: Services, *, view_id: str, user_id: str, channel_id: str, thread_ts: str | None, alias: str
) -> None:
    """Read the cluster and turn the loading modal into the editor (or into a readable error)."""

    async def build(subject: Subject, cluster: RayCluster) -> dict[str, Any]:
        draft = modals.new_draft(alias, cluster, channel_id=channel_id, thread_ts=thread_ts, user_id=user_id)
        await save(services, draft)
        return modals.overview_view(draft)

    await fill_from_read(
        services, view_id=view_id, user_id=user_id, channel_id=channel_id, alias=alias, action="edit", build=build
    )


async def handle(command: Edit, ctx: CommandContext) -> None:
    services, inv = ctx.services, ctx.invocation
    services.cluster(ctx.subject, command.cluster, "edit")
    services.require(ctx.subject, "edit", command.cluster)
    if inv.trigger_id is None:
        # A mention carries no trigger_id, and only a trigger opens a modal: a button gives one.
        value = json.dumps({"alias": command.cluster, "thread_ts": inv.thread_ts})
        text = f"Open the editor of *{command.cluster}*; the result is posted in this thread."
        button = {
            "type": "button",
            "text": {"type": "plain_text", "text": f"Edit {command.cluster}"[:75]},
            "action_id": OPEN_EDITOR_ACTION,
            "value": value,
            "style": "primary",
        }
        await ctx.replies.ephemeral(text, [*blocks.hint(text), {"type": "actions", "elements": [button]}])
        return
    await open_editor(
        services,
        user_id=inv.user_id,
        channel_id=inv.channel_id,
        thread_ts=inv.thread_ts,
        alias=command.cluster,
        trigger_id=inv.trigger_id,
    )


# --- submissions and actions inside the modal ---------------------------------------------------------------------


def _errors(errors: dict[str, str]) -> dict[str, Any]:
    return {"response_action": "errors", "errors": errors}


def _update(view: dict[str, Any]) -> dict[str, Any]:
    return {"response_action": "update", "view": view}


async def _limits(services: Services, draft: modals.Draft, edited: dict[str, Any]) -> list[str]:
    """The policy on this edit, asked again now: raises Denied when `edit` is gone; returns limit violations."""
    subject = await services.subject(draft.user_id, draft.channel_id)
    services.require(subject, "edit", draft.alias)
    decision = check_change(
        services.config,
        subject,
        "edit",
        draft.alias,
        ClusterFields.model_validate(draft.original),
        ClusterFields.model_validate(edited),
    )
    return [] if decision.allowed else [decision.reason]


def _review_cost(services: Services, draft: modals.Draft) -> str | None:
    """What applying the draft would do to the cluster's cost per hour, for the review."""
    return cost_text(services, draft.alias, "edit", draft.original, draft.edited)


async def submit_overview(services: Services, view: dict[str, Any], user_id: str) -> dict[str, Any]:
    draft = await load(services, view.get("private_metadata"), user_id)
    result = modals.parse_overview(payloads.state_values(view), draft)
    if not result.ok:
        return _errors(result.errors)
    violations = await _limits(services, draft, result.edited or {})
    if violations:
        return _errors(modals.role_limit_errors(violations))
    draft = draft.model_copy(update={"edited": result.edited})
    try:
        entries = modals.review_diff(draft)
    except ChangeError as error:
        return _errors({modals.BLOCK_GROUPS: mrkdwn.escape(str(error))[:1000]})
    await save(services, draft)
    return {"response_action": "push", "view": modals.confirm_view(draft, entries, _review_cost(services, draft))}


async def submit_group(services: Services, view: dict[str, Any], user_id: str) -> tuple[dict[str, Any], Any]:
    """Save a group: errors, or a plain ack (pops the editor) plus the overview to update underneath."""
    draft = await load(services, view.get("private_metadata"), user_id)
    try:
        name = modals.group_target(view, draft)
    except modals.UnknownGroupError as error:
        return _errors({modals.BLOCK_GROUP_NAME: str(error)}), None
    result = modals.parse_group(payloads.state_values(view), draft, name)
    if not result.ok:
        return _errors(result.errors), None
    violations = await _limits(services, draft, result.edited or {})
    if violations and not result.removed:
        return _errors(modals.role_limit_errors(violations, group_name=name or "new")), None
    draft = draft.model_copy(update={"edited": result.edited})
    await save(services, draft)
    return {}, modals.overview_view(draft)


async def apply(services: Services, view_id: str, draft: modals.Draft, user_id: str) -> None:
    """Apply `draft` (the modal `view_id` already shows "Applying…"); the modal ends with the outcome."""
    invocation = Invocation(
        user_id=user_id,
        channel_id=draft.channel_id,
        text="",
        thread_ts=draft.thread_ts,
        dedup_key=f"apply:{draft.key}:{draft.read_hash}",
    )

    def check_read(cluster: RayCluster) -> None:
        entries = modals.stale_diff(draft, cluster)
        if entries:
            raise StaleDraft(cluster, entries)

    async def run(ctx: CommandContext) -> None:
        try:
            outcome = await run_change(
                ctx,
                ChangeRequest(
                    alias=draft.alias,
                    action="edit",
                    summary=change_in_words(modals.review_diff(draft)),
                    replay=changes_replay(modals.changes_for(draft)),
                    dedup_key=invocation.dedup_key,
                    check_read=check_read,
                ),
            )
        except StaleDraft as stale:
            rebased = modals.rebase(draft, stale.fresh)
            await save(services, rebased)
            await services.slack.views_update(
                view_id=view_id, view=modals.stale_view(draft, stale.entries, stale.fresh)
            )
            return
        except Exception as error:  # noqa: BLE001 - shown in the modal, where the person is looking
            await services.slack.views_update(
                view_id=view_id, view=modals.result_view(draft.alias, describe_error(error)[0])
            )
            return
        texts = {
            "done": "The cloud accepted the change and is applying it; the channel follows it until it settles "
            "(clusterId, requestId and the change).",
            "failed": "The cloud API refused the change; its Code, Message and RequestId are posted in the channel.",
            "unknown": "raybot does not know whether the change took effect; see the channel.",
            "awaiting_approval": "This change needs a second person's approval: the request is posted in the channel.",
            "unchanged": "The cluster already matches the draft: nothing was sent.",
            "duplicate": "This draft was already applied.",
            "cancelled": "raybot stopped before sending the change: nothing was sent. See the channel.",
        }
        await services.slack.views_update(
            view_id=view_id,
            view=modals.result_view(draft.alias, texts[outcome], outcome=outcome),
        )
        await services.store.delete_draft(draft.key)

    await serve(services, invocation, run)


def register(app: AsyncApp, services: Services) -> None:
    services.commands.register(Edit, handle)

    @app.action(OPEN_EDITOR_ACTION)
    async def on_open(ack, body):  # noqa: ANN001 - Bolt injects by name
        await ack()
        invocation = invocation_or_none(Invocation.from_block_action, body)
        if invocation is None:
            return

        async def run(ctx: CommandContext) -> None:
            value = payloads.json_button_value(body)
            await open_editor(
                services,
                user_id=ctx.invocation.user_id,
                channel_id=ctx.invocation.channel_id,
                thread_ts=payloads.optional_ts(value, "thread_ts"),
                alias=payloads.text(value, "alias", "button", field="value.alias"),
                trigger_id=payloads.trigger_id(body, "button"),
            )

        await serve(services, invocation, run)

    # A view submission is answered in its acknowledgement (the modal shows the outcome), so each one reads the
    # payload inside its try block, and every failure, a forged field included, ends in the modal.

    @app.view_submission(modals.CALLBACK_OVERVIEW)
    async def on_review(ack, body, view):  # noqa: ANN001
        try:
            answer = await submit_overview(services, view, payloads.user_id(body, "editor"))
        except Exception as error:  # noqa: BLE001
            answer = _failed(error)
        await ack(**answer)

    @app.view_submission(modals.CALLBACK_GROUP)
    async def on_save_group(ack, body, view):  # noqa: ANN001
        try:
            response, overview = await submit_group(services, view, payloads.user_id(body, "editor"))
        except Exception as error:  # noqa: BLE001
            await ack(**_failed(error))
            return
        await ack(**response)
        if overview is not None:
            await _update_quietly(services, view.get("root_view_id") or view.get("previous_view_id"), overview)

    @app.view_submission(modals.CALLBACK_CONFIRM)
    async def on_apply(ack, body, view):  # noqa: ANN001
        try:
            user_id = payloads.user_id(body, "editor")
            view_id = payloads.view_id(view)
            draft = await load(services, view.get("private_metadata"), user_id)
        except Exception as error:  # noqa: BLE001
            await ack(**_failed(error))
            return
        await ack(
            **_update(
                modals.result_view(
                    draft.alias, "Applying… the result is also posted in the channel.", outcome="working"
                )
            )
        )
        await apply(services, view_id, draft, user_id)

    @app.view_submission(modals.CALLBACK_STALE)
    async def on_review_again(ack, body, view):  # noqa: ANN001
        try:
            draft = await load(services, view.get("private_metadata"), payloads.user_id(body, "editor"))
            answer = _update(modals.confirm_view(draft, modals.review_diff(draft), _review_cost(services, draft)))
        except Exception as error:  # noqa: BLE001
            answer = _failed(error)
        await ack(**answer)

    @app.view_closed(modals.CALLBACK_OVERVIEW)
    async def on_close(ack, view):  # noqa: ANN001
        await ack()
        try:
            key = payloads.view_draft_key(view)
        except MalformedPayload as error:
            # Closing needs no answer; a key raybot never made names no draft to delete.
            log.warning("ignored a closed editor: its %s is unreadable", error.field)
            return
        await services.store.delete_draft(key)

    async def in_modal(body: dict[str, Any], step: Callable[[dict[str, Any], modals.Draft], Awaitable[None]]) -> None:
        """An action inside the editor: load its draft and run `step`; a failure ends in the modal."""
        view = body.get("view")
        try:
            draft = await load(services, payloads.view_draft_key(view), payloads.user_id(body))
            await step(view, draft)
        except Exception as error:  # noqa: BLE001
            await _show_failure(services, view, error)

    @app.action(modals.ACTION_EDIT_GROUP)
    async def on_pick_group(ack, body):  # noqa: ANN001
        await ack()

        async def push_editor(view: dict[str, Any], draft: modals.Draft) -> None:
            name = modals.selected_group(draft, payloads.selected_value(body))
            trigger_id = payloads.trigger_id(body, "editor")
            await services.slack.views_push(trigger_id=trigger_id, view=modals.group_view(draft, name))

        await in_modal(body, push_editor)

    @app.action(modals.ACTION_ADD_GROUP)
    async def on_add_group(ack, body):  # noqa: ANN001
        await ack()

        async def push_new(view: dict[str, Any], draft: modals.Draft) -> None:
            trigger_id = payloads.trigger_id(body, "editor")
            await services.slack.views_push(trigger_id=trigger_id, view=modals.group_view(draft, None))

        await in_modal(body, push_new)

    @app.action(modals.ACTION_REMOVE_GROUP)
    async def on_remove_group(ack, body):  # noqa: ANN001
        await ack()

        async def remove(view: dict[str, Any], draft: modals.Draft) -> None:
            name = modals.selected_group(draft, payloads.selected_value(body))
            if name is None:
                return
            draft = draft.model_copy(update={"edited": modals.remove_group(draft, name)})
            await save(services, draft)
            await services.slack.views_update(
                view_id=payloads.view_id(view), hash=view.get("hash"), view=modals.overview_view(draft)
            )

        await in_modal(body, remove)


def _failed(error: BaseException) -> dict[str, Any]:
    """The acknowledgement of a submission that failed: the modal turns into what went wrong."""
    return _update(modals.result_view("raybot", describe_error(error)[0]))


async def _update_quietly(services: Services, view_id: str | None, view: dict[str, Any]) -> None:
    if view_id is None:
        return
    try:
        await services.slack.views_update(view_id=view_id, view=view)
    except SlackApiError as error:
        log.error("could not refresh the editor overview: %s", error.response.get("error"))


async def _show_failure(services: Services, view: Any, error: BaseException) -> None:
    """A failed action inside a modal ends in the modal as a readable message (if there is a modal to show it in)."""
    text = describe_error(error)[0]
    view_id = payloads.optional_text(view, "id")
    if view_id is None:
        log.warning("could not show a failure (%s): the action carries no view to show it in", type(error).__name__)
        return
    try:
        await services.slack.views_update(view_id=view_id, view=modals.result_view("raybot", text))
    except SlackApiError as failure:
        log.error("could not show a failure in a modal: %s", failure.response.get("error"))
