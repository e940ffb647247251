"""The deployment artefacts keep their promises: non-root, read-only, probed, bounded, no secrets in config,
and several replicas on one PostgreSQL database that survive a rollout, a drain and a lost node.

Schema validity and Dockerfile style are checked by .ci/lint-deploy (kubernetes-validate,
hadolint); these tests check what those tools cannot know about raybot.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from bot.config import load_config
from bot.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
UID = 10001
SLACK_SECRET = "raybot-slack"
DATABASE_SECRET = "raybot-database"
SOCKET_MODE_CONNECTIONS_PER_APP = 10  # Slack's limit; each replica opens one
SECRET_LOOKING = re.compile(
    r"xox[a-z]-|xapp-|LTAI[0-9A-Za-z]{8,}|-----BEGIN|(secret|password|token|access_key)\s*:", re.IGNORECASE
)
COMPILERS = re.compile(r"\b(gcc|g\+\+|cc|clang|build-essential|make|cmake|rustc|cargo|python3?-dev)\b")


def documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    return docs


def one(kind: str) -> dict[str, Any]:
    (found,) = [d for d in documents() if d["kind"] == kind]
    return found


def secret(name: str) -> dict[str, Any]:
    (found,) = [d for d in documents() if d["kind"] == "Secret" and d["metadata"]["name"] == name]
    return found


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels only: the manifests use nothing else) selects pods with these labels."""
    assert set(selector) == {"matchLabels"}, selector
    return selector["matchLabels"].items() <= labels.items()


def setting_default(name: str) -> Any:
    (found,) = [f.default for f in dataclasses.fields(Settings) if f.name == name]
    return found


@pytest.fixture(scope="module")
def pod() -> dict[str, Any]:
    return one("Deployment")["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    (c,) = pod["containers"]
    return c


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container["env"]}


# --- Kubernetes -----------------------------------------------------------------------------------


