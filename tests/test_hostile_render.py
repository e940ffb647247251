"""Every builder of bot/slack/blocks.py and bot/slack/modals.py, rendered with hostile and with real inputs.

Whatever a user, the config or the cloud controls (aliases, cluster and group names, worker types, summaries,
states, error codes and messages, request ids, …) must reach Slack's mrkdwn escaped: no mention, broadcast or link
can come out of it, and only raybot's own `<@…>`/`<#…>`/`<!subteam^…>`/`<!date^…>` built from trusted ids remain.
Every message and view must fit Slack's limits, however long the input.

The tables below name an argument factory for every public function of both modules; a builder added without a
case (or an explicit reason why it builds no payload) fails test_every_public_function_is_covered.
"""

from __future__ import annotations

import copy
import inspect
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from bot import follow, grammar, permissions
from bot.change_state import STATES
from bot.config import ApprovalRule, Limits
from bot.cost import Price, change_cost, change_text
from bot.emr.changes import DiffEntry, RevertConflict, diff
from bot.emr.errors import EmrError
from bot.emr.models import ClusterFields, RayCluster
from bot.sandbox.slack_server import blocks_problems, view_problems
from bot.slack import blocks, limits, modals, mrkdwn
from bot.slack.blocks import SlackMessage
from bot.store import ChangeRecord

SEED = json.loads((Path(__file__).resolve().parents[1] / "bot" / "sandbox" / "seed_clusters.json").read_text())

# raybot's own mentions use these ids; hostile text uses others (U0EVIL, C0EVIL, S0EVIL) so the two can be told apart.
TRUSTED_USER = "U0TRUSTED1"
APPROVER = "U0TRUSTED2"
TRUSTED_CHANNEL = "C0TRUSTED1"
TRUSTED_USERGROUP = "S0TRUSTED1"
TRUSTED_MARKUP = re.compile(
    rf"<@(?:{TRUSTED_USER}|{APPROVER})>"
    rf"|<#{TRUSTED_CHANNEL}>"
    rf"|<!subteam\^{TRUSTED_USERGROUP}>"
    r"|<!date\^\d+\^\{date_short_pretty\} \{time\}\|[0-9: -]+UTC>"
)
RAW_FROM_INPUT = ("<!", "<@U0EVIL", "<#", "<http", "<@", "<mailto")
UNESCAPED_AMPERSAND = re.compile(r"&(?!amp;|lt;|gt;)")
BARE_BROADCAST = re.compile(r"@(?:channel|here|everyone)\b", re.IGNORECASE)
SECRET = "s3cr3t-<!channel>"
NOW = 1732622400.0

LONG = ("<@U0EVIL> &amp; <!channel> *b* " * 80)[:2000]
HOSTILE: dict[str, str] = {
    "channel": "<!channel>",
    "here": "<!here>",
    "everyone": "<!everyone> @everyone @channel @here",
    "user": "<@U0EVIL>",
    "conversation": "<#C0EVIL>",
    "usergroup": "<!subteam^S0EVIL>",
    "link": "<https://evil.example|click>",
    "mailto": "<mailto:a@evil.example|mail>",
    "bold": "*bold*",
    "italic": "_it_",
    "strike": "~s~",
    "code": "`code`",
    "fence": "```x```",
    "quote": "> quoted",
    "entity": "&amp;",
    "escaped-mention": "&lt;!channel&gt;",
    "long": LONG,
    "newlines": "first\n<!channel>\n> quoted\r\nlast",
}
# What must not show up for one input though it passes the general checks: its entities left as they were typed
# (Slack would show "&amp;" as "&", and "&lt;!channel&gt;" as "<!channel>"). Escaped, "&amp;" is "&amp;amp;",
# which a cut may end early ("&amp;a…" shows "&a…", the start of "&amp;").
FORBIDDEN: dict[str, re.Pattern[str]] = {
    "entity": re.compile(r"&amp;(?!amp;|(?:a|am|amp)?…)"),
    "escaped-mention": re.compile(r"&lt;!channel"),
}


# --- samples: everything a builder is given, derived from one string --------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One input: `text` stands for every string a user, the config or the cloud controls; `cluster` as read."""

    id: str
    text: str
    cluster: RayCluster


def _seed(name: str) -> dict[str, Any]:
    return copy.deepcopy(next(c for c in SEED if c["name"] == name))


