"""A change in plain words, for people: "WorkerGroup1: 2 → 3 replicas", "autoscaling idle timeout: 900 s → 600 s".

The diff (`bot.emr.changes.diff`) names fields by their API path (`workerSpec[WorkerGroup1].replica`); that exact
form is the audit's and stays in the store. Everything a person reads about a change is phrased here instead:
`change_in_words` gives one line for a status message or a history entry, `diff_in_words` one line per changed
thing for a thread. A field raybot does not know is named by its camelCase words ("foo bar" for `fooBar`), never
by its path. Output is plain text, not escaped: the Block Kit builders escape it. Secrets arrive masked in the
diff and are never shown, masked or not: a secret only "changed".
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.emr.changes import MASK, DiffEntry, is_secret_key, mask_secrets

PARTS_MAX = 4  # parts of a one-line change before "… and N more changes"
LINE_MAX = 400  # characters of a one-line change (it sits in a status line or a history entry)
VALUE_MAX = 40  # characters of one value in the one-line form
DETAIL_VALUE_MAX = 200  # characters of one value in a detail line

_GROUP_PREFIX = "workerSpec["
_HEAD_PREFIX = "headSpec"

TOP_LABELS = {
    "name": "cluster name",
    "description": "description",
    "displayReleaseVersion": "release version",
    "networkServiceName": "network service",
    "extraParam": "extra parameters",
    "volumeIds": "volumes",
    "workerSpec": "worker groups",
    "headSpec": "head",
}
HEAD_LABELS = {
    "enableAutoScaling": "autoscaling",
    "idleTimeoutSeconds": "autoscaling idle timeout",
    "cpu": "head CPU",
    "memory": "head memory",
    "gpuSpec": "head GPU",
    "queueName": "head queue",
    "env": "head environment variables",
    "rayStartParams": "head Ray start parameters",
    "displayReleaseVersion": "head release version",
    "gftEnabled": "head fault tolerance (GFT)",
    "gftConfig": "fault tolerance settings",
    "gftConfig.redisUrl": "fault tolerance Redis URL",
    "gftConfig.redisUsername": "fault tolerance Redis user",
    "gftConfig.redisPassword": "fault tolerance Redis password",
}
GROUP_LABELS = {
    "cpu": "CPU",
    "memory": "memory",
    "gpuSpec": "GPU",
    "workerType": "instance type",
    "queueName": "queue",
    "env": "environment variables",
    "rayStartParams": "Ray start parameters",
    "displayReleaseVersion": "release version",
    "groupName": "name",
}
_REPLICA_FIELDS = ("replica", "minReplica", "maxReplica")
_AUTOSCALING_FIELDS = ("enableAutoScaling", "idleTimeoutSeconds")
_UNITS = {"idleTimeoutSeconds": " s"}
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_MEMORY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Gi|Mi)$")


def plural(count: int, noun: str) -> str:
    """ "1 replica", "3 replicas": the count with its noun in the right number."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def replicas_in_words(replica: Any, low: Any = None, high: Any = None) -> str:
    """The one vocabulary of replica counts: "3 replicas (min 1, max 10)"; a missing bound is left out."""
    count = plural(replica, "replica") if isinstance(replica, int) else "replicas not set"
    bounds = [f"{name} {value}" for name, value in (("min", low), ("max", high)) if value is not None]
    return f"{count} ({', '.join(bounds)})" if bounds else count


def memory_in_words(value: str) -> str:
    """A Kubernetes memory quantity as people write it: "16Gi" → "16 GiB", "512Mi" → "512 MiB"; others as given."""
    match = _MEMORY.match(value)
    return f"{match.group(1)} {match.group(2)}B" if match else value


def workers_up(up: int | None, wanted: int) -> str:
    """The one vocabulary of running workers: "2 of 3 workers up" (None: the API lists no instances yet)."""
    if up is None:
        return f"{plural(wanted, 'worker')} wanted, none listed yet"
    if wanted == 0:
        # A stopping cluster or a removed group: what is still running is the news.
        return f"{plural(up, 'worker')} still up" if up else "no workers up"
    return f"{up} of {plural(wanted, 'worker')} up"


