"""raybot.yaml → Config: cluster aliases, roles with their actions and limits, and channel bindings.

The file is read with `yaml.safe_load` semantics and checked strictly: an unknown
key at any level is an error, so a typo never silently widens or narrows what
people may do. Every error names the file, the line and column of the offending
node and what to do about it. Line numbers come from composing the document
(`yaml` nodes carry their start mark) and following pydantic's error `loc` down
that node tree.

Example (the format is exact):

    region: cn-hangzhou
    pricing: {currency: CNY, cu_hour: {cn-hangzhou: 0.35, default: 0.40}}   # optional: CU only without it
    clusters:
      prod: {workspace: w-d2d82aa09155, cluster: ray-uiulpgow9xljimm1, region: cn-hangzhou}
    roles:
      viewer: {actions: [list, show, history]}
      oncall:
        actions: [list, show, history, resize, autoscale, undo]
        limits: {max_replica: 40, max_step: 20}
      admin: {actions: ["*"]}
    channels:
      C0ONCALL01:
        - {role: oncall, clusters: ["prod*"], usergroups: [S0ONCALL], users: [U0LEAD]}
        - {role: viewer, clusters: ["*"]}
"""

from __future__ import annotations

import fnmatch
import re
import types
import typing
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from bot.cost import Price
from bot.emr.sts import DEFAULT_DURATION, ROLE_ARN, SESSION_NAME, USER_PLACEHOLDER, Acting, RamRole

# The actions a role may grant. `whoami` and `help` need none: everyone may ask what they may do.
KNOWN_ACTIONS: tuple[str, ...] = (
    "list",
    "show",
    "history",
    "resize",
    "autoscale",
    "edit",
    "undo",
    "approve",
    "start",
    "stop",
)
ALL_ACTIONS = "*"
# The actions that change a cluster: the ones a role's limits and approval rule bound.
CHANGE_ACTIONS = frozenset({"resize", "autoscale", "edit", "undo", "start", "stop"})

CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
USERGROUP_ID = re.compile(r"^S[A-Z0-9]{2,}$")
ALIAS = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")

Loc = tuple[str | int, ...]


