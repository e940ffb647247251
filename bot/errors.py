"""Typed errors raised by raybot's own flow (not the cloud's, not the grammar's).

Each is turned into a message for the person in one place: `bot.dispatch`.
"""

from __future__ import annotations


class Denied(Exception):
    """The policy said no; `reason` is written for the person who asked."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class UnknownCluster(Exception):
    """An alias that is not in the config."""

    def __init__(self, alias: str, known: list[str]) -> None:
        self.alias = alias
        self.known = known
        if known:
            super().__init__(f"unknown cluster {alias!r}; clusters you may use here: {', '.join(known)}")
        else:
            super().__init__(
                f"unknown cluster {alias!r}, and no cluster is yours to use in this channel "
                "(/ray whoami shows what your roles here allow)"
            )


class ClusterBusy(Exception):
    """Another change holds the cluster's lock longer than raybot waits."""

    def __init__(self, alias: str, user_id: str, summary: str, since: float) -> None:
        self.alias = alias
        self.user_id = user_id
        self.summary = summary
        self.since = since
        super().__init__(f"{alias} is being changed by {user_id} ({summary})")


class ActionRefused(Exception):
    """A button or approval step that cannot be taken now (already decided, expired, your own request …).

    `reason` is written for the person who clicked.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class MalformedPayload(Exception):
    """A field raybot needs from a Slack payload is missing or is not what Slack sends (forged, corrupted, stale).

    `what` is the thing the person used ("button", "editor", "request"), `field` the payload field, `problem` what
    is wrong with it (plain text for a person) and `shown` a short printable preview of the value, if any. None of
    it is trusted markup: `bot.dispatch` escapes it.
    """

    def __init__(self, what: str, field: str, problem: str, shown: str | None = None) -> None:
        self.what = what
        self.field = field
        self.problem = problem
        self.shown = shown
        super().__init__(f"{what}: {field} {problem}" + (f" ({shown})" if shown is not None else ""))


class OutcomeNotRecorded(Exception):
    """The cloud answered a change, and its outcome could not be written: the database did not answer.

    The change stays "sending"; the reconciler finds it once its call's deadline is well past, reads the
    cluster and tells the change's thread.
    """

    def __init__(self, alias: str, change_id: int, summary: str) -> None:
        self.alias = alias
        self.change_id = change_id
        self.summary = summary
        super().__init__(f"the outcome of change #{change_id} to {alias} could not be recorded")
