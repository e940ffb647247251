"""Editing a cluster in a modal, the pure part: Block Kit views, and the parsing of what people submit in them.

Nothing here talks to Slack or the cloud. The listeners drive the flow; the stack never holds more than 2 views:

    /ray edit prod      views.open(loading_view) → GetRayCluster → views.update(overview_view(new_draft(…)))
                        (a failed read → views.update(error_view))
    overview            "Edit a worker group" select (input block, dispatch_action) or "Add group"
                            → views.push(group_view(draft, selected_group(draft, value)))
                        "Remove group…" select → draft.edited = remove_group(…) → views.update(overview_view)
                        Review → parse_overview → {"response_action": "errors"} or push confirm_view(review_diff)
    group editor        Save group → group_target(view, draft) → parse_group → errors, or pop (plain ack) and
                        views.update the overview below with the new draft
    confirmation        Apply → GetRayCluster → stale_diff(draft, fresh):
                            empty     → plan(fresh, changes_for(draft)) → UpdateRayCluster → result_view
                            not empty → store rebase(draft, fresh), "update" to stale_view(draft, changes, fresh)
    stale               Review again → "update" to confirm_view(rebased, review_diff(rebased))

The draft (`Draft`) lives server-side; `private_metadata` holds only its key. Every string a user, the config or
the cloud controls is escaped where it is shown as mrkdwn (and mrkdwn is `verbatim`); plain_text, where Slack
parses no markup, shows it as is, and inputs are prefilled with the raw value so an unchanged field stays
byte-for-byte what was read. Ids never hold user text: groups are addressed by index (checked by a digest of the
name where a view must remember one).
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from bot.emr.changes import (
    HEAD_FIELDS,
    TOP_LEVEL_FIELDS,
    AddGroup,
    Change,
    ChangeError,
    DiffEntry,
    RemoveGroup,
    ReplaceGroup,
    SetFields,
    diff,
    plan,
    redact_secrets,
)
from bot.emr.models import (
    MAX_WORKER_GROUPS,
    MEMORY_PATTERN,
    NAME_MAX,
    ClusterFields,
    RayCluster,
    WorkerGroup,
    dumps_body,
    group_problems,
    spec_problems,
)
from bot.slack import limits
from bot.slack.blocks import ACCEPTED_MARK, CARD_MARKS, cost_line, diff_sections, worker_table
from bot.slack.mrkdwn import ELLIPSIS, escape, one_line, truncate
from bot.slack.mrkdwn import code as inline_code
from bot.slack.words import path_in_words

# --- ids --------------------------------------------------------------------------------------------------------------

CALLBACK_LOADING = "raybot.edit.loading"
CALLBACK_ERROR = "raybot.edit.error"
CALLBACK_PICKER = "raybot.edit.pick"
CALLBACK_OVERVIEW = "raybot.edit.overview"
CALLBACK_GROUP = "raybot.edit.group"
CALLBACK_CONFIRM = "raybot.edit.confirm"
CALLBACK_STALE = "raybot.edit.stale"
CALLBACK_RESULT = "raybot.edit.result"

# Block ids of inputs; each input's action_id is its block id, so state["values"][id][id] holds its value.
BLOCK_NAME = "name"
BLOCK_DESCRIPTION = "description"
BLOCK_RELEASE = "release"
BLOCK_NETWORK = "network"
BLOCK_VOLUMES = "volumes"
BLOCK_HEAD_QUEUE = "head.queue"
BLOCK_HEAD_CPU = "head.cpu"
BLOCK_HEAD_MEMORY = "head.memory"
BLOCK_HEAD_GPU = "head.gpu"
BLOCK_HEAD_AUTOSCALING = "head.autoscaling"
BLOCK_HEAD_IDLE = "head.idle"
BLOCK_GROUPS = "groups"
"""The overview's "Edit a worker group" input: where errors about groups, and any error without a field, go."""
BLOCK_GROUP_ACTIONS = "groups.actions"
BLOCK_GROUP_NAME = "group.name"
BLOCK_GROUP_TYPE = "group.type"
BLOCK_GROUP_REPLICA = "group.replica"
BLOCK_GROUP_MIN = "group.min"
BLOCK_GROUP_MAX = "group.max"
BLOCK_GROUP_QUEUE = "group.queue"
BLOCK_GROUP_CPU = "group.cpu"
BLOCK_GROUP_MEMORY = "group.memory"
BLOCK_GROUP_GPU = "group.gpu"
BLOCK_GROUP_REMOVE = "group.remove"
BLOCK_PICK = "pick"

ACTION_EDIT_GROUP = BLOCK_GROUPS
"""The "Edit a worker group" select (dispatches block_actions): value "new" or a group index, see selected_group."""
ACTION_ADD_GROUP = "groups.add"
"""The "Add group" button: open group_view(draft, None)."""
ACTION_REMOVE_GROUP = "groups.remove"
"""The "Remove group…" select (with a confirmation dialog): value a group index, see selected_group."""
NEW_GROUP_VALUE = "new"
REMOVE_VALUE = "remove"

_TARGET_PREFIX = "target."
_TARGET_NEW = "target.new"

# --- sizes ------------------------------------------------------------------------------------------------------------

NAME_SHOWN_MAX = 80  # alias, cluster and group names in running text (escaped characters)
DESCRIPTION_SHOWN_MAX = 300
MESSAGE_SHOWN_MAX = 1500  # a cloud error message, escaped
ERROR_TEXT_MAX = 1000  # one inline error under an input
TABLE_SECTIONS_MAX = 8  # preformatted sections of the overview's group table
DIFF_SECTIONS_MAX = 30  # preformatted sections of a diff in a modal (a modal holds 100 blocks, a message 50)
PICKER_SELECT_MAX = limits.STATIC_SELECT_OPTIONS_MAX
FENCE = "```"


# --- the draft --------------------------------------------------------------------------------------------------------


class Draft(BaseModel):
    """One modal edit in progress, kept server-side under `key` (the only thing the views carry).

    `original` is the cluster's editable body as read when the editor opened (wire form of
    RayCluster.editable()), `edited` the complete editable body as edited so far (starts as a copy of
    `original`; unknown fields of the head and the groups ride along untouched). `modified_time` and
    `read_hash` identify the read, for stale detection. `channel_id`/`thread_ts` say where results go.
    """

    model_config = ConfigDict(frozen=True)

    key: str
    alias: str
    channel_id: str
    thread_ts: str | None = None
    user_id: str
    cluster_id: str | None = None
    original: dict[str, Any]
    edited: dict[str, Any]
    modified_time: int | None = None
    read_hash: str


def body_hash(body: Mapping[str, Any]) -> str:
    """A digest of a wire-form body, as the one serialization (dumps_body) writes it."""
    return hashlib.sha256(dumps_body(dict(body))).hexdigest()


