"""Every message and view raybot builds reads in plain words: what an on-call engineer sees at 3 a.m.

For representative changes (every kind of diff path, a 50-group cluster, a name of the hostile kind) each public
builder of bot/slack/blocks.py and bot/slack/modals.py is rendered, and what a person reads must hold
- no API field path (`workerSpec[…]`, `headSpec.…`, `.replica`): those stay in the audit log;
- no "none"/"None" standing in for a missing id;
- no sentence said twice in one message;
- every time as a Slack date token (`<!date^…>`), shown in the reader's own time zone;
- Slack's limits.

The builders are discovered: a public builder of either module without a sample here (or in the hostile render
test's tables, whose samples are reused) fails test_every_builder_has_a_sample.
"""

from __future__ import annotations

import html
import inspect
import json
import re
from typing import Any

import pytest

from bot.config import parse_config
from bot.emr.changes import ChangeError, DiffEntry, SetReplicas, plan
from bot.emr.models import ClusterFields
from bot.errors import UnknownCluster
from bot.permissions import Subject, check_change, limits_here, replica_cap
from bot.sandbox.slack_server import blocks_problems, view_problems
from bot.slack import blocks, limits, modals
from bot.slack import quick_resize as quick
from bot.store import ChangeRecord
from tests import e2e_world as world
from tests.test_hostile_render import (
    APPROVER,
    MESSAGE_CASES,
    NOW,
    REASON_CASES,
    SEED,
    TRUSTED_CHANNEL,
    TRUSTED_USER,
    VIEW_CASES,
    Cases,
    Sample,
    as_message,
    call,
    sample,
    text_objects,
)

API_PATH = re.compile(
    r"workerSpec\[|headSpec\.|\.replica\b|\.(?:min|max)Replica\b|\benableAutoScaling\b|\bidleTimeoutSeconds\b"
    r"|\bgftConfig\b|\bredisPassword\b"
)
MISSING_ID = re.compile(r"(?:RequestId|requestId|clusterId|Code)\W{0,3}(?:none|None|null)\b|\bNone\b")
SLACK_DATE = re.compile(r"<!date\^\d+\^[^|>]*\|[^>]*>")
RAW_TIME = re.compile(r"\b\d{4}-\d{2}-\d{2}\b|(?<![\d.])\d{1,2}:\d{2}(?::\d{2})?(?![\d])|\bUTC\b")
SENTENCE_END = re.compile(r"(?<=[.;!?])\s+|\n")
SENTENCE_MIN = 30  # shorter fragments ("✅ done", a value) repeat legitimately in lists

# A change that touches every kind of field a spec has.
EVERY_KIND = [
    DiffEntry(path="name", before="ray-prod", after="ray-prod-2"),
    DiffEntry(path="description", before="training", after="training and serving"),
    DiffEntry(path="volumeIds", before=["vol-1"], after=["vol-1", "vol-2"]),
    DiffEntry(path="headSpec.cpu", before="4", after="8"),
    DiffEntry(path="headSpec.memory", before="16Gi", after="32Gi"),
    DiffEntry(path="headSpec.gpuSpec", before=None, after="1*A10"),
    DiffEntry(path="headSpec.enableAutoScaling", before=False, after=True),
    DiffEntry(path="headSpec.idleTimeoutSeconds", before=900, after=600),
    DiffEntry(path="headSpec.gftConfig.redisPassword", before="••••••", after="••••••"),
    DiffEntry(path="headSpec.futureKnob", before=1, after=2),
    DiffEntry(path="workerSpec[WorkerGroup1].replica", before=2, after=3),
    DiffEntry(path="workerSpec[WorkerGroup1].minReplica", before=1, after=2),
    DiffEntry(path="workerSpec[WorkerGroup1].maxReplica", before=4, after=10),
    DiffEntry(path="workerSpec[WorkerGroup1].workerType", before="cpu", after="gpu"),
    DiffEntry(path="workerSpec[WorkerGroup1].nodeSelector.zone", before="a", after="b"),
    DiffEntry(path="workerSpec[GpuGroup]", before={"groupName": "GpuGroup", "replica": 1}, after=None),
    DiffEntry(
        path="workerSpec[NewGroup]",
        before=None,
        after={"groupName": "NewGroup", "replica": 2, "minReplica": 1, "maxReplica": 4, "memory": "8Gi"},
    ),
]
FIFTY = [DiffEntry(path=f"workerSpec[group-{i:02d}].replica", before=2, after=4) for i in range(1, 51)]
HOSTILE_NAME = "a]b.c <x> & y"
HOSTILE = [DiffEntry(path=f"workerSpec[{HOSTILE_NAME}].replica", before=1, after=5)]
DIFFS = {"every kind": EVERY_KIND, "fifty groups": FIFTY, "hostile name": HOSTILE, "one": EVERY_KIND[10:11]}


