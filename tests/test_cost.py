"""The CU arithmetic of bot/cost.py against EMR Serverless Spark's billing rules, and its words."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bot.cost import (
    CostInputError,
    Price,
    change_cost,
    change_text,
    cluster_rate,
    cluster_text,
    discount_factor,
    money_text,
    node_cost,
    parse_cpu,
    parse_memory_gib,
    rate_text,
    recorded_change_cost,
    total_text,
)
from bot.emr.models import ClusterFields, ResourceSpec
from bot.metrics import Metrics

D = Decimal
HANGZHOU = Price(currency="CNY", cu_hour=D("0.35"), gpu_hour={"A10:1": D("11.5")})


def cluster(*groups: dict, head: dict | None = None, autoscaling: bool = False) -> ClusterFields:
    head_spec = {"cpu": "4", "memory": "16Gi", "enableAutoScaling": autoscaling} | (head or {})
    return ClusterFields.model_validate({"headSpec": head_spec, "workerSpec": list(groups)})


def group(name: str = "WorkerGroup1", replica: int = 2, cpu: str = "4", memory: str = "16Gi", **extra) -> dict:
    return {"groupName": name, "replica": replica, "cpu": cpu, "memory": memory, **extra}


def test_the_billing_pages_worked_example():
    # 3 cores and 6 GB for an hour: ratio 1:2, so × 0.8; CU = max(3, 6/4) = 3; 3 CU × 60 min = 180 CU-minutes.
    node = node_cost(ResourceSpec(cpu="3", memory="6Gi"))
    assert node.raw_cu == 3
    assert node.factor == D("0.8")
    assert node.raw_cu * 60 == 180  # CU-minutes in an hour
    assert node.cu == D("2.4")  # 180 CU-minutes × 0.8 = 2.4 CU-hours


@pytest.mark.parametrize(
    ("cpu", "memory", "factor"),
    [
        # [∞:1, 1:2) × 0.7 — memory GiB per vCPU below 2
        ("4", "1Gi", "0.7"),
        ("4", "7Gi", "0.7"),  # 1.75
        ("1024", "2047Gi", "0.7"),  # just under 1:2
        # [1:2, 1:3) × 0.8 — the lower edge belongs to the band
        ("4", "8Gi", "0.8"),  # exactly 1:2
        ("1024", "3071Gi", "0.8"),  # just under 1:3
        # [1:3, 1:4) × 0.9
        ("4", "12Gi", "0.9"),  # exactly 1:3
        ("1024", "4095Gi", "0.9"),  # just under 1:4
        # [1:4, ∞] × 1
        ("4", "16Gi", "1"),  # exactly 1:4
        ("1", "64Gi", "1"),
    ],
)
def test_each_discount_band_edge(cpu, memory, factor):
    assert discount_factor(parse_cpu(cpu), parse_memory_gib(memory)) == D(factor)
    assert node_cost(ResourceSpec(cpu=cpu, memory=memory)).factor == D(factor)


def test_cu_is_the_larger_of_vcpu_and_memory_over_four():
    assert node_cost(ResourceSpec(cpu="4", memory="16Gi")).cu == 4  # 1:4, × 1
    assert node_cost(ResourceSpec(cpu="2", memory="32Gi")).cu == 8  # memory-bound: 32/4 = 8, 1:16 → × 1
    assert node_cost(ResourceSpec(cpu="8", memory="8Gi")).cu == D("5.6")  # cpu-bound: 8 × 0.7


@pytest.mark.parametrize(
    ("text", "gib"),
    [("16Gi", "16"), ("16384Mi", "16"), ("16G", "16"), ("16384M", "16"), ("1Ti", "1024"), ("0.5Gi", "0.5")],
)
def test_memory_units(text, gib):
    assert parse_memory_gib(text) == D(gib)


@pytest.mark.parametrize("text", ["16", "16GB", "16gi", "sixteen", "", "0Gi", "-1Gi", "16 Ki"])
def test_memory_that_cannot_be_read_is_reported(text):
    with pytest.raises(CostInputError, match="memory"):
        parse_memory_gib(text)


def test_cpu_forms():
    assert parse_cpu("4") == 4
    assert parse_cpu("0.5") == D("0.5")
    assert parse_cpu("500m") == D("0.5")
    for bad in ("four", "0", "-2", "4 cores"):
        with pytest.raises(CostInputError, match="cpu"):
            parse_cpu(bad)


def test_an_unreadable_node_is_a_problem_never_a_guess():
    node = node_cost(ResourceSpec(cpu="4", memory="lots"))
    assert node.cu is None and "memory 'lots'" in (node.problem or "")
    rate = cluster_rate(cluster(group(memory="lots")), HANGZHOU)
    assert rate.cu is None and rate.money is None
    assert rate.problems == [
        "WorkerGroup1: memory 'lots' is not a size raybot can read (write it like 16Gi or 16384Mi)"
    ]
    assert rate_text(rate) == "? CU/h"


def test_the_issues_example_resize_and_its_price():
    before = cluster(group(replica=2))
    after = cluster(group(replica=10))
    cost = change_cost(before, after, HANGZHOU)
    assert cost.now.cu == 32 and cost.now.money == D("11.2")
    assert rate_text(cost.now, signed=True) == "+32 CU/h (≈ +¥11.20/h)"
    # head 4 CU + 10 × 4 CU
    assert rate_text(cost.after_now) == "44 CU/h (≈ ¥15.40/h)"
    assert total_text(cost.now, 7200) == "≈ ¥22.40 for 2 h"
    assert change_text(cost, duration_seconds=7200) == (
        "+32 CU/h (≈ +¥11.20/h) · ≈ ¥22.40 for 2 h · then 44 CU/h (≈ ¥15.40/h)"
    )


def test_without_prices_cu_alone():
    cost = change_cost(cluster(group(replica=2)), cluster(group(replica=10)), None)
    assert cost.now.money is None
    assert change_text(cost, duration_seconds=7200) == "+32 CU/h · 64 CU-hours for 2 h · then 44 CU/h"
    # pricing without a CU price for this cluster: CU alone, and why
    unpriced = Price(currency="CNY")
    cost = change_cost(cluster(group(replica=2)), cluster(group(replica=10)), unpriced)
    assert cost.now.money is None
    assert rate_text(cost.now, signed=True) == "+32 CU/h"
    assert "no CU price is configured for this cluster" in change_text(cost)


def test_a_reduction_is_negative():
    cost = change_cost(cluster(group(replica=10)), cluster(group(replica=2)), HANGZHOU)
    assert rate_text(cost.now, signed=True) == "-32 CU/h (≈ -¥11.20/h)"
    assert cost.now.rises is False


def test_gpu_groups_are_priced_by_their_specification():
    before = cluster(group("a10", replica=1, cpu="8", memory="30Gi", gpuSpec="A10:1"))
    after = cluster(group("a10", replica=3, cpu="8", memory="30Gi", gpuSpec="A10:1"))
    cost = change_cost(before, after, HANGZHOU)
    assert cost.now.cu == 0 and cost.now.gpus == {"A10:1": 2}
    assert cost.now.money == D("23.0")
    assert rate_text(cost.now, signed=True) == "+2 × GPU A10:1 (≈ +¥23.00/h)"
    # the head (4 CU) and three GPU nodes
    assert rate_text(cost.after_now) == "4 CU/h, 3 × GPU A10:1 (≈ ¥35.90/h)"


def test_a_gpu_without_a_price_is_not_priced():
    before = cluster(group("a10", replica=1, gpuSpec="A10:4"))
    after = cluster(group("a10", replica=2, gpuSpec="A10:4"))
    cost = change_cost(before, after, HANGZHOU)
    assert cost.now.money is None
    assert cost.now.problems == ["no price is configured for GPU A10:4"]
    assert rate_text(cost.now, signed=True) == "+1 × GPU A10:4"


def test_an_untouched_unreadable_group_does_not_hide_the_delta():
    broken = group("legacy", replica=1, memory="16 gigs")
    cost = change_cost(cluster(group(replica=2), broken), cluster(group(replica=3), broken), HANGZHOU)
    assert cost.now.cu == 4 and cost.now.money == D("1.4")
    assert cost.after_now.cu is None  # the cluster's total cannot be told …
    assert "legacy: memory '16 gigs'" in change_text(cost)  # … and the answer says why


def test_a_touched_unreadable_group_makes_the_delta_unknown():
    cost = change_cost(cluster(group(memory="x", replica=1)), cluster(group(memory="x", replica=5)), HANGZHOU)
    assert cost.now.cu is None and cost.now.rises is None and cost.now.money is None


def test_autoscaling_opens_a_range():
    before = cluster(group(replica=2, minReplica=1, maxReplica=4), autoscaling=True)
    after = cluster(group(replica=2, minReplica=1, maxReplica=20), autoscaling=True)
    cost = change_cost(before, after, HANGZHOU)
    assert cost.now.cu == 0
    assert cost.ceiling.cu == 64  # 16 more workers of 4 CU at the top of the range
    assert cost.range is not None
    text = change_text(cost)
    assert "up to +64 CU/h (≈ +¥22.40/h) when autoscaled to max" in text
    assert "autoscaling 8 … 84 CU/h (≈ ¥2.80 … ¥29.40/h)" in text


def test_a_change_of_nothing_billable_is_neutral():
    before = cluster(group(replica=2))
    after = ClusterFields.model_validate(before.wire() | {"description": "now with a description"})
    assert change_cost(before, after, HANGZHOU).neutral
    assert not change_cost(before, cluster(group(replica=3)), HANGZHOU).neutral
    # autoscaling switched on moves the ceiling, not what runs now: not neutral
    assert not change_cost(cluster(group(maxReplica=8)), cluster(group(maxReplica=8), autoscaling=True), None).neutral


def test_start_and_stop_bring_and_take_the_whole_cluster():
    spec = cluster(group(replica=2)).wire()
    start = recorded_change_cost("start", spec, None, HANGZHOU)
    stop = recorded_change_cost("stop", spec, None, HANGZHOU)
    assert start is not None and stop is not None
    assert start.now.cu == 12 and stop.now.cu == -12
    assert recorded_change_cost("resize", None, None, HANGZHOU) is None


def test_cluster_text_now_and_stopped():
    fields = cluster(group(replica=2, minReplica=1, maxReplica=4), autoscaling=True)
    assert cluster_text(fields, HANGZHOU, "Running") == (
        "12 CU/h (≈ ¥4.20/h) · autoscaling 8 … 20 CU/h (≈ ¥2.80 … ¥7.00/h)"
    )
    assert cluster_text(cluster(group()), None, "Stopped") == "nothing while stopped; when running 12 CU/h"


def test_money_words():
    assert money_text(D("11.2"), "CNY") == "¥11.20"
    assert money_text(D("3"), "USD", signed=True) == "+$3.00"
    assert money_text(D("-12.505"), "EUR", signed=True) == "-12.51 EUR"
    assert money_text(D("0.001"), "CNY", signed=True) == "¥0.00"


def test_the_added_cost_gauges_add_up_per_cluster():
    metrics = Metrics()
    up = change_cost(cluster(group(replica=2)), cluster(group(replica=10)), HANGZHOU).now
    down = change_cost(cluster(group(replica=10)), cluster(group(replica=6)), HANGZHOU).now
    unpriced = change_cost(cluster(group(replica=2)), cluster(group(replica=3)), None).now
    for delta in (up, down, unpriced):
        metrics.cost_added("prod", delta)
    assert metrics.value("raybot_added_cu_per_hour", {"cluster": "prod"}) == 32 - 16 + 4
    # the unpriced change adds CU and no money: never a made-up amount
    assert metrics.value("raybot_added_cost_per_hour", {"cluster": "prod"}) == pytest.approx(11.2 - 5.6)
    assert metrics.value("raybot_added_cu_per_hour", {"cluster": "staging"}) is None


def test_an_autoscaling_range_with_gpus_reads_as_ranges_per_spec():
    from bot.cost import Rate, range_text

    floor = Rate(cu=Decimal(12), gpus={"A10:1": 1, "A10:4": 1}, money=Decimal("61.70"), currency="CNY")
    ceiling = Rate(cu=Decimal(48), gpus={"A10:1": 4, "A10:4": 2}, money=Decimal("154.80"), currency="CNY")
    assert range_text(floor, ceiling) == (
        "autoscaling 12 … 48 CU/h, GPU A10:1 1 … 4 nodes, GPU A10:4 1 … 2 nodes (≈ ¥61.70 … ¥154.80/h)"
    )
    unpriced = Rate(cu=None, gpus={"A10:1": 2})
    assert range_text(Rate(cu=Decimal(4)), unpriced) == "autoscaling 4 … ? CU/h, GPU A10:1 0 … 2 nodes"