def _hostile_cluster(h: str) -> RayCluster:
    """The 50-group seed cluster with `h` in every string the cloud controls (groups stay distinct by a suffix)."""
    wire = _seed("fleet-50")
    for key in ("clusterId", "name", "description", "message", "state", "displayReleaseVersion", "modifierName"):
        wire[key] = h
    wire["headSpec"] |= {key: h for key in ("queueName", "cpu", "memory", "gpuSpec", "env", "displayReleaseVersion")}
    for index, group in enumerate(wire["workerSpec"]):
        group |= {key: h for key in ("workerType", "queueName", "cpu", "memory", "gpuSpec", "env")}
        group["groupName"] = f"{h}{index:02d}"
    wire["instances"] = [
        {"instanceId": f"i-{index}", "type": "Worker", "phase": "Running", "groupName": group["groupName"]}
        for index, group in enumerate(wire["workerSpec"])
    ]
    return RayCluster.model_validate(wire)


@cache
def sample(sample_id: str) -> Sample:
    if sample_id in HOSTILE:
        return Sample(sample_id, HOSTILE[sample_id], _hostile_cluster(HOSTILE[sample_id]))
    name = sample_id.removeprefix("seed:")
    return Sample(sample_id, name, RayCluster.model_validate(_seed(name)))


SAMPLES = [*HOSTILE, *(f"seed:{c['name']}" for c in SEED)]


def editable(s: Sample) -> dict[str, Any]:
    return s.cluster.editable()


def edited(s: Sample) -> dict[str, Any]:
    """The cluster after a typical change: description, every group +1 replica and another type, a group added,
    the first group removed, and a secret set."""
    after = copy.deepcopy(editable(s))
    after["description"] = f"{s.text} (edited)"
    groups = after.get("workerSpec") or []
    for group in groups:
        group["replica"] = (group.get("replica") or 0) + 1
        group["maxReplica"] = max(group.get("maxReplica") or 0, group["replica"])
        group["workerType"] = f"{s.text}-gpu"
    after["workerSpec"] = groups[1:] + [{**groups[0], "groupName": f"{s.text}-new", "replica": 30, "maxReplica": 30}]
    after["headSpec"] = {**after.get("headSpec", {}), "gftConfig": {"redisUrl": s.text, "redisPassword": SECRET}}
    return after


def diff_of(s: Sample) -> list[DiffEntry]:
    """What `edited` changed, as raybot shows it, plus an env key named by the input."""
    return [*diff(editable(s), edited(s)), DiffEntry(path=f"headSpec.env.{s.text}", before=None, after=s.text)]


def fields(body: dict[str, Any]) -> ClusterFields:
    return ClusterFields.model_validate(body)


def error_of(s: Sample) -> EmrError:
    return EmrError(action=s.text, code=s.text, message=s.text, request_id=s.text, status=400)


def progress_of(s: Sample) -> follow.Progress:
    return follow.progress(s.cluster, follow.wanted_after_update(edited(s)))


def card_by(user_id: str) -> ChangeRecord:
    """A plain change of `user_id` to show on a root message."""
    return ChangeRecord(
        id=7,
        created_at=NOW,
        updated_at=NOW,
        version=1,
        state="applying",
        team_id="T0TEAM",
        user_id=user_id,
        channel_id=TRUSTED_CHANNEL,
        thread_ts=None,
        root_ts="1717405200.000100",
        alias="prod",
        workspace="w-1",
        cluster_id="ray-1",
        region="cn-hangzhou",
        action="resize",
        summary="resize",
        spec_before=None,
        body=None,
        diff=[],
        duration_seconds=3600,
        revert_state="cancelled",
    )


def cards_of(s: Sample) -> list[ChangeRecord]:
    """A change in every state and revert/undo combination, every field a user or the cloud controls hostile."""
    base = card_by(TRUSTED_USER).model_copy(
        update={
            "alias": s.text,
            "summary": s.text,
            "diff": [d.model_dump(mode="json") for d in diff_of(s)],
            "error_code": s.text,
            "error_message": s.text,
            "last_summary": s.text,
            "approval_reason": approval_reason_of(s),
            "expires_at": NOW,
            "revert_note": s.text,
            "duration_seconds": None,
            "revert_state": None,
        }
    )
    out = [base.model_copy(update={"state": state}) for state in STATES]
    out += [
        base.model_copy(update={"state": "settled", "duration_seconds": 3600, "revert_state": track, "revert_at": NOW})
        for track in ("scheduled", "running", "cancelled", "done", "failed")
    ]
    out += [
        base.model_copy(update={"state": "settled", "undone_by": APPROVER, "undone_by_change": 9, "undone_at": NOW}),
        base.model_copy(update={"state": "applying", "decided_by": APPROVER, "action": "undo", "undo_of": 3}),
        base.model_copy(update={"state": "settled", "diff": [], "action": "start"}),
    ]
    return out