def humanize(name: str) -> str:
    """A field name as words: `idleTimeoutSeconds` → "idle timeout seconds", `gftConfig.redisUrl` → "gft config redis
    url"."""
    words = [_CAMEL.sub(" ", part).replace("_", " ").lower() for part in name.split(".") if part]
    return " ".join(words) or "a field"


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _value(key: str, value: Any, limit: int) -> str:
    """A value as a person reads it: on/off, "16 GiB", "900 s", short JSON for structures (secrets in it masked)."""
    value = mask_secrets(value, key.rsplit(".", 1)[-1])
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str):
        shown = memory_in_words(value) if key.endswith("memory") else value
        return _cut(shown, limit) or '""'
    if isinstance(value, int | float):
        return f"{value:g}{_UNITS.get(key.rsplit('.', 1)[-1], '')}"
    return _cut(json.dumps(value, ensure_ascii=False, separators=(", ", ": "), sort_keys=True, default=str), limit)


def _secret(key: str, entry: DiffEntry) -> bool:
    return is_secret_key(key.rsplit(".", 1)[-1]) or MASK in (entry.before, entry.after)


def _field_change(label: str, key: str, entry: DiffEntry, limit: int) -> str:
    """ "label: before → after"; "label: set to x" / "label: cleared (was x)" when one side is absent."""
    if _secret(key, entry):
        if entry.before is None:
            return f"{label}: set"
        return f"{label}: cleared" if entry.after is None else f"{label}: changed"
    if entry.before is None:
        return f"{label}: set to {_value(key, entry.after, limit)}"
    if entry.after is None:
        return f"{label}: cleared (was {_value(key, entry.before, limit)})"
    return f"{label}: {_value(key, entry.before, limit)} → {_value(key, entry.after, limit)}"


@dataclass
class _Subject:
    """Everything one diff says about one thing (a group, the head, the cluster): its entries in diff order."""

    name: str
    kind: str  # "group" | "head" | "cluster"
    entries: list[tuple[str, DiffEntry]] = field(default_factory=list)


def _group_name(key: str) -> str:
    """A group's diff key as words: "#0" is the first unnamed group, "G#2" the second group called G."""
    base, sep, number = key.rpartition("#")
    if sep and number.isdigit():
        return f"unnamed group {int(number) + 1}" if not base else f"{base} (#{number})"
    return key


def _subjects(diff: Sequence[DiffEntry]) -> list[_Subject]:
    subjects: dict[tuple[str, str], _Subject] = {}
    for entry in diff:
        path = entry.path
        if path.startswith(_GROUP_PREFIX) and "]" in path:
            # Field names never hold "]"; a group's name may: the last "]" closes the name.
            inner, _, rest = path[len(_GROUP_PREFIX) :].rpartition("]")
            kind, name, key = "group", _group_name(inner), rest.removeprefix(".")
        elif path == _HEAD_PREFIX or path.startswith(_HEAD_PREFIX + "."):
            kind, name, key = "head", "head", path.removeprefix(_HEAD_PREFIX).removeprefix(".")
        else:
            kind, name, key = "cluster", "cluster", path
        subject = subjects.setdefault((kind, name), _Subject(name, kind))
        subject.entries.append((key, entry))
    return list(subjects.values())


def _group_spec_words(spec: Any, *, brief: bool) -> str:
    """A whole group as added or removed: "2 replicas (min 1, max 4), 8 CPU, 32 GiB memory, GPU A10"."""
    if not isinstance(spec, dict):
        return ""
    words = replicas_in_words(spec.get("replica"), spec.get("minReplica"), spec.get("maxReplica"))
    if brief:
        return plural(spec["replica"], "replica") if isinstance(spec.get("replica"), int) else ""
    extras = []
    if spec.get("workerType"):
        extras.append(f"type {_value('workerType', spec['workerType'], VALUE_MAX)}")
    if spec.get("cpu") is not None:
        extras.append(f"{_value('cpu', spec['cpu'], VALUE_MAX)} CPU")
    if spec.get("memory") is not None:
        extras.append(f"{_value('memory', spec['memory'], VALUE_MAX)} memory")
    if spec.get("gpuSpec"):
        extras.append(f"GPU {_value('gpuSpec', spec['gpuSpec'], VALUE_MAX)}")
    return ", ".join([words, *extras])


