"""The policy engine: decisions, denial reasons, limits, whoami grants and the permission table."""

from __future__ import annotations

import pytest

from bot.config import Config, parse_config
from bot.emr.models import ClusterFields, WorkerGroup
from bot.permissions import (
    Decision,
    Grant,
    PermissionRow,
    Subject,
    check_change,
    decide,
    grants,
    permission_table,
    referenced_usergroups,
    render_permission_table,
    replica_cap,
    visible_aliases,
)

CONFIG = """\
region: cn-hangzhou
clusters:
  prod: {workspace: w-1, cluster: ray-prod}
  prod-eu: {workspace: w-2, cluster: ray-prod-eu, region: eu-central-1}
  staging: {workspace: w-1, cluster: ray-staging}
roles:
  viewer: {actions: [list, show, history]}
  oncall:
    actions: [list, show, history, resize, autoscale, undo]
    limits: {max_replica: 40, max_step: 20}
  surge:
    actions: [resize]
    limits: {max_replica: 100}
  builder:
    actions: [edit]
    limits: {worker_types: [cpu, cpu-large]}
  admin: {actions: ["*"]}
channels:
  C0ONCALL01:
    - role: oncall
      clusters: ["prod*"]
      usergroups: [S0ONCALL]
      users: [U0LEAD]
    - role: viewer
  C0SURGE01:
    - {role: oncall, clusters: [prod]}
    - {role: surge, clusters: [prod], users: [U0BIG]}
  C0BUILD01:
    - {role: builder, clusters: [staging]}
  C0ADMINS:
    - {role: admin, usergroups: [S0ADMINS, S0SRE]}
  D0DIRECT1:
    - {role: viewer, clusters: [staging], users: [U0LEAD]}
"""


@pytest.fixture(scope="module")
def config() -> Config:
    return parse_config(CONFIG)


MEMBER = Subject("U0MEMBER", "C0ONCALL01", frozenset({"S0ONCALL"}))
LEAD = Subject("U0LEAD", "C0ONCALL01")
OUTSIDER = Subject("U0OTHER", "C0ONCALL01", frozenset({"S0UNRELATED"}))


def cluster(*groups: WorkerGroup) -> ClusterFields:
    return ClusterFields(name="prod", worker_spec=list(groups))


def group(
    name: str = "WorkerGroup1", replica: int = 10, max_replica: int = 20, worker_type: str = "cpu"
) -> WorkerGroup:
    return WorkerGroup(
        group_name=name, worker_type=worker_type, replica=replica, min_replica=1, max_replica=max_replica
    )


# --- decide ---------------------------------------------------------------------------------------


def test_member_of_usergroup_is_allowed(config: Config) -> None:
    decision = decide(config, MEMBER, "resize", "prod")
    assert decision == Decision(True, "oncall in <#C0ONCALL01> allows resize", role="oncall")


def test_user_listed_directly_is_allowed(config: Config) -> None:
    assert decide(config, LEAD, "resize", "prod").allowed
    assert decide(config, LEAD, "resize", "prod").role == "oncall"


def test_user_outside_the_usergroup_is_told_who_may(config: Config) -> None:
    decision = decide(config, OUTSIDER, "resize", "prod")
    assert decision == Decision(
        False,
        "in <#C0ONCALL01>, only members of <!subteam^S0ONCALL> or <@U0LEAD> may resize prod. "
        "Ask one of them, or ask a platform admin for a role.",
    )
    # but the unrestricted viewer binding still applies to them
    assert decide(config, OUTSIDER, "show", "prod") == Decision(
        True, "viewer in <#C0ONCALL01> allows show", role="viewer"
    )


def test_unknown_channel_is_denied(config: Config) -> None:
    decision = decide(config, Subject("U0LEAD", "C0ELSEWHERE"), "show", "prod")
    assert decision == Decision(
        False, "No role is bound to <#C0ELSEWHERE> in raybot's config; ask a platform admin to add it"
    )


def test_dm_is_denied_unless_bound(config: Config) -> None:
    unbound = decide(config, Subject("U0LEAD", "D0OTHERDM"), "show", "staging")
    assert not unbound.allowed and "direct messages" in unbound.reason
    assert decide(config, Subject("U0LEAD", "D0DIRECT1"), "show", "staging").allowed
    # the bound DM is still narrowed to its user and its clusters
    assert not decide(config, Subject("U0MEMBER", "D0DIRECT1"), "show", "staging").allowed
    assert not decide(config, Subject("U0LEAD", "D0DIRECT1"), "show", "prod").allowed


