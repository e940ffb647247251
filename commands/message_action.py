"""The message shortcut "Ray cluster action": from an alert to a resized cluster, answered in the alert's thread.

    shortcut on a message   which clusters the message names (bot.slack.alert_names: aliases, clusterIds), among
                            those the person may resize or edit in this channel:
        names one of them (or the channel has only one and the message names none)
                            → the quick resize of it (bot.slack.quick_resize), its named group preselected;
                              the full editor instead when the person may edit but not resize it
        names none, several, or one the person may not change
                            → a picker: only the named ones when several are; preselected when exactly one fits
    quick resize            typing → views.update with what the number does and the limit that applies;
                            Submit → bot.flow.run_change (as /ray resize), the outcome in the alert's thread;
                            "Open the full editor" → the editor of the same cluster (commands/edit.py)

Permission is asked again on every step that acts: each preview, Submit, and the change itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError

from bot.dispatch import CommandContext, describe_error, serve
from bot.emr.changes import SetReplicas, summarize
from bot.emr.models import RayCluster
from bot.errors import ActionRefused, MalformedPayload
from bot.flow import ChangeRequest, run_change
from bot.permissions import Subject, decide, limits_here, visible_aliases
from bot.replay import changes_replay
from bot.services import Services
from bot.slack import alert_names, modals, payloads
from bot.slack import quick_resize as quick
from bot.slack.conversation import Invocation, invocation_or_none
from commands import edit

log = logging.getLogger("raybot.shortcut")

CALLBACK_ID = "raybot_message_action"
DRAFT_TTL_SECONDS = edit.DRAFT_TTL_SECONDS
# Characters of the message kept with a picker, so the group it names can still be preselected after the pick.
ALERT_KEPT_MAX = 8000
STALE_MESSAGE = "this quick resize is closed: it was applied already, or open too long; use the shortcut again"

OUTCOME_TEXTS = {
    "done": "The cloud accepted the resize and is applying it; the alert's thread follows it until the workers are up "
    "(clusterId, requestId and the change).",
    "failed": "The cloud API refused the change; its Code, Message and RequestId are posted in the alert's thread.",
    "unknown": "raybot does not know yet whether the change took effect; the alert's thread will say.",
    "awaiting_approval": "This change needs a second person's approval: the request is posted in the alert's thread.",
    "unchanged": "The group already has this many replicas: nothing was sent.",
    "duplicate": "This resize was already submitted.",
    "cancelled": "raybot stopped before sending the change: nothing was sent. See the alert's thread.",
}


# --- drafts ----------------------------------------------------------------------------------------------------------


async def save(services: Services, draft: quick.QuickDraft) -> None:
    data = {"kind": "quick", **draft.model_dump(mode="json")}
    await services.store.put_draft(data, user_id=draft.user_id, key=draft.key, ttl=DRAFT_TTL_SECONDS)


async def load(services: Services, key: Any, user_id: str) -> quick.QuickDraft:
    """The quick resize `key` (a view's private_metadata) of `user_id`; raises MalformedPayload for a key raybot
    never made, ActionRefused when it is gone or someone else's."""
    data = await services.store.get_draft(payloads.draft_key(key, "quick resize"))
    if data is None or data.get("kind") != "quick":
        raise ActionRefused(STALE_MESSAGE)
    draft = quick.QuickDraft.model_validate(data)
    if draft.user_id != user_id:
        raise ActionRefused("this quick resize belongs to someone else")
    return draft


# --- opening ---------------------------------------------------------------------------------------------------------


def _changeable(services: Services, subject: Subject) -> list[str]:
    """The aliases the person may resize or edit here, in config order."""
    allowed = set(visible_aliases(services.config, subject, "resize")) | set(
        visible_aliases(services.config, subject, "edit")
    )
    return [alias for alias in services.config.clusters if alias in allowed]


async def open_from_shortcut(services: Services, body: dict[str, Any]) -> None:
    """The message shortcut: the quick resize of the cluster the message names, or a picker first."""
    invocation = invocation_or_none(Invocation.from_message_shortcut, body)
    if invocation is not None:
        await serve(services, invocation, lambda ctx: _open_for_message(ctx, body))


async def _open_for_message(ctx: CommandContext, body: dict[str, Any]) -> None:
    services, inv, subject = ctx.services, ctx.invocation, ctx.subject
    changeable = _changeable(services, subject)
    if not changeable:
        services.require(subject, "resize")  # raises Denied with the reason
    trigger_id = payloads.trigger_id(body, "shortcut")
    texts = alert_names.message_texts(body.get("message"))
    named = alert_names.named_clusters(
        texts, {alias: entry.cluster for alias, entry in services.config.clusters.items()}
    )
    fitting = [alias for alias in named if alias in changeable]
    if (len(named) == 1 and fitting) or (not named and len(changeable) == 1):
        await open_cluster(
            services,
            subject,
            thread_ts=inv.thread_ts,
            alias=fitting[0] if fitting else changeable[0],
            trigger_id=trigger_id,
            texts=texts,
        )
        return
    options = fitting if len(fitting) > 1 else changeable
    selected = fitting[0] if len(fitting) == 1 else None
    others = [alias for alias in named if alias not in changeable]
    key = await services.store.put_draft(
        {
            "picking": True,
            "channel_id": inv.channel_id,
            "thread_ts": inv.thread_ts,
            "aliases": options,
            "alert": "\n".join(texts)[:ALERT_KEPT_MAX],
        },
        user_id=inv.user_id,
        ttl=DRAFT_TTL_SECONDS,
    )
    view = modals.picker_view(options, key, selected=selected, not_yours=others)
    await services.slack.views_open(trigger_id=trigger_id, view=view)


async def open_cluster(
    services: Services, subject: Subject, *, thread_ts: str | None, alias: str, trigger_id: str, texts: Sequence[str]
) -> None:
    """The quick resize of `alias` (the loading view at once, as the trigger lives 3 s), or the full editor when the
    person may edit but not resize it."""
    if not decide(services.config, subject, "resize", alias).allowed:
        await edit.open_editor(
            services,
            user_id=subject.user_id,
            channel_id=subject.channel_id,
            thread_ts=thread_ts,
            alias=alias,
            trigger_id=trigger_id,
        )
        return
    opened = await services.slack.views_open(trigger_id=trigger_id, view=quick.loading_view(alias))
    await fill(
        services,
        view_id=opened["view"]["id"],
        user_id=subject.user_id,
        channel_id=subject.channel_id,
        thread_ts=thread_ts,
        alias=alias,
        texts=texts,
    )


async def fill(
    services: Services,
    *,
    view_id: str,
    user_id: str,
    channel_id: str,
    thread_ts: str | None,
    alias: str,
    texts: Sequence[str],
) -> None:
    """Read the cluster and turn the loading view into the quick resize (or into a readable error)."""

    async def build(subject: Subject, cluster: RayCluster) -> dict[str, Any]:
        draft = quick.new_quick_draft(
            alias,
            cluster,
            channel_id=channel_id,
            thread_ts=thread_ts,
            user_id=user_id,
            named_groups=alert_names.named_groups(texts, cluster.group_names()),
            can_edit=decide(services.config, subject, "edit", alias).allowed,
        )
        await save(services, draft)
        limits = limits_here(services.config, subject, "resize", alias)
        return quick.quick_view(draft, limits, quick.Preview(draft.group), services.config.currency)

    await edit.fill_from_read(
        services, view_id=view_id, user_id=user_id, channel_id=channel_id, alias=alias, action="resize", build=build
    )


# --- inside the quick resize ------------------------------------------------------------------------------------


async def preview(services: Services, body: dict[str, Any], *, typed: Any = None, selected: Any = None) -> None:
    """A number typed or a group picked: update the view with what it would do (hashed: never over a newer view)."""
    view = body.get("view")
    draft = await load(services, payloads.view_draft_key(view), payloads.user_id(body, "quick resize"))
    try:
        state = payloads.state_values(view)
    except MalformedPayload:
        state = {}
    group = quick.chosen_group(draft, state, selected if isinstance(selected, str) else None)
    subject = await services.subject(draft.user_id, draft.channel_id)
    judged = quick.judge(services.config, subject, draft, group, quick.typed_replicas(state, typed))
    roles = limits_here(services.config, subject, "resize", draft.alias)
    new_view = quick.quick_view(draft, roles, judged, services.config.currency)
    try:
        await services.slack.views_update(view_id=payloads.view_id(view), hash=view.get("hash"), view=new_view)
    except SlackApiError as error:
        if error.response.get("error") != "hash_conflict":
            raise
        # The view changed since this keystroke was sent (a later keystroke's preview, or Submit's answer): the
        # newer view stands. Submit judges the number again whatever the preview showed.
        log.info("a quick resize preview was superseded by a newer view")


async def apply(
    services: Services, view_id: str, draft: quick.QuickDraft, user_id: str, group: str, replicas: int
) -> None:
    """Resize `group` to `replicas` as /ray resize does (the modal shows "Resizing…"); the modal ends with the
    outcome, and the change's messages go to the alert's thread."""
    change = SetReplicas(group=group, replica=replicas)
    invocation = Invocation(
        user_id=user_id,
        channel_id=draft.channel_id,
        text="",
        thread_ts=draft.thread_ts,
        dedup_key=f"quick:{draft.key}",
    )

    async def run(ctx: CommandContext) -> None:
        try:
            outcome = await run_change(
                ctx,
                ChangeRequest(
                    alias=draft.alias,
                    action="resize",
                    summary=summarize([change]),
                    replay=changes_replay([change]),
                    dedup_key=invocation.dedup_key,
                ),
            )
        except Exception as error:  # noqa: BLE001 - shown in the modal, where the person is looking
            await services.slack.views_update(
                view_id=view_id, view=modals.result_view(draft.alias, describe_error(error)[0])
            )
            return
        await services.slack.views_update(
            view_id=view_id, view=modals.result_view(draft.alias, OUTCOME_TEXTS[outcome], outcome=outcome)
        )
        await services.store.delete_draft(draft.key)

    await serve(services, invocation, run)


def _errors(errors: dict[str, str]) -> dict[str, Any]:
    return {"response_action": "errors", "errors": errors}


def _update(view: dict[str, Any]) -> dict[str, Any]:
    return {"response_action": "update", "view": view}


def _failed(error: BaseException) -> dict[str, Any]:
    """The acknowledgement of a submission that failed: the modal turns into what went wrong."""
    return _update(modals.result_view("raybot", describe_error(error)[0]))


async def _show_failure(services: Services, view: Any, error: BaseException) -> None:
    """A failed action inside the quick resize ends in the modal as a readable message, unless the view changed
    since the action was sent (its hash): a late keystroke never covers the outcome of a Submit."""
    view_id = payloads.optional_text(view, "id")
    if view_id is None:
        log.warning("could not show a failure (%s): the action carries no view to show it in", type(error).__name__)
        return
    try:
        await services.slack.views_update(
            view_id=view_id,
            hash=payloads.optional_text(view, "hash"),
            view=modals.result_view("raybot", describe_error(error)[0]),
        )
    except SlackApiError as failure:
        level = logging.INFO if failure.response.get("error") == "hash_conflict" else logging.ERROR
        log.log(level, "could not show a failure in a modal: %s", failure.response.get("error"))


def register(app: AsyncApp, services: Services) -> None:
    @app.shortcut(CALLBACK_ID)
    async def on_message_action(ack, body):  # noqa: ANN001 - Bolt injects by name
        await ack()
        await open_from_shortcut(services, body)

    @app.view_submission(modals.CALLBACK_PICKER)
    async def on_pick(ack, body, view):  # noqa: ANN001
        try:
            user_id = payloads.user_id(body, "shortcut")
            view_id = payloads.view_id(view)
            data = await services.store.get_draft(payloads.view_draft_key(view))
            if data is None or not data.get("picking"):
                raise ActionRefused(edit.STALE_MESSAGE)
            picked = modals.parse_picker(payloads.state_values(view), data["aliases"])
            subject = await services.subject(user_id, data["channel_id"])
        except Exception as error:  # noqa: BLE001
            await ack(**_failed(error))
            return
        if picked.alias is None:
            await ack(**_errors(picked.errors))
            return
        resize = decide(services.config, subject, "resize", picked.alias).allowed
        await ack(**_update((quick.loading_view if resize else modals.loading_view)(picked.alias)))
        where = {"view_id": view_id, "user_id": user_id, "channel_id": data["channel_id"]}
        try:
            if resize:
                alert = data.get("alert")
                texts = [alert] if isinstance(alert, str) else []
                await fill(services, **where, thread_ts=data["thread_ts"], alias=picked.alias, texts=texts)
            else:
                await edit.fill_editor(services, **where, thread_ts=data["thread_ts"], alias=picked.alias)
        except SlackApiError as failure:
            log.error("could not fill the modal: %s", failure.response.get("error"))

    @app.action(quick.ACTION_REPLICAS)
    async def on_typed(ack, body):  # noqa: ANN001
        await ack()
        try:
            await preview(services, body, typed=payloads.first_action(body, "quick resize").get("value"))
        except Exception as error:  # noqa: BLE001
            await _show_failure(services, body.get("view"), error)

    @app.action(quick.ACTION_GROUP)
    async def on_group(ack, body):  # noqa: ANN001
        await ack()
        try:
            option = payloads.first_action(body, "quick resize").get("selected_option")
            await preview(services, body, selected=option.get("value") if isinstance(option, dict) else None)
        except Exception as error:  # noqa: BLE001
            await _show_failure(services, body.get("view"), error)

    @app.action(quick.ACTION_FULL_EDITOR)
    async def on_full_editor(ack, body):  # noqa: ANN001
        await ack()
        view = body.get("view")
        try:
            draft = await load(services, payloads.view_draft_key(view), payloads.user_id(body, "quick resize"))
            view_id = payloads.view_id(view)
            await services.slack.views_update(
                view_id=view_id, hash=view.get("hash"), view=modals.loading_view(draft.alias)
            )
            await services.store.delete_draft(draft.key)
            await edit.fill_editor(
                services,
                view_id=view_id,
                user_id=draft.user_id,
                channel_id=draft.channel_id,
                thread_ts=draft.thread_ts,
                alias=draft.alias,
            )
        except Exception as error:  # noqa: BLE001
            await _show_failure(services, view, error)

    # A view submission is answered in its acknowledgement, so the payload is read inside the try block: every
    # failure, a forged field included, ends in the modal.
    @app.view_submission(quick.CALLBACK_QUICK)
    async def on_submit(ack, body, view):  # noqa: ANN001
        try:
            user_id = payloads.user_id(body, "quick resize")
            view_id = payloads.view_id(view)
            draft = await load(services, view.get("private_metadata"), user_id)
            subject = await services.subject(user_id, draft.channel_id)
            state = payloads.state_values(view)
            judged = quick.judge(
                services.config, subject, draft, quick.chosen_group(draft, state), quick.typed_replicas(state)
            )
        except Exception as error:  # noqa: BLE001
            await ack(**_failed(error))
            return
        errors = quick.submit_errors(judged)
        if errors or judged.group is None or judged.replicas is None:
            await ack(**_errors(errors))
            return
        await ack(
            **_update(
                modals.result_view(
                    draft.alias, "Resizing… the outcome is also posted in the alert's thread.", outcome="working"
                )
            )
        )
        await apply(services, view_id, draft, user_id, judged.group, judged.replicas)

    @app.view_closed(quick.CALLBACK_QUICK)
    async def on_close(ack, view):  # noqa: ANN001
        await ack()
        try:
            key = payloads.view_draft_key(view)
        except MalformedPayload as error:
            log.warning("ignored a closed quick resize: its %s is unreadable", error.field)
            return
        await services.store.delete_draft(key)