class ConfigError(Exception):
    """The config cannot be used. `problems` holds one self-contained line per problem.

    Deliberately not a ValueError: raised from inside a pydantic validator it must
    propagate as is instead of being wrapped into a ValidationError.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class UnknownClusterError(LookupError):
    """No cluster has this alias; the message is written for the person who typed it."""


# --- value checks (each message says what to do) ------------------------------------------------


def _channel_id(value: str) -> str:
    if not CHANNEL_ID.match(value):
        raise ValueError(
            "use the channel ID (like C0123ABCD), not its name; Slack shows it at the bottom of the channel's details"
        )
    return value


def _user_id(value: str) -> str:
    if not USER_ID.match(value):
        raise ValueError(
            f"{value!r} is not a Slack user ID: use the member ID (like U0123ABCD or W0123ABCD) "
            "from the person's profile, not their name"
        )
    return value


def _usergroup_id(value: str) -> str:
    if not USERGROUP_ID.match(value):
        raise ValueError(
            f"{value!r} is not a Slack user group ID: use the group's ID (like S0123ABCD), not its @handle"
        )
    return value


def _alias(value: str) -> str:
    if not ALIAS.match(value):
        raise ValueError(
            f"cluster alias {value!r} must be lowercase letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit): it is what people type"
        )
    return value


ROLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _role_name(value: str) -> str:
    # Role names appear in Slack messages (denials, whoami): plain words only.
    if not ROLE_NAME.match(value):
        raise ValueError(
            f"role name {value!r} must be letters, digits, '.', '_' or '-' (starting with a letter or digit)"
        )
    return value


def _action(value: str) -> str:
    if value != ALL_ACTIONS and value not in KNOWN_ACTIONS:
        raise ValueError(f"unknown action {value!r}; known actions: {', '.join(KNOWN_ACTIONS)}, or '*' for all")
    return value


ChannelId = Annotated[str, AfterValidator(_channel_id)]
UserId = Annotated[str, AfterValidator(_user_id)]
UsergroupId = Annotated[str, AfterValidator(_usergroup_id)]
Alias = Annotated[str, AfterValidator(_alias)]
RoleName = Annotated[str, AfterValidator(_role_name)]
Action = Annotated[str, AfterValidator(_action)]
NonEmpty = Annotated[str, Field(min_length=1)]


# --- the model -----------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Amount = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
Threshold = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
CURRENCY = re.compile(r"^[A-Z]{3}$")


def _currency(value: str) -> str:
    if not CURRENCY.match(value):
        raise ValueError(f"currency must be an ISO 4217 code such as CNY or USD, not {value!r}")
    return value


class Pricing(_Strict):
    """The operator's own prices (raybot cannot know them): per CU-hour by region (`default` for any other
    region), per GPU node-hour by gpuSpec exactly as the API writes it. See bot/cost.py for the arithmetic."""

    currency: Annotated[str, AfterValidator(_currency)]
    cu_hour: dict[NonEmpty, Amount] = Field(default_factory=dict)
    gpu_hour: dict[NonEmpty, Amount] = Field(default_factory=dict)


class ClusterPricing(_Strict):
    """One cluster's own prices, over the region's (its CPU architecture or zone may be priced differently)."""

    cu_hour: Amount | None = None
    gpu_hour: dict[NonEmpty, Amount] = Field(default_factory=dict)


def _role_arn(value: str) -> str:
    if not ROLE_ARN.match(value):
        raise ValueError(
            f"{value!r} is not a RAM role ARN: copy it from the role's page in the RAM console, "
            'like "acs:ram::1234567890123456:role/raybot-prod"'
        )
    return value


def _session_name(value: str) -> str:
    # Rendered with a real-looking user id: what STS will see must be 2–64 of [A-Za-z0-9.@_-].
    if not SESSION_NAME.match(value.replace(USER_PLACEHOLDER, "U0123ABCD")):
        raise ValueError(
            f"session_name {value!r} must be 2 to 64 letters, digits, '.', '@', '_' or '-' once {USER_PLACEHOLDER} "
            "is replaced by the Slack user id (leave it out for raybot-{user})"
        )
    return value


class _ActsThroughRole(_Strict):
    """The RAM role raybot assumes to act on a cluster (see bot.emr.sts); none: its base credentials."""

    role_arn: Annotated[str, AfterValidator(_role_arn)] | None = None
    external_id: Annotated[str, Field(min_length=2, max_length=1224)] | None = None
    session_name: Annotated[str, AfterValidator(_session_name)] | None = None
    duration: int | None = Field(default=None, ge=900, le=3600)

    @model_validator(mode="after")
    def _needs_role(self) -> _ActsThroughRole:
        extra = [name for name in ("external_id", "session_name", "duration") if getattr(self, name) is not None]
        if extra and self.role_arn is None:
            raise ValueError(f"{', '.join(extra)} without role_arn means nothing: add role_arn or remove them")
        return self

    @property
    def ram_role(self) -> RamRole | None:
        if self.role_arn is None:
            return None
        return RamRole(self.role_arn, self.external_id, self.session_name, self.duration or DEFAULT_DURATION)


class ClusterEntry(_ActsThroughRole):
    workspace: NonEmpty
    cluster: NonEmpty
    region: NonEmpty | None = None
    pricing: ClusterPricing | None = None


class WorkspaceEntry(_ActsThroughRole):
    """Defaults for every cluster of one workspace (a cluster's own role_arn wins)."""


class Limits(_Strict):
    """What a role may change. None means no limit."""

    max_replica: int | None = Field(default=None, ge=1)
    max_step: int | None = Field(default=None, ge=1)
    worker_types: tuple[NonEmpty, ...] | None = None
    max_cost_per_hour: Threshold | None = None  # no change may raise a cluster's cost per hour above it


class ApprovalRule(_Strict):
    """When a change needs a second person (the two-person rule): `always`, or above thresholds.

    Written `approval: always` or `approval: {above_replica: 20, above_step: 10}` in the config.
    """

    always: bool = False
    above_replica: int | None = Field(default=None, ge=1)
    above_step: int | None = Field(default=None, ge=1)
    above_cost_per_hour: Threshold | None = None  # a change raising the cost per hour by more, in pricing.currency
    above_cu: Threshold | None = None  # a change raising the CU per hour by more
    expires_minutes: int = Field(default=30, ge=1, le=1440)

    @model_validator(mode="before")
    @classmethod
    def _always(cls, value: Any) -> Any:
        if value == "always":
            return {"always": True}
        if isinstance(value, str):
            raise ValueError(f"approval must be 'always' or a mapping like {{above_replica: 20}}, not {value!r}")
        return value

    @model_validator(mode="after")
    def _something(self) -> ApprovalRule:
        thresholds = (self.above_replica, self.above_step, self.above_cost_per_hour, self.above_cu)
        if not self.always and all(t is None for t in thresholds):
            raise ValueError("approval needs 'always', above_replica, above_step, above_cost_per_hour or above_cu")
        return self


class Role(_Strict):
    actions: tuple[Action, ...]
    limits: Limits = Limits()
    approval: ApprovalRule | None = None

    def allows(self, action: str) -> bool:
        return ALL_ACTIONS in self.actions or action in self.actions


class Binding(_ActsThroughRole):
    """A role granted in one channel, on the aliases matching `clusters`, to everyone there
    or (when `users` or `usergroups` is given) only to those users and members of those groups."""

    role: NonEmpty
    clusters: tuple[NonEmpty, ...] = ("*",)
    usergroups: tuple[UsergroupId, ...] = ()
    users: tuple[UserId, ...] = ()
    approval: ApprovalRule | None = None  # overrides the role's rule for this binding

    @property
    def restricted(self) -> bool:
        return bool(self.users or self.usergroups)

    def covers(self, alias: str) -> bool:
        return any(fnmatch.fnmatchcase(alias, glob) for glob in self.clusters)


@dataclass(frozen=True)
class ClusterTarget:
    """Where a cluster alias points: everything the EMR client needs to address it."""

    alias: str
    workspace: str
    cluster_id: str
    region: str
    acting: Acting | None = None  # the RAM role (and Slack user) its calls are made through; None: base credentials


class Config(_Strict):
    region: NonEmpty | None = None
    clusters: dict[Alias, ClusterEntry]
    roles: dict[RoleName, Role]
    channels: dict[ChannelId, tuple[Binding, ...]]
    pricing: Pricing | None = None
    workspaces: dict[NonEmpty, WorkspaceEntry] = {}  # per-workspace defaults (a RAM role)
    sts_endpoint: NonEmpty | None = None  # default: sts.<region>.aliyuncs.com; RAYBOT_STS_ENDPOINT overrides

    _warnings: list[str] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _cross_references(self) -> Config:
        problems = _semantic_problems(self)
        if problems:
            raise _Problems(problems)
        return self

    @property
    def warnings(self) -> list[str]:
        """Things that are allowed but probably wrong (globs matching no alias)."""
        if self._warnings is not None:
            return list(self._warnings)
        return [f"{_dotted(loc)}: {message}" for loc, message in _config_warnings(self) + _pricing_warnings(self)]

    def aliases(self) -> list[str]:
        """The cluster aliases, in the order the config lists them."""
        return list(self.clusters)

    def cluster(self, alias: str) -> ClusterTarget:
        """The cluster called `alias`, its region resolved with the default region."""
        entry = self.clusters.get(alias)
        if entry is None:
            known = f"known: {', '.join(self.clusters)}" if self.clusters else "it names none"
            raise UnknownClusterError(f"there is no cluster called {alias!r} in raybot's config ({known})")
        region = entry.region or self.region
        assert region is not None  # checked when the config was validated
        return ClusterTarget(alias=alias, workspace=entry.workspace, cluster_id=entry.cluster, region=region)

    def alias_of(self, cluster_id: str) -> str | None:
        """The alias the config gives the cluster `cluster_id` (the first, if several name it), None if none does."""
        return next((alias for alias, entry in self.clusters.items() if entry.cluster == cluster_id), None)

    @property
    def currency(self) -> str | None:
        """The currency of every price and money limit in the config (pricing.currency), None without pricing."""
        return self.pricing.currency if self.pricing is not None else None

    def price(self, alias: str) -> Price | None:
        """The prices the cluster `alias` pays, None without a `pricing` section (then raybot shows CU only).

        The CU price is the cluster's own, else its region's, else `default`; its `cu_hour` is None when none
        applies. GPU prices: the cluster's over the global ones, spec by spec.
        """
        if self.pricing is None:
            return None
        target = self.cluster(alias)
        own = self.clusters[alias].pricing or ClusterPricing()
        if own.cu_hour is not None:
            cu_hour, source = own.cu_hour, f"clusters.{alias}.pricing"
        elif target.region in self.pricing.cu_hour:
            cu_hour, source = self.pricing.cu_hour[target.region], f"region {target.region}"
        elif "default" in self.pricing.cu_hour:
            cu_hour, source = self.pricing.cu_hour["default"], "default"
        else:
            cu_hour, source = None, "none"
        return Price(
            currency=self.pricing.currency,
            cu_hour=cu_hour,
            gpu_hour={**self.pricing.gpu_hour, **own.gpu_hour},
            source=source,
        )

    def ram_role(self, alias: str, binding: Binding | None = None) -> RamRole | None:
        """The RAM role a call on `alias` goes through: the binding's (for calls made on its behalf), else the
        cluster's, else its workspace's; None when none is set (raybot's base credentials)."""
        if binding is not None and binding.ram_role is not None:
            return binding.ram_role
        entry = self.clusters.get(alias)
        if entry is None:
            return None
        if entry.ram_role is not None:
            return entry.ram_role
        workspace = self.workspaces.get(entry.workspace)
        return workspace.ram_role if workspace is not None else None

    def ram_roles(self) -> list[RamRole]:
        """Every distinct RAM role the config names, in the order written (for probes)."""
        found = [w.ram_role for w in self.workspaces.values()] + [c.ram_role for c in self.clusters.values()]
        found += [b.ram_role for bindings in self.channels.values() for b in bindings]
        return list(dict.fromkeys(r for r in found if r is not None))


class _Problems(Exception):
    """Cross-reference problems found after the structure validated, each with its place."""

    def __init__(self, problems: list[tuple[Loc, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{_dotted(loc)}: {message}" for loc, message in problems))


def _semantic_problems(config: Config) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    for alias, entry in config.clusters.items():
        if entry.region is None and config.region is None:
            out.append(
                (
                    ("clusters", alias),
                    f"cluster {alias!r} has no region and there is no default region: "
                    "add `region:` under it or a top-level `region:`",
                )
            )
    for name, role in config.roles.items():
        if not role.actions:
            out.append(
                (
                    ("roles", name, "actions"),
                    'a role needs at least one action; list them, or use ["*"] for all',
                )
            )
        if role.limits.worker_types is not None and not role.limits.worker_types:
            out.append(
                (
                    ("roles", name, "limits", "worker_types"),
                    "an empty worker_types list is ambiguous: "
                    "list the allowed worker types, or leave it out to allow any",
                )
            )
    if config.pricing is None:
        for alias, entry in config.clusters.items():
            if entry.pricing is not None:
                out.append(
                    (
                        ("clusters", alias, "pricing"),
                        "a cluster's prices need a top-level `pricing:` with their currency (e.g. currency: CNY)",
                    )
                )
    defined = ", ".join(config.roles) or "none"
    for channel, bindings in config.channels.items():
        if not bindings:
            out.append((("channels", channel), "list at least one role binding, or remove the channel"))
        for index, binding in enumerate(bindings):
            if binding.role not in config.roles:
                out.append(
                    (
                        ("channels", channel, index, "role"),
                        f"role {binding.role!r} is not defined under `roles:` (defined: {defined})",
                    )
                )
            if not binding.clusters:
                out.append(
                    (
                        ("channels", channel, index, "clusters"),
                        'a binding with no clusters grants nothing; leave `clusters` out to mean all ("*")',
                    )
                )
    return out


def _config_warnings(config: Config) -> list[tuple[Loc, str]]:
    return _glob_warnings(config) + _approval_warnings(config)


def _approval_warnings(config: Config) -> list[tuple[Loc, str]]:
    """Bindings whose changes need approval in a channel where nobody else could approve them: no binding lets
    anyone approve, or the only one who may is the one person who may ask (nobody approves their own change).

    Such a request could only expire: nobody could ever press Approve.
    """
    out: list[tuple[Loc, str]] = []
    for channel, bindings in config.channels.items():
        for index, binding in enumerate(bindings):
            role = config.roles.get(binding.role)
            if role is None or (binding.approval or role.approval) is None:
                continue
            # One named person and no group: whoever else approves must be someone else.
            asker = binding.users[0] if len(binding.users) == 1 and not binding.usergroups else None
            orphans, own = [], []
            for alias in (a for a in config.clusters if binding.covers(a)):
                approving = [
                    other
                    for other in bindings
                    if other.covers(alias) and other.role in config.roles and config.roles[other.role].allows("approve")
                ]
                if not approving:
                    orphans.append(alias)
                elif asker is not None and all(
                    other.restricted and not other.usergroups and set(other.users) <= {asker} for other in approving
                ):
                    own.append(alias)
            loc = ("channels", channel, index, "role")
            if orphans:
                out.append(
                    (
                        loc,
                        f"changes by role {binding.role!r} need approval, but no binding in {channel} grants "
                        f"'approve' on {', '.join(orphans)}: nobody could ever approve them",
                    )
                )
            if own:
                out.append(
                    (
                        loc,
                        f"changes by role {binding.role!r} need approval, but on {', '.join(own)} only {asker}, who "
                        "asks for them, may approve in this channel, and nobody approves their own change: "
                        "bind 'approve' for a second person",
                    )
                )
    return out


def _glob_warnings(config: Config) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    for channel, bindings in config.channels.items():
        for index, binding in enumerate(bindings):
            for glob_index, glob in enumerate(binding.clusters):
                if not any(fnmatch.fnmatchcase(alias, glob) for alias in config.clusters):
                    out.append(
                        (
                            ("channels", channel, index, "clusters", glob_index),
                            f"{glob!r} matches no cluster alias (aliases: {', '.join(config.clusters) or 'none'})",
                        )
                    )
    return out


def _cost_rules(config: Config) -> list[tuple[Loc, str]]:
    """Where the config judges changes by money: each role's limit and each approval rule with a cost threshold."""
    out: list[tuple[Loc, str]] = []
    for name, role in config.roles.items():
        if role.limits.max_cost_per_hour is not None:
            out.append((("roles", name, "limits", "max_cost_per_hour"), name))
        if role.approval is not None and role.approval.above_cost_per_hour is not None:
            out.append((("roles", name, "approval", "above_cost_per_hour"), name))
    for channel, bindings in config.channels.items():
        for index, binding in enumerate(bindings):
            if binding.approval is not None and binding.approval.above_cost_per_hour is not None:
                out.append((("channels", channel, index, "approval", "above_cost_per_hour"), binding.role))
    return out


def _pricing_warnings(config: Config) -> list[tuple[Loc, str]]:
    """A regional CU price no cluster pays (a typo in a region is otherwise silent: its clusters fall back to
    `default`), and money thresholds that cannot be judged for some cluster: no price there, so raybot falls back
    to caution (a change that raises the cluster's CU needs approval, or is denied by a cost limit)."""
    out: list[tuple[Loc, str]] = []
    if config.pricing is not None:
        regions = sorted({config.cluster(alias).region for alias in config.clusters})
        out += [
            (
                ("pricing", "cu_hour", region),
                f"no cluster is in region {region}, so this price applies to none (the clusters' regions: "
                f"{', '.join(regions)})",
            )
            for region in config.pricing.cu_hour
            if region != "default" and region not in regions
        ]
    rules = _cost_rules(config)
    if not rules:
        return out
    unpriced = [a for a in config.clusters if (p := config.price(a)) is None or p.cu_hour is None]
    if not unpriced:
        return out
    what = (
        "there is no `pricing:` section"
        if config.pricing is None
        else f"no CU price applies to {', '.join(unpriced)} (add its region or `default` under pricing.cu_hour)"
    )
    return out + [
        (
            loc,
            f"{what}: raybot cannot price changes there, so every change raising their CU is held to this rule "
            "as if above it",
        )
        for loc, _ in rules
    ]


# --- loading -------------------------------------------------------------------------------------


def load_config(path: str | Path) -> Config:
    """Read and check the config file at `path`; raises ConfigError naming the file and line of each problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"config file {source} not found; set RAYBOT_CONFIG or create it (see README)"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read config file {source}: {exc}"]) from None
    return parse_config(text, source=source)


def parse_config(text: str, *, source: str = "raybot.yaml") -> Config:
    """Check the YAML document `text`; `source` is the file name used in messages."""
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            duplicates = _duplicate_keys(node) if node is not None else []
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = ": ".join(part for part in (exc.context, exc.problem) if part)
        if exc.context_mark is not None and mark is not None and exc.context_mark.line != mark.line:
            what += f" (the construct started on line {exc.context_mark.line + 1})"
        raise ConfigError([f"{_place(source, mark)}: invalid YAML: {what}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: invalid YAML: {exc}"]) from None

    if duplicates:
        raise ConfigError(
            [
                f"{_place(source, key.start_mark)}: {key.value!r} appears twice in the same mapping; "
                "keep one (YAML would silently use the last)"
                for key in duplicates
            ]
        )
    if not isinstance(data, dict):
        where = _place(source, node.start_mark) if node is not None else source
        raise ConfigError(
            [
                f"{where}: the config must be a mapping with the keys region, clusters, roles and channels "
                "(and optionally pricing; see README)"
            ]
        )

    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            [
                f"{_place(source, _mark_for(node, err['loc']))}: {_describe(err)}"
                for err in exc.errors(include_url=False)
            ]
        ) from None
    except _Problems as exc:
        raise ConfigError(
            [f"{_place(source, _mark_for(node, loc))}: {_dotted(loc)}: {message}" for loc, message in exc.problems]
        ) from None

    config._warnings = [
        f"{_place(source, _mark_for(node, loc))}: {_dotted(loc)}: {message}"
        for loc, message in _config_warnings(config) + _pricing_warnings(config)
    ]
    return config


def _place(source: str, mark: yaml.Mark | None) -> str:
    if mark is None:
        return source
    return f"{source}:{mark.line + 1}:{mark.column + 1}"


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _mark_for(root: yaml.Node, loc: Loc) -> yaml.Mark:
    """The start of the node `loc` points at, or of the deepest node on the way that exists.

    Mapping entries point at their key, so the line shown is where the entry is
    written even when its value is a block starting on the next line.
    """
    node = root
    mark = root.start_mark
    for part in loc:
        if part == "[key]":
            continue  # the mark is already the key's
        if isinstance(node, yaml.MappingNode):
            pair = next(
                (
                    (key, value)
                    for key, value in node.value
                    if isinstance(key, yaml.ScalarNode) and key.value == str(part)
                ),
                None,
            )
            if pair is None:
                return mark
            node, mark = pair[1], pair[0].start_mark
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            mark = node.start_mark
        else:
            return mark
    return mark


def _duplicate_keys(node: yaml.Node) -> list[yaml.ScalarNode]:
    out: list[yaml.ScalarNode] = []
    seen_nodes: set[int] = set()

    def walk(current: yaml.Node) -> None:
        if id(current) in seen_nodes:  # anchors make the tree a graph
            return
        seen_nodes.add(id(current))
        if isinstance(current, yaml.MappingNode):
            keys: set[tuple[str, str]] = set()
            for key, value in current.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if (key.tag, key.value) in keys:
                        out.append(key)
                    keys.add((key.tag, key.value))
                walk(value)
        elif isinstance(current, yaml.SequenceNode):
            for item in current.value:
                walk(item)

    walk(node)
    return out


def _describe(err: Any) -> str:
    """One pydantic error as `dotted.place: what is wrong and what to do`."""
    loc: Loc = tuple(err["loc"])
    place = _dotted(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1])
        hint = f"; known keys here: {', '.join(known)}" if known else ""
        return f"{place}: unknown key {loc[-1]!r}{hint}"
    if kind == "missing":
        return f"{_dotted(loc[:-1])}: missing required key {loc[-1]!r}"
    if kind in ("tuple_type", "list_type"):
        return f"{place}: expected a list like [a, b] (got {err.get('input')!r})"
    if kind == "dict_type":
        return f"{place}: expected a mapping of keys to values (got {err.get('input')!r})"
    if kind == "value_error":
        return f"{place}: {err['ctx']['error']}"
    return f"{place}: {err['msg']} (got {err.get('input')!r})"


def _known_keys(loc: Loc) -> list[str]:
    """The keys the model at `loc` accepts, found by following the type annotations of Config."""
    current: Any = Config
    for part in loc:
        if part == "[key]":
            return []
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return []
            current = field.annotation
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        elif typing.get_origin(current) in (tuple, list):
            current = typing.get_args(current)[0]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    """`X | None` → X, `Annotated[X, ...]` → X."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation
