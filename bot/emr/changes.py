"""Read-modify-write, the pure core: a cluster as read plus a change gives the
complete UpdateRayCluster body and a human diff.

Every body built here holds the complete workerSpec (the API does not document
whether it merges or replaces the list), and every field not being changed is
sent exactly as it was read.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bot.emr.models import UpdateRayClusterRequest, WorkerGroup


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


class ReplaceGroup(_Change):
    """Replace the group called `group` with `spec` (which may rename it); unknown fields of the old one are kept."""

    kind: Literal["replace_group"] = "replace_group"
    group: str
    spec: WorkerGroup


class AddGroup(_Change):
    kind: Literal["add_group"] = "add_group"
    spec: WorkerGroup


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

    The message is written for the person who asked for the change.
    """
