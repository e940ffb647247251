"""raybot.yaml → Config: the good file, every kind of error with its line, unknown keys, warnings."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bot.config import KNOWN_ACTIONS, ClusterTarget, Config, ConfigError, UnknownClusterError, load_config, parse_config

GOOD = """\
region: cn-hangzhou                 # default region of the clusters below
clusters:                           # the aliases people type
  prod:
    workspace: w-d2d82aa09155
    cluster: ray-uiulpgow9xljimm1
    region: cn-beijing
  staging:
    workspace: w-staging
    cluster: ray-staging
roles:
  viewer: {actions: [list, show, history]}
  oncall:
    actions: [list, show, history, resize, autoscale, undo]
    limits: {max_replica: 40, max_step: 20, worker_types: [cpu]}
  admin: {actions: ["*"]}
channels:
  C0ONCALL01:
    - role: oncall
      clusters: ["prod*"]
      usergroups: [S0ONCALL]
      users: [U0LEAD, W0ENTERPRISE]
    - role: viewer
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "raybot.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), source="raybot.yaml")
    return str(info.value)


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the first line containing `needle`: tests name lines by content."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def place_of(text: str, needle: str) -> str:
    """`line:column` (1-based) where `needle` first appears."""
    line = line_of(text, needle)
    return f"{line}:{text.splitlines()[line - 1].index(needle) + 1}"


def test_good_file_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.aliases() == ["prod", "staging"]
    assert config.cluster("prod") == ClusterTarget("prod", "w-d2d82aa09155", "ray-uiulpgow9xljimm1", "cn-beijing")
    # the default region fills in where the alias has none
    assert config.cluster("staging").region == "cn-hangzhou"
    oncall = config.roles["oncall"]
    assert oncall.limits.max_replica == 40 and oncall.limits.max_step == 20
    assert oncall.limits.worker_types == ("cpu",)
    assert oncall.allows("resize") and not oncall.allows("edit")
    assert config.roles["admin"].allows("stop")
    bindings = config.channels["C0ONCALL01"]
    assert bindings[0].users == ("U0LEAD", "W0ENTERPRISE") and bindings[0].usergroups == ("S0ONCALL",)
    assert bindings[1].clusters == ("*",)  # default: every alias
    assert not bindings[1].restricted
    assert config.warnings == []


def test_unknown_alias_lookup_names_the_known_ones() -> None:
    config = parse_config(GOOD)
    with pytest.raises(UnknownClusterError, match="'dev'.*prod, staging"):
        config.cluster("dev")


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert str(info.value) == f"config file {missing} not found; set RAYBOT_CONFIG or create it (see README)"


def test_yaml_syntax_error_carries_the_line(tmp_path: Path) -> None:
    text = GOOD.replace('  admin: {actions: ["*"]}', '  admin: {actions: ["*"]')
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'raybot.yaml'}:")
    assert "invalid YAML" in message
    # the parser notices the unclosed flow mapping at the next line
    assert f"raybot.yaml:{line_of(text, 'channels:')}:" in message


def test_channel_name_instead_of_id() -> None:
    text = GOOD.replace("C0ONCALL01:", "oncall:")
    message = error_of(text)
    assert message.startswith(f"raybot.yaml:{line_of(text, 'channels:') + 1}:3: channels.oncall: ")
    assert "use the channel ID (like C0123ABCD), not its name" in message


@pytest.mark.parametrize("key", ['"#oncall"', "c0lowercase", "X0ONCALL", "C0"])
def test_channel_keys_that_are_not_ids(key: str) -> None:
    message = error_of(GOOD.replace("C0ONCALL01:", f"{key}:"))
    assert message.startswith("raybot.yaml:17:3: channels.")
    assert "use the channel ID" in message


def test_dm_and_private_channel_ids_are_accepted() -> None:
    text = GOOD + "  D0DIRECT01:\n    - role: viewer\n  G0PRIVATE1:\n    - role: viewer\n"
    assert set(parse_config(text).channels) == {"C0ONCALL01", "D0DIRECT01", "G0PRIVATE1"}


def test_undefined_role_in_binding() -> None:
    text = GOOD.replace("    - role: viewer", "    - role: viewr")
    message = error_of(text)
    assert message.startswith(f"raybot.yaml:{place_of(text, 'role: viewr')}: channels.C0ONCALL01[1].role: ")
    assert "role 'viewr' is not defined" in message and "viewer, oncall, admin" in message