def test_union_of_bindings(config: Config) -> None:
    # oncall on prod*, viewer everywhere: the member gets both
    assert decide(config, MEMBER, "resize", "prod").role == "oncall"
    assert decide(config, MEMBER, "show", "staging").role == "viewer"
    denied = decide(config, MEMBER, "resize", "staging")
    assert denied == Decision(
        False,
        "no role in <#C0ONCALL01> allows resize staging. Here, only members of <!subteam^S0ONCALL> or <@U0LEAD> "
        "may list, show, history, resize, autoscale, undo on clusters matching prod* (role oncall); "
        "everyone may list, show, history on every cluster (role viewer). A platform admin can bind a role that does.",
    )


def test_globs_match_aliases(config: Config) -> None:
    assert decide(config, MEMBER, "resize", "prod-eu").allowed
    assert visible_aliases(config, MEMBER, "resize") == ["prod", "prod-eu"]
    assert visible_aliases(config, OUTSIDER, "resize") == []
    assert visible_aliases(config, OUTSIDER) == ["prod", "prod-eu", "staging"]
    # an exact alias in a binding is a glob without wildcards
    assert visible_aliases(config, Subject("U1", "C0SURGE01"), "resize") == ["prod"]


def test_star_grants_every_action(config: Config) -> None:
    admin = Subject("U0ROOT", "C0ADMINS", frozenset({"S0SRE"}))
    for action in ("stop", "start", "edit", "approve", "undo"):
        assert decide(config, admin, action, "staging") == Decision(
            True, f"admin in <#C0ADMINS> allows {action}", role="admin"
        )
    assert decide(config, Subject("U0ROOT", "C0ADMINS"), "stop", "staging").reason == (
        "in <#C0ADMINS>, only members of <!subteam^S0ADMINS> or <!subteam^S0SRE> may stop staging. "
        "Ask one of them, or ask a platform admin for a role."
    )


def test_actions_tied_to_no_cluster(config: Config) -> None:
    assert decide(config, OUTSIDER, "list").allowed
    assert decide(config, Subject("U1", "C0BUILD01"), "list") == Decision(
        False,
        "no role in <#C0BUILD01> allows list. Here, everyone may edit on staging (role builder). "
        "A platform admin can bind a role that does.",
    )


def test_unknown_alias_names_only_visible_clusters(config: Config) -> None:
    decision = decide(config, MEMBER, "resize", "prdo")
    assert decision == Decision(
        False, "There is no cluster called `prdo` in raybot's config (clusters you may resize here: prod, prod-eu)"
    )


def test_unknown_action_is_a_programming_error(config: Config) -> None:
    with pytest.raises(ValueError, match="unknown action 'resise'"):
        decide(config, MEMBER, "resise", "prod")


def test_referenced_usergroups(config: Config) -> None:
    assert referenced_usergroups(config) == {"S0ONCALL", "S0ADMINS", "S0SRE"}


# --- check_change: limits ------------------------------------------------------------------------


def test_change_within_limits_is_allowed(config: Config) -> None:
    decision = check_change(config, MEMBER, "resize", "prod", cluster(group(replica=10)), cluster(group(replica=30)))
    assert decision == Decision(True, "oncall in <#C0ONCALL01> allows this resize", role="oncall")


def test_change_needs_the_action_first(config: Config) -> None:
    decision = check_change(config, OUTSIDER, "resize", "prod", cluster(group()), cluster(group(replica=11)))
    assert decision == decide(config, OUTSIDER, "resize", "prod")
    assert not decision.allowed


def test_max_replica(config: Config) -> None:
    before = cluster(group(replica=30, max_replica=40))
    decision = check_change(config, MEMBER, "resize", "prod", before, cluster(group(replica=50, max_replica=40)))
    assert decision == Decision(
        False, "oncall allows at most 40 replicas per group; WorkerGroup1 would have 50 replicas"
    )
    raised_bound = check_change(config, MEMBER, "resize", "prod", before, cluster(group(replica=30, max_replica=45)))
    assert raised_bound.reason == "oncall allows at most 40 replicas per group; WorkerGroup1 would have max 45"
    assert check_change(config, MEMBER, "resize", "prod", before, cluster(group(replica=40, max_replica=40))).allowed


def test_a_decrease_is_fine_even_above_max_replica(config: Config) -> None:
    # an admin left the cluster above the oncall limit; oncall may still bring it down
    before = cluster(group(replica=60, max_replica=80), group("WorkerGroup2", replica=5))
    after = cluster(group(replica=45, max_replica=80), group("WorkerGroup2", replica=8))
    assert check_change(config, MEMBER, "resize", "prod", before, after).allowed
    # ... but not raise it further
    higher = cluster(group(replica=61, max_replica=80), group("WorkerGroup2", replica=5))
    assert check_change(config, MEMBER, "resize", "prod", before, higher).reason == (
        "oncall allows at most 40 replicas per group; WorkerGroup1 would have 61 replicas"
    )


