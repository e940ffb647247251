"""The policy engine: who may do what, where, and how much. Pure functions, no Slack, no I/O.

Deny by default. A channel grants roles through its bindings in the config; a
binding applies to a user when it names no users or user groups, or names the
user or one of the user's groups. Rights are the union of the bindings that
apply: an action is allowed when at least one of them grants it on the cluster
and (for changes) its role's limits permit the change.

Reasons are written for Slack (mrkdwn): channels appear as <#C…>, users as <@U…>,
user groups as <!subteam^S…>. The caller asks again at every step that acts
(command, modal submit, button click), with the channel carried by raybot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from bot.config import ALL_ACTIONS, CHANGE_ACTIONS, KNOWN_ACTIONS, ApprovalRule, Binding, Config, Limits, Role
from bot.cost import ChangeCost, Rate, change_cost, money_text, number_text, rate_text
from bot.emr.changes import ReplicaCap
from bot.emr.models import ClusterFields, WorkerGroup
from bot.emr.sts import RamRole
from bot.slack.mrkdwn import escape


@dataclass(frozen=True)
class Subject:
    """Who asks, and where. `usergroups`: the user's groups (only those the config mentions need be filled)."""

    user_id: str
    channel_id: str
    usergroups: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Decision:
    """allow/deny; `reason` is human text for Slack; `role` is the role that allowed it.

    `approval` (from check_change and check_lifecycle) says why the change, start or stop needs a
    second person's approval before it is applied, with `approval_minutes` to get it; None when it
    needs none.
    """

    allowed: bool
    reason: str
    role: str | None = None
    approval: str | None = None
    approval_minutes: int = 30
    # Why it was denied, as a kind (for metrics): no_binding, direct_message, unknown_cluster,
    # not_granted, not_for_user, limit. Empty when allowed.
    kind: str = field(default="", compare=False)


@dataclass(frozen=True)
class Grant:
    """One role that applies to a subject in a channel, for /ray whoami."""

    role: str
    clusters: tuple[str, ...]  # the globs as configured
    aliases: tuple[str, ...]  # the aliases they match now
    actions: tuple[str, ...]  # as configured ("*" for all)
    limits: str  # human text, "no limits" when none
    why: str  # mrkdwn: why this binding applies to the subject


@dataclass(frozen=True)
class PermissionRow:
    """One binding, flattened for `raybot check-config` (plain text, raw IDs)."""

    channel: str
    role: str
    clusters: tuple[str, ...]
    actions: tuple[str, ...]
    limits: str
    who: str


# --- small text builders ---------------------------------------------------------------------------


def _channel(channel_id: str) -> str:
    return f"<#{channel_id}>"


def _actions_text(actions: tuple[str, ...]) -> str:
    return "all actions" if ALL_ACTIONS in actions else ", ".join(actions)


def _globs_text(globs: tuple[str, ...]) -> str:
    return ", ".join(globs)


def _clusters_words(globs: tuple[str, ...]) -> str:
    """Where a binding applies, in words: "every cluster", "prod", "clusters matching prod-*" (escaped mrkdwn)."""
    if "*" in globs:
        return "every cluster"
    words = [f"clusters matching {escape(g)}" if any(c in g for c in "*?[") else escape(g) for g in globs]
    return ", ".join(words)


def _actions_words(actions: tuple[str, ...]) -> str:
    return "do anything" if ALL_ACTIONS in actions else ", ".join(actions)


def _who_mrkdwn(binding: Binding) -> str:
    parts = []
    if binding.usergroups:
        parts.append("members of " + " or ".join(f"<!subteam^{g}>" for g in binding.usergroups))
    parts += [f"<@{u}>" for u in binding.users]
    return " or ".join(parts)


def _who_plain(binding: Binding) -> str:
    if not binding.restricted:
        return "everyone"
    parts = []
    if binding.users:
        parts.append("users " + ", ".join(binding.users))
    if binding.usergroups:
        parts.append("usergroups " + ", ".join(binding.usergroups))
    return "; ".join(parts)


def _per_hour(amount: Decimal, currency: str | None) -> str:
    """A money threshold per hour: `¥50.00/h`, or `50 per hour` when the config names no currency."""
    return f"{money_text(amount, currency)}/h" if currency else f"{number_text(amount)} per hour"