def new_draft(
    alias: str,
    cluster: RayCluster,
    *,
    channel_id: str,
    thread_ts: str | None,
    user_id: str,
    key: str | None = None,
) -> Draft:
    """A draft of `cluster` as just read, nothing edited yet. `key` defaults to a random URL-safe token."""
    # The draft lives in the store for an hour: secrets (gftConfig's password, a group's imagePullSecret) stay masked
    # there. The editor never edits them, changes_for carries only the fields the person changed, and Apply plans
    # against a fresh read, which takes any masked value from the read or refuses: the mask is never sent.
    original = _readable(cluster)
    return Draft(
        key=key if key is not None else secrets.token_urlsafe(16),
        alias=alias,
        channel_id=channel_id,
        thread_ts=thread_ts,
        user_id=user_id,
        cluster_id=cluster.cluster_id,
        original=original,
        edited=copy.deepcopy(original),
        modified_time=cluster.modified_time,
        read_hash=body_hash(original),
    )


def _readable(cluster: RayCluster) -> dict[str, Any]:
    """The editable body as the editor keeps it: as read, with secret values masked."""
    return redact_secrets(cluster.editable()) or {}


def _groups(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    groups = body.get("workerSpec")
    return [g for g in groups if isinstance(g, dict)] if isinstance(groups, list) else []


def _group_name(group: Mapping[str, Any]) -> str:
    return str(group.get("groupName") or "")


_INDEX = re.compile(r"[0-9]{1,6}")


def _index(text: str) -> int | None:
    """A list index raybot wrote into a view ("0", "12"), or None: only ASCII digits, as str.isdigit() also accepts
    "²" and "１２" (and int() fails on the first)."""
    return int(text) if _INDEX.fullmatch(text) else None


class UnknownGroupError(LookupError):
    """A select value, view or name that names no group of the draft (it changed since the view was built)."""


def selected_group(draft: Draft, value: str) -> str | None:
    """The group a value of the "Edit a worker group"/"Remove group…" selects stands for; None for "new"."""
    if value == NEW_GROUP_VALUE:
        return None
    groups = _groups(draft.edited)
    index = _index(value)
    if index is None or index >= len(groups):
        raise UnknownGroupError(f"no worker group at {value!r} in this draft; open the editor again")
    return _group_name(groups[index])


def _group_index(groups: Sequence[Mapping[str, Any]], name: str) -> int:
    for index, group in enumerate(groups):
        if _group_name(group) == name:
            return index
    raise UnknownGroupError(f"there is no worker group {name!r} in this draft any more")


def remove_group(draft: Draft, group_name: str) -> dict[str, Any]:
    """The edited body without the group `group_name` (for "Remove group…"); the draft itself is not changed."""
    edited = copy.deepcopy(draft.edited)
    groups = edited.get("workerSpec")
    if not isinstance(groups, list):
        raise UnknownGroupError(f"there is no worker group {group_name!r} in this draft any more")
    del groups[_group_index(groups, group_name)]
    return edited


# --- small Block Kit pieces -------------------------------------------------------------------------------------------


def _cut(text: str, limit: int) -> str:
    """Raw (unescaped) text cut to `limit` characters with an ellipsis, for plain_text."""
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS


def _esc(raw: str | None, limit: int) -> str:
    return truncate(escape(raw or ""), limit)


def _line(raw: str | None, limit: int) -> str:
    """Like `_esc`, on one line: for a name inside a sentence."""
    return truncate(escape(one_line(raw or "")), limit)


def _plain(text: str, limit: int = 2000) -> dict[str, Any]:
    return {"type": "plain_text", "text": _cut(text, limit) or " ", "emoji": True}


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": truncate(text, limits.SECTION_TEXT_MAX), "verbatim": True}


def _section(text: str, block_id: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "section", "text": _mrkdwn(text)}
    if block_id is not None:
        block["block_id"] = block_id
    return block


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [_mrkdwn(text)]}


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": _plain(text, limits.HEADER_TEXT_MAX)}


def _option(text: str, value: str) -> dict[str, Any]:
    return {"text": _plain(text, limits.OPTION_TEXT_MAX), "value": value}


def _modal(
    callback_id: str,
    title: str,
    blocks: list[dict[str, Any]],
    *,
    submit: str | None = None,
    close: str = "Cancel",
    private_metadata: str | None = None,
    notify_on_close: bool = False,
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "type": "modal",
        "callback_id": callback_id,
        "title": _plain(title, limits.MODAL_TITLE_MAX),
        "close": _plain(close, limits.MODAL_BUTTON_TEXT_MAX),
        "blocks": blocks[: limits.MODAL_BLOCKS_MAX],
    }
    if submit is not None:
        view["submit"] = _plain(submit, limits.MODAL_BUTTON_TEXT_MAX)
    if private_metadata is not None:
        view["private_metadata"] = private_metadata
    if notify_on_close:
        view["notify_on_close"] = True
    return view


def _edit_title(alias: str) -> str:
    return _cut(f"Edit {alias}", limits.MODAL_TITLE_MAX)


def _pre_sections(lines: Sequence[str], max_sections: int, head: str | None = None) -> tuple[list[dict], int]:
    """Escaped `lines` packed into preformatted sections (`head` on top of each); also how many lines fit."""
    room = limits.SECTION_TEXT_MAX - 2 * len(FENCE) - 2 - (len(head) + 1 if head else 0)
    chunks: list[list[str]] = []
    shown = 0
    used = room + 1  # start a new chunk at once
    for line in lines:
        line = truncate(line, room)
        if used + 1 + len(line) > room:
            if len(chunks) == max_sections:
                break
            chunks.append([])
            used = -1
        chunks[-1].append(line)
        used += 1 + len(line)
        shown += 1
    sections = [_section(f"{FENCE}\n" + "\n".join(([head] if head else []) + chunk) + f"\n{FENCE}") for chunk in chunks]
    return sections, shown


def _pre_line(raw: str) -> str:
    # A backtick fence inside a preformatted block would end it early.
    return escape(one_line(raw)).replace("`", "\u02cb")


def _more(count: int, noun: str) -> str:
    return f"{ELLIPSIS} and {count} more {noun}{'' if count == 1 else 's'}"


# --- inputs and how their values are read -----------------------------------------------------------------------------

Kind = Literal["name", "text", "clearable", "cpu", "memory", "count", "seconds", "list", "switch"]


@dataclass(frozen=True)
class _Field:
    """One input: its block id (also its action_id), the wire key it edits, and how to read and check it.

    Kinds: name (1–64 characters), text (may not be emptied once set), clearable (emptying sets ""),
    cpu (positive number), memory (`<n>Gi`), count (whole number ≥ 1), seconds (whole number ≥ 0),
    list (comma-separated; emptying sets []), switch (on/off select).
    """

    block_id: str
    key: str
    label: str
    kind: Kind
    required: bool = False  # required even when the field is absent (a new group's name)
    hint: str | None = None
    multiline: bool = False