def test_added_group_counts_against_max_replica_and_steps_from_zero(config: Config) -> None:
    before = cluster(group())
    too_big = cluster(group(), group("WorkerGroup2", replica=15, max_replica=50))
    assert check_change(config, MEMBER, "resize", "prod", before, too_big).reason == (
        "oncall allows at most 40 replicas per group; WorkerGroup2 would have max 50"
    )
    big_step = cluster(group(), group("WorkerGroup2", replica=25, max_replica=30))
    assert check_change(config, MEMBER, "resize", "prod", before, big_step).reason == (
        "oncall allows changing a group by at most 20 replicas at once; WorkerGroup2 would go from 0 to 25 (+25)"
    )
    fine = cluster(group(), group("WorkerGroup2", replica=20, max_replica=30))
    assert check_change(config, MEMBER, "resize", "prod", before, fine).allowed


def test_max_step_both_directions(config: Config) -> None:
    before = cluster(group(replica=30, max_replica=40))
    down = check_change(config, MEMBER, "resize", "prod", before, cluster(group(replica=5, max_replica=40)))
    assert down.reason == (
        "oncall allows changing a group by at most 20 replicas at once; WorkerGroup1 would go from 30 to 5 (-25)"
    )
    assert check_change(config, MEMBER, "resize", "prod", before, cluster(group(replica=10, max_replica=40))).allowed


def test_removing_a_big_group_is_a_big_step(config: Config) -> None:
    before = cluster(group(), group("WorkerGroup2", replica=30, max_replica=40))
    decision = check_change(config, MEMBER, "resize", "prod", before, cluster(group()))
    assert decision.reason == (
        "oncall allows changing a group by at most 20 replicas at once; "
        "removing WorkerGroup2 would go from 30 to 0 (-30)"
    )


def test_every_violation_is_named(config: Config) -> None:
    before = cluster(group(replica=10))
    decision = check_change(config, MEMBER, "resize", "prod", before, cluster(group(replica=45, max_replica=45)))
    assert decision.reason.split("; WorkerGroup1 ")[0] == "oncall allows at most 40 replicas per group"
    # One sentence for the replica limit, naming both values: not the same sentence twice.
    assert "WorkerGroup1 would have 45 replicas and max 45" in decision.reason
    assert decision.reason.count("at most 40 replicas per group") == 1
    assert "from 10 to 45 (+35)" in decision.reason


BUILDER = Subject("U1", "C0BUILD01")


def test_worker_types_for_new_groups(config: Config) -> None:
    before = cluster(group())
    gpu = cluster(group(), group("gpus", replica=2, worker_type="gpu"))
    assert check_change(config, BUILDER, "edit", "staging", before, gpu) == Decision(
        False, "builder allows only worker types cpu, cpu-large; gpus would be gpu"
    )
    untyped = cluster(group(), WorkerGroup(group_name="mystery", replica=1))
    assert check_change(config, BUILDER, "edit", "staging", before, untyped).reason == (
        "builder allows only worker types cpu, cpu-large; mystery would have no worker type"
    )
    large = cluster(group(), group("big", replica=2, worker_type="cpu-large"))
    assert check_change(config, BUILDER, "edit", "staging", before, large).allowed


def test_worker_types_for_changed_groups(config: Config) -> None:
    before = cluster(group(), group("gpus", replica=2, worker_type="gpu"))
    retyped = cluster(group(worker_type="gpu"), group("gpus", replica=2, worker_type="gpu"))
    assert check_change(config, BUILDER, "edit", "staging", before, retyped).reason == (
        "builder allows only worker types cpu, cpu-large; WorkerGroup1 would be gpu"
    )
    # a group that already has a type outside the list may still be changed in other ways
    resized = cluster(group(), group("gpus", replica=3, worker_type="gpu"))
    assert check_change(config, BUILDER, "edit", "staging", before, resized).allowed