def record(id_: int, action: str, state: str, diff: list[DiffEntry], **fields: Any) -> ChangeRecord:
    values: dict[str, Any] = {
        "id": id_,
        "created_at": NOW - id_ * 600,
        "updated_at": NOW,
        "version": 1,
        "state": state,
        "team_id": "T0TEAM",
        "user_id": TRUSTED_USER,
        "channel_id": TRUSTED_CHANNEL,
        "thread_ts": None,
        "root_ts": None,
        "alias": "prod",
        "workspace": "w-1",
        "cluster_id": "rc-1",
        "region": "cn-hangzhou",
        "action": action,
        "summary": f"{action}: workerSpec[WorkerGroup1].replica",  # the audit's line: never shown to people
        "spec_before": None,
        "body": None,
        "diff": [d.model_dump(mode="json") for d in diff],
    }
    return ChangeRecord(**(values | fields))


HISTORY = [
    record(9, "resize", "awaiting_approval", FIFTY, expires_at=NOW + 1800),
    record(8, "resize", "settled", EVERY_KIND[10:13], request_id="R-8", revert_state="scheduled", revert_at=NOW + 7200),
    record(7, "edit", "settled", EVERY_KIND, request_id="R-7", duration_seconds=None),
    record(6, "undo", "failed", EVERY_KIND[10:11], undo_of=5, error_code="Throttling.User"),
    record(5, "revert", "unknown", EVERY_KIND[6:8], undo_of=4),
    record(4, "stop", "settled", [], request_id=None),
    record(3, "resize", "rejected", HOSTILE),
    record(2, "resize", "settled", FIFTY[:2], duration_seconds=7200, revert_state="running", request_id="R-2"),
    record(1, "resize", "not_settled", EVERY_KIND[10:11], error_message="superseded by change #2 before it settled"),
]

# Representative calls for the builders whose words depend on a change; the others reuse the hostile render test's
# calls with the seed clusters (fleet-50 is the 50-group one) as input.
PLAIN_CASES: dict[str, Cases] = {
    "change_succeeded": lambda s: [
        *(call("prod", "rc-1", "R-1", d, change_id=7) for d in DIFFS.values()),
        call("prod", "rc-1", None, EVERY_KIND[10:11]),
    ],
    "approval_detail": lambda s: [call(d) for d in DIFFS.values()],
    "approval_void": lambda s: [call(APPROVER, "prod", d) for d in DIFFS.values()],
    "history": lambda s: [call("prod", HISTORY), call("prod", [])],
    "change_failed": lambda s: [
        call("prod", "Throttling.User", "Request was denied.", None, what="WorkerGroup1: 2 → 3 replicas", attempts=4),
        call("prod", "InvalidParameter", "bad", "R-1", cluster_id="rc-1", action="UpdateRayCluster"),
    ],
    "cloud_error": lambda s: [
        call("GetRayCluster", "Timeout", "no answer", None, cluster_id="rc-1", attempts=3),
        call("StopRayCluster", "Timeout", "no answer", "R-1", may_have_changed=True),
    ],
    "confirm_view": lambda s: [
        call(
            modals.new_draft(
                "prod", s.cluster, channel_id=TRUSTED_CHANNEL, thread_ts=None, user_id=TRUSTED_USER, key="k"
            ),
            d,
        )
        for d in DIFFS.values()
    ],
}

SEED_SAMPLES = [f"seed:{c['name']}" for c in SEED]


def builders(module: Any) -> set[str]:
    """Public functions of `module` that build something a person reads: a message, blocks or a view."""
    out = set()
    for name, function in inspect.getmembers(module, inspect.isfunction):
        if function.__module__ != module.__name__ or name.startswith("_"):
            continue
        returns = str(inspect.signature(function).return_annotation)
        if "SlackMessage" in returns or name.endswith("_view") or name.endswith("_reason") or name == "hint":
            out.add(name)
    return out


def cases_of(name: str) -> Cases:
    return PLAIN_CASES.get(name) or MESSAGE_CASES.get(name) or REASON_CASES.get(name) or VIEW_CASES[name]


def module_of(name: str) -> Any:
    return modals if hasattr(modals, name) and not hasattr(blocks, name) else blocks


ALL_BUILDERS = sorted(builders(blocks) | builders(modals))


def test_every_builder_has_a_sample():
    sampled = set(PLAIN_CASES) | set(MESSAGE_CASES) | set(REASON_CASES) | set(VIEW_CASES)
    assert set(ALL_BUILDERS) - sampled == set(), "a builder without a sample: add one to PLAIN_CASES"
    assert "history" in ALL_BUILDERS and "confirm_view" in ALL_BUILDERS  # the discovery finds builders