def test_alias_without_any_region() -> None:
    text = GOOD.replace("region: cn-hangzhou ", "")
    text = "\n".join(line for line in text.splitlines() if not line.startswith("region"))
    message = error_of(text)
    # prod has its own region; staging has none and there is no default
    assert message.startswith(f"raybot.yaml:{line_of(text, 'staging:')}:3: clusters.staging: ")
    assert "no region" in message and "region:" in message
    assert "clusters.prod" not in message


def test_bad_user_and_usergroup_ids() -> None:
    text = GOOD.replace("users: [U0LEAD, W0ENTERPRISE]", "users: [U0LEAD, bob]").replace(
        "usergroups: [S0ONCALL]", "usergroups: ['@oncall']"
    )
    message = error_of(text)
    lines = message.splitlines()
    assert len(lines) == 2
    group_place = place_of(text, "'@oncall'")
    assert lines[0].startswith(f"raybot.yaml:{group_place}: channels.C0ONCALL01[0].usergroups[0]:")
    assert "not a Slack user group ID" in lines[0]
    assert lines[1].startswith(f"raybot.yaml:{place_of(text, 'bob')}: channels.C0ONCALL01[0].users[1]:")
    assert "'bob' is not a Slack user ID" in lines[1]


@pytest.mark.parametrize("alias", ["Prod", "-prod", "prod cluster", "prød"])
def test_bad_alias_names(alias: str) -> None:
    message = error_of(GOOD.replace("  prod:", f"  '{alias}':"))
    assert message.startswith("raybot.yaml:3:3: clusters.")
    assert "lowercase letters, digits" in message


def test_unknown_action_lists_the_known_ones() -> None:
    text = GOOD.replace("[list, show, history, resize,", "[list, show, history, rezise,")
    message = error_of(text)
    assert message.startswith(f"raybot.yaml:{place_of(text, 'rezise')}: roles.oncall.actions[3]: ")
    assert "unknown action 'rezise'" in message
    assert ", ".join(KNOWN_ACTIONS) in message


def test_empty_actions_is_an_error() -> None:
    text = GOOD.replace("viewer: {actions: [list, show, history]}", "viewer: {actions: []}")
    message = error_of(text)
    assert message.startswith(f"raybot.yaml:{place_of(text, 'actions: []')}: roles.viewer.actions: ")
    assert "at least one action" in message


@pytest.mark.parametrize(
    ("limits", "field"),
    [("{max_replica: 0}", "max_replica"), ("{max_step: -1}", "max_step"), ("{max_step: lots}", "max_step")],
)
def test_limits_must_be_positive_integers(limits: str, field: str) -> None:
    text = GOOD.replace("{max_replica: 40, max_step: 20, worker_types: [cpu]}", limits)
    message = error_of(text)
    assert message.startswith(f"raybot.yaml:{line_of(text, 'limits:')}:")
    assert f"roles.oncall.limits.{field}:" in message


def test_empty_worker_types_is_an_error() -> None:
    message = error_of(GOOD.replace("worker_types: [cpu]", "worker_types: []"))
    assert "roles.oncall.limits.worker_types: an empty worker_types list" in message


def test_missing_required_keys_point_at_the_parent() -> None:
    text = GOOD.replace("    cluster: ray-staging\n", "")
    message = error_of(text)
    assert message == f"raybot.yaml:{line_of(text, 'staging:')}:3: clusters.staging: missing required key 'cluster'"


@pytest.mark.parametrize(
    ("old", "new", "place", "known"),
    [
        ("region: cn-hangzhou ", "regions: cn-hangzhou ", "regions", "region, clusters, roles, channels"),
        ("    region: cn-beijing", "    zone: cn-beijing", "clusters.prod.zone", "workspace, cluster, region"),
        ("  admin: {actions:", "  admin: {approver: 2, actions:", "roles.admin.approver", "actions, limits, approval"),
        ("max_step: 20,", "max_step: 20, approval: yes,", "roles.oncall.limits.approval", "max_replica, max_step"),
        (
            "    - role: viewer",
            "    - role: viewer\n      user: [U1]",
            "channels.C0ONCALL01[1].user",
            "usergroups, users",
        ),
    ],
)
def test_unknown_keys_at_every_level(old: str, new: str, place: str, known: str) -> None:
    text = GOOD.replace(old, new)
    assert text != GOOD
    message = error_of(text)
    key = place.rsplit(".", 1)[-1]
    assert message.startswith(f"raybot.yaml:{line_of(text, key + ':')}:")
    assert f"{place}: unknown key '{key}'; known keys here: " in message
    assert known in message


def test_duplicate_keys_are_errors() -> None:
    text = GOOD + "  C0ONCALL01:\n    - role: admin\n"
    message = error_of(text)
    assert message.startswith(f"raybot.yaml:{len(text.splitlines()) - 1}:3: 'C0ONCALL01' appears twice")


