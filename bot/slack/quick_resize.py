"""The quick resize, the pure part: from an alert to a resized worker group in one screen.

The message shortcut opens it for the cluster the alert names (bot.slack.alert_names), with the worker group the
alert names preselected (else the largest). One number is typed; as it is typed (the number input dispatches
block_actions on every character) the view is updated to say what the change does and which limit applies, and
Submit applies it through the same path as `/ray resize` (bot.flow.run_change). Nothing here talks to Slack, the
store or the cloud:

    open          views.open(loading_view) → GetRayCluster → views.update(quick_view(new_quick_draft(…), …))
    typing        block_actions(ACTION_REPLICAS) → judge(…) → views.update(quick_view(…), hash=the view's hash)
    group picked  block_actions(ACTION_GROUP) → the same
    Submit        judge(…): an error → {"response_action": "errors", "errors": {BLOCK_REPLICAS: …}}, nothing applied;
                  else run_change(resize) and the modal ends with the outcome (bot.slack.modals.result_view)
    full editor   ACTION_FULL_EDITOR → the view becomes the editor of the same cluster (commands/edit.py)

The draft (`QuickDraft`) lives in the store; `private_metadata` holds only its key. The cluster is kept as read
(secrets masked): the preview is judged against it, and Submit plans against a fresh read, like `/ray resize`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from bot.config import ApprovalRule, Config, Limits
from bot.cost import change_cost, change_text
from bot.emr.changes import redact_secrets
from bot.emr.models import ClusterFields, RayCluster, WorkerGroup
from bot.permissions import Decision, Subject, approval_text, check_change, limits_text
from bot.slack import limits
from bot.slack.mrkdwn import ELLIPSIS, escape, one_line, truncate
from bot.slack.mrkdwn import code as inline_code
from bot.slack.words import plural, replicas_in_words

CALLBACK_QUICK = "raybot.quick.resize"
CALLBACK_LOADING = "raybot.quick.loading"

# Each input's action_id is its block id, so state["values"][id][id] holds its value.
BLOCK_GROUP = "quick.group"
BLOCK_REPLICAS = "quick.replicas"
BLOCK_LIMITS = "quick.limits"
BLOCK_EFFECT = "quick.effect"
BLOCK_ACTIONS = "quick.actions"
ACTION_GROUP = BLOCK_GROUP
"""The worker group select (dispatches block_actions when a group is picked): value the group's index."""
ACTION_REPLICAS = BLOCK_REPLICAS
"""The number input (dispatches block_actions as characters are typed)."""
ACTION_FULL_EDITOR = "quick.editor"
"""The "Open the full editor" button: the view becomes the editor of the same cluster."""

NAME_SHOWN_MAX = 80  # alias and group names in running text (escaped characters)
REASON_SHOWN_MAX = 1500  # a policy's reason in the view
ERROR_TEXT_MAX = 1000  # one inline error under an input (as bot.slack.modals)
_REPLICAS = re.compile(r"\s*([+-]?[0-9]{1,9})\s*")  # bounded: int() of a 5000-digit string is refused anyway


class QuickDraft(BaseModel):
    """One quick resize in progress, kept server-side under `key`.

    `body` is the cluster's editable body as read when the view opened (wire form, secrets masked): what the
    preview is judged against. `group` is the group preselected when the view opened. `can_edit`: whether the
    person could open the full editor on this cluster then (asked again when they do).
    """

    model_config = ConfigDict(frozen=True)

    key: str
    alias: str
    channel_id: str
    thread_ts: str | None = None
    user_id: str
    cluster_id: str | None = None
    body: dict[str, Any]
    group: str | None = None
    can_edit: bool = False

    def fields(self) -> ClusterFields:
        return ClusterFields.model_validate(self.body)


def new_quick_draft(
    alias: str,
    cluster: RayCluster,
    *,
    channel_id: str,
    thread_ts: str | None,
    user_id: str,
    named_groups: Sequence[str] = (),
    can_edit: bool = False,
    key: str | None = None,
) -> QuickDraft:
    """A quick resize of `cluster` as just read; the group preselected is the first of `named_groups` it has."""
    return QuickDraft(
        key=key if key is not None else secrets.token_urlsafe(16),
        alias=alias,
        channel_id=channel_id,
        thread_ts=thread_ts,
        user_id=user_id,
        cluster_id=cluster.cluster_id,
        body=redact_secrets(cluster.editable()) or {},
        group=preselected_group(cluster, named_groups),
        can_edit=can_edit,
    )