def records_of(s: Sample) -> list[ChangeRecord]:
    states = STATES
    return [
        ChangeRecord(
            id=index + 1,
            created_at=NOW - index * 60,
            updated_at=NOW,
            team_id="T0TEAM",
            user_id=TRUSTED_USER,
            channel_id=TRUSTED_CHANNEL,
            thread_ts=None,
            root_ts=None,
            alias=s.text,
            workspace=s.text,
            cluster_id=s.text,
            region="cn-hangzhou",
            action=s.text,
            summary=s.text,
            spec_before=None,
            body=None,
            diff=[],
            version=index,
            state=states[index % len(states)],
            request_id=s.text if index % 3 else None,
            error_code=s.text if index % 2 else None,
            error_message=s.text,
            undo_of=index if index % 5 == 1 else None,
        )
        for index in range(20)
    ]


def grants_of(s: Sample) -> list[permissions.Grant]:
    whys = (  # as bot.permissions writes them, from config ids
        f"you ({mrkdwn.user(TRUSTED_USER)}) are named in it",
        f"you are a member of {mrkdwn.usergroup(TRUSTED_USERGROUP)}",
        f"everyone in {mrkdwn.channel(TRUSTED_CHANNEL)} has it",
    )
    return [
        permissions.Grant(
            role=s.text,
            clusters=(s.text, "prod-*"),
            aliases=(s.text,),
            actions=(s.text, "resize"),
            limits=s.text,
            why=w,
        )
        for w in whys
    ]


def denial_of(s: Sample) -> str:
    """A limit denial as bot.permissions writes it: group names and worker types from the input."""
    limits_ = Limits(max_replica=2, max_step=1, worker_types=(s.text,))
    found = permissions.limit_violations("operator", limits_, fields(editable(s)), fields(edited(s)))
    return f"{mrkdwn.channel(TRUSTED_CHANNEL)} grants resize, but " + "; ".join(found)


def approval_reason_of(s: Sample) -> str:
    rule = ApprovalRule(above_replica=1, above_step=1, above_cu=1, above_cost_per_hour=1)
    cost = change_cost(fields(editable(s)), fields(edited(s)), PRICE)
    return permissions.approval_reason(rule, fields(editable(s)), fields(edited(s)), cost) or "needs approval"


PRICE = Price(currency="CNY", cu_hour=Decimal("0.35"))


def cost_of(s: Sample) -> str:
    """A cost line as raybot words it for this input's change (group names, cpu and memory in its problems),
    with the input itself appended: builders must treat it as untrusted text."""
    return change_text(change_cost(fields(editable(s)), fields(edited(s)), PRICE), duration_seconds=7200) + s.text


def draft_of(s: Sample) -> modals.Draft:
    return modals.new_draft(
        s.text, s.cluster, channel_id=TRUSTED_CHANNEL, thread_ts=None, user_id=TRUSTED_USER, key="k-hostile"
    )


def edited_draft_of(s: Sample) -> modals.Draft:
    draft = draft_of(s)
    body = copy.deepcopy(draft.edited)
    body["description"] = f"{s.text} (mine)"
    groups = body.get("workerSpec") or []
    body["workerSpec"] = groups[1:] + [{**groups[0], "groupName": f"{s.text}-added"}] if groups else []
    return draft.model_copy(update={"edited": body})


def first_group(draft: modals.Draft) -> str:
    return draft.edited["workerSpec"][0]["groupName"]


# --- the tables -------------------------------------------------------------------------------------------------------

Call = tuple[tuple[Any, ...], dict[str, Any]]
Cases = Callable[[Sample], list[Call]]


def call(*args: Any, **kwargs: Any) -> Call:
    return args, kwargs


def reasons_of(s: Sample) -> list[str]:
    """Every refusal reason raybot builds, from the input: what `refused` is given."""
    return [
        getattr(blocks, name)(*args, **kwargs) for name, cases in REASON_CASES.items() for args, kwargs in cases(s)
    ] + [f"this request is already approved by {mrkdwn.user(APPROVER)}"]