CLUSTER_FIELDS = (
    _Field(BLOCK_NAME, "name", "Name", "name", hint=f"1 to {NAME_MAX} characters"),
    _Field(BLOCK_DESCRIPTION, "description", "Description", "clearable", multiline=True),
    _Field(BLOCK_RELEASE, "displayReleaseVersion", "Release version", "clearable"),
    _Field(BLOCK_NETWORK, "networkServiceName", "Network service", "clearable"),
    _Field(BLOCK_VOLUMES, "volumeIds", "Volume IDs", "list", hint="Comma-separated, e.g. vol-1, vol-2"),
)
HEAD_INPUTS = (
    _Field(BLOCK_HEAD_QUEUE, "queueName", "Head queue", "text"),
    _Field(BLOCK_HEAD_CPU, "cpu", "Head CPU", "cpu", hint="Cores, e.g. 4 or 0.5"),
    _Field(BLOCK_HEAD_MEMORY, "memory", "Head memory", "memory", hint="Whole GiB, e.g. 16Gi"),
    _Field(BLOCK_HEAD_GPU, "gpuSpec", "Head GPU spec", "clearable"),
    _Field(BLOCK_HEAD_AUTOSCALING, "enableAutoScaling", "Autoscaling", "switch"),
    _Field(BLOCK_HEAD_IDLE, "idleTimeoutSeconds", "Idle timeout (seconds)", "seconds", hint="0 or more"),
)
GROUP_INPUTS = (
    _Field(BLOCK_GROUP_NAME, "groupName", "Group name", "text", required=True),
    _Field(BLOCK_GROUP_TYPE, "workerType", "Worker type", "text", required=True),
    _Field(BLOCK_GROUP_REPLICA, "replica", "Replicas", "count", required=True),
    _Field(BLOCK_GROUP_MIN, "minReplica", "Min replicas", "count", required=True),
    _Field(BLOCK_GROUP_MAX, "maxReplica", "Max replicas", "count", required=True),
    _Field(BLOCK_GROUP_QUEUE, "queueName", "Queue", "text"),
    _Field(BLOCK_GROUP_CPU, "cpu", "CPU", "cpu", hint="Cores, e.g. 4 or 0.5"),
    _Field(BLOCK_GROUP_MEMORY, "memory", "Memory", "memory", hint="Whole GiB, e.g. 16Gi"),
    _Field(BLOCK_GROUP_GPU, "gpuSpec", "GPU spec", "clearable"),
)
# An existing group keeps what it has: a field it was read without may stay empty (a new group needs them all).
_EXISTING_GROUP_INPUTS = tuple(replace(spec, required=False) for spec in GROUP_INPUTS)
_SWITCH_OPTIONS = (_option("On", "on"), _option("Off", "off"))


def _shown(value: Any) -> str | None:
    """A value as an input shows it; None when there is nothing to show."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _input(spec: _Field, base: Mapping[str, Any]) -> dict[str, Any]:
    """The input block for `spec`, prefilled with its value in `base`."""
    current = base.get(spec.key)
    shown = _shown(current)
    element: dict[str, Any] = {"action_id": spec.block_id}
    if spec.kind == "switch":
        element |= {"type": "static_select", "options": list(_SWITCH_OPTIONS), "placeholder": _plain("On or off")}
        if isinstance(current, bool):
            element["initial_option"] = _SWITCH_OPTIONS[0] if current else _SWITCH_OPTIONS[1]
    elif spec.kind in ("count", "seconds"):
        element |= {"type": "number_input", "is_decimal_allowed": False}
        if isinstance(current, int) and not isinstance(current, bool):
            element["initial_value"] = str(current)
    else:
        element["type"] = "plain_text_input"
        if spec.multiline:
            element["multiline"] = True
        if shown is not None:
            element["initial_value"] = shown
    # Inputs that may not be emptied are required, so Slack itself refuses an empty one; the rest may stay empty.
    required = spec.required or (current is not None and spec.kind not in ("clearable", "list", "switch"))
    block: dict[str, Any] = {
        "type": "input",
        "block_id": spec.block_id,
        "label": _plain(spec.label, limits.INPUT_LABEL_MAX),
        "optional": not required,
        "element": element,
    }
    if spec.hint:
        block["hint"] = _plain(spec.hint, limits.INPUT_HINT_MAX)
    return block


_KEEP = object()  # leave the field as it is in the body


def _state_entry(state_values: Mapping[str, Any], block_id: str) -> Mapping[str, Any] | None:
    """The one element's state under `block_id` (whatever its action_id), or None when the block is missing."""
    block = state_values.get(block_id)
    if not isinstance(block, Mapping) or not block:
        return None
    entry = next(iter(block.values()))
    return entry if isinstance(entry, Mapping) else None


def _number(raw: str) -> float | None:
    try:
        number = float(raw)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _memory_advice(raw: str) -> str:
    # Bounded: int() refuses more than 4300 digits, and no memory size has more than a few.
    match = re.fullmatch(r"\s*([0-9]{1,9})\s*(g|gb|gib|gi)?\s*", raw, re.IGNORECASE)
    advice = f" (write {int(match.group(1))}Gi)" if match and int(match.group(1)) > 0 else ""
    return f"Memory is a whole number of GiB written like 16Gi, not {escape(raw)}{advice}"


def _parse_field(spec: _Field, entry: Mapping[str, Any] | None, base: Mapping[str, Any]) -> tuple[Any, str | None]:
    """(new value or _KEEP, error) for one input. A value equal to what was shown keeps the field exactly as it is."""
    if entry is None:  # the block was not submitted at all: nothing to change
        return _KEEP, None
    current = base.get(spec.key)
    if spec.kind == "switch":
        option = entry.get("selected_option")
        choice = option.get("value") if isinstance(option, Mapping) else None
        if choice not in ("on", "off"):
            return _KEEP, None
        return choice == "on", None
    raw = entry.get("value")
    raw = raw if isinstance(raw, str) else None
    if raw is not None and raw == _shown(current):
        return _KEEP, None
    text = (raw or "").strip()
    if not text:
        if current is None:
            return (_KEEP, f"{spec.label} is required") if spec.required else (_KEEP, None)
        if spec.kind == "clearable":
            return "", None
        if spec.kind == "list":
            return [], None
        return _KEEP, f"{spec.label} cannot be empty"
    if spec.kind == "name":
        if not 1 <= len(text) <= NAME_MAX:
            return _KEEP, f"{spec.label} must be 1 to {NAME_MAX} characters long, not {len(text)}"
        return text, None
    if spec.kind == "cpu":
        number = _number(text)
        if number is None or number <= 0:
            return _KEEP, f"{spec.label} must be a positive number such as 4 or 0.5, not {escape(text)}"
        return format(number, "g"), None
    if spec.kind == "memory":
        if not MEMORY_PATTERN.fullmatch(text):
            return _KEEP, _memory_advice(text)
        return text, None
    if spec.kind in ("count", "seconds"):
        low = 1 if spec.kind == "count" else 0
        number = _number(text)
        if number is None or number != int(number):
            return _KEEP, f"{spec.label} must be a whole number, not {escape(text)}"
        if number < low:
            return _KEEP, f"{spec.label} must be at least {low}, not {int(number)}"
        return int(number), None
    if spec.kind == "list":
        return [part for part in re.split(r"[,\s]+", text) if part], None
    return text, None  # text, clearable