def approval_text(rule: ApprovalRule | None, currency: str | None = None) -> str:
    """When a second person must approve, as a short phrase ("" when never)."""
    if rule is None:
        return ""
    if rule.always:
        return f"approval always ({rule.expires_minutes} min)"
    parts = []
    if rule.above_replica is not None:
        parts.append(f"above {rule.above_replica} replicas")
    if rule.above_step is not None:
        parts.append(f"above a step of {rule.above_step}")
    if rule.above_cost_per_hour is not None:
        parts.append(f"above +{_per_hour(rule.above_cost_per_hour, currency)}")
    if rule.above_cu is not None:
        parts.append(f"above +{number_text(rule.above_cu)} CU/h")
    return f"approval {' or '.join(parts)} ({rule.expires_minutes} min)"


def _limits_and_approval(role: Role, binding: Binding, currency: str | None = None) -> str:
    """The limits and approval rule of a binding, as a short phrase; "" for a role that changes nothing (limits
    bound changes only: "no limits" would read as leave to do anything)."""
    if not any(role.allows(action) for action in CHANGE_ACTIONS):
        return ""
    approval = approval_text(binding.approval or role.approval, currency)
    return limits_text(role.limits, currency) + (f"; {approval}" if approval else "")


def limits_text(limits: Limits, currency: str | None = None) -> str:
    """The limits of a role as a short phrase ("no limits" when there are none)."""
    parts = []
    if limits.max_replica is not None:
        parts.append(f"at most {limits.max_replica} replicas per group")
    if limits.max_step is not None:
        parts.append(f"changes of at most {limits.max_step} replicas at once")
    if limits.worker_types is not None:
        parts.append("worker types " + ", ".join(limits.worker_types))
    if limits.max_cost_per_hour is not None:
        parts.append(f"at most {_per_hour(limits.max_cost_per_hour, currency)} per cluster")
    return "; ".join(parts) or "no limits"


# --- matching -----------------------------------------------------------------------------------


def _applies_to(binding: Binding, subject: Subject) -> bool:
    if not binding.restricted:
        return True
    return subject.user_id in binding.users or bool(subject.usergroups & set(binding.usergroups))


def _check_action(action: str) -> None:
    # A typo in a command handler must fail loudly, not deny (or allow) quietly.
    if action not in KNOWN_ACTIONS:
        raise ValueError(f"unknown action {action!r}; known: {', '.join(KNOWN_ACTIONS)}")


def _bindings(config: Config, channel_id: str) -> list[tuple[Binding, Role]]:
    return [(b, config.roles[b.role]) for b in config.channels.get(channel_id, ())]


def _grants_on(binding: Binding, role: Role, action: str, alias: str | None) -> bool:
    return role.allows(action) and (alias is None or binding.covers(alias))


def approvers_here(config: Config, channel_id: str, alias: str, requester: str) -> str | None:
    """Who may approve a change of `alias` asked in `channel_id` (mrkdwn mentions from the config's ids), for the
    root message of a request: "<@U…> or members of <!subteam^S…>", "anyone here who may approve" when a binding
    grants it to everyone in the channel, None when no binding does (check-config warns of that). The requester
    is left out: nobody approves their own change."""
    people: list[str] = []
    for binding, role in _bindings(config, channel_id):
        if not _grants_on(binding, role, "approve", alias):
            continue
        if not binding.restricted:
            return "anyone here who may approve"
        others = binding.model_copy(update={"users": tuple(u for u in binding.users if u != requester)})
        if others.restricted:
            people.append(_who_mrkdwn(others))
    return " or ".join(dict.fromkeys(people)) or None


def referenced_usergroups(config: Config) -> set[str]:
    """The user groups whose membership the caller must look up to fill Subject.usergroups."""
    return {group for bindings in config.channels.values() for b in bindings for group in b.usergroups}


def _no_channel_reason(channel_id: str) -> str:
    if channel_id.startswith("D"):
        return (
            "raybot does nothing in direct messages unless its config allows it; "
            "run the command in a channel that has a raybot role"
        )
    return f"No role is bound to {_channel(channel_id)} in raybot's config; ask a platform admin to add it"


def _no_channel(channel_id: str) -> Decision:
    kind = "direct_message" if channel_id.startswith("D") else "no_binding"
    return Decision(False, _no_channel_reason(channel_id), kind=kind)


