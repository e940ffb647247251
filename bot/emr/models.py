"""The Ray cluster as the EMR Serverless Spark API (2023-08-08) speaks it.

Field names are snake_case in Python and camelCase on the wire (aliases). Every
model keeps fields it does not know (`extra="allow"`), so a read-modify-write
sends back whatever the API returned inside the head and worker specs, including
fields added after this was written. Serialize with `wire()`: it leaves out what
was never set and keeps what was read.

Clusters as read are not checked against the documented constraints (the service
is the judge of what it returns, and raybot must still be able to show and fix a
cluster that breaks them); a body raybot is about to send is: see
`UpdateRayClusterRequest` and `spec_problems`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

MAX_WORKER_GROUPS = 50
NAME_MAX = 64
MEMORY_PATTERN = re.compile(r"^[1-9][0-9]*Gi$")


class WireModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    def wire(self) -> dict[str, Any]:
        """The JSON object to send: camelCase, only fields that were set, unknown fields kept."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


def _as_str(value: Any) -> Any:
    # The API types cpu as a string ("4"); people and YAML write 4 or 0.5.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, "g")
    return value


class ResourceSpec(WireModel):
    """Fields shared by the head and the worker groups."""

    queue_name: str | None = None
    cpu: str | None = None
    memory: str | None = None
    gpu_spec: str | None = None
    env: str | None = None
    ray_start_params: str | None = None
    display_release_version: str | None = None

    _cpu_str = field_validator("cpu", mode="before")(_as_str)


class GftConfig(WireModel):
    redis_url: str | None = None
    redis_username: str | None = None
    redis_password: str | None = Field(default=None, repr=False)


class HeadSpec(ResourceSpec):
    enable_auto_scaling: bool | None = None
    idle_timeout_seconds: int | None = None
    gft_enabled: bool | None = None
    gft_config: GftConfig | None = None


class WorkerGroup(ResourceSpec):
    group_name: str | None = None
    worker_type: str | None = None
    replica: int | None = None
    min_replica: int | None = None
    max_replica: int | None = None


class ClusterFields(WireModel):
    """The editable part of a cluster: exactly the fields of the UpdateRayCluster body."""

    name: str | None = None
    description: str | None = None
    display_release_version: str | None = None
    network_service_name: str | None = None
    extra_param: str | None = None
    volume_ids: list[str] | None = None
    head_spec: HeadSpec | None = None
    worker_spec: list[WorkerGroup] | None = None

    def group(self, name: str) -> WorkerGroup | None:
        """The worker group called `name`, or None."""
        return next((g for g in self.worker_spec or [] if g.group_name == name), None)

    def group_names(self) -> list[str]:
        return [g.group_name or "" for g in self.worker_spec or []]