def _read_inputs(
    specs: Sequence[_Field], state_values: Mapping[str, Any], target: dict[str, Any], errors: dict[str, str]
) -> None:
    """Apply the submitted values of `specs` to `target` in place; errors go to `errors` by block id."""
    for spec in specs:
        value, error = _parse_field(spec, _state_entry(state_values, spec.block_id), target)
        if error is not None:
            errors.setdefault(spec.block_id, truncate(error, ERROR_TEXT_MAX))
        elif value is not _KEEP:
            target[spec.key] = value


def _join_errors(messages: Sequence[str]) -> str:
    return truncate("; ".join(dict.fromkeys(messages)), ERROR_TEXT_MAX)


# --- simple views -----------------------------------------------------------------------------------------------------


def loading_view(alias: str) -> dict[str, Any]:
    """What views.open shows at once (the trigger_id lives 3 s): "Loading…", no submit."""
    return _modal(
        CALLBACK_LOADING,
        _edit_title(alias),
        [_section(f"⏳ Reading *{_line(alias, NAME_SHOWN_MAX)}* from the cloud{ELLIPSIS}")],
        close="Cancel",
    )


def error_view(alias: str, code: str, message: str, request_id: str | None) -> dict[str, Any]:
    """A cloud error, readable: Code, Message and RequestId (left out when the API gave none); a Close button only."""
    rid = f" · *RequestId* {inline_code(request_id, 64)}" if request_id else ""
    text = (
        f"❌ *{_line(alias, NAME_SHOWN_MAX)}*: the cloud answered with an error; nothing was changed\n"
        f"*Code* {inline_code(code, 100)}{rid}\n"
        f"*Message* {_esc(message, MESSAGE_SHOWN_MAX)}"
    )
    return _modal(
        CALLBACK_ERROR,
        _edit_title(alias),
        [_section(text), _context("Try again later, or show this to whoever runs raybot.")],
        close="Close",
    )


# What the editor's or the quick resize's last view says, by where the change is (bot.flow.Outcome, "working" while
# it runs, "error" for a refusal or failure before anything was sent): the marks of the status card, so the modal
# never says ✅ done for what the channel shows as ⏳ applying, nor ❌ for an outcome still being checked.
RESULT_TITLES: dict[str, tuple[str, str]] = {
    "working": (CARD_MARKS["applying"], "Applying"),
    "done": (ACCEPTED_MARK, "Accepted, applying"),
    "awaiting_approval": (CARD_MARKS["awaiting_approval"], "Awaiting approval"),
    "unknown": (CARD_MARKS["unknown"], "Being checked"),
    "failed": (CARD_MARKS["failed"], "Failed"),
    "cancelled": (CARD_MARKS["cancelled"], "Not sent"),
    "unchanged": ("➖", "Nothing to change"),
    "duplicate": ("➖", "Already sent"),
    "error": (CARD_MARKS["failed"], "Not done"),
}


def result_view(alias: str, text: str, *, outcome: str = "error") -> dict[str, Any]:
    """The last view of a change asked in a modal: `text` (escaped: shown as written, never as markup) under the
    mark and title of its `outcome` (RESULT_TITLES)."""
    mark, title = RESULT_TITLES[outcome]
    view = _modal(
        CALLBACK_RESULT,
        title,
        [_section(f"{mark} *{_line(alias, NAME_SHOWN_MAX)}*\n{_esc(text, 2500)}")],
        close="Close",
    )
    # Closing the result closes the whole editor: the views under it describe a draft that is gone.
    view["clear_on_close"] = True
    return view


def picker_view(
    aliases: Sequence[str], draft_key: str, *, selected: str | None = None, not_yours: Sequence[str] = ()
) -> dict[str, Any]:
    """For the message shortcut when the message does not name one cluster this person may change: which one?

    Up to 100 aliases are a select (`selected` preselected); beyond that (a select holds 100 options) a text input
    checked by parse_picker. `not_yours`: clusters the message names that this person may not change here, said.
    """
    blocks = [_section("Which cluster is this about? Results are posted in the thread of the message.")]
    if not_yours:
        names = _line(", ".join(not_yours), 500)
        blocks.append(_context(f"The message names {names}, which you may not resize or edit in this channel."))
    element: dict[str, Any]
    if 0 < len(aliases) <= PICKER_SELECT_MAX:
        options = [_option(alias, _alias_value(i, alias)) for i, alias in enumerate(aliases)]
        element = {"type": "static_select", "action_id": BLOCK_PICK, "options": options}
        element["placeholder"] = _plain("Choose a cluster")
        if selected in aliases:
            element["initial_option"] = options[list(aliases).index(selected)]
        hint = None
    else:
        element = {"type": "plain_text_input", "action_id": BLOCK_PICK, "placeholder": _plain("Cluster alias")}
        if selected in aliases:
            element["initial_value"] = selected
        hint = f"One of the {len(aliases)} clusters you may change here, e.g. {', '.join(aliases[:3])}"
    block: dict[str, Any] = {"type": "input", "block_id": BLOCK_PICK, "label": _plain("Cluster"), "element": element}
    if hint:
        block["hint"] = _plain(hint, limits.INPUT_HINT_MAX)
    blocks.append(block)
    return _modal(CALLBACK_PICKER, "Choose a cluster", blocks, submit="Next", private_metadata=draft_key)


def _alias_value(index: int, alias: str) -> str:
    return alias if len(alias) <= limits.OPTION_VALUE_MAX else f"#{index}"


@dataclass(frozen=True)
class PickResult:
    """The alias picked, or errors by block id for `response_action: errors`."""

    alias: str | None = None
    errors: dict[str, str] = field(default_factory=dict)


def parse_picker(state_values: Mapping[str, Any], aliases: Sequence[str]) -> PickResult:
    """The alias chosen in picker_view, checked against `aliases` (the ones this person may change here)."""
    entry = _state_entry(state_values, BLOCK_PICK) or {}
    option = entry.get("selected_option")
    raw = option.get("value") if isinstance(option, Mapping) else entry.get("value")
    text = (raw or "").strip() if isinstance(raw, str) else ""
    index = _index(text[1:]) if text.startswith("#") else None
    if index is not None and index < len(aliases):
        return PickResult(alias=aliases[index])
    if text in aliases:
        return PickResult(alias=text)
    if not text:
        return PickResult(errors={BLOCK_PICK: "Choose a cluster"})
    return PickResult(errors={BLOCK_PICK: f"{escape(_cut(text, 100))} is not a cluster this channel may edit"})


# --- the overview -----------------------------------------------------------------------------------------------------


def _group_models(groups: Sequence[Mapping[str, Any]]) -> list[WorkerGroup]:
    out = []
    for group in groups:
        try:
            out.append(WorkerGroup.model_validate(group))
        except ValidationError:  # shown as far as it goes; parsing says what is wrong with it
            out.append(WorkerGroup(group_name=_group_name(group)))
    return out


def _group_table(draft: Draft) -> list[dict[str, Any]]:
    """The worker groups as edited: a table, `+` for new and `~` for changed groups, and the removed ones."""
    groups = _groups(draft.edited)
    if not groups:
        return [_section("No worker groups. Add one below.")]
    before = {_group_name(g): g for g in _groups(draft.original)}
    marks = []
    for group in groups:
        old = before.get(_group_name(group))
        marks.append("+ " if old is None else ("~ " if old != group else "  "))
    heading, rows = worker_table(_group_models(groups))
    lines = [mark + row for mark, row in zip(marks, rows, strict=True)]
    blocks, shown = _pre_sections(lines, TABLE_SECTIONS_MAX, head="  " + heading)
    notes = []
    if shown < len(lines):
        notes.append(_more(len(lines) - shown, "group"))
    if any(m != "  " for m in marks):
        notes.append("`+` new, `~` changed since you opened this")
    removed = [name for name in before if name not in {_group_name(g) for g in groups}]
    if removed:
        notes.append("removed: " + _line(", ".join(removed), 1000))
    if notes:
        blocks.append(_context(" · ".join(notes)))
    return blocks


def _group_controls(draft: Draft) -> list[dict[str, Any]]:
    groups = _groups(draft.edited)
    options = [_option(_group_name(g) or f"(unnamed #{i + 1})", str(i)) for i, g in enumerate(groups)]
    can_add = len(groups) < MAX_WORKER_GROUPS
    if can_add:
        options.append(_option("➕ Add a new group", NEW_GROUP_VALUE))
    picker = {
        "type": "input",
        "block_id": BLOCK_GROUPS,
        "label": _plain("Edit a worker group"),
        "optional": True,
        "dispatch_action": True,  # picking a group opens its editor at once
        "element": {
            "type": "static_select",
            "action_id": ACTION_EDIT_GROUP,
            "placeholder": _plain("Choose a group to edit"),
            "options": options[: limits.STATIC_SELECT_OPTIONS_MAX],
        },
    }
    elements: list[dict[str, Any]] = []
    if can_add:
        elements.append({"type": "button", "action_id": ACTION_ADD_GROUP, "text": _plain("Add group"), "value": "new"})
    if groups:
        elements.append(
            {
                "type": "static_select",
                "action_id": ACTION_REMOVE_GROUP,
                "placeholder": _plain("Remove group…"),
                "options": options[: min(len(groups), limits.STATIC_SELECT_OPTIONS_MAX)],
                "confirm": {
                    "title": _plain("Remove this group?"),
                    "text": _plain("It leaves the draft now; nothing is sent until you Review and Apply."),
                    "confirm": _plain("Remove"),
                    "deny": _plain("Keep it"),
                    "style": "danger",
                },
            }
        )
    return [picker, {"type": "actions", "block_id": BLOCK_GROUP_ACTIONS, "elements": elements}]


def overview_view(draft: Draft) -> dict[str, Any]:
    """The editor: cluster and head fields as inputs (prefilled from the draft), the worker groups as a table.

    Fits 100 blocks for any number of groups. Inline errors are not part of the view: answer a submission
    with `{"response_action": "errors", "errors": result.errors}`.
    """
    edited = draft.edited
    head = edited.get("headSpec") if isinstance(edited.get("headSpec"), dict) else {}
    title = f"*Editing {_line(draft.alias, NAME_SHOWN_MAX)}*"
    name = edited.get("name")
    if isinstance(name, str) and name and name != draft.alias:
        title += f" · {_line(name, NAME_SHOWN_MAX)}"
    if draft.cluster_id:
        title += f" · clusterId {inline_code(draft.cluster_id, 64)}"
    staged = len(diff(draft.original, edited))
    intro = f"{title}\nChange what you need, then *Review*: nothing is sent to the cloud until you press *Apply*." + (
        f"\n{staged} field{'' if staged == 1 else 's'} changed so far." if staged else ""
    )
    groups = _groups(edited)
    blocks = [
        _section(intro),
        _header("Cluster"),
        *(_input(spec, edited) for spec in CLUSTER_FIELDS),
        _header("Head"),
        *(_input(spec, head) for spec in HEAD_INPUTS),
        _header(f"Worker groups ({len(groups)} of at most {MAX_WORKER_GROUPS})"),
        *_group_table(draft),
        *_group_controls(draft),
    ]
    return _modal(
        CALLBACK_OVERVIEW,
        _edit_title(draft.alias),
        blocks,
        submit="Review",
        close="Cancel",
        private_metadata=draft.key,
        notify_on_close=True,
    )


@dataclass(frozen=True)
class OverviewResult:
    """Either `errors` (block id → message, for `response_action: errors`) or the new `edited` body."""

    edited: dict[str, Any] | None = None
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


_OVERVIEW_PATHS = {
    "name": BLOCK_NAME,
    "headSpec.cpu": BLOCK_HEAD_CPU,
    "headSpec.memory": BLOCK_HEAD_MEMORY,
    "headSpec.idleTimeoutSeconds": BLOCK_HEAD_IDLE,
}


def parse_overview(state_values: Mapping[str, Any], draft: Draft) -> OverviewResult:
    """The overview as submitted (`view["state"]["values"]`) applied to a copy of the draft's edited body.

    Every field is checked (name 1–64, cpu, memory `<n>Gi`, idle timeout ≥ 0, …), then the whole body against
    every documented constraint (spec_problems, so broken groups and more than 50 groups are caught too), then
    the change itself as plan() will make it at Apply. Fields the form does not show stay exactly as they were.
    """
    edited = copy.deepcopy(draft.edited)
    errors: dict[str, str] = {}
    _read_inputs(CLUSTER_FIELDS, state_values, edited, errors)
    head = edited.get("headSpec")
    had_head = isinstance(head, dict)
    head = head if isinstance(head, dict) else {}
    _read_inputs(HEAD_INPUTS, state_values, head, errors)
    if had_head or head:
        edited["headSpec"] = head
    if errors:
        return OverviewResult(errors=errors)
    errors = _body_errors(edited)
    if not errors:
        try:
            plan(RayCluster.model_validate(draft.original), changes_for(draft.model_copy(update={"edited": edited})))
        except ChangeError as exc:
            errors = {BLOCK_GROUPS: truncate(escape(str(exc)), ERROR_TEXT_MAX)}
    return OverviewResult(errors=errors) if errors else OverviewResult(edited=edited)


