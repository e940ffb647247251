"""Read-modify-write, the pure core: a cluster as read plus a change gives the
complete UpdateRayCluster body and a human diff.

Every body built here holds the complete workerSpec (the API does not document
whether it merges or replaces the list), and every field not being changed is
sent exactly as it was read.

Secrets: wherever raybot keeps a body (editor drafts, the audit log) or shows one,
values under secret-looking keys are replaced by MASK (see `redact_secrets`). A mask
is never sent: a plan takes every masked value a change carries from the fresh read,
and refuses when the read has none to take; an undo that would have to put back a
masked value refuses. Comparisons of a kept (masked) body with a fresh read mask the
fresh side first, so a secret never makes a field look changed.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer

from bot.emr.models import (
    ClusterFields,
    RayCluster,
    SpecProblem,
    UpdateRayClusterRequest,
    WorkerGroup,
    dumps_body,
    spec_problems,
)


class _Change(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SetReplicas(_Change):
    """Set the replica count and/or the autoscaling bounds of one group."""

    kind: Literal["set_replicas"] = "set_replicas"
    group: str
    replica: int | None = None
    min_replica: int | None = None
    max_replica: int | None = None


class SetAutoscaling(_Change):
    kind: Literal["set_autoscaling"] = "set_autoscaling"
    enabled: bool
    idle_timeout_seconds: int | None = None


class SetFields(_Change):
    """Set top-level or head fields by wire path: `name`, `description`, `headSpec.cpu`, …"""

    kind: Literal["set_fields"] = "set_fields"
    values: dict[str, Any]


class _GroupChange(_Change):
    spec: WorkerGroup

    @field_serializer("spec")
    def _spec_as_given(self, spec: WorkerGroup) -> dict[str, Any]:
        # Kept changes (an approval's replay) are planned again later: what `spec` set and what it left unset must
        # survive the round trip, or every unset field would come back as an explicit None, which removes it.
        return spec.wire()


class ReplaceGroup(_GroupChange):
    """Set the fields `spec` sets on the group called `group` (a groupName renames it); the others are kept.

    An explicit None in `spec` removes that field; fields `spec` leaves unset, unknown ones included, stay as read.
    """

    kind: Literal["replace_group"] = "replace_group"
    group: str


class AddGroup(_GroupChange):
    kind: Literal["add_group"] = "add_group"


class RemoveGroup(_Change):
    kind: Literal["remove_group"] = "remove_group"
    group: str


Change = Annotated[
    SetReplicas | SetAutoscaling | SetFields | ReplaceGroup | AddGroup | RemoveGroup,
    Field(discriminator="kind"),
]


class DiffEntry(BaseModel):
    """One changed field: `path` as on the wire (`workerSpec[WorkerGroup1].replica`), None for absent."""

    model_config = ConfigDict(frozen=True)

    path: str
    before: Any = None
    after: Any = None


class Plan(BaseModel):
    """The outcome of applying changes to a cluster as read.

    `body` is the complete UpdateRayCluster request to send, None when nothing
    changes (`diff` is then empty and nothing must be sent).
    """

    body: UpdateRayClusterRequest | None
    diff: list[DiffEntry]

    @property
    def changed(self) -> bool:
        return bool(self.diff)


class ChangeError(ValueError):
    """A change that cannot be applied to this cluster (unknown group, replica outside bounds, …).

    The message is written for the person who asked for the change. `problems` are the constraints it breaks,
    when it is about those (a BoundsProblem's advice may be rewritten for the asker's role: `within_cap`).
    """

    def __init__(self, message: str, problems: Sequence[SpecProblem] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems)

    def within_cap(self, cap_for: Callable[[str], ReplicaCap | None]) -> ChangeError:
        """This error with no advice the asker's role would refuse: a max or replica count above what the role
        allows the group (`cap_for(group)`; None: no cap) becomes advice to ask for at most that."""
        problems = [
            p.capped(cap) if isinstance(p, BoundsProblem) and (cap := cap_for(p.group)) and p.value > cap.most else p
            for p in self.problems
        ]
        if problems == list(self.problems):
            return self
        return ChangeError(_problem_message(problems), problems)


@dataclass(frozen=True)
class ReplicaCap:
    """The most replicas the asker's role lets one group have after a change, and why, in words that follow
    "your role allows": "at most 40 replicas per group", "changing a group by at most 8 replicas at once (…)"."""

    most: int
    why: str


@dataclass(frozen=True)
class BoundsProblem(SpecProblem):
    """A replica count or min outside the group's bounds, with advice to move the bound to `value` as well.

    Shown without its path: the message names the group.
    """

    group: str = ""
    value: int = 0
    high: int | None = None

    def __str__(self) -> str:
        return self.message

    def capped(self, cap: ReplicaCap) -> BoundsProblem:
        """The same problem, advising only what the asker's role allows the group (`cap`)."""
        most = cap.most
        advice = (
            f"ask for at most {self.high} replicas, or for at most {most} with max={most} as well"
            if self.high is not None and most > self.high
            else f"ask for at most {min(most, self.high) if self.high is not None else most} replicas"
        )
        return BoundsProblem(
            self.path,
            f"{self.group} cannot go to {self.value}: your role allows {cap.why}; {advice}",
            group=self.group,
            value=self.value,
            high=self.high,
        )