MESSAGE_CASES: dict[str, Cases] = {
    "usage_error": lambda s: [
        call(f"there is no group {s.text}", f"{grammar.PREFIX} resize {s.text} <group> <n>\n{s.text}\n```"),
    ],
    "help_message": lambda s: [call(), *(call(topic) for topic in grammar.SUBCOMMANDS)],
    "denied": lambda s: [call(denial_of(s))],
    "internal_error": lambda s: [call(s.text)],
    "cluster_list": lambda s: [
        call([(s.text, s.cluster), (f"{s.text}-unreadable", error_of(s))]),
        call([(f"{s.text}{i}", s.cluster if i % 3 else error_of(s)) for i in range(120)]),
        call([(s.text, s.cluster)], {s.text: cost_of(s)}),
        call([]),
    ],
    "cluster_detail": lambda s: [call(s.text, s.cluster), call(s.text, s.cluster, cost_of(s))],
    "change_card": lambda s: [call(card) for card in cards_of(s)] + [call(cards_of(s)[0], cost_of(s))],
    "change_succeeded": lambda s: [
        call(s.text, s.text, s.text, diff_of(s), change_id=7),
        call(s.text, s.text, s.text, diff_of(s), change_id=7, cost=cost_of(s)),
        call(s.text, s.text, None, []),
    ],
    "revert_failed": lambda s: [
        call(7, s.text, str(RevertConflict(diff_of(s)))),
        call(7, s.text, f"{s.text}: {s.text}"),
    ],
    "revert_alias_unknown": lambda s: [call(7, s.text)],
    "revert_cancelled": lambda s: [call(TRUSTED_USER, 7)],
    "cluster_busy": lambda s: [call(s.text, TRUSTED_USER, s.text)],
    "refused": lambda s: [call(reason) for reason in reasons_of(s)],
    "approval_detail": lambda s: [call(diff_of(s))],
    "approval_void": lambda s: [call(APPROVER, s.text, diff_of(s)), call(APPROVER, s.text, diff_of(s)[:1])],
    "history": lambda s: [
        call(s.text, records_of(s)),
        call(s.text, records_of(s), [cost_of(s)] * len(records_of(s))),
        call(s.text, []),
    ],
    "outcome_checking": lambda s: [call(s.text, 7, s.text, s.text)],
    "outcome_known": lambda s: [
        call(s.text, 7, s.text, True),
        call(s.text, 7, s.text, True, cost=cost_of(s)),
        call(s.text, 7, s.text, True, undo=False),
        call(s.text, 7, s.text, False),
    ],
    "change_cancelled": lambda s: [call(s.text, 7, s.text)],
    "change_superseded": lambda s: [call(s.text, 7, 9, TRUSTED_USER)],
    "change_cancelled_unposted": lambda s: [call(TRUSTED_USER, s.text, 7, s.text)],
    "change_failed": lambda s: [call(s.text, s.text, s.text, s.text), call(s.text, s.text, s.text, None)],
    "cloud_error": lambda s: [call(s.text, s.text, s.text, s.text)],
    "slack_error": lambda s: [call(s.text, s.text), call("chat.postMessage", f"not_in_channel {s.text}")],
    "whoami": lambda s: [call(TRUSTED_USER, TRUSTED_CHANNEL, grants_of(s)), call(TRUSTED_USER, TRUSTED_CHANNEL, [])],
    "hint": lambda s: [call(f"Try {mrkdwn.code(f'{grammar.PREFIX} show {s.text}')} for the details.")],
    "nothing_to_change": lambda s: [call(s.text, s.text)],
    "follow_done": lambda s: [call(s.text, s.text, progress_of(s))],
    "follow_failed": lambda s: [call(s.text, s.text, s.text), call(s.text, None, None)],
    "follow_timeout": lambda s: [call(s.text, 15, progress_of(s)), call(s.text, 7.5, None)],
    # The button's value is the caller's (a short JSON of the alias): not the input under test here.
    "stop_confirmation": lambda s: [call(s.text, s.cluster, json.dumps({"alias": "prod", "thread_ts": None}))],
    "lifecycle_accepted": lambda s: [
        call(s.text, "start", s.text, s.text),
        call(s.text, "stop", s.text, None),
    ],
    "edit_prompt": lambda s: [call(s.text, json.dumps({"alias": "prod", "thread_ts": "1717405200.000100"}))],
}
"""Builders of a whole message (SlackMessage), or of blocks for one (`hint`)."""

REASON_CASES: dict[str, Cases] = {
    "already_undone_reason": lambda s: [call(7, 9, TRUSTED_USER)],
    "alias_moved_reason": lambda s: [call(s.text, 7)],
    "nothing_to_undo_reason": lambda s: [call(s.text)],
    "other_cluster_reason": lambda s: [call(7, s.text, f"{s.text}-other")],
    "wrong_state_reason": lambda s: [call(s.text, s.text, "Running", "stop"), call(s.text, None, "Stopped", "start")],
}
"""Builders of a refusal's reason (mrkdwn for ActionRefused); rendered here through `refused`."""