def test_every_manifest_is_in_the_raybot_namespace_and_labelled() -> None:
    for doc in documents():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "raybot", doc["kind"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "raybot", doc["kind"]


def test_several_replicas_rolled_out_without_ever_losing_one() -> None:
    spec = one("Deployment")["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["type"] == "RollingUpdate"
    rolling = spec["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0
    assert rolling["maxSurge"] == 1  # an integer: a percentage of 2 replicas would round in surprising ways
    # In Socket Mode every pod, surge included, holds one of the app's connections.
    assert spec["replicas"] + rolling["maxSurge"] <= SOCKET_MODE_CONNECTIONS_PER_APP
    assert spec.get("minReadySeconds", 0) > 0


def test_a_disruption_budget_keeps_one_pod_of_the_deployment() -> None:
    budget = one("PodDisruptionBudget")
    deployment = one("Deployment")
    assert budget["spec"]["minAvailable"] == 1
    assert "maxUnavailable" not in budget["spec"]
    assert budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]  # else no drain could ever evict one
    assert selects(budget["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])
    # ...and only the Deployment's: the selector is the Deployment's own.
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]
    assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_replicas_prefer_different_nodes(pod: dict) -> None:
    anti = pod["affinity"]["podAntiAffinity"]
    # Preferred, not required: a required rule would strand the surge pod on a small pool (see deployment.yaml).
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti
    labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    terms = [
        t["podAffinityTerm"]
        for t in anti["preferredDuringSchedulingIgnoredDuringExecution"]
        if t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    ]
    assert any(selects(term["labelSelector"], labels) for term in terms)


def test_the_pod_runs_as_non_root_on_a_read_only_root_filesystem(pod: dict, container: dict) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == UID
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] not in (None, 0)
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sc["capabilities"]
    assert sc.get("privileged", False) is False


def test_nothing_is_kept_on_the_pod_and_the_database_is_a_verified_postgresql_url(pod: dict, container: dict) -> None:
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"] if not m.get("readOnly")}
    # /tmp only, in memory (the root filesystem is read-only): no SQLite file, no PersistentVolumeClaim.
    assert set(writable) == {"/tmp"}
    assert "emptyDir" in writable["/tmp"]
    assert not any("persistentVolumeClaim" in v for v in volumes.values())

    env = env_of(container)
    assert "value" not in env["RAYBOT_DATABASE"]
    assert env["RAYBOT_DATABASE"]["valueFrom"]["secretKeyRef"] == {"name": DATABASE_SECRET, "key": "url"}
    url = urlsplit(secret(DATABASE_SECRET)["stringData"]["url"])
    assert url.scheme in ("postgresql", "postgres")
    assert url.password is None  # the example keeps the password in its own key (PGPASSWORD)
    query = parse_qs(url.query)
    assert query["sslmode"] == ["verify-full"]
    # The CA the URL names is a file of the read-only ConfigMap mounted for it.
    (ca_path,) = query["sslrootcert"]
    (ca_mount,) = [m for m in container["volumeMounts"] if ca_path.startswith(m["mountPath"] + "/")]
    assert ca_mount["readOnly"] is True
    ca_volume = volumes[ca_mount["name"]]["configMap"]
    assert ca_volume.get("optional", False) is False  # no CA, no start: never an unverified server

    config_path = env["RAYBOT_CONFIG"]["value"]
    (config_mount,) = [m for m in container["volumeMounts"] if config_path.startswith(m["mountPath"] + "/")]
    assert config_mount["readOnly"] is True
    assert volumes[config_mount["name"]]["configMap"]["name"] == one("ConfigMap")["metadata"]["name"]


def test_probes_ask_readyz_and_healthz_on_the_http_port(container: dict) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 3000}
    assert env_of(container)["RAYBOT_HTTP_PORT"]["value"] == "3000"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # A liveness probe must not restart a pod that is merely not ready (Slack or the cloud down).
    assert container["livenessProbe"]["httpGet"]["path"] != container["readinessProbe"]["httpGet"]["path"]


def test_the_grace_period_outlasts_the_pre_stop_pause_and_the_sigterm_bound(pod: dict, container: dict) -> None:
    env = env_of(container)
    shutdown = float(env.get("RAYBOT_SHUTDOWN_SECONDS", {}).get("value") or setting_default("shutdown_seconds"))
    pause = 0.0
    pre_stop = container.get("lifecycle", {}).get("preStop")
    if pre_stop is not None:
        command = pre_stop["exec"]["command"]
        assert command[0] == "sleep", command
        pause = float(command[1])
    # The grace period counts from the start of preStop; SIGTERM (and the drain) comes after it.
    assert pod["terminationGracePeriodSeconds"] > pause + shutdown


def test_requests_and_limits_are_set(container: dict) -> None:
    resources = container["resources"]
    for kind in ("requests", "limits"):
        assert set(resources[kind]) == {"cpu", "memory"}, kind


def test_slack_tokens_and_the_database_come_from_secrets_never_from_plain_values(container: dict) -> None:
    env = env_of(container)
    for name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"):
        assert "value" not in env[name]
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == secret(SLACK_SECRET)["metadata"]["name"]
    for name in ("RAYBOT_DATABASE", "PGPASSWORD"):
        assert "value" not in env[name]
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret(DATABASE_SECRET)["metadata"]["name"]
        assert ref["key"] in secret(DATABASE_SECRET)["stringData"]
    assert env["RAYBOT_DATABASE"]["valueFrom"]["secretKeyRef"].get("optional", False) is False
    for entry in env.values():
        assert not SECRET_LOOKING.search(str(entry.get("value", "")))
    # Not the node's RAM role, which every pod on the node shares.
    assert env["ALIBABA_CLOUD_ECS_METADATA_DISABLED"]["value"] == "true"


def test_the_config_map_holds_a_valid_config_and_nothing_secret(tmp_path: Path) -> None:
    data = one("ConfigMap")["data"]
    assert set(data) == {"raybot.yaml"}
    text = data["raybot.yaml"]
    assert not SECRET_LOOKING.search(text)
    path = tmp_path / "raybot.yaml"
    path.write_text(text, encoding="utf-8")
    config = load_config(str(path))
    assert config.clusters and config.roles and config.channels


def test_the_example_secrets_hold_only_placeholders() -> None:
    secrets = [d for d in documents() if d["kind"] == "Secret"]
    assert {s["metadata"]["name"] for s in secrets} == {SLACK_SECRET, DATABASE_SECRET}
    for s in secrets:
        assert "data" not in s
        assert s["stringData"]
        assert all("replace-me" in value for value in s["stringData"].values()), s["metadata"]["name"]


def test_the_service_account_is_bound_to_a_ram_role_through_rrsa(pod: dict) -> None:
    account = one("ServiceAccount")
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert account["metadata"]["annotations"]["pod-identity.alibabacloud.com/role-name"]
    namespace = one("Namespace")
    assert namespace["metadata"]["labels"]["pod-identity.alibabacloud.com/injection"] == "on"


def test_the_service_selects_the_pod_and_targets_its_port(container: dict) -> None:
    service = one("Service")["spec"]
    labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    assert [p["targetPort"] for p in service["ports"]] == ["http"]


# --- RAM policy -----------------------------------------------------------------------------------


def test_the_ram_policy_allows_exactly_the_actions_raybot_calls() -> None:
    policy = json.loads((ROOT / "deploy" / "ram-policy.json").read_text(encoding="utf-8"))
    assert policy["Version"] == "1"
    assert {s["Effect"] for s in policy["Statement"]} == {"Allow"}
    actions = [a for s in policy["Statement"] for a in s["Action"]]
    assert sorted(actions) == sorted(
        f"emr-serverless-spark:{name}"
        for name in ("GetRayCluster", "ListRayCluster", "UpdateRayCluster", "StartRayCluster", "StopRayCluster")
    )


# --- Dockerfile -----------------------------------------------------------------------------------


def stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined, comments dropped), one list per stage."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    logical = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    out: list[list[str]] = []
    for line in logical.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.upper().startswith("FROM "):
            out.append([])
        out[-1].append(line)
    return out