def preselected_group(cluster: ClusterFields, named: Sequence[str]) -> str | None:
    """The group the alert names (the first of `named` the cluster has), else the one with the most replicas (the
    first of those), else None for a cluster without groups."""
    groups = [g for g in cluster.worker_spec or [] if g.group_name]
    names = {g.group_name for g in groups}
    for name in named:
        if name in names:
            return name
    if not groups:
        return None
    return max(groups, key=lambda g: g.replica or 0).group_name


def with_replicas(cluster: ClusterFields, group: str, replicas: int) -> ClusterFields:
    """`cluster` with the replica count of `group` set to `replicas` (what the resize asks, for the policy)."""
    groups = [
        g.model_copy(update={"replica": replicas}) if g.group_name == group else g for g in cluster.worker_spec or []
    ]
    return cluster.model_copy(update={"worker_spec": groups})


# --- reading the view -------------------------------------------------------------------------------------------------


def _state_entry(state_values: Mapping[str, Any], block_id: str) -> Mapping[str, Any] | None:
    block = state_values.get(block_id)
    if not isinstance(block, Mapping) or not block:
        return None
    entry = next(iter(block.values()))
    return entry if isinstance(entry, Mapping) else None


def _group_names(draft: QuickDraft) -> list[str]:
    return [g.group_name or "" for g in draft.fields().worker_spec or []]


def group_value(draft: QuickDraft, name: str) -> str:
    """The select value of the group `name`: its index (ids never hold names people or the cloud write)."""
    return str(_group_names(draft).index(name))


def chosen_group(draft: QuickDraft, state_values: Mapping[str, Any], selected: str | None = None) -> str | None:
    """The group chosen in the view: `selected` (the value a group select action carries), else the select's state,
    else the group preselected. A value that names no group of the draft is ignored (forged, or stale)."""
    value = selected
    if value is None:
        option = (_state_entry(state_values, BLOCK_GROUP) or {}).get("selected_option")
        value = option.get("value") if isinstance(option, Mapping) else None
    names = _group_names(draft)
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,3}", value) and int(value) < len(names):
        return names[int(value)]
    return draft.group


def typed_replicas(state_values: Mapping[str, Any], typed: Any = None) -> str | None:
    """What is typed in the number input: `typed` (the value a dispatched action carries), else its state."""
    value = typed if isinstance(typed, str) else (_state_entry(state_values, BLOCK_REPLICAS) or {}).get("value")
    return value if isinstance(value, str) else None


# --- judging the number -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preview:
    """The number typed for `group`, judged: `error` (mrkdwn, escaped: why it cannot be applied, for the view and
    as the field's error on Submit) or `replicas` with the policy's `decision` (allowed, maybe needing approval).
    Neither when nothing is typed yet."""

    group: str | None
    replicas: int | None = None
    error: str | None = None
    decision: Decision | None = None
    cost: str | None = None  # what it does to the cluster's cost per hour (bot.cost.change_text), None: nothing

    @property
    def ok(self) -> bool:
        return self.error is None and self.replicas is not None and self.decision is not None


def judge(config: Config, subject: Subject, draft: QuickDraft, group: str | None, typed: str | None) -> Preview:
    """Whether `typed` replicas for `group` can be applied: a whole number, at least 1, within the group's
    autoscaling min and max, a change, and within the limits of the person's role here (check_change, the same
    policy `/ray resize` applies). Judged against the cluster as read when the view opened."""
    cluster = draft.fields()
    current = cluster.group(group) if group is not None else None
    if current is None:
        return Preview(group=None, error="Choose a worker group" if cluster.worker_spec else None)
    if typed is None or not typed.strip():
        return Preview(group=group)
    # Errors are shown under the input too, where Slack reads no markup: names escaped, not bold.
    name = _escaped(group)
    match = _REPLICAS.fullmatch(typed)
    if match is None:
        return Preview(group=group, error=f"Type a whole number of replicas, like 10 — not {_typed(typed)}")
    replicas = int(match.group(1))
    if replicas < 1:
        return Preview(group=group, error=f"A worker group keeps at least 1 replica, not {replicas}")
    low, high = current.min_replica, current.max_replica
    if low is not None and replicas < low:
        return Preview(
            group=group,
            error=f"{replicas} is below the minimum of {name} ({low}); lower its min in the full editor first",
        )
    if high is not None and replicas > high:
        return Preview(
            group=group,
            error=f"{replicas} is above the maximum of {name} ({high}); raise its max in the full editor first",
        )
    if current.replica == replicas:
        return Preview(group=group, error=f"{name} has {plural(replicas, 'replica')} already: nothing to change")
    after = with_replicas(cluster, group, replicas)
    decision = check_change(config, subject, "resize", draft.alias, cluster, after)
    if not decision.allowed:
        return Preview(
            group=group, replicas=replicas, error=truncate(decision.reason, ERROR_TEXT_MAX), decision=decision
        )
    cost = change_cost(cluster, after, config.price(draft.alias))
    return Preview(group=group, replicas=replicas, decision=decision, cost=None if cost.neutral else change_text(cost))


