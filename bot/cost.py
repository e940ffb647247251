"""What a Ray cluster costs per hour on EMR Serverless Spark, and what a change to it adds: pure arithmetic.

The billing facts (EMR Serverless Spark's public billing pages):

- Compute is billed in compute units (CU) per hour: 1 CU = 1 vCPU + 4 GiB of memory; a node with another
  ratio counts CU = max(vCPU, memory GiB / 4).
- A discount factor applies by the node's CPU-to-memory ratio. The bands are half-open intervals of
  r = memory GiB per vCPU, exactly as the billing page writes them ([∞:1, 1:2) and so on):
  r < 2 → × 0.7; 2 ≤ r < 3 → × 0.8; 3 ≤ r < 4 → × 0.9; r ≥ 4 → × 1. The page's worked example: 3 cores and
  6 GB for an hour is r = 2, so CU = max(3, 6/4) = 3, 3 CU × 60 min = 180 CU-minutes, × 0.8 = 2.4 CU-hours.
- The CU price depends on the region, the CPU architecture and the zone's availability setting; a node with a
  GPU is priced by its GPU specification. raybot cannot know the prices: they come from the config
  (`Price`), and without them only CU are shown — never a made-up amount.

Decisions written down here because the billing page leaves them open:

- A node with a `gpuSpec` is billed by its specification's hourly price (`gpu_hour`), which covers the whole
  node: it counts no CU, and its cost is unknown when the config has no price for that exact `gpuSpec`.
- Memory is written `16Gi`, `16384Mi`, `1Ti`, and also `16G`/`16384M`/`1T`: the billing page writes GB for what
  the API sizes in GiB, so G, M and T are read as GiB, MiB and TiB. Anything else is reported, never guessed.
- The head is one node, billed like a worker. Groups count `replica` nodes now; with autoscaling on (the head's
  `enableAutoScaling`), a group ranges from `minReplica` to `maxReplica` (its `replica` where a bound is absent).
- Amounts are `Decimal`, rounded half up to two decimals only when shown.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bot.emr.models import ClusterFields, ResourceSpec

MEMORY_GIB_PER_CU = Decimal(4)
# (upper bound of memory GiB per vCPU, exclusive; factor) in order; at or above the last bound the factor is 1.
DISCOUNT_BANDS: tuple[tuple[Decimal, Decimal], ...] = (
    (Decimal(2), Decimal("0.7")),
    (Decimal(3), Decimal("0.8")),
    (Decimal(4), Decimal("0.9")),
)
FULL_PRICE = Decimal(1)

CURRENCY_SYMBOLS = {"CNY": "¥", "USD": "$"}
HEAD = "head"

_MEMORY = re.compile(r"^(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<unit>Ti|Gi|Mi|T|G|M)$")
_UNIT_GIB = {"Ti": Decimal(1024), "T": Decimal(1024), "Gi": Decimal(1), "G": Decimal(1)}
_UNIT_GIB |= {"Mi": Decimal(1) / Decimal(1024), "M": Decimal(1) / Decimal(1024)}
_CPU = re.compile(r"^(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<milli>m?)$")

Scenario = Literal["now", "floor", "ceiling"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Price(_Frozen):
    """What one cluster pays, from the config: per CU-hour (None: not configured) and per GPU node-hour by gpuSpec.

    `source` says where the CU price came from (`clusters.prod.pricing`, `region cn-hangzhou`, `default`), for
    `raybot check-config`.
    """

    currency: str
    cu_hour: Decimal | None = None
    gpu_hour: dict[str, Decimal] = Field(default_factory=dict)
    source: str = ""


class NodeCost(_Frozen):
    """One node (the head, or one worker of a group) per hour: discounted CU, or a GPU specification."""

    cpu: Decimal | None = None
    memory_gib: Decimal | None = None
    raw_cu: Decimal | None = None  # max(vCPU, memory GiB / 4)
    factor: Decimal | None = None
    cu: Decimal | None = None  # raw_cu × factor: what one hour of this node is billed in CU
    gpu_spec: str | None = None  # billed by this specification instead of CU
    problem: str | None = None  # why this node cannot be counted


class PartCost(_Frozen):
    """The head or one worker group: `count` nodes of one kind."""

    name: str
    count: int
    node: NodeCost

    @property
    def cu(self) -> Decimal | None:
        if self.node.problem is not None:
            return None
        return Decimal(0) if self.node.gpu_spec is not None else (self.node.cu or Decimal(0)) * self.count


class Footprint(_Frozen):
    """What a cluster runs per hour at one set of replica counts: CU of its CPU nodes, GPU nodes by spec."""

    parts: dict[str, PartCost]

    @property
    def problems(self) -> list[str]:
        return [f"{p.name}: {p.node.problem}" for p in self.parts.values() if p.node.problem]

    @property
    def cu(self) -> Decimal | None:
        """CU per hour in all, None when a part cannot be counted."""
        total = Decimal(0)
        for part in self.parts.values():
            value = part.cu
            if value is None:
                return None
            total += value
        return total

    @property
    def gpus(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for part in self.parts.values():
            if part.node.gpu_spec is not None and part.node.problem is None and part.count:
                out[part.node.gpu_spec] = out.get(part.node.gpu_spec, 0) + part.count
        return out


class Rate(_Frozen):
    """An amount per hour (or its change): CU, GPU nodes by spec, and money when every price needed is known."""

    cu: Decimal | None  # None: some part could not be counted
    gpus: dict[str, int] = Field(default_factory=dict)
    money: Decimal | None = None
    currency: str | None = None
    problems: list[str] = Field(default_factory=list)  # what could not be counted, or priced

    @property
    def known(self) -> bool:
        return self.cu is not None

    @property
    def rises(self) -> bool | None:
        """Whether it adds anything billable: None when that cannot be told (a part could not be counted)."""
        if self.cu is None:
            return None
        return self.cu > 0 or any(n > 0 for n in self.gpus.values())


class ChangeCost(_Frozen):
    """What a change (before → after) does to a cluster's cost per hour.

    `now`: the change at the replica counts the spec asks for. `ceiling`: the change of the most the cluster can
    cost per hour (autoscaling at maxReplica when it is on). `after_now`/`after_ceiling`: the cluster's rate after
    the change; `range` (floor, ceiling) when autoscaling is on after it.
    """

    now: Rate
    ceiling: Rate
    after_now: Rate
    after_ceiling: Rate
    range: tuple[Rate, Rate] | None = None

    @property
    def neutral(self) -> bool:
        """The change moves nothing billable, now or at the autoscaling ceiling (a description, a queue, …)."""
        return all(r.cu == 0 and not r.gpus and not r.problems for r in (self.now, self.ceiling))


# --- parsing ------------------------------------------------------------------------------------------------------


class CostInputError(ValueError):
    """A cpu or memory value raybot cannot read; the message says which and how to write it."""


def parse_memory_gib(value: str | None) -> Decimal:
    """GiB in a memory value: `16Gi`, `16384Mi`, `1Ti`, or `16G`/`16384M`/`1T` (read as GiB/MiB/TiB)."""
    if value is None:
        raise CostInputError("memory is not set")
    match = _MEMORY.match(value.strip())
    if match is None:
        raise CostInputError(f"memory {value!r} is not a size raybot can read (write it like 16Gi or 16384Mi)")
    gib = Decimal(match["number"]) * _UNIT_GIB[match["unit"]]
    if gib <= 0:
        raise CostInputError(f"memory {value!r} is not a positive size")
    return gib


def parse_cpu(value: str | None) -> Decimal:
    """vCPUs in a cpu value: `4`, `0.5`, or `500m` (millicores)."""
    if value is None:
        raise CostInputError("cpu is not set")
    match = _CPU.match(str(value).strip())
    if match is None:
        raise CostInputError(f"cpu {value!r} is not a number of vCPUs raybot can read (write it like 4 or 0.5)")
    try:
        cpu = Decimal(match["number"])
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise CostInputError(f"cpu {value!r} is not a number") from None
    if match["milli"]:
        cpu /= Decimal(1000)
    if cpu <= 0:
        raise CostInputError(f"cpu {value!r} is not a positive number of vCPUs")
    return cpu


# --- arithmetic ---------------------------------------------------------------------------------------------------


def discount_factor(cpu: Decimal, memory_gib: Decimal) -> Decimal:
    """The billing page's factor for a node's ratio, r = memory GiB per vCPU, on half-open bands [low, high)."""
    ratio = memory_gib / cpu
    for upper, factor in DISCOUNT_BANDS:
        if ratio < upper:
            return factor
    return FULL_PRICE


def node_cost(spec: ResourceSpec) -> NodeCost:
    """One node of `spec` per hour. A GPU node is billed by its gpuSpec; an unreadable cpu or memory is a problem."""
    if spec.gpu_spec:
        return NodeCost(gpu_spec=spec.gpu_spec)
    try:
        cpu = parse_cpu(spec.cpu)
        memory = parse_memory_gib(spec.memory)
    except CostInputError as error:
        return NodeCost(problem=str(error))
    raw = max(cpu, memory / MEMORY_GIB_PER_CU)
    factor = discount_factor(cpu, memory)
    return NodeCost(cpu=cpu, memory_gib=memory, raw_cu=raw, factor=factor, cu=raw * factor)


def footprint(fields: ClusterFields, scenario: Scenario = "now") -> Footprint:
    """The cluster's nodes per hour: the head, and each group at its `replica` ("now"), or, with autoscaling on,
    at `minReplica` ("floor") or `maxReplica` ("ceiling")."""
    parts: dict[str, PartCost] = {}
    if fields.head_spec is not None:
        parts[HEAD] = PartCost(name=HEAD, count=1, node=node_cost(fields.head_spec))
    autoscaling = bool(fields.head_spec and fields.head_spec.enable_auto_scaling)
    for index, group in enumerate(fields.worker_spec or []):
        replica = group.replica or 0
        if autoscaling and scenario == "floor":
            count = group.min_replica if group.min_replica is not None else replica
        elif autoscaling and scenario == "ceiling":
            count = max(group.max_replica if group.max_replica is not None else replica, replica)
        else:
            count = replica
        name = group.group_name or f"group {index + 1}"
        key = name if name not in parts else f"{name}#{index}"
        parts[key] = PartCost(name=name, count=count, node=node_cost(group))
    return Footprint(parts=parts)


def rate(fp: Footprint, price: Price | None) -> Rate:
    """The footprint per hour, priced when `price` holds every price it needs."""
    cu = fp.cu
    problems = fp.problems
    return Rate(cu=cu, gpus=fp.gpus, problems=problems, **_money(cu, fp.gpus, price, problems))


def _money(cu: Decimal | None, gpus: Mapping[str, int], price: Price | None, problems: list[str]) -> dict[str, Any]:
    """money and currency for `cu` CU and `gpus` GPU nodes per hour; adds to `problems` the prices it lacks."""
    if price is None:
        return {}
    out: dict[str, Any] = {"currency": price.currency}
    amount = Decimal(0)
    complete = cu is not None
    if cu:
        if price.cu_hour is None:
            problems.append("no CU price is configured for this cluster")
            complete = False
        else:
            amount += cu * price.cu_hour
    for spec, count in gpus.items():
        if not count:
            continue
        unit = price.gpu_hour.get(spec)
        if unit is None:
            problems.append(f"no price is configured for GPU {spec}")
            complete = False
        else:
            amount += unit * count
    if complete:
        out["money"] = amount
    return out


def cluster_rate(fields: ClusterFields, price: Price | None, scenario: Scenario = "now") -> Rate:
    """What the cluster costs per hour while it runs (see `footprint` for the scenarios)."""
    return rate(footprint(fields, scenario), price)


def _delta(before: Footprint, after: Footprint, price: Price | None) -> Rate:
    """after − before, part by part: a part the same on both sides adds nothing even if it cannot be counted."""
    cu: Decimal | None = Decimal(0)
    gpus: dict[str, int] = {}
    problems: list[str] = []
    for key in dict.fromkeys([*before.parts, *after.parts]):
        old, new = before.parts.get(key), after.parts.get(key)
        if old is not None and new is not None and old == new:
            continue
        for part, sign in ((old, -1), (new, 1)):
            if part is None:
                continue
            if part.node.problem is not None:
                problems.append(f"{part.name}: {part.node.problem}")
                cu = None
                continue
            if part.node.gpu_spec is not None:
                gpus[part.node.gpu_spec] = gpus.get(part.node.gpu_spec, 0) + sign * part.count
            elif cu is not None:
                cu += sign * (part.cu or Decimal(0))
    gpus = {spec: n for spec, n in gpus.items() if n}
    problems = list(dict.fromkeys(problems))
    money = _money(cu, gpus, price, problems) if cu is not None else ({"currency": price.currency} if price else {})
    return Rate(cu=cu, gpus=gpus, problems=problems, **money)


def change_cost(before: ClusterFields | None, after: ClusterFields | None, price: Price | None) -> ChangeCost:
    """What changing the cluster from `before` to `after` does per hour (None: the cluster is not running, as
    before a start or after a stop)."""
    empty = Footprint(parts={})
    fp = {
        (side, scenario): footprint(fields, scenario) if fields is not None else empty
        for side, fields in (("before", before), ("after", after))
        for scenario in ("now", "floor", "ceiling")
    }
    autoscaling = bool(after is not None and after.head_spec and after.head_spec.enable_auto_scaling)
    return ChangeCost(
        now=_delta(fp["before", "now"], fp["after", "now"], price),
        ceiling=_delta(fp["before", "ceiling"], fp["after", "ceiling"], price),
        after_now=rate(fp["after", "now"], price),
        after_ceiling=rate(fp["after", "ceiling"], price),
        range=(rate(fp["after", "floor"], price), rate(fp["after", "ceiling"], price)) if autoscaling else None,
    )


def recorded_change_cost(
    action: str, spec_before: dict[str, Any] | None, body: dict[str, Any] | None, price: Price | None
) -> ChangeCost | None:
    """The cost of a change as the audit log keeps it (masked bodies are fine: no secret counts).

    A start brings the whole cluster up, a stop takes it all away; an update goes from `spec_before` to `body`.
    None when the record holds too little to tell.
    """
    if spec_before is None:
        return None
    before = ClusterFields.model_validate(spec_before)
    if action == "start":
        return change_cost(None, before, price)
    if action == "stop":
        return change_cost(before, None, price)
    if body is None:
        return None
    return change_cost(before, ClusterFields.model_validate(body), price)


# --- words --------------------------------------------------------------------------------------------------------


def money_text(amount: Decimal, currency: str, *, signed: bool = False) -> str:
    """`¥11.20`, `+$3.00`, `-12.50 EUR`: the symbol for CNY and USD, else the ISO code; two decimals."""
    rounded = abs(amount).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    sign = ("-" if amount < 0 else "+") if signed and rounded != 0 else ""
    symbol = CURRENCY_SYMBOLS.get(currency)
    return f"{sign}{symbol}{rounded}" if symbol else f"{sign}{rounded} {currency}"


def number_text(value: Decimal, *, signed: bool = False) -> str:
    """`32`, `2.4`, `+0.05`: at most two decimals, no trailing zeros."""
    rounded = value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    text = format(rounded.normalize(), "f")
    if text in ("-0", "0"):
        text = "0"
    return f"+{text}" if signed and rounded > 0 else text


def _units_text(r: Rate, *, signed: bool, per: str = "/h") -> str:
    pieces = []
    if r.cu is None:
        pieces.append("? CU" + per)
    elif r.cu != 0 or not r.gpus:
        pieces.append(f"{number_text(r.cu, signed=signed)} CU{per}")
    for spec, count in r.gpus.items():
        pieces.append(f"{'+' if signed and count > 0 else ''}{count} × GPU {spec}")
    return ", ".join(pieces)


def rate_text(r: Rate, *, signed: bool = False) -> str:
    """`40 CU/h (≈ ¥14.00/h)`, `+32 CU/h (≈ +¥11.20/h)`; CU alone when a price is missing."""
    text = _units_text(r, signed=signed)
    if r.money is not None and r.currency is not None:
        text += f" (≈ {money_text(r.money, r.currency, signed=signed)}/h)"
    return text


def duration_text(seconds: int) -> str:
    """`2 h`, `30 min`, `1 d`, `45 s`."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def total_text(r: Rate, seconds: int) -> str:
    """What `r` adds over `seconds` (a temporary change): `≈ ¥22.40 for 2 h`, or `64 CU-hours for 2 h`."""
    hours = Decimal(seconds) / Decimal(3600)
    span = duration_text(seconds)
    if r.money is not None and r.currency is not None:
        return f"≈ {money_text(r.money * hours, r.currency)} for {span}"
    if r.cu is None:
        return f"cost for {span} unknown"
    return f"{number_text(r.cu * hours)} CU-hours for {span}"