def test_every_problem_is_reported() -> None:
    text = GOOD.replace("C0ONCALL01:", "oncall:").replace("region: cn-beijing", "zone: x")
    lines = error_of(text).splitlines()
    assert [line.split(": ", 2)[1] for line in lines] == ["clusters.prod.zone", "channels.oncall"]


def test_top_level_must_be_a_mapping() -> None:
    assert "must be a mapping" in error_of("- a\n- b\n")
    assert "must be a mapping" in error_of("")


def test_globs_matching_nothing_are_warnings_with_lines(tmp_path: Path) -> None:
    text = GOOD.replace('clusters: ["prod*"]', 'clusters: ["prod*", "stg*"]')
    config = load_config(write(tmp_path, text))
    assert len(config.warnings) == 1
    warning = config.warnings[0]
    assert warning.startswith(f"{tmp_path / 'raybot.yaml'}:{line_of(text, 'stg*')}:")
    assert "channels.C0ONCALL01[0].clusters[1]: 'stg*' matches no cluster alias" in warning


def test_warnings_without_a_file() -> None:
    data = {
        "clusters": {"prod": {"workspace": "w", "cluster": "c", "region": "r"}},
        "roles": {"viewer": {"actions": ["list"]}},
        "channels": {"C0X1": [{"role": "viewer", "clusters": ["dev*"]}]},
    }
    config = Config.model_validate(data)
    assert config.warnings == ["channels.C0X1[0].clusters[0]: 'dev*' matches no cluster alias (aliases: prod)"]


def test_approval_that_nobody_could_give_is_a_warning() -> None:
    data = {
        "clusters": {"prod": {"workspace": "w", "cluster": "c", "region": "r"}},
        "roles": {"oncall": {"actions": ["resize"], "approval": "always"}, "lead": {"actions": ["approve"]}},
        "channels": {"C0X1": [{"role": "oncall"}]},
    }
    config = Config.model_validate(data)
    assert config.warnings == [
        "channels.C0X1[0].role: changes by role 'oncall' need approval, but no binding in C0X1 grants 'approve' "
        "on prod: nobody could ever approve them"
    ]
    data["channels"]["C0X1"].append({"role": "lead", "users": ["U0LEAD"]})
    assert Config.model_validate(data).warnings == []


def test_approval_only_the_asker_could_give_is_a_warning() -> None:
    data = {
        "clusters": {"prod": {"workspace": "w", "cluster": "c", "region": "r"}},
        "roles": {"oncall": {"actions": ["resize"], "approval": "always"}, "lead": {"actions": ["approve"]}},
        "channels": {"C0X1": [{"role": "oncall", "users": ["U0SOLO"]}, {"role": "lead", "users": ["U0SOLO"]}]},
    }
    assert Config.model_validate(data).warnings == [
        "channels.C0X1[0].role: changes by role 'oncall' need approval, but on prod only U0SOLO, who asks for them, "
        "may approve in this channel, and nobody approves their own change: bind 'approve' for a second person"
    ]
    # A second person, or a group (whose members raybot cannot know from the config), may approve: no warning.
    data["channels"]["C0X1"][1]["users"] = ["U0SOLO", "U0LEAD"]
    assert Config.model_validate(data).warnings == []
    data["channels"]["C0X1"][1] = {"role": "lead", "usergroups": ["S0LEADS"]}
    assert Config.model_validate(data).warnings == []


def test_direct_construction_also_checks_cross_references() -> None:
    data = {
        "clusters": {"prod": {"workspace": "w", "cluster": "c"}},
        "roles": {},
        "channels": {"C0X1": [{"role": "viewer"}]},
    }
    with pytest.raises(Exception, match="no region") as info:
        Config.model_validate(data)
    assert "role 'viewer' is not defined" in str(info.value)


def test_safe_load_semantics_only() -> None:
    message = error_of(GOOD.replace("region: cn-hangzhou ", "region: !!python/object/apply:os.getcwd [] "))
    assert "invalid YAML" in message and "raybot.yaml:1:" in message


def _readme_config() -> str:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Configuration (`raybot.yaml`)") :]
    return section[section.index("```yaml\n") + len("```yaml\n") : section.index("```", section.index("```yaml") + 3)]


@pytest.mark.parametrize("source", ["README.md", "examples/raybot.yaml"])
def test_the_documented_configs_are_valid_and_raise_no_warning(source: str) -> None:
    """A newcomer copies these: they must pass `raybot check-config` as they are, warnings included."""
    text = _readme_config() if source == "README.md" else (Path(__file__).resolve().parents[1] / source).read_text()
    assert parse_config(text, source=source).warnings == []