@dataclass(frozen=True)
class SpecProblem:
    """One violated constraint; `path` names the field as on the wire (`workerSpec[g1].memory`)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def _resource_problems(prefix: str, spec: ResourceSpec) -> list[SpecProblem]:
    out = []
    if spec.cpu is not None:
        try:
            number = float(spec.cpu)
        except ValueError:
            number = float("nan")
        if not 0 < number < float("inf"):
            out.append(
                SpecProblem(f"{prefix}.cpu", f"cpu must be a positive number such as 4 or 0.5, not {spec.cpu!r}")
            )
    if spec.memory is not None and not MEMORY_PATTERN.match(spec.memory):
        out.append(
            SpecProblem(
                f"{prefix}.memory", f"memory must be a whole number of GiB written like 16Gi, not {spec.memory!r}"
            )
        )
    return out


def group_problems(prefix: str, group: WorkerGroup) -> list[SpecProblem]:
    """The documented constraints of one worker group."""
    out = []
    if group.group_name is None or not group.group_name.strip():
        out.append(SpecProblem(f"{prefix}.groupName", "every worker group needs a name"))
    for field in ("replica", "min_replica", "max_replica"):
        value = getattr(group, field)
        if value is not None and value < 1:
            wire = to_camel(field)
            out.append(SpecProblem(f"{prefix}.{wire}", f"{wire} must be at least 1, not {value}"))
    if group.min_replica is not None and group.max_replica is not None and group.min_replica > group.max_replica:
        out.append(
            SpecProblem(
                f"{prefix}.minReplica", f"minReplica {group.min_replica} is above maxReplica {group.max_replica}"
            )
        )
    return out + _resource_problems(prefix, group)


def spec_problems(fields: ClusterFields) -> list[SpecProblem]:
    """Every documented UpdateRayCluster constraint that `fields` violates, in field order."""
    out: list[SpecProblem] = []
    if fields.name is not None and not 1 <= len(fields.name) <= NAME_MAX:
        out.append(SpecProblem("name", f"name must be 1 to {NAME_MAX} characters long, not {len(fields.name)}"))
    if fields.extra_param:
        try:
            json.loads(fields.extra_param)
        except ValueError as exc:
            out.append(SpecProblem("extraParam", f"extraParam must be a JSON document: {exc}"))
    if fields.head_spec is not None:
        out += _resource_problems("headSpec", fields.head_spec)
        idle = fields.head_spec.idle_timeout_seconds
        if idle is not None and idle < 0:
            out.append(
                SpecProblem("headSpec.idleTimeoutSeconds", f"idleTimeoutSeconds must not be negative, not {idle}")
            )
    groups = fields.worker_spec or []
    if len(groups) > MAX_WORKER_GROUPS:
        out.append(
            SpecProblem("workerSpec", f"at most {MAX_WORKER_GROUPS} worker groups are allowed, not {len(groups)}")
        )
    seen: set[str] = set()
    for index, group in enumerate(groups):
        label = group.group_name or str(index)
        out += group_problems(f"workerSpec[{label}]", group)
        if group.group_name:
            if group.group_name in seen:
                out.append(
                    SpecProblem(f"workerSpec[{label}].groupName", f"group name {group.group_name!r} is used twice")
                )
            seen.add(group.group_name)
    return out


class UpdateRayClusterRequest(ClusterFields):
    """The body of UpdateRayCluster; constructing one checks every documented constraint."""

    @model_validator(mode="after")
    def _documented_constraints(self) -> UpdateRayClusterRequest:
        problems = spec_problems(self)
        if problems:
            raise ValueError("; ".join(str(p) for p in problems))
        return self


class Instance(WireModel):
    instance_id: str | None = None
    type: str | None = None
    phase: str | None = None
    reason: str | None = None
    message: str | None = None
    container_state: str | None = None
    container_state_reason: str | None = None
    container_state_message: str | None = None
    container_exit_code: int | None = None
    create_time: int | None = None
    start_time: int | None = None


class RayCluster(ClusterFields):
    """A cluster as GetRayCluster (and, with fewer fields, ListRayCluster) returns it."""

    cluster_id: str | None = None
    instance_id: str | None = None
    state: str | None = None
    message: str | None = None
    modified: bool | None = None
    creator: str | None = None
    creator_name: str | None = None
    modifier: str | None = None
    modifier_name: str | None = None
    user_id: str | None = None
    create_time: int | None = None
    modified_time: int | None = None
    start_time: int | None = None
    dashboard_url: str | None = None
    grpc_endpoint: str | None = None
    job_url: str | None = None
    job_url_inner: str | None = None
    submit_token: str | None = Field(default=None, repr=False)
    instances: list[Instance] | None = None
    request_id: str | None = None

    def editable(self) -> dict[str, Any]:
        """The UpdateRayCluster fields exactly as read (wire form), absent ones left out.

        Unknown top-level fields are not included: at the top level of
        GetRayCluster they are read-only attributes (ids, timestamps, endpoints),
        not request fields. Unknown fields inside headSpec and workerSpec are kept.
        Fields read as null are left out, as the official SDK leaves out unset
        fields: sending an explicit null could read as "clear this field".
        """
        wire = _without_nulls(self.wire())
        names = {f.alias for f in ClusterFields.model_fields.values()}
        return {k: v for k, v in wire.items() if k in names}


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


class ListRayClusterResponse(WireModel):
    ray_clusters: list[RayCluster] = Field(default_factory=list)
    request_id: str | None = None
    total_count: int | None = None
    page_num: int | None = None
    page_size: int | None = None


class ActionResponse(WireModel):
    """The answer of UpdateRayCluster, StartRayCluster and StopRayCluster."""

    request_id: str | None = None
    cluster_id: str | None = None


def dumps_body(body: dict[str, Any]) -> bytes:
    """The one serialization of a request body: compact, UTF-8, keys sorted as the official SDK sends them."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")