# --- secrets ----------------------------------------------------------------------------------------------------

MASK = "••••••"
"""What a secret value becomes wherever raybot keeps or shows a body: drafts, the audit log, diffs, Slack."""

SECRET_KEY = re.compile(r"password|passwd|secret|token|accesskey", re.IGNORECASE)
"""A field whose name matches holds a secret: redisPassword, imagePullSecret, accessKeySecret, token, …"""


def is_secret_key(key: str) -> bool:
    """Does a field called `key` hold a secret?"""
    return bool(SECRET_KEY.search(key))


def mask_secrets(value: Any, key: str = "") -> Any:
    """A copy of `value` (the value of the field `key`, "" for none) with every secret in it replaced by MASK.

    Mappings and lists are followed to any depth (`workerSpec[].env[].token`); a secret field holding a
    mapping or a list is masked whole. Absent (None) values stay None, so masking never adds a field.
    """
    if value is None:
        return None
    if key and is_secret_key(key):
        return MASK
    if isinstance(value, dict):
        return {k: mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    return value


def redact_secrets(body: dict[str, Any] | None) -> dict[str, Any] | None:
    """A copy of a wire-form body with every secret value masked, for anything raybot stores or shows.

    Undo still works from it, except where it would have to put a masked value back (see `revert_plan`).
    """
    if body is None:
        return None
    return mask_secrets(body)


def _holds_mask(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_holds_mask(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_mask(v) for v in value)
    return value == MASK


def _masked_fields(value: Any, prefix: str = "") -> list[str]:
    """The dotted paths inside `value` that hold the mask (`imagePullSecret`, `gftConfig.redisPassword`)."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _masked_fields(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _masked_fields(v, f"{prefix}[{i}]")]
    return [prefix] if value == MASK else []


def _same(key: str, kept: Any, fresh: Any) -> bool:
    """Do two values of the field `key` match, when either may come from a masked record?

    When one side holds masks, the other is masked first and compared again: a mask matches any present
    secret, at any depth (a whole group as kept against the group as read). Two unmasked values compare as they
    are, so a real change of a secret between two reads still shows.
    """
    if kept == fresh:
        return True
    if _holds_mask(kept) and kept == mask_secrets(fresh, key):
        return True
    return _holds_mask(fresh) and fresh == mask_secrets(kept, key)


def _unmasked(value: Any, current: Any, where: str, advice: str) -> Any:
    """`value` with every masked leaf taken from `current`, the same place in the body as read (or built so far).

    `where` names the place on the wire for the refusal when the read has no value there to take.
    """
    if value == MASK:
        if current is None:
            raise ChangeError(_cannot_send(where, advice))
        return copy.deepcopy(current)
    if isinstance(value, dict):
        now = current if isinstance(current, dict) else {}
        return {k: _unmasked(v, now.get(k), f"{where}.{k}", advice) for k, v in value.items()}
    if isinstance(value, list):
        now = current if isinstance(current, list) else []
        return [_unmasked(v, now[i] if i < len(now) else None, f"{where}[{i}]", advice) for i, v in enumerate(value)]
    return value


_LEAVE_IT_OUT = "leave that field out of the change, or set it in the EMR console"


def _cannot_send(where: str, advice: str = _LEAVE_IT_OUT) -> str:
    return (
        f"{where} is a secret raybot cannot send: raybot only keeps it masked ({MASK}) and the cluster as read "
        f"has no value there to send back. Nothing was sent; {advice}"
    )


# --- applying changes -------------------------------------------------------------------------------------------

TOP_LEVEL_FIELDS = ("name", "description", "displayReleaseVersion", "networkServiceName", "extraParam", "volumeIds")
"""Top-level wire paths SetFields may change."""

HEAD_FIELDS = (
    "queueName",
    "cpu",
    "memory",
    "gpuSpec",
    "enableAutoScaling",
    "idleTimeoutSeconds",
    "env",
    "rayStartParams",
    "gftEnabled",
    "displayReleaseVersion",
)
"""Head fields SetFields may change as `headSpec.<field>`. gftConfig is left out on purpose: it holds a password."""

_WIRE_ORDER = tuple(field.alias or name for name, field in ClusterFields.model_fields.items())


def plan(cluster: RayCluster, changes: Sequence[Change]) -> Plan:
    """Apply `changes` in order to the editable fields of `cluster` as read, giving the complete UpdateRayCluster body.

    Every editable field present in the read is sent back exactly as read unless a change sets it; absent fields stay
    absent; unknown fields inside headSpec and the groups are kept. The complete workerSpec is always sent when the
    read had groups, and `"workerSpec": []` only when RemoveGroup removed every group (an empty or null workerSpec
    as read is left out rather than sent back). A value of None in SetFields, or an explicit None in the spec of
    ReplaceGroup, removes that field from the body.

    A value a change carries that is the mask (MASK, e.g. copied from a masked draft) is taken from the fresh read
    (or what earlier changes built); where the read has no value there (a group the change adds, a field it
    introduces), ChangeError says which field is a secret raybot cannot send.

    Returns `Plan(body=None, diff=[])` when the changes change nothing (absent and null count as the same). Raises
    ChangeError, written for the person who asked, when a change does not fit this cluster or the resulting body
    breaks a documented constraint.
    """
    before = cluster.editable()
    after = copy.deepcopy(before)
    for change in changes:
        _apply(after, change)
    # A RemoveGroup only succeeds on a group that exists, so an empty list after one means every group was removed:
    # the one time "workerSpec": [] is meant. Otherwise an empty (or null) list is never sent back.
    if not after.get("workerSpec") and not any(isinstance(c, RemoveGroup) for c in changes):
        after.pop("workerSpec", None)
    return _finish(before, after)


def _finish(before: dict[str, Any], after: dict[str, Any]) -> Plan:
    """Normalize, diff and check the body `after` built from `before` (both wire form)."""
    fields = _fields(after)
    # Normalize through the model (cpu 4 → "4", coercions) so the diff shows exactly what will be sent.
    after = fields.wire()
    entries = diff(before, after)
    if not entries:
        return Plan(body=None, diff=[])
    # The last guard: a mask must never reach the cloud. A read that itself holds masks (the editor's preview plans
    # against its masked draft) is never sent, and its masks are what was read.
    if not _holds_mask(before):
        leaks = [
            f"{_path_text(loc)}.{field}" if field else _path_text(loc)
            for loc, _, new in _changed_locations(before, after)
            for field in _masked_fields(new)
        ]
        if leaks:
            raise ChangeError(_cannot_send(leaks[0]))

    problems = _changed_group_problems(before, after) or _constraint_problems(before, fields)
    if problems:
        raise ChangeError(_problem_message(problems), problems)
    try:
        body = UpdateRayClusterRequest.model_validate(after)
    except ValidationError as exc:  # spec_problems is the same check; this is the last guard, not the usual path
        raise ChangeError(_problem_message(_validation_problems(exc, after))) from exc
    return Plan(body=body, diff=entries)


class RevertConflict(ChangeError):
    """A field the change set no longer holds what it set: someone changed it since, so nothing is put back."""

    def __init__(self, conflicts: list[DiffEntry]) -> None:
        from bot.slack.words import path_in_words  # words reads this module's DiffEntry: imported when needed

        self.conflicts = conflicts
        lines = [
            f"{path_in_words(c.path)}: the change set {_shown(c.before)}, it is now {_shown(c.after)}"
            for c in conflicts
        ]
        super().__init__("the cluster changed since; nothing was put back:\n" + "\n".join(lines))


class SecretNotKept(RevertConflict):
    """Undo would have to put back a secret, and raybot only kept it masked: nothing is put back.

    A RevertConflict, so every caller that explains a conflict explains this too; `conflicts` is empty.
    """

    def __init__(self, message: str) -> None:
        self.conflicts = []
        ChangeError.__init__(self, message)


def _shown(value: Any) -> str:
    return "absent" if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)


Location = tuple[str, ...]


def _changed_locations(before: Any, after: Any, loc: Location = ()) -> list[tuple[Location, Any, Any]]:
    """Every place where `after` differs from `before`, with both raw values (unmasked, unlike `diff`).

    Groups are matched by name as in `diff`: a whole group added or removed is one location.
    """
    if loc == ("workerSpec",):
        old, new = dict(_keyed_groups(before)), dict(_keyed_groups(after))
        out = []
        for key in dict.fromkeys([*old, *new]):
            if key in old and key in new:
                out += _changed_locations(old[key], new[key], (*loc, key))
            else:
                out.append(((*loc, key), old.get(key), new.get(key)))
        return out
    if isinstance(before, dict | None) and isinstance(after, dict | None) and (before or after):
        out = []
        for key in _ordered_keys(before, after):
            out += _changed_locations((before or {}).get(key), (after or {}).get(key), (*loc, key))
        return out
    return [(loc, before, after)] if before != after else []


def _lookup(body: dict[str, Any], loc: Location) -> Any:
    node: Any = body
    for index, key in enumerate(loc):
        if index > 0 and loc[index - 1] == "workerSpec":
            node = dict(_keyed_groups(node)).get(key)
        elif isinstance(node, dict):
            node = node.get(key)
        else:
            return None
        if node is None:
            return None
    return node


def _store(body: dict[str, Any], loc: Location, value: Any, template: dict[str, Any]) -> None:
    """Set (or, with None, remove) the value at `loc`; a whole group goes back to its position in `template`."""
    if len(loc) == 2 and loc[0] == "workerSpec":
        groups = body.setdefault("workerSpec", [])
        keys = [k for k, _ in _keyed_groups(groups)]
        if loc[1] in keys:
            del groups[keys.index(loc[1])]
        if value is not None:
            position = [k for k, _ in _keyed_groups(template.get("workerSpec"))].index(loc[1])
            groups.insert(min(position, len(groups)), copy.deepcopy(value))
        return
    parent = _lookup(body, loc[:-1]) if len(loc) > 1 else body
    if parent is None:
        if value is None:
            return
        parent = body.setdefault(loc[0], {}) if len(loc) == 2 else None
        if parent is None:
            raise ChangeError(f"cannot put back {'.'.join(loc)}: its group no longer exists")
    if value is None:
        parent.pop(loc[-1], None)
    else:
        parent[loc[-1]] = copy.deepcopy(value)


def revert_plan(
    cluster: RayCluster, before: dict[str, Any], applied: dict[str, Any], *, change_id: int | None = None
) -> Plan:
    """Undo a change: put every field that `applied` changed (relative to `before`) back to its value in `before`.

    Only if each of those fields still holds what `applied` set in `cluster` as read now; otherwise raise
    RevertConflict naming them, and nothing is to be sent. Fields the change did not touch keep their current
    values (someone may have changed them since, legitimately), secrets included: they are sent as read.
    `before` and `applied` are wire-form bodies: the spec as read before the change and the body that was sent,
    as the audit log keeps them (secrets masked, see `redact_secrets`).

    Putting back a removed group or field that holds a masked secret would send the mask: that raises
    SecretNotKept (a RevertConflict) saying what to restore by hand. `change_id` names the change in it.
    """
    current = cluster.editable()
    target = copy.deepcopy(current)
    conflicts = []
    changed = _changed_locations(before, applied)
    for loc, _, new in changed:
        now = _lookup(current, loc)
        if not _same(_loc_key(loc), new, now):
            # Masked in the message as well: it is shown in Slack, and `now` is the cloud's, secrets and all.
            key = _loc_key(loc)
            conflicts.append(
                DiffEntry(path=_path_text(loc), before=mask_secrets(new, key), after=mask_secrets(now, key))
            )
    if conflicts:
        raise RevertConflict(conflicts)
    lost = [_secret_lost(loc, old, new, change_id) for loc, old, new in changed if _holds_mask(old)]
    if lost:
        raise SecretNotKept("\n".join(lost))
    for loc, old, _ in changed:
        _store(target, loc, old, before)
    if not target.get("workerSpec") and current.get("workerSpec") is None:
        target.pop("workerSpec", None)
    return _finish(current, target)


def _secret_lost(loc: Location, old: Any, new: Any, change_id: int | None) -> str:
    """Why `old`, holding a masked secret, cannot be put back at `loc`, in plain words."""
    change = f"change #{change_id}" if change_id is not None else "the change"
    fields = ", ".join(_masked_fields(old))
    if len(loc) == 2 and loc[0] == "workerSpec":
        return f"{change} removed {loc[1]}, whose {fields} raybot does not keep; restore it by hand (nothing was sent)"
    place = _path_text(loc) + (f".{fields}" if fields else "")
    what = "removed" if new is None else "changed"
    return f"{change} {what} {place}, a secret raybot does not keep; restore it by hand (nothing was sent)"


def _loc_key(loc: Location) -> str:
    """The field name at `loc`, for secret detection; "" for a whole group (its key is a group name)."""
    if not loc or (len(loc) == 2 and loc[0] == "workerSpec"):
        return ""
    return loc[-1]


def holds_change(cluster: RayCluster, before: dict[str, Any], applied: dict[str, Any]) -> bool:
    """Does `cluster` hold every value the change before → applied set? (Did it take effect?)

    `before` and `applied` may be masked (as the audit log keeps them): a masked value matches any value read.
    """
    current = cluster.editable()
    return all(_same(_loc_key(loc), new, _lookup(current, loc)) for loc, _, new in _changed_locations(before, applied))


def _path_text(loc: Location) -> str:
    if loc and loc[0] == "workerSpec" and len(loc) > 1:
        rest = ".".join(loc[2:])
        return f"workerSpec[{loc[1]}]" + (f".{rest}" if rest else "")
    return ".".join(loc)


def _apply(body: dict[str, Any], change: Change) -> None:
    """Apply one change to the wire-form body in place."""
    if isinstance(change, SetReplicas):
        _set_replicas(body, change)
    elif isinstance(change, SetAutoscaling):
        _set_autoscaling(body, change)
    elif isinstance(change, SetFields):
        _set_fields(body, change)
    elif isinstance(change, ReplaceGroup):
        _replace_group(body, change)
    elif isinstance(change, AddGroup):
        _add_group(body, change)
    elif isinstance(change, RemoveGroup):
        groups = body.get("workerSpec") or []
        index = _group_index(groups, change.group)
        del groups[index]
    else:  # pragma: no cover - the Change union is closed
        raise ChangeError(f"unknown change {change!r}")


def _group_index(groups: list[dict[str, Any]], name: str) -> int:
    for index, group in enumerate(groups):
        if group.get("groupName") == name:
            return index
    names = [str(g.get("groupName")) for g in groups if g.get("groupName")]
    known = f"its groups are {', '.join(names)}" if names else "it has no worker groups"
    raise ChangeError(f"there is no worker group {name!r} in this cluster; {known}")


def _set_replicas(body: dict[str, Any], change: SetReplicas) -> None:
    if change.replica is None and change.min_replica is None and change.max_replica is None:
        raise ChangeError(f"say what to change for {change.group}: replicas, min or max")
    groups = body.get("workerSpec") or []
    group = groups[_group_index(groups, change.group)]
    for key, value in (
        ("replica", change.replica),
        ("minReplica", change.min_replica),
        ("maxReplica", change.max_replica),
    ):
        if value is not None:
            group[key] = value


def _set_autoscaling(body: dict[str, Any], change: SetAutoscaling) -> None:
    idle = change.idle_timeout_seconds
    if idle is not None and idle < 0:
        raise ChangeError(f"the idle timeout is a number of seconds, 0 or more, not {idle}")
    head = body.get("headSpec")
    if not isinstance(head, dict):
        head = body["headSpec"] = {}
    head["enableAutoScaling"] = change.enabled
    if idle is not None:
        head["idleTimeoutSeconds"] = idle


def _set_fields(body: dict[str, Any], change: SetFields) -> None:
    if not change.values:
        raise ChangeError("say which fields to change")
    for path, value in change.values.items():
        if path in TOP_LEVEL_FIELDS:
            _put(body, path, _unmasked(value, body.get(path), path, _LEAVE_IT_OUT))
        elif path.startswith("headSpec.") and path.removeprefix("headSpec.") in HEAD_FIELDS:
            key = path.removeprefix("headSpec.")
            head = body.get("headSpec")
            value = _unmasked(value, head.get(key) if isinstance(head, dict) else None, path, _LEAVE_IT_OUT)
            if not isinstance(head, dict):
                if value is None:
                    continue
                head = body["headSpec"] = {}
            _put(head, key, value)
        else:
            editable = ", ".join([*TOP_LEVEL_FIELDS, *(f"headSpec.{f}" for f in HEAD_FIELDS)])
            raise ChangeError(f"{path!r} is not a field raybot can edit this way; editable fields are {editable}")


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    # None means "unset": the field is left out of the body rather than sent as null.
    if value is None:
        target.pop(key, None)
    else:
        target[key] = value


def _replace_group(body: dict[str, Any], change: ReplaceGroup) -> None:
    groups = body.get("workerSpec") or []
    index = _group_index(groups, change.group)
    new_name = change.spec.group_name
    if new_name is not None and new_name != change.group and any(g.get("groupName") == new_name for g in groups):
        raise ChangeError(f"cannot rename {change.group} to {new_name}: this cluster already has a group {new_name}")
    group = groups[index]
    for key, value in change.spec.wire().items():
        # A masked value (copied from a masked draft) means "as it is": the group's own value, never the mask.
        _put(group, key, _unmasked(value, group.get(key), f"workerSpec[{change.group}].{key}", _LEAVE_IT_OUT))


def _add_group(body: dict[str, Any], change: AddGroup) -> None:
    name = change.spec.group_name
    # A new group has no value as read to take a masked one from: a mask in it (a group copied from a masked
    # draft) is refused rather than sent.
    advice = f"leave that field out of {name or 'the new group'} and set it in the EMR console, or add the group there"
    spec = {
        k: _unmasked(v, None, f"workerSpec[{name or '(new)'}].{k}", advice)
        for k, v in change.spec.wire().items()
        if v is not None
    }
    groups = body.get("workerSpec")
    if not isinstance(groups, list):
        groups = body["workerSpec"] = []
    if name is not None and any(g.get("groupName") == name for g in groups):
        raise ChangeError(f"this cluster already has a worker group {name}; change it with a resize or an edit instead")
    groups.append(spec)


# --- checking the result ----------------------------------------------------------------------------------------


def _fields(body: dict[str, Any]) -> ClusterFields:
    try:
        return ClusterFields.model_validate(body)
    except ValidationError as exc:
        raise ChangeError(_problem_message(_validation_problems(exc, body))) from exc


def _validation_problems(exc: ValidationError, body: dict[str, Any]) -> list[SpecProblem]:
    out = []
    for error in exc.errors():
        parts: list[str] = []
        loc = error["loc"]
        for i, part in enumerate(loc):
            if isinstance(part, int) and i > 0 and loc[i - 1] == "workerSpec":
                groups = body.get("workerSpec") or []
                name = groups[part].get("groupName") if part < len(groups) and isinstance(groups[part], dict) else None
                parts[-1] += f"[{name or part}]"
            elif isinstance(part, int) and parts:
                parts[-1] += f"[{part}]"
            else:
                parts.append(str(part))
        given = repr(error.get("input"))
        given = given if len(given) <= 40 else given[:37] + "…"
        out.append(SpecProblem(".".join(parts) or "body", f"{error['msg']} (given {given})"))
    return out


def _changed_group_problems(before: dict[str, Any], after: dict[str, Any]) -> list[SpecProblem]:
    """Replica bounds of the groups the changes touched, with advice on how to ask instead.

    Values below 1 are left to spec_problems, whose message says so better than advice about bounds would.
    """
    old = {key: group for key, group in _keyed_groups(before.get("workerSpec"))}
    out = []
    for key, group in _keyed_groups(after.get("workerSpec")):
        if key in old and dumps_body(old[key]) == dumps_body(group):
            continue
        label = group.get("groupName") or key
        replica, low, high = group.get("replica"), group.get("minReplica"), group.get("maxReplica")
        if any(isinstance(v, int) and v < 1 for v in (replica, low, high)):
            continue
        path = f"workerSpec[{label}]"
        if low is not None and high is not None and low > high:
            out.append(
                BoundsProblem(
                    f"{path}.minReplica",
                    f"{label}: min {low} is above its max {high}; set max={low} as well (or a min of at most {high})",
                    group=label,
                    value=low,
                    high=high,
                )
            )
        elif replica is not None and high is not None and replica > high:
            out.append(
                BoundsProblem(
                    f"{path}.replica",
                    f"{label}: {replica} replicas is above its max {high}; set max={replica} as well "
                    f"(or replicas of at most {high})",
                    group=label,
                    value=replica,
                    high=high,
                )
            )
        elif replica is not None and low is not None and replica < low:
            out.append(
                BoundsProblem(
                    f"{path}.replica",
                    f"{label}: {replica} replicas is below its min {low}; set min={replica} as well "
                    f"(or replicas of at least {low})",
                    group=label,
                )
            )
    return out


def _constraint_problems(before: dict[str, Any], fields: ClusterFields) -> list[SpecProblem]:
    problems = spec_problems(fields)
    if not problems:
        return []
    try:
        already = set(spec_problems(ClusterFields.model_validate(before)))
    except ValidationError:  # pragma: no cover - `before` came out of the same model
        already = set()
    # A broken group nobody touched still blocks the update; say so, or the asker hunts for a mistake they did not make.
    return [
        p if p not in already else SpecProblem(p.path, f"{p.message} (already so in the cluster as read)")
        for p in problems
    ]


def _problem_message(problems: Sequence[SpecProblem]) -> str:
    from bot.slack.words import path_in_words  # words reads this module's DiffEntry: imported when needed

    # People read these: the field in words ("WorkerGroup1 memory"), not its API path.
    shown = [str(p) if isinstance(p, BoundsProblem) else f"{path_in_words(p.path)}: {p.message}" for p in problems]
    if len(shown) == 1:
        return f"cannot make this change: {shown[0]}"
    return "cannot make this change:\n" + "\n".join(f"• {line}" for line in shown)


# --- describing changes -----------------------------------------------------------------------------------------


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[DiffEntry]:
    """What differs between two wire-form bodies, field by field, for people to read.

    Paths are as on the wire: `name`, `headSpec.enableAutoScaling`, `workerSpec[WorkerGroup1].replica`. Groups are
    matched by groupName, not position: an added group is one entry `workerSpec[NewGroup]` with before None, a removed
    one has after None (a renamed group shows as both). `volumeIds` and other lists are compared whole. An absent
    field and a null one count as the same. Secret values are masked (`mask_secrets`), and a masked value on one
    side matches any present value on the other, so a kept (masked) body compares with a fresh read without its
    secrets looking changed. Order: top-level fields in wire order, head fields, then groups in their order (removed
    and changed ones first, added ones last).
    """
    out: list[DiffEntry] = []
    for key in _ordered_keys(before, after, first=_WIRE_ORDER):
        if key == "workerSpec":
            out += _group_diff(before.get(key), after.get(key))
        elif isinstance(before.get(key), dict) or isinstance(after.get(key), dict):
            out += _dict_diff(key, key, before.get(key), after.get(key))
        elif not _same(key, before.get(key), after.get(key)):
            out.append(_entry(key, key, before.get(key), after.get(key)))
    return out


def _ordered_keys(before: Any, after: Any, first: Sequence[str] = ()) -> list[str]:
    keys = dict.fromkeys(first)
    for source in (before, after):
        if isinstance(source, dict):
            keys.update(dict.fromkeys(source))
    present = set(before or {}) | set(after or {})
    return [k for k in keys if k in present]


def _dict_diff(path: str, name: str, before: Any, after: Any) -> list[DiffEntry]:
    """The differences inside the field `name` (at `path`); `name` decides whether it is a secret."""
    if not isinstance(before, dict | None) or not isinstance(after, dict | None):
        return [] if _same(name, before, after) else [_entry(path, name, before, after)]
    out = []
    for key in _ordered_keys(before, after):
        old, new = (before or {}).get(key), (after or {}).get(key)
        if isinstance(old, dict) or isinstance(new, dict):
            out += _dict_diff(f"{path}.{key}", key, old, new)
        elif not _same(key, old, new):
            out.append(_entry(f"{path}.{key}", key, old, new))
    return out


def _keyed_groups(groups: Any) -> list[tuple[str, dict[str, Any]]]:
    """Groups keyed by name; a repeated name gets `#n`, a missing one its position, so keys stay unique."""
    out: list[tuple[str, dict[str, Any]]] = []
    seen: dict[str, int] = {}
    for index, group in enumerate(groups if isinstance(groups, list) else []):
        name = group.get("groupName") if isinstance(group, dict) else None
        if not name:
            key = f"#{index}"
        else:
            seen[name] = seen.get(name, 0) + 1
            key = name if seen[name] == 1 else f"{name}#{seen[name]}"
        out.append((key, group if isinstance(group, dict) else {"value": group}))
    return out


def _group_diff(before: Any, after: Any) -> list[DiffEntry]:
    old = _keyed_groups(before)
    new = dict(_keyed_groups(after))
    out = []
    for key, group in old:
        path = f"workerSpec[{key}]"
        if key not in new:
            out.append(_entry(path, "", group, None))
        else:
            # A group's key is its name, not a field: a group called "token-workers" is no secret.
            out += _dict_diff(path, "", group, new[key])
    old_keys = {key for key, _ in old}
    out += [_entry(f"workerSpec[{key}]", "", None, group) for key, group in new.items() if key not in old_keys]
    return out


def _entry(path: str, name: str, before: Any, after: Any) -> DiffEntry:
    return DiffEntry(path=path, before=mask_secrets(before, name), after=mask_secrets(after, name))


def summarize(changes: Sequence[Change]) -> str:
    """One short line of what was asked, e.g. `WorkerGroup1 replicas → 10, min → 2; autoscaling on (idle 600 s)`."""
    parts = [_summary(change) for change in changes]
    return "; ".join(parts) if parts else "nothing"


def _summary(change: Change) -> str:
    if isinstance(change, SetReplicas):
        asked = [
            f"{label} → {value}"
            for label, value in (
                ("replicas", change.replica),
                ("min", change.min_replica),
                ("max", change.max_replica),
            )
            if value is not None
        ]
        return f"{change.group} {', '.join(asked)}" if asked else f"{change.group} (nothing)"
    if isinstance(change, SetAutoscaling):
        text = "autoscaling on" if change.enabled else "autoscaling off"
        if change.idle_timeout_seconds is not None:
            text += f" (idle {change.idle_timeout_seconds} s)"
        return text
    if isinstance(change, SetFields):
        return "edit " + ", ".join(change.values)
    if isinstance(change, ReplaceGroup):
        new_name = change.spec.group_name
        if new_name and new_name != change.group:
            return f"edit group {change.group} (renamed {new_name})"
        return f"edit group {change.group}"
    if isinstance(change, AddGroup):
        return f"add group {change.spec.group_name or '(unnamed)'}"
    if isinstance(change, RemoveGroup):
        return f"remove group {change.group}"
    return str(change)  # pragma: no cover - the Change union is closed