def test_most_permissive_binding_wins(config: Config) -> None:
    before = cluster(group(replica=10, max_replica=100))
    after = cluster(group(replica=60, max_replica=100))
    big = Subject("U0BIG", "C0SURGE01")
    # oncall forbids both the size and the step; surge (no max_step, max 100) allows it
    assert check_change(config, big, "resize", "prod", before, after) == Decision(
        True, "surge in <#C0SURGE01> allows this resize", role="surge"
    )
    # for a plain decision the first binding in config order answers
    assert decide(config, big, "resize", "prod").role == "oncall"
    # someone without the surge binding gets oncall's reasons
    small = check_change(config, Subject("U0SMALL", "C0SURGE01"), "resize", "prod", before, after)
    assert not small.allowed
    assert small.reason == (
        "oncall allows at most 40 replicas per group; WorkerGroup1 would have 60 replicas; "
        "oncall allows changing a group by at most 20 replicas at once; WorkerGroup1 would go from 10 to 60 (+50)"
    )
    # when every binding refuses, every binding's reason is given
    huge = cluster(group(replica=120, max_replica=120))
    both = check_change(config, big, "resize", "prod", before, huge)
    assert not both.allowed
    assert "oncall allows at most 40 replicas" in both.reason
    assert "surge allows at most 100 replicas per group; WorkerGroup1 would have 120" in both.reason


def test_admin_has_no_limits(config: Config) -> None:
    admin = Subject("U0ROOT", "C0ADMINS", frozenset({"S0ADMINS"}))
    before = cluster(group())
    after = cluster(group(replica=500, max_replica=500, worker_type="gpu"))
    assert check_change(config, admin, "edit", "prod", before, after).allowed


# --- whoami and the table ------------------------------------------------------------------------


def test_grants_for_a_usergroup_member(config: Config) -> None:
    assert grants(config, MEMBER) == [
        Grant(
            role="oncall",
            clusters=("prod*",),
            aliases=("prod", "prod-eu"),
            actions=("list", "show", "history", "resize", "autoscale", "undo"),
            limits="at most 40 replicas per group; changes of at most 20 replicas at once",
            why="you are a member of <!subteam^S0ONCALL>",
        ),
        Grant(
            role="viewer",
            clusters=("*",),
            aliases=("prod", "prod-eu", "staging"),
            actions=("list", "show", "history"),
            limits="",  # a role that changes nothing has no limits to speak of
            why="everyone in <#C0ONCALL01> has it",
        ),
    ]


def test_grants_say_why(config: Config) -> None:
    assert [g.why for g in grants(config, LEAD)] == [
        "you (<@U0LEAD>) are named in it",
        "everyone in <#C0ONCALL01> has it",
    ]
    assert [g.role for g in grants(config, OUTSIDER)] == ["viewer"]
    assert grants(config, Subject("U1", "C0NOWHERE")) == []


def test_permission_table_rows(config: Config) -> None:
    rows = permission_table(config)
    assert rows[0] == PermissionRow(
        channel="C0ONCALL01",
        role="oncall",
        clusters=("prod*",),
        actions=("list", "show", "history", "resize", "autoscale", "undo"),
        limits="at most 40 replicas per group; changes of at most 20 replicas at once",
        who="users U0LEAD; usergroups S0ONCALL",
    )
    assert [(r.channel, r.role, r.who) for r in rows] == [
        ("C0ONCALL01", "oncall", "users U0LEAD; usergroups S0ONCALL"),
        ("C0ONCALL01", "viewer", "everyone"),
        ("C0SURGE01", "oncall", "everyone"),
        ("C0SURGE01", "surge", "users U0BIG"),
        ("C0BUILD01", "builder", "everyone"),
        ("C0ADMINS", "admin", "usergroups S0ADMINS, S0SRE"),
        ("D0DIRECT1", "viewer", "users U0LEAD"),
    ]


def test_render_permission_table(config: Config) -> None:
    text = render_permission_table(config)
    lines = text.splitlines()
    assert lines[0].split() == ["CHANNEL", "ROLE", "CLUSTERS", "ACTIONS", "LIMITS", "WHO"]
    assert len(lines) == 1 + 7
    # columns are aligned: every column starts at the same offset on every line
    role_col = lines[0].index("ROLE")
    assert all(line[role_col - 2 : role_col] == "  " and line[role_col] != " " for line in lines)
    admin = next(line for line in lines if line.startswith("C0ADMINS"))
    assert admin.split(None, 3)[:3] == ["C0ADMINS", "admin", "*"]
    assert "all actions" in admin and "no limits" in admin and admin.endswith("usergroups S0ADMINS, S0SRE")
    builder = next(line for line in lines if line.startswith("C0BUILD01"))
    assert "worker types cpu, cpu-large" in builder


def test_render_empty_table() -> None:
    empty = parse_config("clusters: {}\nroles: {}\nchannels: {}\n")
    assert render_permission_table(empty) == "no channel has a role: raybot will deny everything"


# --- approval (two-person rule) ---------------------------------------------------------------------------------