BLOCKS_HELPERS = {
    "worker_table": "lines for a preformatted block; shown by cluster_detail and modals.overview_view",
    "diff_sections": "blocks of a diff in plain words; shown by change_succeeded and the modals",
    "slack_date": "a <!date> token from a number; shown by change_card, change_succeeded and history",
    "cost_line": "a context block of a cost line; shown by change_card, change_succeeded, cluster_detail, "
    "modals.confirm_view",
}
"""Public functions of blocks that build no payload of their own, and where their output is checked."""

VIEW_CASES: dict[str, Cases] = {
    "loading_view": lambda s: [call(s.text)],
    "error_view": lambda s: [call(s.text, s.text, s.text, s.text), call(s.text, s.text, s.text, None)],
    "result_view": lambda s: [call(s.text, s.text, outcome=o) for o in modals.RESULT_TITLES],
    "picker_view": lambda s: [
        *(call([s.text, *(f"{s.text}-{i}" for i in range(count))], "k-picker") for count in (2, 150)),
        call(["prod", s.text], "k-picker", selected=s.text, not_yours=[s.text, f"{s.text}-2"]),
    ],
    "overview_view": lambda s: [call(draft_of(s)), call(edited_draft_of(s))],
    "group_view": lambda s: [call(draft_of(s), None), call(draft_of(s), first_group(draft_of(s)))],
    "confirm_view": lambda s: [
        call(draft_of(s), diff_of(s)),
        call(draft_of(s), diff_of(s), cost_of(s)),
        call(draft_of(s), []),
    ],
    "stale_view": lambda s: [call(edited_draft_of(s), diff_of(s), s.cluster)],
}


def _overview_state(s: Sample) -> dict[str, Any]:
    value = {"type": "plain_text_input", "value": s.text}
    return {block: {block: value} for block in (modals.BLOCK_HEAD_CPU, modals.BLOCK_HEAD_MEMORY, modals.BLOCK_NAME)}


def _group_state(s: Sample, name: str) -> dict[str, Any]:
    return {
        modals.BLOCK_GROUP_NAME: {modals.BLOCK_GROUP_NAME: {"type": "plain_text_input", "value": name}},
        modals.BLOCK_GROUP_CPU: {modals.BLOCK_GROUP_CPU: {"type": "plain_text_input", "value": s.text}},
    }


ERROR_CASES: dict[str, Cases] = {
    "parse_overview": lambda s: [call(_overview_state(s), draft_of(s))],
    "parse_group": lambda s: [
        # A second group called like the first; a group the draft no longer has.
        call(_group_state(s, first_group(draft_of(s))), draft_of(s), None),
        call(_group_state(s, s.text), draft_of(s), f"{s.text}-gone"),
    ],
    "parse_picker": lambda s: [
        call({modals.BLOCK_PICK: {modals.BLOCK_PICK: {"type": "plain_text_input", "value": s.text}}}, ["other"])
    ],
    "role_limit_errors": lambda s: [
        call([denial_of(s)]),
        call([denial_of(s)], group_name=s.text),
    ],
}
"""Parsers of submissions: their `errors` reach Slack as the inline errors of a view."""

MODALS_HELPERS = {
    "body_hash": "a digest",
    "new_draft": "the draft, server-side",
    "selected_group": "a group name from a select value",
    "remove_group": "a body",
    "group_target": "a group name from a submitted view",
    "changes_for": "changes for plan()",
    "review_diff": "DiffEntry list, shown by confirm_view",
    "stale_diff": "DiffEntry list, shown by stale_view",
    "conflicts": "paths, shown by stale_view",
    "rebase": "the draft moved onto a fresh read",
}
"""Public functions of modals that build nothing shown in Slack themselves."""


# --- what is checked --------------------------------------------------------------------------------------------------


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def text_objects(payload: Any) -> list[dict[str, Any]]:
    return [node for node in walk(payload) if node.get("type") in ("mrkdwn", "plain_text")]