def range_text(floor: Rate, ceiling: Rate) -> str:
    """`autoscaling 12 … 60 CU/h (≈ ¥4.20 … ¥21.00/h)`; GPU nodes as their own ranges, per spec:
    `autoscaling 12 … 48 CU/h, GPU A10:1 1 … 4 nodes (≈ ¥61.70 … ¥154.80/h)`."""
    low = number_text(floor.cu) if floor.cu is not None else "?"
    high = number_text(ceiling.cu) if ceiling.cu is not None else "?"
    pieces = [f"{low} … {high} CU/h"]
    for spec in dict.fromkeys([*floor.gpus, *ceiling.gpus]):
        pieces.append(f"GPU {spec} {floor.gpus.get(spec, 0)} … {ceiling.gpus.get(spec, 0)} nodes")
    text = "autoscaling " + ", ".join(pieces)
    if floor.money is not None and ceiling.money is not None and floor.currency is not None:
        low, high = money_text(floor.money, floor.currency), money_text(ceiling.money, floor.currency)
        text += f" (≈ {low} … {high}/h)"
    return text


def _more_than(a: Rate, b: Rate) -> bool:
    """Whether rate `a` is above `b`: by CU when both are counted, else by money; unknown counts as more."""
    if a.cu is not None and b.cu is not None:
        return a.cu > b.cu
    if a.money is not None and b.money is not None:
        return a.money > b.money
    return True