def _denial(config: Config, subject: Subject, action: str, alias: str | None) -> Decision:
    """Why no binding lets this subject run `action` on `alias`: the most specific true story."""
    bindings = _bindings(config, subject.channel_id)
    if not bindings:
        return _no_channel(subject.channel_id)
    where = _channel(subject.channel_id)
    target = f" {escape(alias)}" if alias is not None else ""
    # A binding would grant it, but not to this user: say who may, so the asker knows whom to ask.
    others = [b for b, role in bindings if _grants_on(b, role, action, alias) and not _applies_to(b, subject)]
    if others:
        who = " or ".join(dict.fromkeys(_who_mrkdwn(b) for b in others))
        return Decision(
            False,
            f"in {where}, only {who} may {action}{target}. Ask one of them, or ask a platform admin for a role.",
            kind="not_for_user",
        )
    roles_here = "; ".join(
        ("only " + _who_mrkdwn(b) if b.restricted else "everyone")
        + f" may {_actions_words(role.actions)} on {_clusters_words(b.clusters)} (role {escape(b.role)})"
        for b, role in bindings
    )
    return Decision(
        False,
        f"no role in {where} allows {action}{target}. Here, {roles_here}. A platform admin can bind a role that does.",
        kind="not_granted",
    )


def _unknown_alias(config: Config, subject: Subject, action: str, alias: str) -> Decision:
    # Only name the clusters this user could use here, not the whole config.
    visible = visible_aliases(config, subject, action)
    hint = f" (clusters you may {action} here: {', '.join(visible)})" if visible else ""
    return Decision(
        False, f"There is no cluster called `{escape(alias)}` in raybot's config{hint}", kind="unknown_cluster"
    )


def _applicable(config: Config, subject: Subject, action: str, alias: str | None) -> list[tuple[Binding, Role]]:
    return [
        (b, role)
        for b, role in _bindings(config, subject.channel_id)
        if _grants_on(b, role, action, alias) and _applies_to(b, subject)
    ]


def decide(config: Config, subject: Subject, action: str, alias: str | None = None) -> Decision:
    """May `subject` run `action` (on the cluster `alias`; None for actions tied to no cluster, like list)?

    Role limits are not considered here; a change is judged by `check_change`.
    """
    _check_action(action)
    if not config.channels.get(subject.channel_id):
        return _no_channel(subject.channel_id)
    if alias is not None and alias not in config.clusters:
        return _unknown_alias(config, subject, action, alias)
    applicable = _applicable(config, subject, action, alias)
    if not applicable:
        return _denial(config, subject, action, alias)
    binding, _ = applicable[0]
    return Decision(True, f"{binding.role} in {_channel(subject.channel_id)} allows {action}", role=binding.role)


def acting_role(config: Config, subject: Subject, action: str, alias: str) -> RamRole | None:
    """The RAM role raybot acts through for `subject`'s `action` on `alias`: the first binding that grants it
    and names a role (calls made on its behalf), else the cluster's, else its workspace's; None: base credentials.
    """
    granting = _applicable(config, subject, action, alias) if config.channels.get(subject.channel_id) else []
    binding = next((b for b, _ in granting if b.ram_role is not None), None)
    return config.ram_role(alias, binding)


# --- limits -------------------------------------------------------------------------------------