def markup_problems(text: str, s: Sample) -> list[str]:
    """How `text`, which Slack reads as mrkdwn, lets the input out: a mention, link, entity or broadcast."""
    out = []
    rest = TRUSTED_MARKUP.sub("", text)
    out += [f"raw {raw!r}" for raw in RAW_FROM_INPUT if raw in rest]
    if "<" in rest or ">" in rest:
        out.append("an unescaped < or >")
    if UNESCAPED_AMPERSAND.search(text):
        out.append("an unescaped &")
    if BARE_BROADCAST.search(text):
        out.append("a bare @channel/@here/@everyone")
    if SECRET in text or "s3cr3t" in text:
        out.append("a secret")
    forbidden = FORBIDDEN.get(s.id)
    if forbidden is not None and forbidden.search(text):
        out.append(f"the input's entities as typed ({forbidden.pattern})")
    return [f"{problem} in {text[:300]!r}" for problem in out]


def plain_problems(text: str, s: Sample) -> list[str]:
    """plain_text is shown as written (Slack parses no markup in it): escaping it would show "&lt;" to people."""
    escaped = mrkdwn.escape(s.text)
    if escaped != s.text and escaped[:40] in text:
        return [f"escaped input in plain_text {text[:200]!r}"]
    return []


def id_problems(payload: Any, s: Sample) -> list[str]:
    """Ids never hold user text (a group is addressed by index and digest)."""
    out = []
    for node in walk(payload):
        for key in ("block_id", "action_id", "callback_id"):
            value = node.get(key)
            if isinstance(value, str) and s.text in value:
                out.append(f"{key} {value!r} holds the input")
    return out


def payload_problems(payload: Any, s: Sample) -> list[str]:
    out = []
    for obj in text_objects(payload):
        if obj["type"] == "mrkdwn":
            if obj.get("verbatim") is not True:
                out.append(f"mrkdwn not verbatim: {obj['text'][:100]!r}")
            out += markup_problems(obj["text"], s)
        else:
            out += plain_problems(obj["text"], s)
    return out + id_problems(payload, s)


def message_problems(message: SlackMessage, s: Sample) -> list[str]:
    out = [] if message.text else ["no fallback text"]
    # The fallback text is what notifications and old clients show, parsed as mrkdwn.
    out += markup_problems(message.text, s)
    out += limits.check_message_limits(message.blocks, message.text)
    out += blocks_problems(message.blocks, "/blocks", max_blocks=limits.MESSAGE_BLOCKS_MAX)
    json.dumps(message.blocks)  # plain dicts, ready for the Web API
    return out + payload_problems(message.blocks, s)


def as_message(result: Any) -> SlackMessage:
    if isinstance(result, list):  # `hint`: blocks to put in a message
        return SlackMessage("hint", result)
    assert isinstance(result, SlackMessage), type(result)
    return result


def render(module: Any, name: str, cases: Cases, s: Sample) -> list[Any]:
    calls = cases(s)
    assert calls, f"{name} has no call for {s.id}"
    return [getattr(module, name)(*args, **kwargs) for args, kwargs in calls]


# --- the tests --------------------------------------------------------------------------------------------------------


def _public_functions(module: Any) -> set[str]:
    return {
        name
        for name, function in inspect.getmembers(module, inspect.isfunction)
        if function.__module__ == module.__name__ and not name.startswith("_")
    }


def test_every_public_function_is_covered():
    tables = (MESSAGE_CASES, REASON_CASES, BLOCKS_HELPERS)
    assert sum(map(len, tables)) == len(set().union(*tables)), "a function is in two tables"
    assert set().union(*tables) == _public_functions(blocks)
    views = (VIEW_CASES, ERROR_CASES, MODALS_HELPERS)
    assert sum(map(len, views)) == len(set().union(*views)), "a function is in two tables"
    assert set().union(*views) == _public_functions(modals)
    # No message or view builder hides among the helpers.
    for name in BLOCKS_HELPERS:
        assert inspect.signature(getattr(blocks, name)).return_annotation != "SlackMessage", name
    assert not [name for name in MODALS_HELPERS if name.endswith("_view")]


@pytest.mark.parametrize("sample_id", SAMPLES)
@pytest.mark.parametrize("name", sorted(MESSAGE_CASES))
def test_messages_escape_every_input_and_fit(name: str, sample_id: str):
    s = sample(sample_id)
    for result in render(blocks, name, MESSAGE_CASES[name], s):
        assert message_problems(as_message(result), s) == [], name


@pytest.mark.parametrize("sample_id", SAMPLES)
@pytest.mark.parametrize("name", sorted(REASON_CASES))
def test_refusal_reasons_escape_every_input(name: str, sample_id: str):
    s = sample(sample_id)
    for reason in render(blocks, name, REASON_CASES[name], s):
        assert isinstance(reason, str) and len(reason) <= blocks.REASON_MAX
        assert markup_problems(reason, s) == []
        assert message_problems(blocks.refused(reason), s) == []


