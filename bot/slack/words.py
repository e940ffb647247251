"""A change in plain words, for people: "WorkerGroup1: 2 → 3 replicas; autoscaling idle timeout: 900 s → 600 s".

Pure and unescaped: the Block Kit builders (bot/slack/blocks.py) escape what these return.
Secrets are never shown (bot.emr.changes.SECRET_KEY), whatever the diff holds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from bot.emr.changes import MASK, SECRET_KEY, DiffEntry

ABSENT = "—"
VALUE_MAX = 80  # characters of one value in running text
_GROUP = re.compile(r"^workerSpec\[(?P<group>.*)\](?:\.(?P<field>[A-Za-z]+))?$")
# Worker group fields, as "G: 2 → 3 replicas" (unit after) or "G: min 1 → 2" (word before).
_GROUP_UNITS = {"replica": "replicas"}
_GROUP_WORDS = {"minReplica": "min", "maxReplica": "max", "workerType": "type", "cpu": "cpu", "memory": "memory"}
_HEAD_WORDS = {
    "headSpec.enableAutoScaling": ("autoscaling", ""),
    "headSpec.idleTimeoutSeconds": ("autoscaling idle timeout", " s"),
}


def _value(path: str, value: Any) -> str:
    if value is None:
        return ABSENT
    if SECRET_KEY.search(path.rsplit(".", 1)[-1]):
        return MASK
    if isinstance(value, bool):
        return "on" if value else "off"
    shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return shown if len(shown) <= VALUE_MAX else shown[: VALUE_MAX - 1] + "…"


def _entry_in_words(entry: DiffEntry) -> str:
    path = entry.path
    group = _GROUP.match(path)
    if group is not None:
        name, field = group["group"], group["field"]
        if field is None:
            return f"{name}: group removed" if entry.after is None else f"{name}: group added"
        before, after = _value(field, entry.before), _value(field, entry.after)
        if field in _GROUP_UNITS:
            return f"{name}: {before} → {after} {_GROUP_UNITS[field]}"
        return f"{name}: {_GROUP_WORDS.get(field, field)} {before} → {after}"
    if path in _HEAD_WORDS:
        word, unit = _HEAD_WORDS[path]
        before = _value(path, entry.before) + (unit if entry.before is not None else "")
        after = _value(path, entry.after) + (unit if entry.after is not None else "")
        return f"{word}: {before} → {after}"
    return f"{path}: {_value(path, entry.before)} → {_value(path, entry.after)}"


def diff_in_words(diff: Sequence[DiffEntry]) -> list[str]:
    """One line per changed field, before → after."""
    return [_entry_in_words(entry) for entry in diff]


def change_in_words(diff: Sequence[DiffEntry]) -> str:
    """The whole change on one line: "WorkerGroup1: 2 → 3 replicas; autoscaling idle timeout: 900 s → 600 s"."""
    return "; ".join(diff_in_words(diff))