def _body_errors(edited: dict[str, Any]) -> dict[str, str]:
    try:
        problems = spec_problems(ClusterFields.model_validate(edited))
    except ValidationError as exc:
        return {BLOCK_GROUPS: truncate(escape(f"this body is not valid: {exc.errors()[0]['msg']}"), ERROR_TEXT_MAX)}
    by_block: dict[str, list[str]] = {}
    for problem in problems:
        block = _OVERVIEW_PATHS.get(problem.path)
        if block is None:
            # Problems of groups (and of fields the form does not show) go on the groups picker: pick one to fix it.
            by_block.setdefault(BLOCK_GROUPS, []).append(escape(str(problem)))
        else:
            by_block.setdefault(block, []).append(escape(problem.message))
    return {block: _join_errors(messages) for block, messages in by_block.items()}


# --- the group editor -------------------------------------------------------------------------------------------------


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]


def group_view(draft: Draft, group_name: str | None) -> dict[str, Any]:
    """The editor of one worker group (pushed on the overview), or of a new one when `group_name` is None.

    A new group is prefilled from the last group (type, queue, cpu, memory, gpu) with 1 replica. The group being
    edited is remembered in the first block's id (index and a digest of its name): read it with group_target.
    """
    groups = _groups(draft.edited)
    alias = f"*{_line(draft.alias, NAME_SHOWN_MAX)}*"
    blocks: list[dict[str, Any]]
    if group_name is None:
        template = groups[-1] if groups else {}
        base = {k: template[k] for k in ("workerType", "queueName", "cpu", "memory", "gpuSpec") if k in template}
        base |= {"replica": 1, "minReplica": 1, "maxReplica": 1}
        intro = f"New worker group for {alias}."
        if template:
            intro += f" Prefilled from {_line(_group_name(template), NAME_SHOWN_MAX)}."
        blocks = [_section(intro, block_id=_TARGET_NEW)]
        if len(groups) >= MAX_WORKER_GROUPS:
            blocks.append(_context(f"⚠️ This cluster already has {len(groups)} groups, the most allowed."))
        title = "New worker group"
    else:
        index = _group_index(groups, group_name)
        base = groups[index]
        target = f"{_TARGET_PREFIX}{index}.{_digest(group_name)}"
        blocks = [_section(f"Worker group *{_line(group_name, NAME_SHOWN_MAX)}* of {alias}.", block_id=target)]
        title = "Edit worker group"
    blocks += [_input(spec, base) for spec in (GROUP_INPUTS if group_name is None else _EXISTING_GROUP_INPUTS)]
    if group_name is not None:
        option = {
            "text": _plain("Remove this group"),
            "value": REMOVE_VALUE,
            "description": _plain("Its replicas stop when the change is applied", limits.OPTION_TEXT_MAX),
        }
        blocks.append(
            {
                "type": "input",
                "block_id": BLOCK_GROUP_REMOVE,
                "label": _plain("Remove"),
                "optional": True,
                "element": {"type": "checkboxes", "action_id": BLOCK_GROUP_REMOVE, "options": [option]},
            }
        )
    blocks.append(_context("Saving returns to the overview. Nothing is sent until you Review and Apply."))
    return _modal(CALLBACK_GROUP, title, blocks, submit="Save group", close="Back", private_metadata=draft.key)


def group_target(view: Mapping[str, Any], draft: Draft) -> str | None:
    """The group a submitted group_view edits (None: a new group). Raises UnknownGroupError if it is gone."""
    for block in view.get("blocks") or []:
        block_id = block.get("block_id") if isinstance(block, Mapping) else None
        if block_id == _TARGET_NEW:
            return None
        if isinstance(block_id, str) and block_id.startswith(_TARGET_PREFIX):
            index_text, _, digest = block_id.removeprefix(_TARGET_PREFIX).partition(".")
            names = [_group_name(g) for g in _groups(draft.edited)]
            index = _index(index_text)
            if index is not None and index < len(names) and _digest(names[index]) == digest:
                return names[index]
            for name in names:
                if _digest(name) == digest:
                    return name
            raise UnknownGroupError("this worker group is no longer in the draft; open it again from the overview")
    raise UnknownGroupError("not a worker group editor view")


@dataclass(frozen=True)
class GroupResult:
    """Either `errors` (block id → message) or the new `edited` body; `removed` when the group was removed."""

    edited: dict[str, Any] | None = None
    errors: dict[str, str] = field(default_factory=dict)
    removed: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors


_GROUP_SUFFIXES = {
    "groupName": BLOCK_GROUP_NAME,
    "replica": BLOCK_GROUP_REPLICA,
    "minReplica": BLOCK_GROUP_MIN,
    "maxReplica": BLOCK_GROUP_MAX,
    "cpu": BLOCK_GROUP_CPU,
    "memory": BLOCK_GROUP_MEMORY,
}


def parse_group(state_values: Mapping[str, Any], draft: Draft, group_name: str | None) -> GroupResult:
    """The group editor as submitted, applied to a copy of the draft's edited body.

    `group_name` None adds a group. Checks: name present and unique, at most 50 groups, replicas whole numbers
    ≥ 1 with min ≤ replica ≤ max, cpu, memory; the group's fields the form does not show are kept.
    "Remove this group" removes it and checks nothing else.
    """
    edited = copy.deepcopy(draft.edited)
    groups = edited.get("workerSpec")
    if not isinstance(groups, list):
        groups = []
    index: int | None = None
    if group_name is not None:
        try:
            index = _group_index(groups, group_name)
        except UnknownGroupError as exc:  # its message names the group: user or cloud text
            return GroupResult(errors={BLOCK_GROUP_NAME: truncate(escape(str(exc)), ERROR_TEXT_MAX)})
        remove = _state_entry(state_values, BLOCK_GROUP_REMOVE) or {}
        if any(o.get("value") == REMOVE_VALUE for o in remove.get("selected_options") or [] if isinstance(o, Mapping)):
            del groups[index]
            edited["workerSpec"] = groups
            return GroupResult(edited=edited, removed=True)
    group: dict[str, Any] = copy.deepcopy(groups[index]) if index is not None else {}
    errors: dict[str, str] = {}
    if index is None and len(groups) >= MAX_WORKER_GROUPS:
        errors[BLOCK_GROUP_NAME] = (
            f"A cluster holds at most {MAX_WORKER_GROUPS} worker groups and this one has {len(groups)}; "
            "remove one first"
        )
    _read_inputs(GROUP_INPUTS if index is None else _EXISTING_GROUP_INPUTS, state_values, group, errors)
    _replica_errors(group, errors)
    name = group.get("groupName")
    others = [_group_name(g) for i, g in enumerate(groups) if i != index]
    if BLOCK_GROUP_NAME not in errors and isinstance(name, str) and name in others:
        errors[BLOCK_GROUP_NAME] = f"This cluster already has a worker group called {escape(_cut(name, 100))}"
    if not errors:
        errors = _single_group_errors(group)
    if errors:
        return GroupResult(errors=errors)
    if index is None:
        groups.append(group)
    else:
        groups[index] = group
    edited["workerSpec"] = groups
    return GroupResult(edited=edited)