def submit_errors(preview: Preview) -> dict[str, str]:
    """The inline errors of a Submit (`response_action: errors`), or {} when the resize may be applied."""
    if preview.ok:
        return {}
    if preview.group is None and preview.error is not None:
        return {BLOCK_GROUP: preview.error}
    return {BLOCK_REPLICAS: truncate(preview.error or "Type the new number of replicas", ERROR_TEXT_MAX)}


# --- what is shown ----------------------------------------------------------------------------------------------------


def _escaped(raw: str | None) -> str:
    return truncate(escape(one_line(raw or "")), NAME_SHOWN_MAX)


def _name(raw: str | None) -> str:
    return f"*{_escaped(raw)}*"


def _typed(raw: str) -> str:
    return f"“{truncate(escape(one_line(raw.strip())), 40)}”"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS


def _plain(text: str, limit: int = 2000) -> dict[str, Any]:
    return {"type": "plain_text", "text": _cut(text, limit) or " ", "emoji": True}


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": truncate(text, limits.SECTION_TEXT_MAX), "verbatim": True}


def _title(alias: str) -> dict[str, Any]:
    return _plain(f"Resize {alias}", limits.MODAL_TITLE_MAX)


def _workers(cluster: ClusterFields) -> int:
    return sum(g.replica or 0 for g in cluster.worker_spec or [])


def quick_resize_effect(
    cluster: ClusterFields, group: WorkerGroup, replicas: int, decision: Decision, cost: str | None = None
) -> str:
    """The quick resize's "what this does" line (mrkdwn): the change in words, what it makes of the cluster, and
    what Submit does with it (at once, or a request for a second person's approval). `cluster` and `group` are as
    read; `decision` is the policy's word on this change (allowed). The one place this phrase is built, so that
    everything said about the change (the cost of it included) is said together."""
    before = group.replica or 0
    step = replicas - before
    total = _workers(cluster) + step
    line = (
        f"➡️ {_name(group.group_name)}: {before} → {replicas} replicas ({step:+d}); "
        f"the cluster would have {total} worker{'' if total == 1 else 's'}."
    )
    if cost is not None:
        line += f"\n💰 {escape(cost)}"
    if decision.approval is not None:
        why = truncate(decision.approval, REASON_SHOWN_MAX)
        return (
            f"{line}\n🙋 Needs a second person's approval ({why}): *Request approval* posts it in the alert's thread."
        )
    return f"{line}\n*Resize* applies it at once; the outcome is posted in the alert's thread."


def limits_line(
    group: WorkerGroup | None,
    roles: Sequence[tuple[str, Limits, ApprovalRule | None]],
    *,
    autoscaling: bool | None = None,
    currency: str | None = None,
) -> str:
    """The limits that apply (mrkdwn): each granting role's limits and approval rule (money in `currency`, the
    config's pricing currency), and the group's replicas with its min and max and whether the cloud autoscales it
    (`autoscaling`: the head's enableAutoScaling as read). `roles` as bot.permissions.limits_here gives them."""
    parts = []
    for role, role_limits, rule in roles:
        approval = approval_text(rule, currency)
        parts.append(
            f"*{escape(role)}*: {escape(limits_text(role_limits, currency))}"
            + (f"; {escape(approval)}" if approval else "")
        )
    text = "Your limits here: " + (" · or ".join(parts) if parts else "none: you may not resize this cluster here")
    if group is not None:
        count = replicas_in_words(group.replica, group.min_replica, group.max_replica)
        if autoscaling:
            scaling = "autoscaling is on: the cloud moves it between its min and max"
        else:
            scaling = "autoscaling is off: it stays at the count you set"
        text += f"\n{_name(group.group_name)} has {count}; {scaling}."
    return text


def _preview_text(cluster: ClusterFields, preview: Preview) -> str:
    group = cluster.group(preview.group) if preview.group is not None else None
    if preview.error is not None:
        return f"⚠️ {truncate(preview.error, REASON_SHOWN_MAX)}"
    if group is None:
        return "This cluster has no worker groups: there is nothing to resize. Open the full editor to add one."
    if preview.replicas is None or preview.decision is None:
        return "Type the new number of replicas to see what it does and whether it needs approval."
    return quick_resize_effect(cluster, group, preview.replicas, preview.decision, preview.cost)