@pytest.mark.parametrize("sample_id", SAMPLES)
@pytest.mark.parametrize("name", sorted(VIEW_CASES))
def test_views_escape_every_input_and_fit(name: str, sample_id: str):
    s = sample(sample_id)
    for view in render(modals, name, VIEW_CASES[name], s):
        assert limits.check_modal_limits(view) == []
        assert view_problems(view) == []
        json.dumps(view)
        assert payload_problems(view, s) == [], name


@pytest.mark.parametrize("sample_id", SAMPLES)
@pytest.mark.parametrize("name", sorted(ERROR_CASES))
def test_inline_errors_escape_every_input(name: str, sample_id: str):
    s = sample(sample_id)
    for result in render(modals, name, ERROR_CASES[name], s):
        errors = result if isinstance(result, dict) else result.errors
        assert errors, f"{name} found nothing wrong: the case tests nothing"
        for message in errors.values():
            assert 0 < len(message) <= modals.ERROR_TEXT_MAX
            assert markup_problems(message, s) == []


# Builders that show no text of the input at all (only numbers, trusted ids, or raybot's own words).
SHOWS_NO_INPUT = {"help_message", "revert_cancelled", "already_undone_reason"}


@pytest.mark.parametrize("name", sorted([*MESSAGE_CASES, *REASON_CASES, *VIEW_CASES]))
def test_the_input_is_shown_escaped_not_dropped(name: str):
    """Escaping by leaving the text out would pass every check above: the input must still be there.

    Escaped where Slack reads mrkdwn; as written in plain_text (a picker's options), which Slack never parses.
    """
    s = sample("channel")
    module = modals if name in VIEW_CASES else blocks
    cases = {**MESSAGE_CASES, **REASON_CASES, **VIEW_CASES}[name]
    marked, plain = [], []
    for result in render(module, name, cases, s):
        if isinstance(result, str):
            marked.append(result)
            continue
        payload = result if isinstance(result, dict) else as_message(result).blocks
        for obj in text_objects(payload):
            (marked if obj["type"] == "mrkdwn" else plain).append(obj["text"])
    shown = "&lt;!channel&gt;" in "\n".join(marked) or "<!channel>" in "\n".join(plain)
    assert shown is (name not in SHOWS_NO_INPUT)


@pytest.mark.parametrize(
    "build",
    [
        lambda bad: blocks.change_card(card_by(bad)),
        lambda bad: blocks.change_card(card_by(TRUSTED_USER).model_copy(update={"kept_by": bad})),
        lambda bad: blocks.cluster_busy("prod", bad, "resize"),
        lambda bad: blocks.approval_void(bad, "prod", []),
        lambda bad: blocks.whoami(bad, TRUSTED_CHANNEL, []),
        lambda bad: blocks.whoami(TRUSTED_USER, bad, []),
        lambda bad: blocks.revert_cancelled(bad, 7),
        lambda bad: blocks.already_undone_reason(7, 9, bad),
    ],
)
@pytest.mark.parametrize("bad", ["<!channel>", "U0X> <!here", "", "u0lowercase"])
def test_an_id_that_is_not_an_id_is_refused_not_rendered(build: Callable[[str], Any], bad: str):
    with pytest.raises(ValueError, match="not a Slack"):
        build(bad)


def _first_text(message: SlackMessage) -> str:
    block = message.blocks[0]
    return block["text"]["text"] if "text" in block else block["elements"][0]["text"]


def test_names_with_line_breaks_stay_on_their_line():
    """A line break in a name must not start a line of raybot's message (a fake "✅ …" line, a `>` quote)."""
    name = "prod*\n✅ approved by everyone\r\n> quoted"
    shown = "prod* ✅ approved by everyone &gt; quoted"
    for message in (
        blocks.change_card(card_by(TRUSTED_USER).model_copy(update={"alias": name, "summary": name, "diff": []})),
        blocks.approval_void(APPROVER, name, [DiffEntry(path=f"workerSpec[{name}].replica", before=1, after=2)]),
        blocks.revert_failed(7, name, "Throttling: try later"),
        blocks.edit_prompt(name, "{}"),
        blocks.refused(blocks.wrong_state_reason(name, name, "Running", "stop")),
    ):
        [first, *rest] = _first_text(message).split("\n")
        assert shown in first, first
        assert not any(line.startswith(("✅", "&gt;", ">")) for line in rest), rest
    view = modals.overview_view(draft_of(Sample("x", name, sample("seed:prod").cluster)))
    assert shown in view["blocks"][0]["text"]["text"].split("\n")[0]


