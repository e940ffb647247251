"""Money in the config and the policy: `pricing`, the price each cluster uses, approval and limits by cost."""

from __future__ import annotations

import textwrap
from decimal import Decimal

import pytest

from bot.cli import main, render_price_table
from bot.config import ConfigError, parse_config
from bot.emr.models import ClusterFields
from bot.permissions import Subject, check_change, check_lifecycle, render_permission_table

CONFIG = """\
region: cn-hangzhou
pricing:
  currency: CNY
  cu_hour: {cn-hangzhou: 0.35, default: 0.40}
  gpu_hour: {"A10:1": 11.5}
clusters:
  prod: {workspace: w-1, cluster: ray-prod}
  beijing: {workspace: w-1, cluster: ray-bj, region: cn-beijing}
  arm: {workspace: w-1, cluster: ray-arm, pricing: {cu_hour: 0.30, gpu_hour: {"A10:1": 10}}}
roles:
  oncall:
    actions: [resize, autoscale, start]
    limits: {max_cost_per_hour: 200}
    approval: {above_cost_per_hour: 50}
  counter:
    actions: [resize]
    approval: {above_cu: 64}
  approver: {actions: [approve]}
channels:
  C0ONCALL01:
    - {role: oncall}
    - {role: approver, users: [U0LEAD]}
  C0COUNT01:
    - {role: counter}
    - {role: approver, users: [U0LEAD]}
"""
ONCALL = Subject("U0ONCALL", "C0ONCALL01")
COUNTER = Subject("U0COUNT", "C0COUNT01")


def spec(replica: int, *, cpu: str = "4", memory: str = "16Gi", max_replica: int | None = None) -> ClusterFields:
    group = {"groupName": "WorkerGroup1", "replica": replica, "cpu": cpu, "memory": memory}
    if max_replica is not None:
        group |= {"minReplica": 1, "maxReplica": max_replica}
    autoscaling = max_replica is not None
    return ClusterFields.model_validate(
        {"headSpec": {"cpu": "4", "memory": "16Gi", "enableAutoScaling": autoscaling}, "workerSpec": [group]}
    )


@pytest.fixture(scope="module")
def config():
    return parse_config(CONFIG)


def test_the_price_of_each_cluster(config):
    prod, beijing, arm = config.price("prod"), config.price("beijing"), config.price("arm")
    assert (prod.cu_hour, prod.source) == (Decimal("0.35"), "region cn-hangzhou")
    assert (beijing.cu_hour, beijing.source) == (Decimal("0.40"), "default")
    assert (arm.cu_hour, arm.source) == (Decimal("0.30"), "clusters.arm.pricing")
    assert arm.gpu_hour == {"A10:1": Decimal("10")}
    assert prod.currency == "CNY"
    assert config.warnings == []


def test_check_config_prints_the_price_each_cluster_uses(config, tmp_path, capsys, monkeypatch):
    table = render_price_table(config)
    assert "prod     cn-hangzhou  ¥0.35/CU-h  region cn-hangzhou" in table
    assert "beijing  cn-beijing   ¥0.40/CU-h  default" in table
    assert "arm      cn-hangzhou  ¥0.30/CU-h  clusters.arm.pricing  A10:1 ¥10.00/h" in table
    assert "at most ¥200.00/h per cluster; approval above +¥50.00/h" in render_permission_table(config)
    path = tmp_path / "raybot.yaml"
    path.write_text(CONFIG)
    monkeypatch.setenv("RAYBOT_DATABASE", str(tmp_path / "raybot.db"))
    assert main(["check-config", str(path)]) == 0
    assert "pricing (CNY):" in capsys.readouterr().out


def test_without_pricing_check_config_says_cu_only():
    config = parse_config(
        CONFIG.replace(CONFIG[CONFIG.index("pricing:") : CONFIG.index("clusters:")], "").replace(
            '  arm: {workspace: w-1, cluster: ray-arm, pricing: {cu_hour: 0.30, gpu_hour: {"A10:1": 10}}}\n', ""
        )
    )
    assert config.price("prod") is None
    assert "compute units (CU) only" in render_price_table(config)
    # money thresholds without prices: allowed, and check-config warns what raybot will do
    assert any("there is no `pricing:` section" in w for w in config.warnings)