def limit_violations(
    role_name: str, limits: Limits, before: ClusterFields, after: ClusterFields, cost: ChangeCost | None = None
) -> list[str]:
    """Every way the change before → after breaks the role's limits, as sentences for Slack: one per limit, naming
    every group that breaks it (a limit is never said twice).

    Only values that a change raises (or introduces) count against max_replica, so a
    cluster already above the limit can still be reduced; max_step bounds the replica
    change of every group (added groups step from 0, removed groups to 0). max_cost_per_hour
    caps the most the cluster can cost per hour after a change that raises it (`cost`, from
    bot.cost.change_cost); a change raybot cannot price is held to the cap as if above it.
    """
    over_cap: list[str] = []
    steps: list[str] = []
    types: list[str] = []
    # Group names and worker types come from users and the cloud: escaped, as these sentences are mrkdwn.
    before_groups: dict[str, WorkerGroup] = {g.group_name or "": g for g in before.worker_spec or []}
    after_groups: dict[str, WorkerGroup] = {g.group_name or "": g for g in after.worker_spec or []}

    for raw_name, group in after_groups.items():
        name = escape(raw_name)
        old = before_groups.get(raw_name)
        if limits.max_replica is not None:
            above = []
            for field, label in (("replica", "{} replicas"), ("min_replica", "min {}"), ("max_replica", "max {}")):
                new_value = getattr(group, field)
                old_value = getattr(old, field) if old is not None else None
                raised = new_value is not None and (old_value is None or new_value > old_value)
                if raised and new_value > limits.max_replica:
                    above.append(label.format(new_value))
            if above:
                over_cap.append(f"{name} would have {' and '.join(above)}")
        # A group that was read without a replica gives nothing to measure a step from.
        measurable = old is None or old.replica is not None
        if limits.max_step is not None and group.replica is not None and measurable:
            old_replica = old.replica if old is not None and old.replica is not None else 0
            step = group.replica - old_replica
            if abs(step) > limits.max_step:
                steps.append(f"{name} would go from {old_replica} to {group.replica} ({step:+d})")
        if limits.worker_types is not None:
            changed_type = old is None or group.worker_type != old.worker_type
            if changed_type and group.worker_type not in limits.worker_types:
                types.append(
                    f"{name} would be {escape(group.worker_type)}"
                    if group.worker_type
                    else f"{name} would have no worker type"
                )
    if limits.max_step is not None:
        for name, old in before_groups.items():
            if name not in after_groups and old.replica is not None and old.replica > limits.max_step:
                steps.append(f"removing {escape(name)} would go from {old.replica} to 0 (-{old.replica})")

    out = []
    if over_cap:
        out.append(f"{role_name} allows at most {limits.max_replica} replicas per group; " + "; ".join(over_cap))
    if steps:
        out.append(
            f"{role_name} allows changing a group by at most {limits.max_step} replicas at once; " + "; ".join(steps)
        )
    if types:
        allowed = escape(", ".join(limits.worker_types or ()))
        out.append(f"{role_name} allows only worker types {allowed}; " + "; ".join(types))
    if limits.max_cost_per_hour is not None:
        out += _cost_limit_violations(role_name, limits.max_cost_per_hour, cost)
    return out


def _cost_limit_violations(role_name: str, cap: Decimal, cost: ChangeCost | None) -> list[str]:
    """The cap on a cluster's cost per hour, judged on the most it can cost (autoscaled to its maximum)."""
    if cost is None:
        return []
    delta, after = cost.ceiling, cost.after_ceiling
    currency = delta.currency or after.currency
    if delta.rises is False or (delta.money is not None and delta.money <= 0):
        return []  # lowering (or keeping) the cost is always allowed
    capped = f"{role_name} allows at most {_per_hour(cap, currency)} per cluster"
    if delta.money is None or after.money is None or currency is None:
        why = "; ".join(dict.fromkeys([*delta.problems, *after.problems])) or "no prices are configured"
        return [f"{capped}, and raybot cannot price this change ({escape(why)})"]
    if after.money > cap:
        return [
            f"{capped}; this change would make it up to {money_text(after.money, currency)}/h "
            f"({escape(rate_text(delta, signed=True))})"
        ]
    return []


def _cost_approval_reasons(rule: ApprovalRule, cost: ChangeCost | None) -> list[str]:
    """Why the change's cost needs a second person: it raises the cost (or the CU) per hour by more than the rule
    allows, at the replicas asked for or at the most autoscaling can reach. A raise raybot cannot count or price
    counts as above: the rule exists to stop unexpected spending."""
    if cost is None or (rule.above_cost_per_hour is None and rule.above_cu is None):
        return []
    for when, delta in (("", cost.now), ("autoscaled to its maximum, ", cost.ceiling)):
        reasons = _raise_reasons(rule, delta, when)
        if reasons:
            return reasons
    return []


def _raise_reasons(rule: ApprovalRule, delta: Rate, when: str) -> list[str]:
    if delta.rises is False:
        return []
    reasons = []
    shown = escape(rate_text(delta, signed=True))
    unknown = escape("; ".join(delta.problems) or "no prices are configured")
    if rule.above_cost_per_hour is not None:
        limit = _per_hour(rule.above_cost_per_hour, delta.currency)
        if delta.money is None:
            reasons.append(f"raybot cannot price this change ({unknown}); approval is needed above +{limit}")
        elif delta.money > rule.above_cost_per_hour:
            reasons.append(f"{when}it raises the cost by {shown} (approval needed above +{limit})")
    if rule.above_cu is not None:
        limit = f"+{number_text(rule.above_cu)} CU/h"
        if delta.cu is None:
            reasons.append(f"raybot cannot count the CU of this change ({unknown}); approval is needed above {limit}")
        elif delta.cu > rule.above_cu:
            reasons.append(f"{when}it raises the cost by {shown} (approval needed above {limit})")
    return reasons


def replica_cap(
    config: Config, subject: Subject, action: str, alias: str, before: ClusterFields, group: str
) -> ReplicaCap | None:
    """The most replicas any role that lets `subject` run `action` on `alias` here allows `group` after a change
    from `before` (None: no cap): its max_replica, and its max_step from the group's replicas now."""
    old = next((g for g in before.worker_spec or [] if g.group_name == group), None)
    now = old.replica if old is not None else 0
    best: ReplicaCap | None = None
    for _, role in _applicable(config, subject, action, alias):
        caps = []
        if role.limits.max_replica is not None:
            caps.append(ReplicaCap(role.limits.max_replica, f"at most {role.limits.max_replica} replicas per group"))
        if role.limits.max_step is not None and now is not None:
            step, most = role.limits.max_step, now + role.limits.max_step
            caps.append(
                ReplicaCap(most, f"changing a group by at most {step} replicas at once ({now} now, so at most {most})")
            )
        if not caps:
            return None  # a role with no cap for this group: the most permissive wins
        cap = min(caps, key=lambda c: c.most)
        if best is None or cap.most > best.most:
            best = cap
    return best


def check_change(
    config: Config, subject: Subject, action: str, alias: str, before: ClusterFields, after: ClusterFields
) -> Decision:
    """May `subject` make the change before → after to `alias` with `action`?

    Allowed iff some binding that applies grants the action on the cluster and its
    role's limits permit the change: the most permissive binding wins. What the change
    costs per hour (bot.cost, at the cluster's prices from the config) counts for the
    limits and approval thresholds in money and CU.
    """
    first = decide(config, subject, action, alias)
    if not first.allowed:
        return first
    cost = change_cost(before, after, config.price(alias))
    reasons: list[str] = []
    needing_approval: list[Decision] = []
    for binding, role in _applicable(config, subject, action, alias):
        violations = limit_violations(binding.role, role.limits, before, after, cost)
        if violations:
            reasons += [v for v in violations if v not in reasons]
            continue
        rule = binding.approval or role.approval
        why = approval_reason(rule, before, after, cost) if rule is not None else None
        decision = Decision(
            True,
            f"{binding.role} in {_channel(subject.channel_id)} allows this {action}",
            role=binding.role,
            approval=why,
            approval_minutes=rule.expires_minutes if rule is not None else 30,
        )
        if why is None:
            return decision  # a binding that needs no approval is the most permissive
        needing_approval.append(decision)
    if needing_approval:
        return needing_approval[0]
    return Decision(False, "; ".join(reasons), kind="limit")


