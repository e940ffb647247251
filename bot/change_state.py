"""The life of a change as a state machine: its states, the moves allowed between them, and what each means.

Pure: no I/O. The store moves a change only along `ALLOWED` and only by compare-and-set, so a double
click, a Slack redelivery, a second process or a racing scheduler can move a change at most once.

    awaiting_approval ─┬─> applying ──> sending ─┬─> applied ─┬─> settled
                       ├─> rejected              │            ├─> not_settled
                       ├─> expired               │            └─> broken
                       └─> void                  ├─> failed
               applying ─> cancelled             └─> unknown ─┬─> applied
                                                              └─> failed

- `applying`: recorded (under the cluster's lock), nothing sent yet. The root status message is posted
  after this row exists, so no root message is ever without a row that a restart will answer.
- `sending`: the cloud call may be in flight (`call_deadline_at` says until when it can be).
- `unknown`: the call may or may not have been applied (timeout, transport error, 5xx, a lost answer,
  the process died or was drained). The reconciler reads the cluster and decides applied or failed.
- `applied`: the cloud accepted it; raybot follows the cluster until it settles (or not, or Error).

A temporary change has a second, independent track for its automatic revert (`revert_state`).
"""

from __future__ import annotations

from typing import Literal, get_args

State = Literal[
    "awaiting_approval",
    "applying",
    "sending",
    "unknown",
    "applied",
    "settled",
    "not_settled",
    "broken",
    "failed",
    "cancelled",
    "rejected",
    "expired",
    "void",
]
STATES: tuple[str, ...] = get_args(State)

ALLOWED: dict[str, frozenset[str]] = {
    "awaiting_approval": frozenset({"applying", "rejected", "expired", "void"}),
    "applying": frozenset({"sending", "cancelled"}),
    "sending": frozenset({"applied", "failed", "unknown"}),
    "unknown": frozenset({"applied", "failed"}),
    "applied": frozenset({"settled", "not_settled", "broken"}),
}

# The cloud accepted the change (it may still be settling).
TOOK_EFFECT = frozenset({"applied", "settled", "not_settled", "broken"})
# Nothing more will happen to the change itself.
FINAL = frozenset({"settled", "not_settled", "broken", "failed", "cancelled", "rejected", "expired", "void"})
# A process is working on it right now: if that process is gone, the reconciler takes over.
IN_FLIGHT = frozenset({"applying", "sending"})
# Counts as a change of the cluster that a later Undo must not repeat.
HOLDS_CLUSTER = frozenset({"applying", "sending", "unknown"}) | TOOK_EFFECT

RevertState = Literal["scheduled", "running", "cancelled", "done", "failed"]
REVERT_STATES: tuple[str, ...] = get_args(RevertState)
# The revert track: "scheduled" is claimed as "running" by the one worker that reverts; a failure puts it
# back to "scheduled" later (backoff) or ends it "failed"; Keep it and Undo end it "cancelled".
REVERT_ALLOWED: dict[str, frozenset[str]] = {
    "scheduled": frozenset({"scheduled", "running", "cancelled", "failed"}),
    "running": frozenset({"scheduled", "done", "failed", "cancelled"}),
}


class TransitionError(ValueError):
    """A move the state machine does not have (a bug in the caller, not a race: races just lose the CAS)."""


def check_move(current: str | tuple[str, ...], to: str, allowed: dict[str, frozenset[str]] = ALLOWED) -> None:
    """Raise TransitionError unless `to` may follow each state of `current`."""
    for state in (current,) if isinstance(current, str) else current:
        if to not in allowed.get(state, frozenset()):
            raise TransitionError(f"a change cannot move from {state} to {to}")


def outcome(state: str) -> str:
    """The coarse outcome of a state, as the audit log and metrics count it."""
    if state in TOOK_EFFECT:
        return "done"
    if state in ("failed", "cancelled"):
        return "failed"
    if state == "unknown":
        return "unknown"
    if state in ("rejected", "expired", "void"):
        return "not approved"
    return "pending"


def backoff(attempt: int, *, first: float = 30.0, cap: float = 900.0) -> float:
    """Seconds before retry number `attempt` (1-based) of failed background work: 30 s, 60 s, … capped."""
    return min(cap, first * 2 ** max(0, attempt - 1))