# --- the two messages of issue item 13 --------------------------------------------------------------------------------


def test_approval_void_escapes_a_group_named_channel_and_masks_secrets():
    changed = [
        DiffEntry(path="workerSpec[<!channel>].replica", before=2, after=9),
        DiffEntry(path="headSpec.gftConfig.redisPassword", before="old-secret", after="new-secret"),
    ]
    message = blocks.approval_void("U0APPROVER", "prod", changed)
    expected = (
        "🚫 Approved by <@U0APPROVER>, but void: *prod* changed since the request "
        "(&lt;!channel&gt;: 2 → 9 replicas; fault tolerance Redis password: changed). "
        "Nothing was sent; ask again if it is still needed."
    )
    assert message.text == expected
    assert message.blocks == [{"type": "section", "text": {"type": "mrkdwn", "text": expected, "verbatim": True}}]


def test_approval_void_names_ten_changes_and_counts_the_rest_within_the_outcome_size():
    changed = [
        DiffEntry(path=f"workerSpec[<!channel>{'&' * 300}{i}].replica", before=LONG, after=LONG) for i in range(25)
    ]
    message = blocks.approval_void(APPROVER, "<!here>" * 100, changed)
    assert message.text.count("&lt;!channel&gt;") == 10  # ten changes named, each by its group
    assert "… and 15 more changes" in message.text
    assert len(message.text) <= blocks.OUTCOME_MAX
    assert markup_problems(message.text, sample("long")) == []


def test_revert_failed_escapes_a_conflict_on_a_group_named_channel():
    conflict = RevertConflict([DiffEntry(path="workerSpec[<!channel>].replica", before=5, after=7)])
    message = blocks.revert_failed(12, "prod", str(conflict))
    expected = (
        "🚫 The automatic revert of change #12 on *prod* did not run: the cluster changed since; nothing was put back:"
        "\n&lt;!channel&gt; replicas: the change set 5, it is now 7"
    )
    assert message.text == expected
    assert message.blocks == [{"type": "section", "text": {"type": "mrkdwn", "text": expected, "verbatim": True}}]


def test_revert_failed_escapes_a_cloud_error():
    message = blocks.revert_failed(3, "<!channel>", "Conflict.<!here>: group <@U0EVIL> is <b>busy</b> & locked")
    assert message.text == (
        "🚫 The automatic revert of change #3 on *&lt;!channel&gt;* did not run: "
        "Conflict.&lt;!here&gt;: group &lt;@U0EVIL&gt; is &lt;b&gt;busy&lt;/b&gt; &amp; locked"
    )


# --- the builders commands/ and the scheduler are to call instead of composing text -----------------------------------


def test_replacements_for_text_composed_outside_blocks():
    assert blocks.revert_cancelled("U0KEEPER", 4).text == (
        "⏲️ <@U0KEEPER> cancelled the automatic revert of change #4: the change stays."
    )
    assert blocks.revert_alias_unknown(4, "<!channel>").text == (
        "🚫 `&lt;!channel&gt;` is no longer in raybot's config: change #4 was not reverted"
    )
    assert blocks.already_undone_reason(4, 6, "U0UNDOER") == "change #4 is already undone (change #6 by <@U0UNDOER>)"
    assert blocks.alias_moved_reason("prod`x", 4) == "`prodˋx` points at another cluster now; undo change #4 by hand"
    assert blocks.wrong_state_reason("prod", "<!here>", "Running", "stop") == (
        "`prod` is `&lt;!here&gt;`: only a Running cluster can stop"
    )
    assert blocks.wrong_state_reason("prod", None, "Stopped", "start") == (
        "`prod` is in an unknown state: only a Stopped cluster can start"
    )
    prompt = blocks.edit_prompt("<!channel>", '{"alias": "prod"}')
    assert prompt.text == "Open the editor of *&lt;!channel&gt;*; the result is posted in this thread."
    [button] = prompt.blocks[1]["elements"]
    assert button == {
        "type": "button",
        "text": {"type": "plain_text", "text": "Edit <!channel>"},  # plain_text: shown as written, never parsed
        "action_id": blocks.OPEN_EDITOR_ACTION,
        "value": '{"alias": "prod"}',
        "style": "primary",
    }


def test_the_edit_button_has_one_action_id():
    from commands import edit

    assert edit.OPEN_EDITOR_ACTION == blocks.OPEN_EDITOR_ACTION