def _group_select(draft: QuickDraft, chosen: str | None) -> dict[str, Any]:
    options = []
    for index, group in enumerate(draft.fields().worker_spec or []):
        count = plural(group.replica, "replica") if group.replica is not None else "replicas not set"
        label = f"{group.group_name or f'(unnamed #{index + 1})'} · {count}"
        options.append({"text": _plain(label, limits.OPTION_TEXT_MAX), "value": str(index)})
    element: dict[str, Any] = {
        "type": "static_select",
        "action_id": ACTION_GROUP,
        "placeholder": _plain("Choose a worker group"),
        "options": options[: limits.STATIC_SELECT_OPTIONS_MAX],
    }
    if chosen is not None and chosen in _group_names(draft):
        index = _group_names(draft).index(chosen)
        if index < limits.STATIC_SELECT_OPTIONS_MAX:
            element["initial_option"] = options[index]
    return {
        "type": "input",
        "block_id": BLOCK_GROUP,
        "label": _plain("Worker group"),
        "dispatch_action": True,  # picking another group updates the preview
        "element": element,
    }


def _replicas_input(group: WorkerGroup | None) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "input",
        "block_id": BLOCK_REPLICAS,
        "label": _plain("New replica count"),
        "dispatch_action": True,
        "element": {
            "type": "number_input",
            "action_id": ACTION_REPLICAS,
            "is_decimal_allowed": False,
            "placeholder": _plain("e.g. 10"),
            # Every character typed tells raybot, which shows the change and the limit that applies.
            "dispatch_action_config": {"trigger_actions_on": ["on_character_entered"]},
        },
    }
    if group is not None and group.replica is not None:
        block["hint"] = _plain(f"{group.group_name} has {group.replica} now", limits.INPUT_HINT_MAX)
    return block


def quick_view(
    draft: QuickDraft,
    roles: Sequence[tuple[str, Limits, ApprovalRule | None]],
    preview: Preview,
    currency: str | None = None,
) -> dict[str, Any]:
    """The quick resize: the group (preselected), the number, the limits that apply and what the number would do;
    Submit "Resize" (or "Request approval" when the number typed needs it); "Open the full editor" when the person
    could edit the cluster. Inline errors are not part of the view: answer a Submit with submit_errors."""
    cluster = draft.fields()
    chosen = preview.group or draft.group
    group = cluster.group(chosen) if chosen is not None else None
    intro = f"*Resize {truncate(escape(one_line(draft.alias)), NAME_SHOWN_MAX)}*"
    if draft.cluster_id:
        intro += f" · clusterId {inline_code(draft.cluster_id, 64)}"
    intro += "\nThe outcome is posted in the thread of the alert."
    blocks: list[dict[str, Any]] = [{"type": "section", "text": _mrkdwn(intro)}]
    if cluster.worker_spec:
        blocks += [_group_select(draft, chosen), _replicas_input(group)]
    autoscaling = cluster.head_spec.enable_auto_scaling if cluster.head_spec is not None else None
    limits_shown = limits_line(group, roles, autoscaling=autoscaling, currency=currency)
    blocks.append({"type": "context", "block_id": BLOCK_LIMITS, "elements": [_mrkdwn(limits_shown)]})
    blocks.append({"type": "context", "block_id": BLOCK_EFFECT, "elements": [_mrkdwn(_preview_text(cluster, preview))]})
    if draft.can_edit:
        button = {
            "type": "button",
            "action_id": ACTION_FULL_EDITOR,
            "text": _plain("Open the full editor", limits.BUTTON_TEXT_MAX),
            "value": "editor",
        }
        blocks.append({"type": "actions", "block_id": BLOCK_ACTIONS, "elements": [button]})
    needs_approval = preview.decision is not None and preview.decision.allowed and preview.decision.approval
    view: dict[str, Any] = {
        "type": "modal",
        "callback_id": CALLBACK_QUICK,
        "title": _title(draft.alias),
        "close": _plain("Cancel", limits.MODAL_BUTTON_TEXT_MAX),
        "blocks": blocks[: limits.MODAL_BLOCKS_MAX],
        "private_metadata": draft.key,
        "notify_on_close": True,
    }
    if cluster.worker_spec:
        view["submit"] = _plain("Request approval" if needs_approval else "Resize", limits.MODAL_BUTTON_TEXT_MAX)
    return view


def loading_view(alias: str) -> dict[str, Any]:
    """What views.open shows at once (the trigger_id lives 3 s): "Reading …", no submit."""
    text = f"⏳ Reading *{truncate(escape(one_line(alias)), NAME_SHOWN_MAX)}* from the cloud{ELLIPSIS}"
    return {
        "type": "modal",
        "callback_id": CALLBACK_LOADING,
        "title": _title(alias),
        "close": _plain("Cancel", limits.MODAL_BUTTON_TEXT_MAX),
        "blocks": [{"type": "section", "text": _mrkdwn(text)}],
    }