def shown_texts(result: Any) -> list[str]:
    """What a person reads: every text object of a message's blocks or a view, or a reason as `refused` shows it."""
    if isinstance(result, str):
        result = blocks.refused(result)
    payload = result if isinstance(result, dict) else as_message(result).blocks
    return [obj["text"] for obj in text_objects(payload)]


def fallback_text(result: Any) -> str | None:
    return result.text if isinstance(result, blocks.SlackMessage) else None


def words_problems(texts: list[str]) -> list[str]:
    out = []
    seen: set[str] = set()
    for text in texts:
        if match := API_PATH.search(text):
            out.append(f"an API path {match.group(0)!r} in {text[:200]!r}")
        if match := MISSING_ID.search(text):
            out.append(f"{match.group(0)!r} for a missing id in {text[:200]!r}")
        if match := RAW_TIME.search(SLACK_DATE.sub("", text)):
            out.append(f"a time not as a Slack date ({match.group(0)!r}) in {text[:200]!r}")
        for sentence in SENTENCE_END.split(html.unescape(text)):
            sentence = sentence.strip()
            # List items may repeat under different headings (the same group in two clusters); sentences may not.
            if len(sentence) < SENTENCE_MIN or sentence.startswith("•"):
                continue
            if sentence in seen:
                out.append(f"said twice: {sentence[:200]!r}")
            seen.add(sentence)
    return out


def limit_problems(result: Any) -> list[str]:
    if isinstance(result, str):
        result = blocks.refused(result)
    if isinstance(result, dict):
        return limits.check_modal_limits(result) + view_problems(result)
    message = as_message(result)
    json.dumps(message.blocks)
    return limits.check_message_limits(message.blocks, message.text) + blocks_problems(
        message.blocks, "/blocks", max_blocks=limits.MESSAGE_BLOCKS_MAX
    )


def render_all(name: str, s: Sample) -> list[Any]:
    module = module_of(name)
    calls = cases_of(name)(s)
    assert calls, f"{name} has no call"
    return [getattr(module, name)(*args, **kwargs) for args, kwargs in calls]


@pytest.mark.parametrize("sample_id", SEED_SAMPLES)
@pytest.mark.parametrize("name", ALL_BUILDERS)
def test_what_a_person_reads_is_plain_words_within_limits(name: str, sample_id: str):
    s = sample(sample_id)
    for result in render_all(name, s):
        assert words_problems(shown_texts(result)) == [], name
        fallback = fallback_text(result)
        if fallback is not None:
            assert [p for p in words_problems([fallback]) if not p.startswith("said twice")] == [], name
        assert limit_problems(result) == [], name


def test_the_checks_catch_what_they_look_for():
    # The checks themselves must be able to fail, or the test above proves nothing.
    assert words_problems(["WorkerGroup1 `workerSpec[WorkerGroup1].replica`: 2 → 3"])
    assert words_problems(["✅ updated · RequestId none"])
    assert words_problems(["reverts at 2026-12-07 06:00 UTC"])
    long = "The cluster changed since the request, nothing was sent."
    assert words_problems([f"{long} {long}"])
    assert not words_problems([f"reverts at {blocks.slack_date(NOW)}; 3 workers wanted, none listed yet"])


@pytest.mark.parametrize(("label", "diff"), list(DIFFS.items()))
def test_a_change_reads_as_its_before_and_after(label: str, diff: list[DiffEntry]):
    message = blocks.change_succeeded("prod", "rc-1", "R-1", diff)
    text = "\n".join(shown_texts(message))
    assert " → " in message.text
    if label == "fifty groups":
        assert "… and 46 more changes" in message.text
        assert "• group-50: 2 → 4 replicas" in text
    if label == "hostile name":
        assert "a]b.c &lt;x&gt; &amp; y: 1 → 5 replicas" in message.text


def test_history_reads_one_line_per_change_with_what_is_pending():
    text = "\n".join(shown_texts(blocks.history("prod", HISTORY)))
    lines = [line for line in text.splitlines() if line.startswith("*#")]
    assert len(lines) == len(HISTORY)
    assert "🕒 awaiting approval until <!date^" in lines[0]
    assert "WorkerGroup1: 2 → 3 replicas, min 1 → 2, max 4 → 10" in lines[1]
    assert "requestId `R-8` · ⏲️ revert scheduled at <!date^" in lines[1]
    assert "undo of #5: WorkerGroup1: 2 → 3 replicas · ❌ failed, nothing changed · Code `Throttling.User`" in lines[3]
    assert "automatic revert of #4: autoscaling turned on; autoscaling idle timeout: 900 s → 600 s" in lines[4]
    assert "stop the cluster · ✅ done" in lines[5]
    assert "edit: edit" not in text and "requestId none" not in text
    assert "for 2 h" in lines[7] and "⏲️ reverting now" in lines[7]
    assert "⏭️ accepted, then superseded by change #2 before it settled" in lines[8]