def _replica_words(entries: dict[str, DiffEntry]) -> list[str]:
    """The replica count and bounds of one group: "2 → 3 replicas", "min 1 → 2", "max set to 10"."""
    out = []
    replica = entries.get("replica")
    if replica is not None:
        before, after = replica.before, replica.after
        if before is not None and after is not None:
            counted = plural(after, "replica") if isinstance(after, int) else _value("replica", after, VALUE_MAX)
            out.append(f"{_value('replica', before, VALUE_MAX)} → {counted}")
        elif after is not None:
            out.append(f"replicas set to {_value('replica', after, VALUE_MAX)}")
        else:
            out.append(f"replicas cleared (was {_value('replica', before, VALUE_MAX)})")
    for key, word in (("minReplica", "min"), ("maxReplica", "max")):
        entry = entries.get(key)
        if entry is None:
            continue
        if entry.before is not None and entry.after is not None:
            out.append(f"{word} {_value(key, entry.before, VALUE_MAX)} → {_value(key, entry.after, VALUE_MAX)}")
        elif entry.after is not None:
            out.append(f"{word} set to {_value(key, entry.after, VALUE_MAX)}")
        else:
            out.append(f"{word} cleared (was {_value(key, entry.before, VALUE_MAX)})")
    return out


def _group_lines(subject: _Subject, *, brief: bool) -> list[str]:
    """What happened to one group: added, removed, or its changed fields (replicas first, in one phrase)."""
    limit = VALUE_MAX if brief else DETAIL_VALUE_MAX
    out = []
    replicas: dict[str, DiffEntry] = {}
    fields: list[str] = []
    for key, entry in subject.entries:
        if not key:
            if entry.before is None:
                spec = _group_spec_words(entry.after, brief=brief)
                out.append(f"{subject.name} added" + (f" ({spec})" if brief and spec else f": {spec}" if spec else ""))
            elif entry.after is None:
                spec = _group_spec_words(entry.before, brief=brief)
                out.append(
                    f"{subject.name} removed" + (f" ({spec})" if brief and spec else f": {spec}" if spec else "")
                )
            else:
                out.append(_field_change(f"{subject.name}", "group", entry, limit))
        elif key in _REPLICA_FIELDS:
            replicas[key] = entry
        else:
            label = GROUP_LABELS.get(key, humanize(key))
            fields.append(_field_change(label, key, entry, limit).replace(": ", " ", 1))
    phrases = _replica_words(replicas) + fields
    if phrases:
        if brief:
            out.append(f"{subject.name}: {', '.join(phrases)}")
        else:
            out += [f"{subject.name}: {phrase}" for phrase in phrases]
    return out


def _autoscaling_words(entries: dict[str, DiffEntry], limit: int) -> list[str]:
    """Autoscaling and its idle timeout: "autoscaling turned on", "autoscaling idle timeout: 900 s → 600 s"."""
    out = []
    switch = entries.get("enableAutoScaling")
    if switch is not None:
        if isinstance(switch.after, bool) and isinstance(switch.before, bool):
            out.append(f"autoscaling turned {'on' if switch.after else 'off'}")
        else:
            out.append(_field_change("autoscaling", "enableAutoScaling", switch, limit))
    idle = entries.get("idleTimeoutSeconds")
    if idle is not None:
        out.append(_field_change(HEAD_LABELS["idleTimeoutSeconds"], "idleTimeoutSeconds", idle, limit))
    return out


def _other_lines(subject: _Subject, *, brief: bool) -> list[str]:
    """The head's and the cluster's own fields, one phrase each."""
    limit = VALUE_MAX if brief else DETAIL_VALUE_MAX
    labels = HEAD_LABELS if subject.kind == "head" else TOP_LABELS
    autoscaling = {k: e for k, e in subject.entries if subject.kind == "head" and k in _AUTOSCALING_FIELDS}
    out = _autoscaling_words(autoscaling, limit)
    for key, entry in subject.entries:
        if key in autoscaling:
            continue
        if key in labels:
            label = labels[key]
        elif subject.kind == "head":
            label = f"head {humanize(key)}" if key else "head"
        else:
            label = humanize(key)
        out.append(_field_change(label, key, entry, limit))
    return out