def test_a_regional_price_no_cluster_pays_is_warned_with_its_line():
    config = parse_config(CONFIG.replace("cn-hangzhou: 0.35", "cn-hangzou: 0.35"), source="raybot.yaml")
    warning = next(w for w in config.warnings if "cn-hangzou" in w)
    assert warning == (
        "raybot.yaml:4:13: pricing.cu_hour.cn-hangzou: no cluster is in region cn-hangzou, "
        "so this price applies to none "
        "(the clusters' regions: cn-beijing, cn-hangzhou)"
    )
    assert config.price("prod").source == "default"  # what the typo did: prod pays the default price


@pytest.mark.parametrize(
    ("pricing", "message"),
    [
        ("pricing: {currency: yuan}", "currency must be an ISO 4217 code"),
        ("pricing: {currency: CNY, cu_hour: {cn-hangzhou: -1}}", "greater than or equal to 0"),
        ("pricing: {currency: CNY, cu_hour: {cn-hangzhou: cheap}}", "cu_hour.cn-hangzhou"),
        ("pricing: {currency: CNY, spot: 0.1}", "unknown key 'spot'"),
        ("pricing: {cu_hour: {cn-hangzhou: 0.35}}", "missing required key 'currency'"),
    ],
)
def test_bad_pricing_is_an_error_with_its_line(pricing, message):
    text = CONFIG.replace(CONFIG[CONFIG.index("pricing:") : CONFIG.index("clusters:")], pricing + "\n")
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="raybot.yaml")
    assert message in str(info.value)
    assert "raybot.yaml:2:" in str(info.value)


def test_a_clusters_prices_need_the_top_level_currency():
    text = textwrap.dedent("""\
        region: cn-hangzhou
        clusters:
          prod: {workspace: w, cluster: c, pricing: {cu_hour: 0.3}}
        roles: {a: {actions: [list]}}
        channels: {C0AAA: [{role: a}]}
        """)
    with pytest.raises(ConfigError, match="need a top-level `pricing:` with their currency"):
        parse_config(text)


def test_a_rule_needs_some_threshold_and_cost_ones_count():
    parse_config(CONFIG)  # above_cost_per_hour alone, above_cu alone
    with pytest.raises(ConfigError, match="above_cost_per_hour or above_cu"):
        parse_config(CONFIG.replace("approval: {above_cu: 64}", "approval: {expires_minutes: 5}"))
    with pytest.raises(ConfigError, match="greater than 0"):
        parse_config(CONFIG.replace("max_cost_per_hour: 200", "max_cost_per_hour: 0"))


def test_a_change_within_the_cost_threshold_needs_no_approval(config):
    # 2 → 10 workers of 4 CU: +32 CU/h × ¥0.35 = +¥11.20/h
    decision = check_change(config, ONCALL, "resize", "prod", spec(2), spec(10))
    assert decision.allowed and decision.approval is None


def test_a_change_above_the_cost_threshold_waits_for_approval(config):
    # 2 → 40: +152 CU/h = +¥53.20/h, above ¥50
    decision = check_change(config, ONCALL, "resize", "prod", spec(2), spec(40))
    assert decision.allowed
    assert decision.approval == "it raises the cost by +152 CU/h (≈ +¥53.20/h) (approval needed above +¥50.00/h)"


def test_raising_the_autoscaling_ceiling_counts_at_its_maximum(config):
    decision = check_change(config, ONCALL, "resize", "prod", spec(2, max_replica=4), spec(2, max_replica=40))
    assert decision.allowed
    assert decision.approval is not None
    assert decision.approval.startswith("autoscaled to its maximum, it raises the cost by +144 CU/h (≈ +¥50.40/h)")


def test_a_change_above_the_cost_limit_is_denied_with_the_figures(config):
    # 2 → 150: the cluster would cost (4 + 600) CU × ¥0.35 = ¥211.40/h, above the role's ¥200
    decision = check_change(config, ONCALL, "resize", "prod", spec(2), spec(150))
    assert not decision.allowed and decision.kind == "limit"
    assert decision.reason == (
        "oncall allows at most ¥200.00/h per cluster; this change would make it up to ¥211.40/h "
        "(+592 CU/h (≈ +¥207.20/h))"
    )