APPROVAL_CONFIG = """
region: cn-hangzhou
clusters:
  prod: {workspace: w-1, cluster: ray-1}
roles:
  oncall:
    actions: [resize, autoscale, undo]
    limits: {max_replica: 40, max_step: 30}
    approval: {above_replica: 20, above_step: 10}
  careful: {actions: [resize], approval: always}
  lead: {actions: [approve]}
channels:
  C0ONCALL01:
    - {role: oncall}
    - {role: lead, users: [U0LEAD]}
  C0CAREFUL:
    - {role: careful}
    - {role: oncall, users: [U0FREE], approval: {above_replica: 39}}
"""


def _fields(*replicas: int):
    from bot.emr.models import ClusterFields

    return ClusterFields.model_validate(
        {"workerSpec": [{"groupName": f"g{i}", "replica": r, "maxReplica": 40} for i, r in enumerate(replicas)]}
    )


def test_approval_needed_above_thresholds_only():
    from bot.config import parse_config
    from bot.permissions import Subject, check_change

    config = parse_config(APPROVAL_CONFIG)
    who = Subject("U0SOMEONE", "C0ONCALL01")
    small = check_change(config, who, "resize", "prod", _fields(5), _fields(8))
    assert small.allowed and small.approval is None
    big = check_change(config, who, "resize", "prod", _fields(5), _fields(21))
    assert big.allowed and "g0 would have 21 replicas" in big.approval and big.approval_minutes == 30
    step = check_change(config, who, "resize", "prod", _fields(5), _fields(16))
    assert "+11" in step.approval
    down = check_change(config, who, "resize", "prod", _fields(30), _fields(25))
    assert down.approval is None  # lowering within the step never needs approval


def test_approval_always_and_the_most_permissive_binding_wins():
    from bot.config import parse_config
    from bot.permissions import Subject, check_change

    config = parse_config(APPROVAL_CONFIG)
    careful = check_change(config, Subject("U0ANY", "C0CAREFUL"), "resize", "prod", _fields(5), _fields(6))
    assert careful.allowed and "every change" in careful.approval
    free = check_change(config, Subject("U0FREE", "C0CAREFUL"), "resize", "prod", _fields(5), _fields(6))
    assert free.allowed and free.approval is None  # the binding's own rule overrides the role's


def test_approval_config_errors():
    from bot.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="approval"):
        parse_config(APPROVAL_CONFIG.replace("approval: always", "approval: sometimes"))
    with pytest.raises(ConfigError):
        parse_config(APPROVAL_CONFIG.replace("{above_replica: 20, above_step: 10}", "{}"))


def test_denials_say_their_kind(config: Config) -> None:
    assert decide(config, OUTSIDER, "resize", "prod").kind == "not_for_user"
    assert decide(config, Subject("U0LEAD", "C0ELSEWHERE"), "show", "prod").kind == "no_binding"
    assert decide(config, Subject("U0LEAD", "D0SOMEONE"), "show", "prod").kind == "direct_message"
    assert decide(config, MEMBER, "show", "nosuch").kind == "unknown_cluster"
    assert decide(config, MEMBER, "approve", "prod").kind == "not_granted"


def test_permission_table_and_whoami_show_approval_rules():
    from bot.config import parse_config
    from bot.permissions import Subject, grants, render_permission_table

    config = parse_config(APPROVAL_CONFIG)
    table = render_permission_table(config)
    assert "approval above 20 replicas or above a step of 10 (30 min)" in table
    assert "approval always (30 min)" in table
    [oncall, *_] = grants(config, Subject("U0SOMEONE", "C0ONCALL01"))
    assert "approval above 20 replicas" in oncall.limits


# --- approval thresholds cover min, max, added and removed groups (issue item 8) ---------------------------------

THRESHOLD_CONFIG = """
region: cn-hangzhou
clusters:
  prod: {workspace: w-1, cluster: ray-1}
roles:
  ops:
    actions: [resize, autoscale, edit, start, stop]
    approval: {above_replica: 20, above_step: 10, expires_minutes: 15}
  careful: {actions: [resize, start, stop], approval: always}
  viewer: {actions: [show]}
channels:
  C0OPS:
    - {role: ops}
  C0CAREFUL:
    - {role: careful}
    - {role: ops, users: [U0TRUSTED]}
  C0VIEW:
    - {role: viewer}
"""
OPS = Subject("U0SOMEONE", "C0OPS")


@pytest.fixture(scope="module")
def thresholds() -> Config:
    return parse_config(THRESHOLD_CONFIG)


def spec(*groups: dict) -> ClusterFields:
    return ClusterFields.model_validate({"workerSpec": list(groups)})