def change_text(cost: ChangeCost, *, duration_seconds: int | None = None) -> str:
    """One line of what a change costs, plain text: `+32 CU/h (≈ +¥11.20/h) · ≈ ¥22.40 for 2 h · now 40 CU/h …`.

    The delta first; for a temporary change its total for the duration; the rate after the change, or the range
    autoscaling opens; then what could not be counted or priced.
    """
    pieces = [rate_text(cost.now, signed=True)]
    if duration_seconds is not None:
        pieces.append(total_text(cost.now, duration_seconds))
    if cost.range is not None:
        # The ceiling's own delta only where it says more than the delta now (a raise of max beyond replica);
        # "+32 now, up to +24 at max" would read as if the most were less than the least.
        if cost.ceiling.rises and _more_than(cost.ceiling, cost.now):
            pieces.append(f"up to {rate_text(cost.ceiling, signed=True)} when autoscaled to max")
        pieces.append(range_text(*cost.range))
    else:
        pieces.append(f"then {rate_text(cost.after_now)}")
    problems = list(dict.fromkeys([*cost.now.problems, *cost.ceiling.problems, *cost.after_now.problems]))
    if problems:
        pieces.append("not counted: " + "; ".join(problems))
    return " · ".join(pieces)


def cluster_text(fields: ClusterFields, price: Price | None, state: str | None = None) -> str:
    """What a cluster costs per hour, plain text: `40 CU/h (≈ ¥14.00/h) · autoscaling 12 … 60 CU/h (…)`.

    A Stopped cluster is billed nothing: it says so, and what it costs while running.
    """
    now = cluster_rate(fields, price)
    pieces = [rate_text(now)]
    if fields.head_spec is not None and fields.head_spec.enable_auto_scaling:
        pieces.append(range_text(cluster_rate(fields, price, "floor"), cluster_rate(fields, price, "ceiling")))
    if now.problems:
        pieces.append("not counted: " + "; ".join(now.problems))
    text = " · ".join(pieces)
    if state == "Stopped":
        return f"nothing while stopped; when running {text}"
    return text