# --- the quick resize and the refusals, as people meet them ----------------------------------------------------------

QUICK_CONFIG = parse_config(world.CONFIG)
QUICK_ONCALL = Subject(world.ONCALL_USER, world.ONCALL_CHANNEL, frozenset({world.ONCALL_GROUP}))
QUICK_TYPED = [None, "", "ten", "0", "1", "2", "3", "7", "21", "45", "500"]


@pytest.mark.parametrize("sample_id", [*SEED_SAMPLES, "seed:prod+hostile", "seed:prod+wide"])
def test_the_quick_resize_reads_in_plain_words_whatever_is_typed(sample_id: str):
    cluster = sample(sample_id.split("+")[0]).cluster
    if "+" in sample_id:
        wire = cluster.model_dump(by_alias=True, exclude_none=True)
        # hostile: a name of the hostile kind; wide: a max of 60, so the role's limits and approval speak too.
        wire["workerSpec"][0] |= {"groupName": HOSTILE_NAME} if sample_id.endswith("hostile") else {"maxReplica": 60}
        cluster = type(cluster).model_validate(wire)
    draft = quick.new_quick_draft(
        "prod",
        cluster,
        channel_id=world.ONCALL_CHANNEL,
        thread_ts="1732600000.000100",
        user_id=world.ONCALL_USER,
        named_groups=(),
        can_edit=True,
    )
    roles = limits_here(QUICK_CONFIG, QUICK_ONCALL, "resize", "prod")
    views = [quick.loading_view("prod")]
    said = set()
    for typed in QUICK_TYPED:
        preview = quick.judge(QUICK_CONFIG, QUICK_ONCALL, draft, draft.group, typed)
        views.append(quick.quick_view(draft, roles, preview, "CNY"))
        if preview.error is not None:
            assert words_problems([quick.submit_errors(preview)[quick.BLOCK_REPLICAS]]) == []
        said.add("error" if preview.error else "approval" if preview.ok and preview.decision.approval else "ok")
    if sample_id.endswith("wide"):
        assert said == {"error", "approval", "ok"}  # each kind of answer was rendered
    for view in views:
        assert words_problems(shown_texts(view)) == [], sample_id
        assert limit_problems(view) == [], sample_id


def refusals() -> list[tuple[str, Any]]:
    """The refusals a person meets most, built from the same functions the flow uses."""
    prod = sample("seed:prod").cluster
    before = ClusterFields.model_validate(prod.editable())
    out: list[tuple[str, Any]] = []
    with pytest.raises(ChangeError) as caught:
        plan(prod, [SetReplicas(group="WorkerGroup1", replica=50)])
    capped = caught.value.within_cap(
        lambda group: replica_cap(QUICK_CONFIG, QUICK_ONCALL, "resize", "prod", before, group)
    )
    out.append(("advice within the role's caps", blocks.usage_error(str(capped), "/ray show prod")))
    out.append(("advice as the cloud bounds it", blocks.usage_error(str(caught.value), "/ray show prod")))
    for known in ([], ["prod", "staging"]):
        out.append((f"unknown cluster, {len(known)} known", blocks.usage_error(str(UnknownCluster("x", known)), "")))
    bigger = quick.with_replicas(before, "WorkerGroup1", 60)
    decision = check_change(QUICK_CONFIG, QUICK_ONCALL, "resize", "prod", before, bigger)
    assert not decision.allowed
    out.append(("limits", blocks.denied(decision.reason)))
    outsider = check_change(QUICK_CONFIG, Subject("U0NOBODY", world.ONCALL_CHANNEL), "resize", "prod", before, bigger)
    out.append(("not granted", blocks.denied(outsider.reason)))
    return out


def test_the_refusals_read_in_plain_words_and_say_each_thing_once():
    for label, message in refusals():
        assert words_problems(shown_texts(message)) == [], label
        assert limit_problems(message) == [], label
    texts = {label: "\n".join(shown_texts(message)) for label, message in refusals()}
    # Every limit the change breaks, each said once, with the figures.
    assert texts["limits"].count("at most 40 replicas per group") == 1
    assert texts["limits"].count("at most 20 replicas at once") == 1
    assert "none" not in texts["unknown cluster, 0 known"]