def wg(name: str, replica: int, low: int = 1, high: int = 40) -> dict:
    return {"groupName": name, "replica": replica, "minReplica": low, "maxReplica": high}


def test_raising_max_replica_past_the_threshold_needs_approval(thresholds: Config) -> None:
    decision = check_change(
        thresholds, OPS, "autoscale", "prod", spec(wg("WorkerGroup1", 2, high=4)), spec(wg("WorkerGroup1", 2, high=100))
    )
    assert decision.allowed and decision.role == "ops" and decision.approval_minutes == 15
    assert decision.approval == (
        "WorkerGroup1 could autoscale to 100 replicas (approval needed above 20); "
        "WorkerGroup1 maximum replicas would go from 4 to 100 (+96) (approval needed for steps above 10)"
    )


def test_a_max_replica_step_alone_needs_approval_and_a_small_one_does_not(thresholds: Config) -> None:
    before = spec(wg("WorkerGroup1", 2, high=4))
    step = check_change(thresholds, OPS, "autoscale", "prod", before, spec(wg("WorkerGroup1", 2, high=15)))
    assert step.approval == (
        "WorkerGroup1 maximum replicas would go from 4 to 15 (+11) (approval needed for steps above 10)"
    )
    small = check_change(thresholds, OPS, "autoscale", "prod", before, spec(wg("WorkerGroup1", 2, high=12)))
    assert small.allowed and small.approval is None
    # Lowering the ceiling a lot takes capacity away: a step like any other.
    down = check_change(thresholds, OPS, "autoscale", "prod", spec(wg("WorkerGroup1", 2, high=40)), before)
    assert down.approval == (
        "WorkerGroup1 maximum replicas would go from 40 to 4 (-36) (approval needed for steps above 10)"
    )


def test_raising_min_replica_past_the_threshold_needs_approval(thresholds: Config) -> None:
    before = spec(wg("WorkerGroup1", 25, low=1))
    decision = check_change(thresholds, OPS, "autoscale", "prod", before, spec(wg("WorkerGroup1", 25, low=22)))
    assert decision.approval == (
        "WorkerGroup1 would always keep at least 22 replicas (approval needed above 20); "
        "WorkerGroup1 minimum replicas would go from 1 to 22 (+21) (approval needed for steps above 10)"
    )
    within = check_change(thresholds, OPS, "autoscale", "prod", before, spec(wg("WorkerGroup1", 25, low=5)))
    assert within.approval is None


def test_removing_a_big_group_needs_approval(thresholds: Config) -> None:
    before = spec(wg("WorkerGroup1", 2, high=4), wg("WorkerGroup2", 30, high=40))
    decision = check_change(thresholds, OPS, "edit", "prod", before, spec(wg("WorkerGroup1", 2, high=4)))
    assert decision.allowed
    assert decision.approval == (
        "removing WorkerGroup2 takes away 30 replicas (approval needed for steps above 10); "
        "removing WorkerGroup2 takes away room to autoscale to 40 replicas (approval needed for steps above 10)"
    )
    two = spec(wg("WorkerGroup1", 2, high=4), wg("g2", 2, high=4))
    small = check_change(thresholds, OPS, "edit", "prod", two, spec(wg("WorkerGroup1", 2, high=4)))
    assert small.approval is None


def test_removing_a_group_whose_ceiling_is_high_needs_approval(thresholds: Config) -> None:
    before = spec(wg("WorkerGroup1", 2, high=4), wg("WorkerGroup2", 2, high=30))
    decision = check_change(thresholds, OPS, "edit", "prod", before, spec(wg("WorkerGroup1", 2, high=4)))
    assert decision.approval == (
        "removing WorkerGroup2 takes away room to autoscale to 30 replicas (approval needed for steps above 10)"
    )


def test_adding_a_group_steps_every_value_from_zero(thresholds: Config) -> None:
    before = spec(wg("WorkerGroup1", 2, high=4))
    big = check_change(thresholds, OPS, "edit", "prod", before, spec(wg("WorkerGroup1", 2, high=4), wg("g3", 5)))
    assert big.approval == (
        "g3 could autoscale to 40 replicas (approval needed above 20); "
        "adding g3 lets it autoscale to 40 replicas (approval needed for steps above 10)"
    )
    many = check_change(
        thresholds, OPS, "edit", "prod", before, spec(wg("WorkerGroup1", 2, high=4), wg("g3", 12, high=12))
    )
    assert "adding g3 brings 12 replicas (approval needed for steps above 10)" in many.approval
    small = check_change(
        thresholds, OPS, "edit", "prod", before, spec(wg("WorkerGroup1", 2, high=4), wg("g3", 2, high=4))
    )
    assert small.approval is None