def _lines(diff: Sequence[DiffEntry], *, brief: bool) -> list[str]:
    out = []
    # Worker groups first: replica counts are what a change is most often about, and what a reader looks for.
    order = {"group": 0, "head": 1, "cluster": 2}
    for subject in sorted(_subjects(diff), key=lambda s: order[s.kind]):
        out += _group_lines(subject, brief=brief) if subject.kind == "group" else _other_lines(subject, brief=brief)
    return out


def diff_in_words(diff: Sequence[DiffEntry]) -> list[str]:
    """One plain line per changed thing, for a thread's detail: "WorkerGroup1: 2 → 3 replicas", "GpuGroup added: …".

    Worker groups first (replica counts before other fields), then the head, then the cluster's own fields.
    """
    return _lines(diff, brief=False)


def change_in_words(diff: Sequence[DiffEntry]) -> str:
    """The whole change in one plain line: "WorkerGroup1: 2 → 3 replicas; autoscaling idle timeout: 900 s → 600 s".

    One part per group (its fields together), per head or cluster field; beyond PARTS_MAX parts or LINE_MAX
    characters the rest is counted: "… and 3 more changes". An empty diff is "no change".
    """
    parts = _lines(diff, brief=True)
    if not parts:
        return "no change"
    shown: list[str] = []
    for index, part in enumerate(parts):
        rest = len(parts) - index - 1
        tail = len(f"; … and {plural(rest, 'more change')}") if rest else 0
        if index >= PARTS_MAX or (shown and len("; ".join([*shown, part])) + tail > LINE_MAX):
            break
        shown.append(part)
    rest = len(parts) - len(shown)
    line = "; ".join(shown) + (f"; … and {plural(rest, 'more change')}" if rest else "")
    return _cut(line, LINE_MAX + 40)


LIFECYCLE_WORDS = {"start": "start the cluster", "stop": "stop the cluster"}


def duration_in_words(seconds: int) -> str:
    """ "45 min", "2 h", "1 d 6 h": how long a temporary change lasts."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{n} {unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "min")) if n]
    return " ".join(parts) or f"{seconds} s"


def record_in_words(
    action: str,
    summary: str,
    diff: Sequence[DiffEntry | dict[str, Any]],
    *,
    undo_of: int | None = None,
    duration_seconds: int | None = None,
) -> str:
    """What a recorded change does, for people: its diff in words, or what a start/stop does.

    `summary` (the audit's own line) is used only when the change has no diff and is no start or stop: a change
    recorded before its plan was known. An undo and a revert name the change they take back.
    """
    entries = [e if isinstance(e, DiffEntry) else DiffEntry.model_validate(e) for e in diff]
    if entries:
        what = change_in_words(entries)
    else:
        what = LIFECYCLE_WORDS.get(action, summary)
    if duration_seconds is not None and action not in ("undo", "revert"):
        what += f", for {duration_in_words(duration_seconds)}"
    if undo_of is not None and action == "undo":
        return f"undo of #{undo_of}: {what}"
    if undo_of is not None and action == "revert":
        return f"automatic revert of #{undo_of}: {what}"
    return what


def change_record_in_words(record: Any) -> str:
    """`record_in_words` of a bot.store.ChangeRecord."""
    return record_in_words(
        record.action,
        record.summary,
        record.diff,
        undo_of=record.undo_of,
        duration_seconds=record.duration_seconds,
    )


_GROUP_FIELD_WORDS = {"replica": "replicas", "minReplica": "min replicas", "maxReplica": "max replicas"}


def path_in_words(path: str) -> str:
    """A field as a person names it: `workerSpec[G1].replica` → "G1 replicas", `headSpec.cpu` → "head CPU"."""
    subject = _subjects([DiffEntry(path=path)])[0]
    key = subject.entries[0][0]
    if subject.kind == "group":
        field_words = _GROUP_FIELD_WORDS.get(key) or GROUP_LABELS.get(key) or humanize(key)
        return f"{subject.name} {field_words}" if key else f"group {subject.name}"
    if subject.kind == "head":
        return HEAD_LABELS.get(key) or (f"head {humanize(key)}" if key else "head")
    return TOP_LABELS.get(key) or humanize(key)