def _replica_errors(group: Mapping[str, Any], errors: dict[str, str]) -> None:
    if any(b in errors for b in (BLOCK_GROUP_REPLICA, BLOCK_GROUP_MIN, BLOCK_GROUP_MAX)):
        return
    replica, low, high = group.get("replica"), group.get("minReplica"), group.get("maxReplica")
    if isinstance(low, int) and isinstance(high, int) and low > high:
        errors[BLOCK_GROUP_MIN] = f"Min replicas {low} is above max replicas {high}"
    elif isinstance(replica, int) and isinstance(high, int) and replica > high:
        errors[BLOCK_GROUP_REPLICA] = f"Replicas {replica} is above max replicas {high}; raise the max too"
    elif isinstance(replica, int) and isinstance(low, int) and replica < low:
        errors[BLOCK_GROUP_REPLICA] = f"Replicas {replica} is below min replicas {low}; lower the min too"


def _single_group_errors(group: dict[str, Any]) -> dict[str, str]:
    try:
        problems = group_problems("group", WorkerGroup.model_validate(group))
    except ValidationError as exc:
        return {
            BLOCK_GROUP_NAME: truncate(escape(f"this group is not valid: {exc.errors()[0]['msg']}"), ERROR_TEXT_MAX)
        }
    by_block: dict[str, list[str]] = {}
    for problem in problems:
        block = _GROUP_SUFFIXES.get(problem.path.rsplit(".", 1)[-1], BLOCK_GROUP_NAME)
        by_block.setdefault(block, []).append(escape(problem.message))
    return {block: _join_errors(messages) for block, messages in by_block.items()}


def role_limit_errors(violations: Sequence[str], *, group_name: str | None = None) -> dict[str, str]:
    """Inline errors for a role's limit denials (bot.permissions.check_change's reasons, mrkdwn-escaped already).

    In the group editor (`group_name` given) they go on the replica input, worker-type ones on the type input;
    in the overview on the groups picker, the overview's place for what concerns no single field.
    """
    if not violations:
        return {}
    if group_name is None:
        return {BLOCK_GROUPS: _join_errors(violations)}
    # bot.permissions words worker-type denials "… allows only worker types …"; everything else is about replicas.
    types = [v for v in violations if "worker type" in v]
    rest = [v for v in violations if "worker type" not in v]
    out = {}
    if rest:
        out[BLOCK_GROUP_REPLICA] = _join_errors(rest)
    if types:
        out[BLOCK_GROUP_TYPE] = _join_errors(types)
    return out


# --- from the draft to a change ---------------------------------------------------------------------------------------


def changes_for(draft: Draft) -> list[Change]:
    """The changes that turn the cluster as read into the draft: plan(cluster, changes_for(draft)) sends `edited`.

    Each change carries only what the person changed: the fields that differ, and for an edited group only its
    fields that differ (an explicit None for a field the edit left out). Fields nobody touched, secrets among them,
    are then sent as the fresh read has them, never as the masked draft shows them. Groups are matched by name; a
    group renamed in place (its slot among the groups kept, and a field the editor does not show, tell it from a
    new one) is one ReplaceGroup, so its secrets follow it; any other group the draft gains is added as drafted
    (plan refuses one that carries a masked secret). Raises ChangeError for an edit the change vocabulary cannot
    express (a field outside TOP_LEVEL_FIELDS/HEAD_FIELDS, which the views never edit).
    """
    before, after = draft.original, draft.edited
    values: dict[str, Any] = {}
    for key in dict.fromkeys([*before, *after]):
        if key in ("headSpec", "workerSpec") or before.get(key) == after.get(key):
            continue
        if key not in TOP_LEVEL_FIELDS:
            raise ChangeError(f"{path_in_words(key)} cannot be changed from the editor")
        values[key] = after.get(key)
    head_before = before.get("headSpec") if isinstance(before.get("headSpec"), dict) else {}
    head_after = after.get("headSpec") if isinstance(after.get("headSpec"), dict) else {}
    for key in dict.fromkeys([*head_before, *head_after]):
        if head_before.get(key) == head_after.get(key):
            continue
        if key not in HEAD_FIELDS:
            raise ChangeError(f"{path_in_words('headSpec.' + key)} cannot be changed from the editor")
        values[f"headSpec.{key}"] = head_after.get(key)
    changes: list[Change] = [SetFields(values=values)] if values else []

    old: dict[str, dict[str, Any]] = {}
    for group in _groups(before):
        old.setdefault(_group_name(group), group)
    new_names = {_group_name(g) for g in _groups(after)}
    renamed = _renamed_groups(_groups(before), _groups(after))  # new name → old name
    changes += [RemoveGroup(group=name) for name in old if name not in new_names and name not in renamed.values()]
    for group in _groups(after):
        name = _group_name(group)
        source = renamed.get(name, name)
        if source not in old:
            changes.append(AddGroup(spec=WorkerGroup.model_validate(group)))
        elif old[source] != group:
            changes.append(
                ReplaceGroup(group=source, spec=WorkerGroup.model_validate(_group_delta(old[source], group)))
            )
    return changes