def approval_reason(
    rule: ApprovalRule, before: ClusterFields, after: ClusterFields, cost: ChangeCost | None = None
) -> str | None:
    """Why the change before → after needs a second person under `rule`, or None when it does not.

    `cost` (bot.cost.change_cost) is what the thresholds in money and CU look at; without it they are not judged.

    The thresholds cover everything a change can raise or take away, group by group: replica,
    minReplica and maxReplica (a raised value above `above_replica`; a step of more than
    `above_step` either way), added groups (each value steps from 0) and removed groups (each
    value steps to 0: the running replicas and the maxReplica capacity go). A value absent in the
    read counts as 0, so an unknown starting point never hides a step.
    """
    if rule.always:
        return "every change of this role needs a second person's approval"
    old_groups = {g.group_name: g for g in before.worker_spec or []}
    new_names = {g.group_name for g in after.worker_spec or []}
    reasons: list[str] = []
    for group in after.worker_spec or []:
        old = old_groups.get(group.group_name)
        name = escape(group.group_name or "?")
        for key in _REPLICA_FIELDS:
            new_value = getattr(group, key)
            if new_value is None:
                continue  # a field the change leaves out raises nothing
            old_value = getattr(old, key) if old is not None else None
            if old is not None and new_value == old_value:
                continue
            baseline = old_value or 0
            if rule.above_replica is not None and new_value > rule.above_replica and new_value > baseline:
                reasons.append(_above_text(name, key, new_value, rule.above_replica))
            if rule.above_step is not None and abs(new_value - baseline) > rule.above_step:
                reasons.append(_step_text(name, key, baseline, new_value, rule.above_step, added=old is None))
    if rule.above_step is not None:
        for raw_name, old in old_groups.items():
            if raw_name in new_names:
                continue
            name = escape(raw_name or "?")
            if (old.replica or 0) > rule.above_step:
                reasons.append(
                    f"removing {name} takes away {old.replica} replicas "
                    f"(approval needed for steps above {rule.above_step})"
                )
            if (old.max_replica or 0) > rule.above_step:
                reasons.append(
                    f"removing {name} takes away room to autoscale to {old.max_replica} replicas "
                    f"(approval needed for steps above {rule.above_step})"
                )
    reasons += _cost_approval_reasons(rule, cost)
    return "; ".join(dict.fromkeys(reasons)) or None


_REPLICA_FIELDS = ("replica", "min_replica", "max_replica")


def _above_text(name: str, field: str, value: int, threshold: int) -> str:
    """`name` would hold `value` in `field`, above `threshold`, in plain words."""
    what = {
        "replica": f"{name} would have {value} replicas",
        "min_replica": f"{name} would always keep at least {value} replicas",
        "max_replica": f"{name} could autoscale to {value} replicas",
    }[field]
    return f"{what} (approval needed above {threshold})"


def _step_text(name: str, field: str, old: int, new: int, threshold: int, *, added: bool) -> str:
    """`field` of `name` would step from `old` to `new`, more than `threshold`, in plain words."""
    tail = f"(approval needed for steps above {threshold})"
    if added:
        what = {
            "replica": f"adding {name} brings {new} replicas",
            "min_replica": f"adding {name} keeps at least {new} replicas",
            "max_replica": f"adding {name} lets it autoscale to {new} replicas",
        }[field]
        return f"{what} {tail}"
    label = {"replica": "replicas", "min_replica": "minimum replicas", "max_replica": "maximum replicas"}[field]
    return f"{name} {label} would go from {old} to {new} ({new - old:+d}) {tail}"


def check_lifecycle(
    config: Config,
    subject: Subject,
    verb: Literal["start", "stop"],
    alias: str,
    cluster: ClusterFields,
) -> Decision:
    """May `subject` start or stop `alias`, and does it need a second person's approval?

    The same bindings decide as for `check_change`, and the most permissive one wins (one
    that needs no approval beats one that does). `cluster` is the cluster as read: stopping
    takes every running worker away (a step of -replica per group), starting brings each
    group up to its replica (a step of +replica, and that many replicas). Of the role limits only
    max_cost_per_hour applies, to a start (it brings the whole cluster's cost back); the others bound a spec,
    which starting or stopping does not change.
    """
    if verb not in ("start", "stop"):
        raise ValueError(f"check_lifecycle is for start and stop, not {verb!r}")
    first = decide(config, subject, verb, alias)
    if not first.allowed:
        return first
    needing_approval: list[Decision] = []
    reasons: list[str] = []
    # Starting brings the whole cluster's cost back; stopping only lowers it.
    cost = change_cost(None, cluster, config.price(alias)) if verb == "start" else None
    for binding, role in _applicable(config, subject, verb, alias):
        cap = role.limits.max_cost_per_hour
        violations = _cost_limit_violations(binding.role, cap, cost) if cap is not None else []
        if violations:
            reasons += [v for v in violations if v not in reasons]
            continue
        rule = binding.approval or role.approval
        why = lifecycle_approval_reason(rule, verb, cluster, cost) if rule is not None else None
        decision = Decision(
            True,
            f"{binding.role} in {_channel(subject.channel_id)} allows {verb}",
            role=binding.role,
            approval=why,
            approval_minutes=rule.expires_minutes if rule is not None else 30,
        )
        if why is None:
            return decision
        needing_approval.append(decision)
    if needing_approval:
        return needing_approval[0]
    return Decision(False, "; ".join(reasons), kind="limit")  # decide() allowed it: every binding's cap refused it