def test_unchanged_groups_and_absent_values_raise_nothing(thresholds: Config) -> None:
    # Groups already above the thresholds, left alone, need nothing; an edit elsewhere is not a step.
    before = spec(wg("WorkerGroup1", 30, high=100), wg("g2", 1, high=2))
    after = spec(wg("WorkerGroup1", 30, high=100), wg("g2", 2, high=2))
    assert check_change(thresholds, OPS, "resize", "prod", before, after).approval is None
    # A maxReplica the read did not have counts from 0: the autoscaler's new room is a step.
    unknown = spec({"groupName": "g", "replica": 2})
    raised = check_change(thresholds, OPS, "autoscale", "prod", unknown, spec({**wg("g", 2), "maxReplica": 12}))
    assert raised.approval == "g maximum replicas would go from 0 to 12 (+12) (approval needed for steps above 10)"


def test_threshold_reasons_escape_group_names(thresholds: Config) -> None:
    before = spec(wg("<!channel>", 30))
    decision = check_change(thresholds, OPS, "edit", "prod", before, spec())
    assert "<!channel>" not in decision.approval and "&lt;!channel&gt;" in decision.approval


# --- start and stop follow the two-person rule (issue item 7) ----------------------------------------------------


def test_stop_and_start_under_approval_always() -> None:
    from bot.permissions import check_lifecycle

    config = parse_config(THRESHOLD_CONFIG)
    anyone = Subject("U0ANY", "C0CAREFUL")
    small = spec(wg("WorkerGroup1", 1, high=2))
    stop = check_lifecycle(config, anyone, "stop", "prod", small)
    assert stop.allowed and stop.role == "careful" and stop.approval_minutes == 30
    assert stop.approval == "this role needs a second person's approval to stop a cluster"
    start = check_lifecycle(config, anyone, "start", "prod", small)
    assert start.approval == "this role needs a second person's approval to start a cluster"


def test_stop_takes_every_running_worker_away(thresholds: Config) -> None:
    from bot.permissions import check_lifecycle

    running = spec(wg("WorkerGroup1", 4, high=8), wg("WorkerGroup2", 30))
    stop = check_lifecycle(thresholds, OPS, "stop", "prod", running)
    assert stop.allowed and stop.approval_minutes == 15
    assert stop.approval == ("stopping takes away the 30 replicas of WorkerGroup2 (approval needed for steps above 10)")
    quiet = check_lifecycle(thresholds, OPS, "stop", "prod", spec(wg("WorkerGroup1", 4, high=8), wg("g2", 10)))
    assert quiet.allowed and quiet.approval is None  # a step of exactly 10 is not above 10


def test_start_brings_each_group_up_to_its_replica(thresholds: Config) -> None:
    from bot.permissions import check_lifecycle

    big = check_lifecycle(thresholds, OPS, "start", "prod", spec(wg("WorkerGroup1", 25)))
    assert big.approval == (
        "starting brings WorkerGroup1 up to 25 replicas (approval needed above 20); "
        "starting brings WorkerGroup1 up from 0 to 25 replicas (approval needed for steps above 10)"
    )
    step = check_lifecycle(thresholds, OPS, "start", "prod", spec(wg("WorkerGroup1", 12)))
    assert step.approval == (
        "starting brings WorkerGroup1 up from 0 to 12 replicas (approval needed for steps above 10)"
    )
    small = check_lifecycle(thresholds, OPS, "start", "prod", spec(wg("WorkerGroup1", 3), wg("g2", 10)))
    assert small.allowed and small.approval is None
    assert check_lifecycle(thresholds, OPS, "start", "prod", spec()).approval is None  # nothing to bring up


def test_lifecycle_most_permissive_binding_wins(thresholds: Config) -> None:
    from bot.permissions import check_lifecycle

    trusted = Subject("U0TRUSTED", "C0CAREFUL")
    small = spec(wg("WorkerGroup1", 3))
    free = check_lifecycle(thresholds, trusted, "stop", "prod", small)
    assert free.allowed and free.approval is None and free.role == "ops"
    # When every binding needs approval, the first one's reason is given.
    big = check_lifecycle(thresholds, trusted, "stop", "prod", spec(wg("WorkerGroup1", 30)))
    assert big.allowed and big.role == "careful" and "approval to stop" in big.approval


def test_lifecycle_denials_and_bad_verbs(thresholds: Config) -> None:
    from bot.permissions import check_lifecycle

    denied = check_lifecycle(thresholds, Subject("U0ANY", "C0VIEW"), "stop", "prod", spec(wg("g", 1)))
    assert not denied.allowed and denied.kind == "not_granted" and denied.approval is None
    unknown = check_lifecycle(thresholds, OPS, "start", "nosuch", spec())
    assert not unknown.allowed and unknown.kind == "unknown_cluster"
    with pytest.raises(ValueError, match="start and stop"):
        check_lifecycle(thresholds, OPS, "resize", "prod", spec())  # type: ignore[arg-type]


def test_replica_cap_is_the_most_permissive_applicable_limit(config: Config) -> None:
    # MEMBER's role: max_replica 40, max_step 20; the lead's binding has max_replica 100 and no step.
    small, large = cluster(group(replica=2)), cluster(group(replica=30, max_replica=60))
    cap = replica_cap(config, MEMBER, "resize", "prod", small, "WorkerGroup1")
    assert cap is not None and cap.most == 22
    assert cap.why == "changing a group by at most 20 replicas at once (2 now, so at most 22)"
    cap = replica_cap(config, MEMBER, "resize", "prod", large, "WorkerGroup1")
    assert cap is not None and (cap.most, cap.why) == (40, "at most 40 replicas per group")
    new_group = replica_cap(config, MEMBER, "resize", "prod", small, "NewGroup")
    assert new_group is not None and new_group.most == 20  # a new group steps from 0
    surge = replica_cap(config, Subject("U0BIG", "C0SURGE01"), "resize", "prod", small, "WorkerGroup1")
    assert surge is not None and surge.most == 100  # surge has no step: the most permissive role wins
    root = Subject("U0ROOT", "C0ADMINS", frozenset({"S0SRE"}))
    assert replica_cap(config, root, "resize", "staging", small, "WorkerGroup1") is None


def test_the_advice_in_a_refusal_is_a_change_the_role_then_allows(config: Config) -> None:
    """`resize prod WorkerGroup1=50` on a group at 2 (max 4): the advice must pass check_change as it is worded."""
    from bot.emr.changes import ChangeError, SetReplicas, plan
    from bot.emr.models import RayCluster

    fields = cluster(group(replica=2, max_replica=4)).model_dump(by_alias=True, exclude_none=True)
    read = RayCluster.model_validate({"clusterId": "c", "state": "Running", **fields})
    before = ClusterFields.model_validate(read.editable())
    with pytest.raises(ChangeError) as caught:
        plan(read, [SetReplicas(group="WorkerGroup1", replica=50)])
    message = str(caught.value.within_cap(lambda g: replica_cap(config, MEMBER, "resize", "prod", before, g)))
    assert message == (
        "cannot make this change: WorkerGroup1 cannot go to 50: your role allows changing a group by at most "
        "20 replicas at once (2 now, so at most 22); ask for at most 4 replicas, or for at most 22 with max=22 as well"
    )
    advised = plan(read, [SetReplicas(group="WorkerGroup1", replica=22, max_replica=22)]).body
    assert advised is not None
    assert check_change(config, MEMBER, "resize", "prod", before, advised).allowed
    too_far = plan(read, [SetReplicas(group="WorkerGroup1", replica=23, max_replica=23)]).body
    assert too_far is not None and not check_change(config, MEMBER, "resize", "prod", before, too_far).allowed


def test_the_approvers_named_on_a_request_are_those_whose_binding_grants_approve_here() -> None:
    from bot.permissions import approvers_here

    config = parse_config(
        """\
clusters:
  prod: {workspace: w-1, cluster: ray-1, region: cn-hangzhou}
  dev: {workspace: w-1, cluster: ray-2, region: cn-hangzhou}
roles:
  oncall: {actions: [resize]}
  lead: {actions: [approve]}
channels:
  C0ONE:
    - {role: oncall}
    - {role: lead, clusters: ["prod"], users: [U0LEAD, U0ASKER], usergroups: [S0LEADS]}
  C0TWO:
    - {role: lead}
"""
    )
    assert approvers_here(config, "C0ONE", "prod", "U0ASKER") == "members of <!subteam^S0LEADS> or <@U0LEAD>"
    assert approvers_here(config, "C0ONE", "dev", "U0ASKER") is None  # the lead binding does not cover dev
    assert approvers_here(config, "C0TWO", "dev", "U0ASKER") == "anyone here who may approve"
    assert approvers_here(config, "C0NONE", "prod", "U0ASKER") is None
    only_me = config.model_copy(
        update={"channels": {"C0ONE": (config.channels["C0ONE"][1].model_copy(update={"usergroups": ()}),)}}
    )
    assert approvers_here(only_me, "C0ONE", "prod", "U0LEAD") == "<@U0ASKER>"  # never the requester