def _group_delta(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a group that the edit changed, with None for those it left out (ReplaceGroup removes them)."""
    return {key: new.get(key) for key in dict.fromkeys([*old, *new]) if old.get(key) != new.get(key)}


_FORM_KEYS = frozenset(spec.key for spec in GROUP_INPUTS)


def _renamed_groups(before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Groups of `after` that are a group of `before` renamed in place: new name → old name.

    The group editor renames a group where it stands and appends new groups, so a renamed group is the only
    group gone from its slot (between the same kept neighbours) and the only one new there; and it still holds
    some field the editor does not show (a new group has none). Anything less certain is left a remove and an add.
    """
    kept = {_group_name(g) for g in before} & {_group_name(g) for g in after}

    def slots(groups: Sequence[Mapping[str, Any]]) -> dict[tuple[str | None, str | None], list[Mapping[str, Any]]]:
        names = [_group_name(g) for g in groups]
        out: dict[tuple[str | None, str | None], list[Mapping[str, Any]]] = {}
        for index, group in enumerate(groups):
            if names[index] in kept:
                continue
            previous = next((n for n in reversed(names[:index]) if n in kept), None)
            following = next((n for n in names[index + 1 :] if n in kept), None)
            out.setdefault((previous, following), []).append(group)
        return out

    added = slots(after)
    pairs: dict[str, str] = {}
    for slot, gone in slots(before).items():
        new = added.get(slot, [])
        if len(gone) != 1 or len(new) != 1:
            continue
        old_group, new_group = gone[0], new[0]
        if any(key not in _FORM_KEYS and new_group.get(key) == value for key, value in old_group.items()):
            pairs[_group_name(new_group)] = _group_name(old_group)
    return pairs


def review_diff(draft: Draft) -> list[DiffEntry]:
    """What Apply would change on the cluster as read (empty: nothing to send). Raises ChangeError as plan() does."""
    return plan(RayCluster.model_validate(draft.original), changes_for(draft)).diff


# --- confirmation, and a cluster that changed meanwhile ---------------------------------------------------------------


def _diff_blocks(entries: Sequence[DiffEntry]) -> list[dict[str, Any]]:
    # The same plain words as the thread's diff (bot.slack.words): the API's paths stay in the audit log.
    return diff_sections(entries, max_sections=DIFF_SECTIONS_MAX)


def confirm_view(draft: Draft, entries: Sequence[DiffEntry], cost: str | None = None) -> dict[str, Any]:
    """The change before → after (secrets masked) and what it costs (`cost`, bot.cost.change_text) with Apply;
    without entries, "nothing changed" and no Apply."""
    alias = f"*{_line(draft.alias, NAME_SHOWN_MAX)}*"
    if not entries:
        blocks = [
            _section(f"➖ Nothing changed: the draft is {alias} as read. Nothing will be sent."),
            _context("Go back to change something, or cancel."),
        ]
        return _modal(CALLBACK_CONFIRM, "Review changes", blocks, close="Back", private_metadata=draft.key)
    count = len(entries)
    blocks = [
        _section(f"Review the change to {alias}: {count} field{'' if count == 1 else 's'} (before → after)."),
        *_diff_blocks(entries),
        *([cost_line(cost)] if cost else []),
        _context(
            "*Apply* reads the cluster again first: if someone changed it since you opened the editor, "
            "you see what changed instead, and nothing is sent."
        ),
    ]
    return _modal(CALLBACK_CONFIRM, "Review changes", blocks, submit="Apply", close="Back", private_metadata=draft.key)


def stale_diff(draft: Draft, fresh: RayCluster) -> list[DiffEntry]:
    """What changed on the cluster between the read that opened the editor and `fresh` (empty: not stale)."""
    return diff(draft.original, _readable(fresh))


def conflicts(draft: Draft, changes_since_open: Sequence[DiffEntry]) -> list[str]:
    """Paths both the draft and someone else changed (the draft's value wins on rebase)."""
    mine = [entry.path for entry in diff(draft.original, draft.edited)]
    out = []
    for entry in changes_since_open:
        theirs = entry.path
        if any(m == theirs or m.startswith(theirs + ".") or theirs.startswith(m + ".") for m in mine):
            out.append(theirs)
    return out


def stale_view(draft: Draft, changes_since_open: Sequence[DiffEntry], new_cluster: RayCluster) -> dict[str, Any]:
    """The cluster changed since the editor opened: what changed (with the new values); submit "Review again".

    Show it with the draft as it was (before rebase), so the conflicts are the user's edits against the others'.
    """
    who = new_cluster.modifier_name or new_cluster.modifier
    by = f" by {_line(who, NAME_SHOWN_MAX)}" if who else ""
    count = len(changes_since_open)
    blocks = [
        _section(
            f"⚠️ *{_line(draft.alias, NAME_SHOWN_MAX)}* was changed{by} since you opened the editor, "
            f"so nothing was sent. {count} field{'' if count == 1 else 's'} changed (as opened → now):"
        ),
        *_diff_blocks(changes_since_open),
    ]
    both = conflicts(draft, changes_since_open)
    if both:
        listed = ", ".join(dict.fromkeys(path_in_words(path) for path in both))
        blocks.append(_section(f"You changed these too; your values are kept: {_line(listed, 2000)}"))
    blocks.append(
        _context("*Review again* shows your edits applied to the cluster as it is now; Apply only after that.")
    )
    return _modal(
        CALLBACK_STALE, "Cluster changed", blocks, submit="Review again", close="Cancel", private_metadata=draft.key
    )


_MISSING = object()


def rebase(draft: Draft, fresh: RayCluster) -> Draft:
    """The draft moved onto `fresh`: the user's edits applied on the cluster as it is now.

    Field by field (groups matched by name): what the user changed keeps the user's value, everything else takes
    the fresh value; groups the user removed stay removed, groups others added are added.
    """
    body = _readable(fresh)
    merged = _merge(draft.original, draft.edited, body)
    return draft.model_copy(
        update={
            "original": body,
            "edited": merged,
            "modified_time": fresh.modified_time,
            "read_hash": body_hash(body),
            "cluster_id": fresh.cluster_id or draft.cluster_id,
        }
    )


def _merge(old: Mapping[str, Any], mine: Mapping[str, Any], theirs: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in dict.fromkeys([*theirs, *mine]):
        o, m, t = old.get(key, _MISSING), mine.get(key, _MISSING), theirs.get(key, _MISSING)
        if key == "workerSpec" and isinstance(m, list):
            value: Any = _merge_groups(o if isinstance(o, list) else [], m, t if isinstance(t, list) else [])
        elif m == o:
            value = t
        elif isinstance(o, dict) and isinstance(m, dict) and isinstance(t, dict):
            value = _merge(o, m, t)
        else:
            value = m
        if value is not _MISSING:
            out[key] = copy.deepcopy(value)
    return out


def _merge_groups(old: list[Any], mine: list[Any], theirs: list[Any]) -> list[dict[str, Any]]:
    before = {_group_name(g): g for g in _groups({"workerSpec": old})}
    now = {_group_name(g): g for g in _groups({"workerSpec": theirs})}
    out = []
    for group in _groups({"workerSpec": mine}):
        name = _group_name(group)
        if name not in before:
            out.append(group)  # added by the user
        elif name in now:
            out.append(_merge(before[name], group, now[name]))
        elif group != before[name]:
            out.append(group)  # removed by others, edited by the user: the user's version comes back for review
    mine_names = {_group_name(g) for g in _groups({"workerSpec": mine})}
    out += [g for name, g in now.items() if name not in before and name not in mine_names]
    return out