def lifecycle_approval_reason(
    rule: ApprovalRule, verb: Literal["start", "stop"], cluster: ClusterFields, cost: ChangeCost | None = None
) -> str | None:
    """Why starting or stopping `cluster` needs a second person under `rule`, or None when it does not.

    `cost` is what starting adds per hour (bot.cost.change_cost from nothing to the cluster), for the thresholds
    in money and CU."""
    if rule.always:
        return f"this role needs a second person's approval to {verb} a cluster"
    reasons: list[str] = []
    for group in cluster.worker_spec or []:
        replica = group.replica or 0
        name = escape(group.group_name or "?")
        if verb == "stop":
            if rule.above_step is not None and replica > rule.above_step:
                reasons.append(
                    f"stopping takes away the {replica} replicas of {name} "
                    f"(approval needed for steps above {rule.above_step})"
                )
            continue
        if rule.above_replica is not None and replica > rule.above_replica:
            reasons.append(
                f"starting brings {name} up to {replica} replicas (approval needed above {rule.above_replica})"
            )
        if rule.above_step is not None and replica > rule.above_step:
            reasons.append(
                f"starting brings {name} up from 0 to {replica} replicas "
                f"(approval needed for steps above {rule.above_step})"
            )
    if verb == "start":
        reasons += _cost_approval_reasons(rule, cost)
    return "; ".join(reasons) or None


def limits_here(
    config: Config, subject: Subject, action: str, alias: str
) -> list[tuple[str, Limits, ApprovalRule | None]]:
    """(role, limits, approval rule) of each binding that grants `subject` `action` on `alias` in its channel, for
    showing them before a change is asked (the most permissive of them decides it: see check_change)."""
    _check_action(action)
    return [
        (b.role, role.limits, b.approval or role.approval) for b, role in _applicable(config, subject, action, alias)
    ]


# --- views for people -----------------------------------------------------------------------------


def visible_aliases(config: Config, subject: Subject, action: str = "list") -> list[str]:
    """The aliases `subject` may run `action` on in this channel, in config order."""
    _check_action(action)
    applicable = _applicable(config, subject, action, None)
    return [alias for alias in config.clusters if any(b.covers(alias) for b, _ in applicable)]


def _why(binding: Binding, subject: Subject) -> str:
    if not binding.restricted:
        return f"everyone in {_channel(subject.channel_id)} has it"
    if subject.user_id in binding.users:
        return f"you (<@{subject.user_id}>) are named in it"
    groups = [g for g in binding.usergroups if g in subject.usergroups]
    return "you are a member of " + " and ".join(f"<!subteam^{g}>" for g in groups)


def grants(config: Config, subject: Subject) -> list[Grant]:
    """The roles that apply to `subject` in its channel, with why, for /ray whoami."""
    return [
        Grant(
            role=b.role,
            clusters=b.clusters,
            aliases=tuple(alias for alias in config.clusters if b.covers(alias)),
            actions=role.actions,
            limits=_limits_and_approval(role, b, config.currency),
            why=_why(b, subject),
        )
        for b, role in _bindings(config, subject.channel_id)
        if _applies_to(b, subject)
    ]


def permission_table(config: Config) -> list[PermissionRow]:
    """Every binding of every channel, in config order."""
    return [
        PermissionRow(
            channel=channel,
            role=b.role,
            clusters=b.clusters,
            actions=config.roles[b.role].actions,
            limits=_limits_and_approval(config.roles[b.role], b, config.currency),
            who=_who_plain(b),
        )
        for channel, bindings in config.channels.items()
        for b in bindings
    ]


def render_permission_table(config: Config) -> str:
    """The permission table as aligned plain text, one line per binding, for `raybot check-config`."""
    header = ("CHANNEL", "ROLE", "CLUSTERS", "ACTIONS", "LIMITS", "WHO")
    rows = [
        (r.channel, r.role, ", ".join(r.clusters), _actions_text(r.actions), r.limits or "-", r.who)
        for r in permission_table(config)
    ]
    if not rows:
        return "no channel has a role: raybot will deny everything"
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)