def instructions(stage: list[str], name: str) -> list[str]:
    return [line.split(None, 1)[1] for line in stage if line.split(None, 1)[0].upper() == name]


def test_the_image_is_built_in_two_stages_on_a_pinned_slim_python() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    for stage in all_stages:
        image = stage[0].split()[1]
        name, _, tag = image.partition(":")
        assert name == "python" and tag.startswith("3.11") and "slim" in tag, image
    assert "AS builder" in all_stages[0][0]
    final = all_stages[-1]
    assert any("--from=builder" in c for c in instructions(final, "COPY"))


def test_the_final_stage_runs_as_the_non_root_uid_with_a_healthcheck() -> None:
    final = stages()[-1]
    (user,) = instructions(final, "USER")
    assert user.split(":")[0] == str(UID)
    (healthcheck,) = instructions(final, "HEALTHCHECK")
    assert "/healthz" in healthcheck and "urllib" in healthcheck
    assert instructions(final, "EXPOSE") == ["3000"]
    assert instructions(final, "ENTRYPOINT") == ['["raybot"]']
    assert instructions(final, "CMD") == ['["serve"]']
    env = " ".join(instructions(final, "ENV"))
    assert "RAYBOT_LOG_FORMAT=json" in env and "PYTHONUNBUFFERED=1" in env


def test_the_image_decides_no_store() -> None:
    """Left alone the image is one process on a SQLite file under /data; it declares no VOLUME, so
    several replicas that set RAYBOT_DATABASE to PostgreSQL get no anonymous volume they do not use."""
    final = stages()[-1]
    env = " ".join(instructions(final, "ENV"))
    (database,) = re.findall(r"RAYBOT_DATABASE=(\S+)", env)
    assert database.startswith("/data/") and "://" not in database
    for stage in stages():
        assert instructions(stage, "VOLUME") == []


def test_the_final_stage_installs_no_compilers_and_fetches_nothing() -> None:
    final = stages()[-1]
    runs = " ".join(instructions(final, "RUN"))
    assert "apt-get install" not in runs and "apk add" not in runs
    assert not COMPILERS.search(runs)
    assert "--no-index" in runs and "--no-cache-dir" in runs


def test_the_build_context_is_an_allow_list() -> None:
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert rules[0] == "*"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "bot", "commands"}