def test_lowering_a_cluster_above_the_cost_limit_is_allowed(config):
    decision = check_change(config, ONCALL, "resize", "prod", spec(150), spec(100))
    assert decision.allowed and decision.approval is None


def test_an_unpriceable_change_is_held_to_the_money_rules(config):
    # A touched group whose memory cannot be read: its cost cannot be known, so it is not let through unseen.
    decision = check_change(config, ONCALL, "resize", "prod", spec(2, memory="16 gigs"), spec(3, memory="16 gigs"))
    assert not decision.allowed
    assert "raybot cannot price this change" in decision.reason and "16 gigs" in decision.reason


def test_above_cu_counts_compute_units(config):
    assert check_change(config, COUNTER, "resize", "prod", spec(2), spec(18)).approval is None  # +64 CU/h
    decision = check_change(config, COUNTER, "resize", "prod", spec(2), spec(19))  # +68 CU/h
    assert decision.approval == "it raises the cost by +68 CU/h (≈ +¥23.80/h) (approval needed above +64 CU/h)"


def test_without_pricing_money_thresholds_ask_for_approval_and_limits_deny():
    config = parse_config(
        CONFIG.replace(CONFIG[CONFIG.index("pricing:") : CONFIG.index("clusters:")], "").replace(
            '  arm: {workspace: w-1, cluster: ray-arm, pricing: {cu_hour: 0.30, gpu_hour: {"A10:1": 10}}}\n', ""
        )
    )
    decision = check_change(config, ONCALL, "resize", "prod", spec(2), spec(3))
    assert not decision.allowed
    assert decision.reason == (
        "oncall allows at most 200 per hour per cluster, and raybot cannot price this change (no prices are configured)"
    )
    # lowering is still allowed, and above_cu still works in CU
    assert check_change(config, ONCALL, "resize", "prod", spec(3), spec(2)).allowed
    decision = check_change(config, COUNTER, "resize", "prod", spec(2), spec(19))
    assert decision.approval == "it raises the cost by +68 CU/h (approval needed above +64 CU/h)"


def test_starting_a_cluster_counts_its_whole_cost(config):
    decision = check_lifecycle(config, ONCALL, "start", "prod", spec(40))
    assert decision.allowed
    assert decision.approval == "it raises the cost by +164 CU/h (≈ +¥57.40/h) (approval needed above +¥50.00/h)"
    assert check_lifecycle(config, ONCALL, "start", "prod", spec(10)).approval is None


def test_starting_a_cluster_above_the_roles_cost_cap_is_denied_with_the_figures(config):
    # 150 workers of 4 CPU / 16 GiB: 604 CU/h with the head, ≈ ¥211.40/h at ¥0.35, above oncall's ¥200/h.
    decision = check_lifecycle(config, ONCALL, "start", "prod", spec(150))
    assert not decision.allowed and decision.kind == "limit"
    assert decision.reason == (
        "oncall allows at most ¥200.00/h per cluster; "
        "this change would make it up to ¥211.40/h (+604 CU/h (≈ +¥211.40/h))"
    )


def test_a_change_that_lowers_the_cost_overall_passes_the_cap_even_above_it():
    config = parse_config(CONFIG.replace("max_cost_per_hour: 200", "max_cost_per_hour: 1"))
    gpu = {"groupName": "a10", "replica": 4, "cpu": "8", "memory": "30Gi", "gpuSpec": "A10:1"}
    cpu = {"groupName": "WorkerGroup1", "replica": 2, "cpu": "4", "memory": "16Gi"}
    before = ClusterFields.model_validate({"workerSpec": [cpu, gpu]})
    # two more CPU workers (+8 CU/h, ¥2.80) and two GPU nodes fewer (-¥23.00): cheaper in all, though still above ¥1/h
    after = ClusterFields.model_validate({"workerSpec": [cpu | {"replica": 4}, gpu | {"replica": 2}]})
    decision = check_change(config, ONCALL, "resize", "prod", before, after)
    assert decision.allowed and decision.approval is None
