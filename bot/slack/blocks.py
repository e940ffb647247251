"""Block Kit for everything raybot says, as pure functions: data in, `SlackMessage(text, blocks)` out.

Two promises every builder keeps, whatever its input:
- it fits Slack's limits (bot/slack/limits.py): long text is cut with an ellipsis,
  many clusters or groups are packed several to a section, and what still does
  not fit ends in an "and N more" line;
- every string that a user, the config or the cloud API controls is escaped
  (bot/slack/mrkdwn.py), and mrkdwn objects are `verbatim`, so nothing shown
  here can mention or link anyone by accident.

Whether a message is ephemeral is the sender's choice; the docstrings say which
is meant. `text` is the notification/fallback text and is escaped as well.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from slack_sdk.models.blocks import ContextBlock, MarkdownTextObject, SectionBlock

from bot import grammar
from bot.emr.changes import DiffEntry
from bot.emr.errors import EmrError
from bot.emr.models import RayCluster, WorkerGroup
from bot.follow import Progress
from bot.slack import limits
from bot.slack.mrkdwn import ELLIPSIS, channel, escape, one_line, truncate, user
from bot.slack.mrkdwn import code as inline_code
from bot.slack.words import (
    change_in_words,
    change_record_in_words,
    diff_in_words,
    duration_in_words,
    memory_in_words,
    plural,
    replicas_in_words,
)

if TYPE_CHECKING:
    from bot.store import ChangeRecord

FALLBACK_TEXT_MAX = 3000  # notifications show a line or two; keep fallback text short on purpose
NAME_MAX = 80  # aliases, cluster and group names as shown in running text (escaped characters)
MESSAGE_MAX = 1500  # an error message from the cloud API, escaped
OUTCOME_MAX = 1500  # why an approval came to nothing, as approval_void says it (raybot's mrkdwn)
LIST_ENTRIES_PER_SECTION_MAX = 10  # beyond this many clusters per section, entries become too short to read
DIFF_SECTIONS_MAX = 10  # preformatted sections a diff may take
DIFF_VALUE_MAX = 200  # characters of one value in a diff line, before escaping
REASON_MAX = 2000  # a refusal's reason (raybot's mrkdwn)
VOID_ENTRIES_MAX = 10  # changed fields a void approval names
VOID_ENTRY_MAX = 110  # characters of each, escaped (10 of them and the sentence stay within OUTCOME_MAX)
FENCE = "```"

# Action ids of raybot's buttons: the builders below put them on buttons, commands/ listen for them.
UNDO_ACTION = "raybot_undo"
# The value of Approve, Reject and Keep it is a change's id (schema 3); the ids changed with it, so a button
# posted by an older raybot, whose value meant an approval or schedule id, is never read as a change id.
CANCEL_REVERT_ACTION = "raybot_keep_change"
APPROVE_ACTION = "raybot_approve_change"
REJECT_ACTION = "raybot_reject_change"
STOP_ACTION = "raybot_stop"
OPEN_EDITOR_ACTION = "raybot_edit_open"


class SlackMessage(NamedTuple):
    """What chat.postMessage / chat.update / respond take: fallback `text` and `blocks` (plain dicts)."""

    text: str
    blocks: list[dict[str, Any]]


# --- small pieces -----------------------------------------------------------------------------------------------------


def _esc(raw: str | None, limit: int) -> str:
    """Escaped text cut to `limit` characters (the cut never splits an entity)."""
    return truncate(escape(raw or ""), limit)


def _line(raw: str | None, limit: int) -> str:
    """Like `_esc`, on one line: for names, summaries and single words inside a sentence."""
    return truncate(escape(one_line(raw or "")), limit)


def _mrkdwn(text: str) -> MarkdownTextObject:
    return MarkdownTextObject(text=text, verbatim=True)


def _section(text: str) -> dict[str, Any]:
    return SectionBlock(text=_mrkdwn(truncate(text, limits.SECTION_TEXT_MAX))).to_dict()


def _fields(text: str, fields: Sequence[str]) -> dict[str, Any]:
    shown = [_mrkdwn(truncate(f, limits.FIELD_TEXT_MAX)) for f in fields[: limits.SECTION_FIELDS_MAX]]
    return SectionBlock(text=_mrkdwn(truncate(text, limits.SECTION_TEXT_MAX)), fields=shown).to_dict()


def _context(text: str) -> dict[str, Any]:
    return ContextBlock(elements=[_mrkdwn(truncate(text, limits.SECTION_TEXT_MAX))]).to_dict()


def _fallback(text: str) -> str:
    return truncate(text, FALLBACK_TEXT_MAX)


def _pre_line(raw: str) -> str:
    """One line for a preformatted block: escaped, no backticks (a ``` inside would end the block)."""
    return escape(one_line(raw)).replace("`", "\u02cb")


def _pre_sections(lines: Sequence[str], max_sections: int, head: str | None = None) -> tuple[list[dict], int]:
    """Pack escaped `lines` into preformatted sections (each ≤ SECTION_TEXT_MAX, `head` repeated on top of each).

    Returns the sections and how many lines they hold; the caller reports the rest.
    """
    overhead = len(FENCE) * 2 + 2 + (len(head) + 1 if head else 0)
    room = limits.SECTION_TEXT_MAX - overhead
    sections: list[dict] = []
    chunk: list[str] = []
    used = 0
    shown = 0
    for line in lines:
        line = truncate(line, room)
        if chunk and used + 1 + len(line) > room:
            if len(sections) + 1 >= max_sections:
                break
            sections.append(_pre_section(chunk, head))
            chunk, used = [], 0
        used += len(line) + (1 if chunk else 0)
        chunk.append(line)
        shown += 1
    if chunk:
        sections.append(_pre_section(chunk, head))
    return sections, shown


def _pre_section(lines: Sequence[str], head: str | None) -> dict[str, Any]:
    body = "\n".join(([head] if head else []) + list(lines))
    return _section(f"{FENCE}\n{body}\n{FENCE}")


def _entry_sections(entries: Sequence[str]) -> list[dict[str, Any]]:
    """Entries (lines of mrkdwn) packed into as few sections as fit: at most 10 entries and 2800 characters each."""
    sections: list[dict[str, Any]] = []
    chunk: list[str] = []
    for entry in entries:
        if chunk and (len(chunk) >= LIST_ENTRIES_PER_SECTION_MAX or sum(map(len, chunk)) + len(entry) > 2800):
            sections.append(_section("\n".join(chunk)))
            chunk = []
        chunk.append(entry)
    if chunk:
        sections.append(_section("\n".join(chunk)))
    return sections


def _more(count: int, noun: str) -> str:
    return f"{ELLIPSIS} and {count} more {noun}{'' if count == 1 else 's'}"


COST_MAX = 1000  # a cost line (bot.cost's words; GPU specs and group names in it come from the cloud), escaped


def cost_line(cost: str) -> dict[str, Any]:
    """What a change or a cluster costs per hour (bot.cost.change_text / cluster_text), as one context line."""
    return _context(f"💰 {_line(cost, COST_MAX)}")


# --- errors and simple answers ----------------------------------------------------------------------------------------


def usage_error(message: str, usage: str) -> SlackMessage:
    """A command that did not parse (ephemeral): what is wrong, and the usage line(s), one inline-code line each
    (they wrap in a narrow channel column, where a preformatted block would be cut mid-column)."""
    text = f":warning: {_esc(message, 1000)}"
    usage_lines = [f"• {inline_code(line, 300)}" for line in usage.splitlines() if line.strip()]
    blocks = [_section(text), *_entry_sections(usage_lines)[:3]]
    blocks.append(_context(f"{inline_code(grammar.PREFIX + ' help')} lists every command."))
    return SlackMessage(_fallback(text), blocks)


def help_message(topic: str | None = None) -> SlackMessage:
    """`/ray help` (ephemeral): one command per line with what it does; `/ray help <command>`: its usage and examples.

    Built from the grammar's table, and readable in a narrow channel column: no wide preformatted block.
    """
    if topic is not None and topic in grammar.SUBCOMMANDS:
        sub = grammar.SUBCOMMANDS[topic]
        head = f"*{inline_code(grammar.PREFIX + ' ' + sub.name)}* {escape(sub.brief)}"
        usage = [
            f"• {inline_code(grammar.PREFIX + ' ' + syntax, 200)}\n   {escape(text)}" for syntax, text in sub.lines
        ]
        blocks = [_section(head), _section("*Usage*\n" + "\n".join(usage))]
        if sub.examples:
            examples = "\n".join(f"• {inline_code(grammar.PREFIX + ' ' + example, 200)}" for example in sub.examples)
            blocks.append(_section("*Examples*\n" + examples))
        blocks.append(_context(f"{inline_code(grammar.PREFIX + ' help')} lists every command."))
        return SlackMessage(_fallback(f"{grammar.PREFIX} {sub.name}: {sub.brief}"), blocks)
    intro = "*raybot* changes Ray clusters on EMR Serverless Spark. Commands:"
    lines = [
        f"{inline_code(grammar.PREFIX + ' ' + sub.name)} {escape(sub.brief)}" for sub in grammar.SUBCOMMANDS.values()
    ]
    footer = _context(
        f"{inline_code(grammar.PREFIX + ' help <command>')} shows a command's usage and examples. "
        "Every change is posted in this channel with its clusterId, requestId and what changed."
    )
    return SlackMessage(
        _fallback("raybot commands: " + ", ".join(grammar.SUBCOMMANDS)),
        [_section(intro), *_entry_sections(lines), footer],
    )


def denied(reason: str) -> SlackMessage:
    """A permission refusal (ephemeral), with the policy's reason.

    The reason is mrkdwn built by bot.permissions from config-validated ids
    (<#C…>, <!subteam^S…>), with anything a user typed already escaped there,
    so it is truncated here but not escaped again.
    """
    text = f"🚫 Not allowed: {truncate(reason, 2000)}"
    return SlackMessage(_fallback(text), [_section(text)])


def internal_error(reference: str) -> SlackMessage:
    """raybot's own failure: a reference to find it in the log, and nothing else (no stack traces to Slack)."""
    text = (
        f"Something went wrong inside raybot. Reference {inline_code(reference, 100)}: "
        "whoever runs raybot can find the details in its log."
    )
    return SlackMessage(_fallback(text), [_section(f":warning: {text}")])


# --- /ray list --------------------------------------------------------------------------------------------------------


LIST_GROUPS_SHOWN = 4  # groups /ray list names per cluster; the rest are counted (/ray show has them all)


def _group_brief(group: WorkerGroup) -> str:
    """ "WorkerGroup1: 3 replicas (min 1, max 10)": the one vocabulary of replica counts."""
    name = _line(group.group_name or "(unnamed)", 40)
    return f"{name}: {replicas_in_words(group.replica, group.min_replica, group.max_replica)}"


def _request_id(request_id: str | None, label: str = "RequestId") -> str:
    """ " · RequestId `…`", or nothing when the API gave none (never "none")."""
    return f" · {label} {inline_code(request_id, 64)}" if request_id else ""


def _list_entry(alias: str, row: RayCluster | EmrError, limit: int, cost: str | None = None) -> str:
    title = f"*{_line(alias, NAME_MAX)}*"
    if isinstance(row, EmrError):
        head = f"{title} ❌ could not be read: {inline_code(row.code, 64)}{_request_id(row.request_id)}"
        room = limit - len(head) - 1
        detail = f"\n{_esc(row.message, min(room, 500))}" if room > 10 and row.message else ""
        return truncate(head + detail, limit)
    head = f"{title} {inline_code(row.state or 'unknown', 32)}"
    if row.name and row.name != alias:
        head += f" · {_line(row.name, NAME_MAX)}"
    if cost:
        head += f" · 💰 {_line(cost, 200)}"
    groups = row.worker_spec or []
    if not groups:
        return truncate(f"{head}\nno worker groups", limit)
    if len(groups) > LIST_GROUPS_SHOWN:
        # A cluster of 50 groups is a count and a few names here, not a wall of text.
        total = sum(g.replica or 0 for g in groups)
        head += f" · {plural(len(groups), 'worker group')}, {plural(total, 'replica')} in all"
    lines = [head]
    used = len(head)
    shown = groups[: LIST_GROUPS_SHOWN - 1] if len(groups) > LIST_GROUPS_SHOWN else groups
    for index, group in enumerate(shown):
        line = f"• {_group_brief(group)}"
        rest = len(groups) - index - 1
        reserve = len("\n" + _more(rest, "group")) if rest else 0
        if used + 1 + len(line) + reserve > limit:
            break
        lines.append(line)
        used += 1 + len(line)
    hidden = len(groups) - (len(lines) - 1)
    if hidden:
        lines.append(_more(hidden, "group"))
    return truncate("\n".join(lines), limit)


def cluster_list(
    rows: Sequence[tuple[str, RayCluster | EmrError]], costs: Mapping[str, str] | None = None
) -> SlackMessage:
    """`/ray list`: per alias its state, its cost per hour (`costs`, by alias) and "Group: 3 replicas (min 1, max 10)"
    per group (a few, then counted).

    A row whose read failed shows the error's Code and RequestId.
    One section per alias while they fit, several per section beyond that.
    """
    if not rows:
        text = "No clusters are visible from this channel."
        return SlackMessage(text, [_section(text)])
    available = limits.MESSAGE_BLOCKS_MAX - 2  # the title and a closing context line
    shown = rows[: available * LIST_ENTRIES_PER_SECTION_MAX]
    per_section = math.ceil(len(shown) / available)
    entry_max = (limits.SECTION_TEXT_MAX - (per_section - 1)) // per_section
    failed = sum(isinstance(row, EmrError) for _, row in rows)
    title = f"*Ray clusters visible here* ({len(rows)})"
    blocks = [_section(title)]
    for start in range(0, len(shown), per_section):
        chunk = shown[start : start + per_section]
        entries = [_list_entry(alias, row, entry_max, (costs or {}).get(alias)) for alias, row in chunk]
        blocks.append(_section("\n".join(entries)))
    notes = []
    if failed:
        notes.append(f"{failed} could not be read")
    if len(rows) > len(shown):
        notes.append(_more(len(rows) - len(shown), "cluster"))
    if notes:
        blocks.append(_context(" · ".join(notes)))
    names = ", ".join(alias for alias, _ in rows)
    return SlackMessage(_fallback(escape(f"Ray clusters visible here: {names}")), blocks)


# --- /ray show --------------------------------------------------------------------------------------------------------

# (heading, width cap, value) for the worker table; caps keep a row short enough that ≥ 50 rows fit few sections.
_COLUMNS: tuple[tuple[str, int, Any], ...] = (
    ("group", 32, lambda g: g.group_name),
    ("type", 20, lambda g: g.worker_type),
    ("replica", 7, lambda g: g.replica),
    ("min", 6, lambda g: g.min_replica),
    ("max", 6, lambda g: g.max_replica),
    ("cpu", 8, lambda g: g.cpu),
    ("memory", 10, lambda g: g.memory),
    ("gpu", 16, lambda g: g.gpu_spec),
)


def _cell(value: Any, width: int) -> str:
    return truncate("-" if value is None or value == "" else str(value), width)


def worker_table(groups: Sequence[WorkerGroup]) -> tuple[str, list[str]]:
    """The worker groups as a monospace table: (heading line, one line per group), escaped for a ``` block."""
    cells = [[_cell(get(g), cap) for _, cap, get in _COLUMNS] for g in groups]
    widths = [max([len(name)] + [len(row[i]) for row in cells]) for i, (name, _, _) in enumerate(_COLUMNS)]

    def line(values: Sequence[str]) -> str:
        return _pre_line("  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip())

    return line([name for name, _, _ in _COLUMNS]), [line(row) for row in cells]


def _autoscaling(cluster: RayCluster) -> str:
    head = cluster.head_spec
    if head is None or head.enable_auto_scaling is None:
        return "unknown"
    if not head.enable_auto_scaling:
        return "off"
    idle = head.idle_timeout_seconds
    return "on" + (f", idle {idle} s" if idle is not None else "")


def _group_detail(group: WorkerGroup) -> str:
    """One worker group on one wrapping line, readable in a narrow channel column (no table to cut)."""
    parts = [replicas_in_words(group.replica, group.min_replica, group.max_replica)]
    if group.worker_type:
        parts.append(f"type {_line(group.worker_type, 40)}")
    if group.cpu:
        parts.append(f"{_line(group.cpu, 20)} CPU")
    if group.memory:
        parts.append(f"{_line(memory_in_words(group.memory), 20)} memory")
    if group.gpu_spec:
        parts.append(f"GPU {_line(group.gpu_spec, 40)}")
    return f"• *{_line(group.group_name or '(unnamed)', 40)}*: {', '.join(parts)}"


def cluster_detail(alias: str, cluster: RayCluster, cost: str | None = None) -> SlackMessage:
    """`/ray show`: status, its cost per hour (`cost`, bot.cost.cluster_text), head (queue, cpu, memory, gpu,
    autoscaling) and every worker group, one line each."""
    title = f"*{_line(alias, NAME_MAX)}*"
    if cluster.name and cluster.name != alias:
        title += f" · {_line(cluster.name, NAME_MAX)}"
    lines = [
        title,
        f"State {inline_code(cluster.state or 'unknown', 32)}"
        + f" · clusterId {inline_code(cluster.cluster_id or '?', 64)}",
    ]
    if cluster.message:
        lines.append(_esc(cluster.message, 500))
    if cluster.description:
        lines.append(_esc(cluster.description, 1000))
    head = cluster.head_spec
    head_fields = [
        ("Queue", head.queue_name if head else None),
        ("CPU", head.cpu if head else None),
        ("Memory", memory_in_words(head.memory) if head and head.memory else None),
        ("GPU", head.gpu_spec if head else None),
        ("Autoscaling", _autoscaling(cluster)),
        ("Release", cluster.display_release_version),
    ]
    groups = cluster.worker_spec or []
    blocks = [
        _section("\n".join(lines)),
        *([cost_line(cost)] if cost else []),
        _fields("*Head*", [f"*{name}*\n{_line(value or '-', 300)}" for name, value in head_fields]),
        _section(f"*Worker groups* ({len(groups)})"),
    ]
    if groups:
        available = limits.MESSAGE_BLOCKS_MAX - len(blocks) - 1  # keep one for an "and N more" line
        sections = _entry_sections([_group_detail(g) for g in groups])
        blocks += sections[:available]
        shown = sum(section["text"]["text"].count("\n") + 1 for section in sections[:available])
        if shown < len(groups):
            blocks.append(_context(_more(len(groups) - shown, "group")))
    else:
        blocks.append(_section("no worker groups"))
    text = escape(f"{alias}: {cluster.state or 'unknown'}, {len(groups)} worker groups")
    return SlackMessage(_fallback(text), blocks)


# --- the life of one change -------------------------------------------------------------------------------------------


CARD_WHAT_MAX = 1200  # the change in words on the root message, escaped
CARD_REASON_MAX = 600  # a failure's or refusal's reason on the root message, escaped
APPROVAL_REASON_MAX = 800  # why approval is needed (raybot's mrkdwn from bot.permissions)
# The root message's mark per state of the change (bot/change_state.py); an undone change is ↩️ whatever its state.
CARD_MARKS: dict[str, str] = {
    "awaiting_approval": "🕒",
    "applying": "⏳",
    "sending": "⏳",
    "applied": "⏳",
    "unknown": "❔",
    "settled": "✅",
    "not_settled": "❔",
    "broken": "❌",
    "failed": "❌",
    "cancelled": "❌",
    "rejected": "🚫",
    "expired": "⌛",
    "void": "🚫",
}
UNDONE_MARK = "↩️"
# A change a later change to the same groups overtook before it settled: known, not being checked (❔).
SUPERSEDED_MARK = "⏭️"
# A thread answer when the cloud accepted a change: not ✅ — only a settled change is done (CARD_MARKS).
ACCEPTED_MARK = "📨"


def _card_what(record: ChangeRecord) -> str:
    """The change in plain words, before → after (escaped): from the row's diff, else what was asked."""
    return _line(change_record_in_words(record), CARD_WHAT_MAX)


def _card_state(record: ChangeRecord, approvers: str | None = None) -> str:
    """What became of the change itself (escaped mrkdwn), without its revert or undo. `approvers`: who may approve
    it (raybot's mentions, bot.permissions.approvers_here)."""
    state = record.state
    progress = f": {_line(record.last_summary, PROGRESS_MAX)}" if record.last_summary else ""
    reason = _line(record.error_message or record.error_code or "", CARD_REASON_MAX)
    if state == "awaiting_approval":
        return (
            f"awaiting approval by {approvers}"
            if approvers
            else "awaiting approval by someone else who may approve here"
        )
    if state in ("applying", "sending"):
        return "applying"
    if state == "applied":
        return f"accepted, applying{progress}"
    if state == "unknown":
        return "outcome being checked (the cloud call may or may not have been applied)"
    if state == "settled":
        return f"done{progress}"
    if state == "not_settled":
        # raybot stopped following it: where it ends is for a person to look at, not a failure.
        look = inline_code(f"{grammar.PREFIX} show {record.alias}", NAME_MAX + 20)
        if record.superseded:
            return f"accepted, then {reason}; {look} has the state now"
        return f"accepted, not settled in time{progress}; {look} has the state now"
    if state == "broken":
        return f"failed: the cluster ended in {inline_code('Error')}" + (f" ({reason})" if reason else "")
    if state == "failed":
        code = f"{inline_code(record.error_code, 100)} " if record.error_code else ""
        message = _line(record.error_message, CARD_REASON_MAX) if record.error_message else ""
        return f"failed: {code}{message}".rstrip()
    if state == "cancelled":
        return "failed: nothing was sent" + (f" ({reason})" if reason else "")
    if state == "rejected":
        verb = "withdrawn" if record.decided_by == record.user_id else "rejected"
        by = f" by {user(record.decided_by)}" if record.decided_by is not None else ""
        return f"{verb}{by}; nothing was changed"
    if state == "expired":
        when = f" {slack_date(record.expires_at)}" if record.expires_at is not None else ""
        return f"expired{when} before anyone approved it; nothing was changed"
    if state == "void":
        return "not applied" + (f": {reason}" if reason else "") + "; nothing was sent"
    return _line(state, 40)


def _card_revert(record: ChangeRecord) -> tuple[str, bool]:
    """The automatic revert of a temporary change (escaped mrkdwn, or ""), and whether Keep it is still offered."""
    revert = record.revert_state
    if record.duration_seconds is None:
        return "", False
    if revert is None:
        if record.state in ("applying", "sending", "unknown"):
            return f"⏲️ reverts {duration_in_words(record.duration_seconds)} after it takes effect", True
        return "", False
    if revert == "scheduled":
        when = f"at {slack_date(record.revert_at)}" if record.revert_at is not None else "soon"
        return f"⏲️ reverts {when}", True
    if revert == "running":
        return "⏲️ reverting now", False
    if revert == "cancelled":
        return (
            f"⏲️ kept by {user(record.kept_by)}" if record.kept_by is not None else "⏲️ automatic revert cancelled"
        ), False
    if revert == "done":
        note = f" ({_line(record.revert_note, 200)})" if record.revert_note else ""
        return f"⏲️ reverted{note}", False
    note = f": {_line(record.revert_note, CARD_REASON_MAX)}" if record.revert_note else ""
    return f"⏲️ the automatic revert did not run{note}", False


def _card_undone(record: ChangeRecord) -> str:
    """Who put the change back, and when (escaped mrkdwn); "" while nobody has."""
    if record.undone_by_change is None:
        return ""
    when = f" {slack_date(record.undone_at)}" if record.undone_at is not None else ""
    if record.revert_state in ("running", "done"):
        return f"reverted automatically{when} (change #{record.undone_by_change})"
    by = f" by {user(record.undone_by)}" if record.undone_by is not None else ""
    return f"undone{by}{when} (change #{record.undone_by_change})"


def change_card(record: ChangeRecord, cost: str | None = None, approvers: str | None = None) -> SlackMessage:
    """The root status message of a change, a pure function of its row (updated in place for its whole life).

    One line: mark, requester, cluster, the change in plain words (before → after), and its state — ⏳ applying,
    ✅ done, ❌ failed with the reason, ❔ outcome being checked, ↩️ undone by …, ⏲️ reverts at … / kept by …,
    🕒 awaiting approval. Buttons that still act are on it (Approve / Reject, Keep it); the detail (clusterId,
    requestId, full diff, progress) is in the thread. `cost` (bot.cost.change_text) is what the change does to the
    cluster's cost per hour, shown under the line, so whoever approves or looks back sees it at a glance;
    `approvers` (bot.permissions.approvers_here) who may approve it while it awaits approval.
    """
    undone = _card_undone(record)
    mark = UNDONE_MARK if undone else SUPERSEDED_MARK if record.superseded else CARD_MARKS.get(record.state, "•")
    parts = [f"{mark} {user(record.user_id)}", f"*{_line(record.alias, NAME_MAX)}*", _card_what(record)]
    parts.append(undone or _card_state(record, approvers))
    if record.decided_by is not None and record.state not in ("awaiting_approval", "rejected", "expired"):
        parts.append(f"approved by {user(record.decided_by)}")
    revert, keep = ("", False) if undone else _card_revert(record)
    if revert:
        parts.append(revert)
    text = " · ".join(parts)
    body = [_section(text)]
    if cost:
        body.append(cost_line(cost))
    buttons = []
    if record.state == "awaiting_approval":
        why = f"Why: {truncate(record.approval_reason, APPROVAL_REASON_MAX)}. " if record.approval_reason else ""
        expires = f"The request expires {slack_date(record.expires_at)}." if record.expires_at is not None else ""
        body.append(_context(f"{why}{expires}".strip() or "Needs a second person's approval."))
        buttons += [
            _button("Approve", APPROVE_ACTION, str(record.id), "primary"),
            _button("Reject", REJECT_ACTION, str(record.id), "danger"),
        ]
    if keep:
        buttons.append(_button("Keep it (cancel the revert)", CANCEL_REVERT_ACTION, str(record.id)))
    if buttons:
        body.append(_actions(*buttons))
    return SlackMessage(_fallback(text), body)


def diff_sections(diff: Sequence[DiffEntry], max_sections: int = DIFF_SECTIONS_MAX) -> list[dict[str, Any]]:
    """A change's detail for a thread or a view: one plain line per changed thing (bot.slack.words), then
    "and N more changes"."""
    lines = [f"• {_line(line, DIFF_VALUE_MAX + 100)}" for line in diff_in_words(diff)]
    sections = _entry_sections(lines)[:max_sections]
    shown = sum(section["text"]["text"].count("\n") + 1 for section in sections)
    if shown < len(lines):
        sections.append(_context(_more(len(lines) - shown, "change")))
    return sections


def _button(text: str, action_id: str, value: str, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": truncate(text, limits.BUTTON_TEXT_MAX)},
        "action_id": action_id,
        "value": value,
    }
    if style:
        button["style"] = style
    return button


def _actions(*buttons: dict[str, Any]) -> dict[str, Any]:
    return {"type": "actions", "elements": list(buttons)}


def slack_date(epoch: float) -> str:
    """A time Slack shows in each reader's own time zone (with a UTC fallback)."""
    fallback = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(epoch)}^{{date_short_pretty}} {{time}}|{fallback}>"


def change_succeeded(
    alias: str,
    cluster_id: str,
    request_id: str | None,
    diff: Sequence[DiffEntry],
    *,
    change_id: int | None = None,
    cost: str | None = None,
) -> SlackMessage:
    """Thread reply after UpdateRayCluster succeeded: clusterId, requestId, what changed, what it costs, and Undo.

    `cost` is bot.cost.change_text (for a temporary change, with its total for the duration). A temporary change's
    revert, and its Keep it, are on the root message (change_card), the one place that stays current.
    """
    text = (
        f"{ACCEPTED_MARK} *{_line(alias, NAME_MAX)}* change accepted, applying: {_line(change_in_words(diff), 500)}\n"
        f"clusterId {inline_code(cluster_id, 64)}{_request_id(request_id, 'requestId')}"
    )
    blocks = [_section(text)]
    if len(diff) > 1:
        blocks += diff_sections(diff)
    if cost:
        blocks.append(cost_line(cost))
    if change_id is not None:
        blocks.append(_actions(_button("Undo", UNDO_ACTION, str(change_id))))
    return SlackMessage(_fallback(text), blocks)


def revert_failed(change_id: int, alias: str, reason: str) -> SlackMessage:
    """Thread reply when the automatic revert of a temporary change could not run (conflict, cloud error).

    `reason` is plain text (a RevertConflict's message, or "Code: Message" from the cloud): escaped here.
    """
    text = (
        f"🚫 The automatic revert of change #{change_id} on *{_line(alias, NAME_MAX)}* did not run: "
        f"{_esc(reason, MESSAGE_MAX)}"
    )
    return SlackMessage(_fallback(text), [_section(text)])


def revert_alias_unknown(change_id: int, alias: str) -> SlackMessage:
    """Thread reply when a revert falls due for an alias that is no longer in raybot's config."""
    text = f"🚫 {inline_code(alias, NAME_MAX)} is no longer in raybot's config: change #{change_id} was not reverted"
    return SlackMessage(_fallback(text), [_section(text)])


def revert_cancelled(user_id: str, change_id: int) -> SlackMessage:
    """Thread reply when someone pressed "Keep it": the temporary change stays."""
    text = f"⏲️ {user(user_id)} cancelled the automatic revert of change #{change_id}: the change stays."
    return SlackMessage(_fallback(text), [_section(text)])


def cluster_busy(alias: str, user_id: str, summary: str) -> SlackMessage:
    """Another change holds the cluster: who, and what they are doing."""
    text = (
        f"⏳ *{_line(alias, NAME_MAX)}* is being changed right now by {user(user_id)} "
        f"({_line(summary, 300)}). Nothing was sent; try again when it is done."
    )
    return SlackMessage(_fallback(text), [_section(text)])


def refused(reason: str) -> SlackMessage:
    """A button or step that cannot be taken now; the reason is raybot's own mrkdwn.

    Reasons that name anything a user or the cloud controls are built by the `*_reason` functions below,
    which escape it.
    """
    text = f"🚫 {truncate(reason, REASON_MAX)}"
    return SlackMessage(_fallback(text), [_section(text)])


# Refusal reasons: mrkdwn for `ActionRefused(reason)`, which reaches Slack through `refused`.


def nothing_to_undo_reason(alias: str) -> str:
    """`/ray undo <cluster>` found no change of this channel to undo."""
    name = _line(alias, NAME_MAX)
    return (
        f"no change to *{name}* made in this channel can be undone now (none took effect, or each is undone "
        f"already): {inline_code(grammar.PREFIX + ' history ' + alias, 100)} lists them"
    )


def other_cluster_reason(change_id: int, alias: str, asked: str) -> str:
    """`/ray undo <cluster> #n` where change #n was made to another cluster."""
    return (
        f"change #{change_id} was a change to *{_line(alias, NAME_MAX)}*, not *{_line(asked, NAME_MAX)}*: "
        f"{inline_code(f'{grammar.PREFIX} undo {alias} #{change_id}', 100)} undoes it"
    )


def already_undone_reason(change_id: int, undone_by: int, user_id: str) -> str:
    """Undo clicked on a change another change already undid (or is undoing)."""
    return f"change #{change_id} is already undone (change #{undone_by} by {user(user_id)})"


def alias_moved_reason(alias: str, change_id: int) -> str:
    """Undo of a change whose alias now points at another cluster than the one it changed."""
    return f"{inline_code(alias, NAME_MAX)} points at another cluster now; undo change #{change_id} by hand"


def wrong_state_reason(alias: str, state: str | None, needed: str, verb: str) -> str:
    """Start/stop asked of a cluster not in the state it needs.

    "`prod` is `Starting`: only a Stopped cluster can start". `state` is the cloud's word (None: it gave none);
    `needed` and `verb` are raybot's.
    """
    now = inline_code(state, 40) if state else "in an unknown state"
    return f"{inline_code(alias, NAME_MAX)} is {now}: only a {_line(needed, 40)} cluster can {_line(verb, 20)}"


def approval_detail(diff: Sequence[DiffEntry]) -> SlackMessage:
    """Thread reply under an approval request whose change has several parts: every part in plain words, so whoever
    approves sees all of it (the root message says it in one line, shortened)."""
    text = "What approving it changes, in full:"
    return SlackMessage(_fallback(text), [_section(text), *diff_sections(diff)])


def approval_void(approver_id: str, alias: str, changed: Sequence[DiffEntry]) -> SlackMessage:
    """An approval that came too late: the cluster changed since the request, so nothing was sent.

    Names what changed in plain words, at most VOID_ENTRIES_MAX lines (secrets masked, each escaped and cut to
    VOID_ENTRY_MAX), then "and N more". The text stays within OUTCOME_MAX.
    """
    lines = diff_in_words(changed)
    shown = [_line(line, VOID_ENTRY_MAX) for line in lines[:VOID_ENTRIES_MAX]]
    if len(lines) > VOID_ENTRIES_MAX:
        shown.append(_more(len(lines) - VOID_ENTRIES_MAX, "change"))
    what = f" ({'; '.join(shown)})" if shown else ""
    text = (
        f"🚫 Approved by {user(approver_id)}, but void: *{_line(alias, NAME_MAX)}* changed since the request{what}. "
        "Nothing was sent; ask again if it is still needed."
    )
    return SlackMessage(_fallback(text), [_section(text)])


# What became of a change, in /ray history: the same marks as the root message (CARD_MARKS), in a few words.
HISTORY_WORDS: dict[str, str] = {
    "awaiting_approval": "awaiting approval",
    "applying": "applying",
    "sending": "applying",
    "applied": "accepted, applying",
    "settled": "done",
    "not_settled": "accepted, did not settle in time",
    "broken": "the cluster ended in Error",
    "failed": "failed, nothing changed",
    "cancelled": "not sent, nothing changed",
    "unknown": "outcome being checked",
    "rejected": "rejected, nothing changed",
    "expired": "approval expired, nothing changed",
    "void": "void: the cluster changed before approval",
}


def _history_entry(record: Any, cost: str | None = None) -> str:
    """One change on one line: when, who, what (before → after), what it did to the cost per hour (`cost`), outcome,
    requestId, and what is pending."""
    undone = _card_undone(record)
    if undone:
        outcome = f"{UNDONE_MARK} {undone}"
    elif record.superseded:
        outcome = f"{SUPERSEDED_MARK} accepted, then {_line(record.error_message, 200)}"
    else:
        outcome = f"{CARD_MARKS.get(record.state, '•')} {HISTORY_WORDS.get(record.state) or _line(record.state, 30)}"
    parts = [
        f"*#{record.id}* {slack_date(record.created_at)}",
        user(record.user_id),
        _line(change_record_in_words(record), 400),
        outcome,
    ]
    if cost:
        parts.insert(3, f"💰 {_line(cost, 200)}")
    if record.state == "awaiting_approval" and record.expires_at is not None:
        parts[-1] += f" until {slack_date(record.expires_at)}"
    if record.error_code:
        parts.append(f"Code {inline_code(record.error_code, 100)}")
    if record.request_id:
        parts.append(f"requestId {inline_code(record.request_id, 64)}")
    if record.revert_state == "scheduled" and record.revert_at is not None:
        parts.append(f"⏲️ revert scheduled at {slack_date(record.revert_at)}")
    elif record.revert_state == "running":
        parts.append("⏲️ reverting now")
    return " · ".join(parts)


def history(alias: str, records: Sequence[Any], costs: Sequence[str | None] | None = None) -> SlackMessage:
    """/ray history: the last changes of a cluster, newest first (`records` are bot.store.ChangeRecord), each with
    what it did to the cost per hour (`costs`, one per record, bot.cost.rate_text; None: nothing to tell).

    One line per change in plain words (bot.slack.words), with what is still pending: an approval awaited,
    a revert scheduled.
    """
    if not records:
        text = f"No change of *{_line(alias, NAME_MAX)}* is recorded yet."
        return SlackMessage(_fallback(text), [_section(text)])
    head = f"Last {plural(len(records), 'change')} of *{_line(alias, NAME_MAX)}*, newest first:"
    blocks = [_section(head)]
    costs = list(costs or [])
    blocks += _entry_sections(
        [_history_entry(record, costs[i] if i < len(costs) else None) for i, record in enumerate(records)]
    )
    return SlackMessage(_fallback(head), blocks[: limits.MESSAGE_BLOCKS_MAX])


def _cloud_failure(head: str, code: str, message: str, request_id: str | None) -> SlackMessage:
    """A cloud error as people need it: what happened (`head`), Code, RequestId when there is one, Message."""
    text = (
        f"{head}\n*Code* {inline_code(code, 100)}{_request_id(request_id, '*RequestId*')}\n"
        f"*Message* {_esc(message, MESSAGE_MAX)}"
    )
    return SlackMessage(_fallback(text), [_section(text)])


def _tried(action: str | None, attempts: int) -> str:
    """ "UpdateRayCluster, 4 attempts": which call was tried, and how often (retries included)."""
    parts = [inline_code(action, 64)] if action else []
    if attempts > 1:
        parts.append(f"{attempts} attempts")
    return f" ({', '.join(parts)})" if parts else ""


def change_failed(
    alias: str,
    code: str,
    message: str,
    request_id: str | None,
    *,
    what: str = "",
    cluster_id: str | None = None,
    action: str | None = None,
    attempts: int = 1,
) -> SlackMessage:
    """Thread reply after the cloud refused a change: which cluster, what was tried, that nothing changed,
    the Code, Message and RequestId (left out when the API gave none).

    `what` is the change in plain words; `action` and `attempts` are the call and how often it was made.
    """
    cluster = f"*{_line(alias, NAME_MAX)}*" + (f" (clusterId {inline_code(cluster_id, 64)})" if cluster_id else "")
    tried = f": {_line(what, 500)}" if what else ""
    throttled = " The service was throttling requests; try again in a minute." if code.startswith("Throttling") else ""
    head = (
        f"❌ The change to {cluster} failed{tried}{_tried(action, attempts)}. "
        f"The cloud refused it: nothing changed on the cluster.{throttled}"
    )
    return _cloud_failure(head, code, message, request_id)


def cloud_error(
    action: str,
    code: str,
    message: str,
    request_id: str | None,
    *,
    cluster_id: str | None = None,
    alias: str | None = None,
    attempts: int = 1,
    may_have_changed: bool = False,
) -> SlackMessage:
    """A failed cloud call outside a change thread (a read, or the read before a change): which cluster (its alias
    and clusterId), which call and how often it was tried, whether anything changed, then Code, Message and
    RequestId when there is one.
    """
    if alias and cluster_id:
        cluster = f" for *{_line(alias, NAME_MAX)}* (clusterId {inline_code(cluster_id, 64)})"
    elif cluster_id:
        cluster = f" for cluster {inline_code(cluster_id, 64)}"
    else:
        cluster = ""
    outcome = (
        "It may have been applied: check with `/ray show` before trying again."
        if may_have_changed
        else "Nothing was changed."
    )
    head = f"❌ {inline_code(action, 64)}{cluster} failed{_tried(None, attempts)}. {outcome}"
    return _cloud_failure(head, code, message, request_id)


SLACK_ERROR_HINTS = {
    "not_in_channel": "Invite raybot to this channel (`/invite @raybot`) and try again.",
    "channel_not_found": "raybot cannot see this channel: invite it (`/invite @raybot`) and try again.",
    "missing_scope": "The Slack app lacks a scope: reinstall it from raybot's manifest (`raybot manifest`).",
    "ratelimited": "Slack is rate-limiting raybot; try again in a minute.",
}


def slack_error(method: str, detail: str) -> SlackMessage:
    """Slack refused a call raybot made for this request: which method, what Slack said, and what to do."""
    code_word = detail.split(" ", 1)[0].split(":", 1)[0]
    hint = SLACK_ERROR_HINTS.get(code_word, "")
    text = f"❌ Slack refused {inline_code(method, 64)}: {_esc(detail, MESSAGE_MAX)}" + (f"\n{hint}" if hint else "")
    return SlackMessage(_fallback(text), [_section(text)])


def whoami(subject_user: str, channel_id: str, grants: Sequence[Any]) -> SlackMessage:
    """/ray whoami: every role that applies to you in this channel, what it allows, and why it applies.

    `grants` are bot.permissions.Grant; their `why` is mrkdwn built from config ids.
    """
    if not grants:
        text = (
            f"{user(subject_user)}: no role of raybot's config applies to you in {channel(channel_id)}, "
            "so you may do nothing here. Ask a platform admin to bind one."
        )
        return SlackMessage(_fallback(text), [_section(text)])
    head = f"What {user(subject_user)} may do in {channel(channel_id)}:"
    entries = []
    for grant in grants:
        actions = "every action" if "*" in grant.actions else ", ".join(grant.actions)
        # The clusters it reaches now, once: the configured patterns would name most of them a second time.
        if not grant.aliases:
            clusters = "no cluster yet"
        elif "*" in grant.clusters:
            clusters = f"every cluster ({', '.join(grant.aliases)})"
        else:
            clusters = ", ".join(grant.aliases)
        limits_shown = f"; {_line(grant.limits, 300)}" if grant.limits else ""
        entries.append(
            f"• *{_line(grant.role, NAME_MAX)}* on {_line(clusters, 600)}: {_line(actions, 300)}{limits_shown}\n"
            f"   _why_: {truncate(grant.why, 500)}"
        )
    blocks = [_section(head)]
    blocks += _entry_sections(entries)
    return SlackMessage(_fallback(head), blocks[: limits.MESSAGE_BLOCKS_MAX])


def hint(text: str) -> list[dict[str, Any]]:
    """A context line of advice written by raybot itself (not escaped: it may hold formatting)."""
    return [_context(truncate(text, 2000))]


def nothing_to_change(alias: str, summary: str) -> SlackMessage:
    """Thread reply when the cluster already is as asked: nothing was sent."""
    text = f"➖ *{_line(alias, NAME_MAX)}* already matches {_line(summary, 2500)}: nothing was sent."
    return SlackMessage(_fallback(text), [_section(text)])


# --- following a change until the cluster settles ---------------------------------------------------------------------

PROGRESS_MAX = 600  # a progress summary, escaped
GROUP_SECTIONS_MAX = 5  # sections of per-group counts in a thread answer


def _group_count_sections(progress: Progress, *, incomplete_only: bool) -> list[dict[str, Any]]:
    """Per-group "• name: 2 of 3 workers up" lines, and an "and N more" line if they do not all fit."""
    groups = [g for g in progress.groups if not (incomplete_only and g.complete)]
    if not groups:
        return []
    lines = [f"• *{_line(g.name, 40)}*: {g.counts()}" for g in groups]
    sections = _entry_sections(lines)[:GROUP_SECTIONS_MAX]
    shown = sum(section["text"]["text"].count("\n") + 1 for section in sections)
    if shown < len(lines):
        sections.append(_context(_more(len(lines) - shown, "group")))
    return sections


def follow_done(alias: str, cluster_id: str, progress: Progress) -> SlackMessage:
    """The one thread answer when the change settled: the state, then the final worker counts, one line a group
    (the notification's text has them in one line instead)."""
    head = f"✅ *{_line(alias, NAME_MAX)}* settled · clusterId {inline_code(cluster_id, 64)} · "
    text = head + _line(progress.summary(), PROGRESS_MAX)
    groups = _group_count_sections(progress, incomplete_only=False)
    shown = head + _line(progress.state or "unknown", 40) if groups else text
    return SlackMessage(_fallback(text), [_section(shown), *groups])


def follow_failed(alias: str, message: str | None, request_id: str | None) -> SlackMessage:
    """The one thread answer when the cluster ended in Error: the API's message, and the RequestId if known."""
    text = (
        f"❌ *{_line(alias, NAME_MAX)}* ended in {inline_code('Error')}{_request_id(request_id, '*RequestId*')}\n"
        f"*Message* {_esc(message or 'the API gave no message', MESSAGE_MAX)}"
    )
    return SlackMessage(_fallback(text), [_section(text)])


def follow_timeout(alias: str, minutes: float, progress: Progress | None) -> SlackMessage:
    """The one thread answer when the change did not settle in time: how long, and where the cluster is now.

    `progress` is None when the last read failed; then the state is said to be unknown.
    """
    now = _line(progress.summary(), PROGRESS_MAX) if progress is not None else "unknown (the last read failed)"
    text = (
        f"⌛ *{_line(alias, NAME_MAX)}* still not settled after {minutes:g} min; raybot stopped following it. "
        f"Now: {now}\n{inline_code(grammar.PREFIX + ' show ' + alias, 100)} has the details."
    )
    blocks = [_section(text)]
    if progress is not None:
        blocks += _group_count_sections(progress, incomplete_only=True)
    return SlackMessage(_fallback(text), blocks)


def _workers_by_group(cluster: RayCluster) -> list[tuple[str, int]]:
    """Running workers per group as the API lists its instances (groups without instances: their replica)."""
    counts: dict[str, int] = {}
    instances = cluster.instances or []
    for instance in instances:
        extra = instance.model_extra or {}
        group = extra.get("groupName")
        if (instance.type or "").lower() == "worker" and (instance.phase or "").lower() == "running" and group:
            counts[group] = counts.get(group, 0) + 1
    return [(g.group_name or "?", counts.get(g.group_name or "", g.replica or 0)) for g in cluster.worker_spec or []]


def stop_confirmation(alias: str, cluster: RayCluster, value: str) -> SlackMessage:
    """/ray stop asks first, saying what stops: the state and the workers of every group."""
    groups = _workers_by_group(cluster)
    total = sum(n for _, n in groups)
    head = (
        f"Stop *{_line(alias, NAME_MAX)}*? It is {inline_code(cluster.state or 'unknown', 40)} with "
        f"{plural(total, 'worker')} in {plural(len(groups), 'group')} and its head; everything running on it stops."
    )
    lines = [f"• *{_line(name, 40)}*: {plural(count, 'worker')}" for name, count in groups]
    sections = _entry_sections(lines)[:DIFF_SECTIONS_MAX]
    shown = sum(section["text"]["text"].count("\n") + 1 for section in sections)
    blocks = [_section(head), *sections]
    if shown < len(lines):
        blocks.append(_context(_more(len(lines) - shown, "group")))
    button = _button(f"Stop {alias}", STOP_ACTION, value, "danger")
    button["confirm"] = {
        "title": {"type": "plain_text", "text": "Stop the cluster?"},
        # plain_text: Slack shows it as written, so the alias goes in raw (escaping would show "&lt;").
        "text": {
            "type": "plain_text",
            "text": truncate(f"{alias}: {plural(total, 'worker')} and the head stop.", limits.CONFIRM_TEXT_MAX),
        },
        "confirm": {"type": "plain_text", "text": "Stop it"},
        "deny": {"type": "plain_text", "text": "Keep it running"},
        "style": "danger",
    }
    blocks.append(_actions(button))
    return SlackMessage(_fallback(head), blocks[: limits.MESSAGE_BLOCKS_MAX])


def lifecycle_accepted(alias: str, verb: str, cluster_id: str, request_id: str | None) -> SlackMessage:
    """Thread reply after StartRayCluster / StopRayCluster was accepted: clusterId and requestId."""
    text = (
        f"{ACCEPTED_MARK} *{_line(alias, NAME_MAX)}*: {_line(verb, 20)} accepted · "
        f"clusterId {inline_code(cluster_id, 64)}{_request_id(request_id, 'requestId')}. "
        "raybot follows it until it settles."
    )
    return SlackMessage(_fallback(text), [_section(text)])


def outcome_checking(
    alias: str, change_id: int, summary: str, reason: str, request_id: str | None = None
) -> SlackMessage:
    """Told in a change's thread when its cloud call may or may not have been applied: why (`reason`, the cloud's
    Code or what raybot saw) and the RequestId of the answer when one came."""
    text = (
        f"❔ raybot does not know yet whether change #{change_id} to *{_line(alias, NAME_MAX)}* "
        f"({_line(summary, 300)}) took effect ({_esc(reason, 300)}{_request_id(request_id)}). "
        "It is reading the cluster and will say here."
    )
    return SlackMessage(_fallback(text), [_section(text)])


def outcome_known(
    alias: str,
    change_id: int,
    summary: str,
    applied: bool,
    *,
    undo: bool = True,
    cost: str | None = None,
    request_id: str | None = None,
) -> SlackMessage:
    """The truth about a change whose outcome was unknown: the cluster holds it (Undo offered, and what it costs:
    `cost`, bot.cost.change_text) or not (with the RequestId of the call's answer, when one came)."""
    if not applied:
        rid = f" (the call: RequestId {inline_code(request_id, 64)})" if request_id else ""
        text = (
            f"❌ Change #{change_id} to *{_line(alias, NAME_MAX)}* ({_line(summary, 300)}) did not take effect: "
            f"the cluster does not hold it{rid}. Nothing changed; ask again if it is still needed."
        )
        return SlackMessage(_fallback(text), [_section(text)])
    text = (
        f"✅ Change #{change_id} to *{_line(alias, NAME_MAX)}* ({_line(summary, 300)}) took effect: "
        "the cluster holds it."
    )
    body = [_section(text), *([cost_line(cost)] if cost else [])]
    if undo:
        body.append(_actions(_button("Undo", UNDO_ACTION, str(change_id))))
    return SlackMessage(_fallback(text), body)


def change_superseded(alias: str, change_id: int, later_id: int, later_user: str) -> SlackMessage:
    """Told in a change's thread when a later change to the same groups took effect before this one settled."""
    text = (
        f"{SUPERSEDED_MARK} Change #{change_id} to *{_line(alias, NAME_MAX)}* is superseded by change #{later_id} "
        f"({user(later_user)}), which took effect before it settled: raybot follows that one instead."
    )
    return SlackMessage(_fallback(text), [_section(text)])


def change_cancelled(alias: str, change_id: int, reason: str) -> SlackMessage:
    """A recorded change that was stopped before anything reached the cloud."""
    text = (
        f"❌ Change #{change_id} to *{_line(alias, NAME_MAX)}* did not take effect: it was stopped before it was "
        f"sent ({_line(reason, 300)}). Nothing was sent; ask again if it is still needed."
    )
    return SlackMessage(_fallback(text), [_section(text)])


def change_cancelled_unposted(user_id: str, alias: str, change_id: int, summary: str) -> SlackMessage:
    """A change whose process died around posting its status message, which cannot be found again."""
    text = (
        f"❌ {user(user_id)} · *{_line(alias, NAME_MAX)}* · {_line(summary, 300)}: change #{change_id} did not "
        "take effect: raybot restarted before sending it, and nothing was sent. If a status message of it above "
        "still says in progress, that message is stale. Ask again if it is still needed."
    )
    return SlackMessage(_fallback(text), [_section(text)])


def edit_prompt(alias: str, value: str) -> SlackMessage:
    """/ray edit without a trigger_id (a mention): only a button click can open a modal, so offer one (ephemeral).

    `value` is the button's value, which the OPEN_EDITOR_ACTION listener reads (at most BUTTON_VALUE_MAX).
    """
    text = f"Open the editor of *{_line(alias, NAME_MAX)}*; the result is posted in this thread."
    # Button labels are plain_text, shown as written: the alias goes in raw.
    button = _button(f"Edit {alias}", OPEN_EDITOR_ACTION, value, "primary")
    return SlackMessage(_fallback(text), [_context(text), _actions(button)])
