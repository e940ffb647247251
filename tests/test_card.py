"""The root status message of a change (blocks.change_card): a pure function of its row, for every state and every
combination of revert, undo and approval; it fits Slack's limits and escapes whatever people or the cloud wrote."""

from __future__ import annotations

from typing import Any

import pytest

from bot.change_state import REVERT_STATES, STATES
from bot.emr.changes import DiffEntry
from bot.slack import blocks, limits
from bot.slack.blocks import APPROVE_ACTION, CANCEL_REVERT_ACTION, REJECT_ACTION
from bot.store import ChangeRecord

NOW = 1_800_000_000.0
DATE = "<!date^1800000000^{date_short_pretty} {time}|2027-01-15 08:00 UTC>"
LATER = "<!date^1800003600^{date_short_pretty} {time}|2027-01-15 09:00 UTC>"
EVIL = "<!channel> <@U0BOSS> *x* `y` &amp; <https://evil.example|docs>\n> quote"
RESIZE = [DiffEntry(path="workerSpec[WorkerGroup1].replica", before=2, after=3).model_dump(mode="json")]


def change(**fields: Any) -> ChangeRecord:
    values: dict[str, Any] = {
        "id": 7,
        "created_at": NOW,
        "updated_at": NOW,
        "version": 1,
        "state": "applying",
        "team_id": "T0TEAM",
        "user_id": "U0ONCALL1",
        "channel_id": "C0ONCALL01",
        "thread_ts": None,
        "root_ts": "1800000000.000100",
        "alias": "prod",
        "workspace": "w-1",
        "cluster_id": "ray-1",
        "region": "cn-hangzhou",
        "action": "resize",
        "summary": "resize WorkerGroup1=3",
        "spec_before": None,
        "body": None,
        "diff": RESIZE,
    }
    return ChangeRecord(**(values | fields))


def buttons(message: blocks.SlackMessage) -> list[str]:
    return [e["action_id"] for b in message.blocks if b["type"] == "actions" for e in b["elements"]]


def fits(message: blocks.SlackMessage) -> None:
    assert limits.check_message_limits(message.blocks, message.text) == []
    assert len(message.text) <= blocks.FALLBACK_TEXT_MAX


HEAD = "<@U0ONCALL1> · *prod* · WorkerGroup1: 2 → 3 replicas"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"state": "applying"}, f"⏳ {HEAD} · applying"),
        ({"state": "sending"}, f"⏳ {HEAD} · applying"),
        ({"state": "applied"}, f"⏳ {HEAD} · accepted, applying"),
        (
            {"state": "applied", "last_summary": "Running · WorkerGroup1 2/3"},
            f"⏳ {HEAD} · accepted, applying: Running · WorkerGroup1 2/3",
        ),
        (
            {"state": "unknown"},
            f"❔ {HEAD} · outcome being checked (the cloud call may or may not have been applied)",
        ),
        (
            {"state": "settled", "last_summary": "Running · WorkerGroup1 3/3"},
            f"✅ {HEAD} · done: Running · WorkerGroup1 3/3",
        ),
        (
            {"state": "not_settled", "last_summary": "Running · WorkerGroup1 2/3"},
            f"❔ {HEAD} · accepted, not settled in time: Running · WorkerGroup1 2/3; "
            "`/ray show prod` has the state now",
        ),
        (
            # A change once in doubt keeps that doubt's message after it took effect: running out of time is still
            # only that, not a supersession.
            {"state": "not_settled", "error_message": "ServiceUnavailable", "last_summary": "Running"},
            f"❔ {HEAD} · accepted, not settled in time: Running; `/ray show prod` has the state now",
        ),
        (
            {"state": "not_settled", "error_message": "superseded by change #9 before it settled"},
            f"⏭️ {HEAD} · accepted, then superseded by change #9 before it settled; `/ray show prod` has the state now",
        ),
        ({"state": "broken", "error_message": None}, f"❌ {HEAD} · failed: the cluster ended in `Error`"),
        (
            {"state": "failed", "error_code": "Throttling.User", "error_message": "Request was denied."},
            f"❌ {HEAD} · failed: `Throttling.User` Request was denied.",
        ),
        ({"state": "failed", "error_message": "it did not take effect"}, f"❌ {HEAD} · failed: it did not take effect"),
        (
            {"state": "cancelled", "error_message": "raybot stopped before sending it"},
            f"❌ {HEAD} · failed: nothing was sent (raybot stopped before sending it)",
        ),
        (
            {"state": "rejected", "decided_by": "U0LEAD"},
            f"🚫 {HEAD} · rejected by <@U0LEAD>; nothing was changed",
        ),
        (
            {"state": "rejected", "decided_by": "U0ONCALL1"},
            f"🚫 {HEAD} · withdrawn by <@U0ONCALL1>; nothing was changed",
        ),
        (
            {"state": "expired", "expires_at": NOW},
            f"⌛ {HEAD} · expired {DATE} before anyone approved it; nothing was changed",
        ),
        (
            {"state": "void", "error_message": "the cluster changed since the request"},
            f"🚫 {HEAD} · not applied: the cluster changed since the request; nothing was sent",
        ),
        (
            {"state": "awaiting_approval", "approval_reason": "replica 30 above 20", "expires_at": NOW},
            f"🕒 {HEAD} · awaiting approval by someone else who may approve here",
        ),
        (
            {"state": "sending", "decided_by": "U0LEAD"},
            f"⏳ {HEAD} · applying · approved by <@U0LEAD>",
        ),
        (
            {"state": "settled", "decided_by": "U0LEAD"},
            f"✅ {HEAD} · done · approved by <@U0LEAD>",
        ),
    ],
)
def test_each_state_says_what_it_is(fields: dict[str, Any], expected: str) -> None:
    message = blocks.change_card(change(**fields))
    assert message.text == expected
    assert message.blocks[0]["text"]["text"] == expected
    fits(message)


def test_only_done_is_a_check_mark_and_nothing_uncertain_is_a_cross() -> None:
    marks = {state: blocks.change_card(change(state=state)).text.split(" ", 1)[0] for state in STATES}
    assert [s for s, m in marks.items() if m == "✅"] == ["settled"]
    assert marks["unknown"] == marks["not_settled"] == "❔"
    assert marks["applied"] == "⏳"  # accepted by the cloud, still applying: not done


def test_awaiting_approval_offers_approve_and_reject_with_why_and_when() -> None:
    message = blocks.change_card(
        change(state="awaiting_approval", approval_reason="replica 30 above 20", expires_at=NOW)
    )
    assert buttons(message) == [APPROVE_ACTION, REJECT_ACTION]
    values = {e["value"] for b in message.blocks if b["type"] == "actions" for e in b["elements"]}
    assert values == {"7"}
    context = message.blocks[1]["elements"][0]["text"]
    assert context == f"Why: replica 30 above 20. The request expires {DATE}."
    for state in ("applying", "rejected", "expired", "void", "settled"):
        assert APPROVE_ACTION not in buttons(blocks.change_card(change(state=state, expires_at=NOW)))


TEMPORARY = {"duration_seconds": 3600, "summary": "resize WorkerGroup1=3 for 1h"}
TEMP_HEAD = f"{HEAD}, for 1 h"


@pytest.mark.parametrize(
    ("fields", "expected", "keep"),
    [
        ({"state": "applying"}, f"⏳ {TEMP_HEAD} · applying · ⏲️ reverts 1 h after it takes effect", True),
        ({"state": "unknown"}, None, True),
        (
            {"state": "settled", "revert_state": "scheduled", "revert_at": NOW + 3600},
            f"✅ {TEMP_HEAD} · done · ⏲️ reverts at {LATER}",
            True,
        ),
        ({"state": "settled", "revert_state": "running"}, f"✅ {TEMP_HEAD} · done · ⏲️ reverting now", False),
        (
            {"state": "settled", "revert_state": "cancelled", "kept_by": "U0LEAD"},
            f"✅ {TEMP_HEAD} · done · ⏲️ kept by <@U0LEAD>",
            False,
        ),
        (
            {"state": "settled", "revert_state": "done", "revert_note": "nothing to revert"},
            f"✅ {TEMP_HEAD} · done · ⏲️ reverted (nothing to revert)",
            False,
        ),
        (
            {"state": "settled", "revert_state": "failed", "revert_note": "the cluster changed since"},
            f"✅ {TEMP_HEAD} · done · ⏲️ the automatic revert did not run: the cluster changed since",
            False,
        ),
        (
            {
                "state": "settled",
                "revert_state": "done",
                "revert_note": "change #9",
                "undone_by": "U0RAYBOT",
                "undone_by_change": 9,
                "undone_at": NOW + 3600,
            },
            f"↩️ {TEMP_HEAD} · reverted automatically {LATER} (change #9)",
            False,
        ),
        (
            {
                "state": "settled",
                "revert_state": "cancelled",
                "revert_note": "undone by change #8",
                "undone_by": "U0LEAD",
                "undone_by_change": 8,
                "undone_at": NOW,
            },
            f"↩️ {TEMP_HEAD} · undone by <@U0LEAD> {DATE} (change #8)",
            False,
        ),
        ({"state": "failed", "error_message": "no"}, f"❌ {TEMP_HEAD} · failed: no", False),
    ],
)
def test_a_temporary_change_says_when_it_reverts_or_who_kept_it(
    fields: dict[str, Any], expected: str | None, keep: bool
) -> None:
    message = blocks.change_card(change(**TEMPORARY, **fields))
    if expected is not None:
        assert message.text == expected
    assert (CANCEL_REVERT_ACTION in buttons(message)) is keep
    fits(message)


def test_undone_change_says_by_whom_and_keeps_no_buttons() -> None:
    message = blocks.change_card(
        change(state="settled", undone_by="U0LEAD", undone_by_change=8, undone_at=NOW, last_summary="Running")
    )
    assert message.text == f"↩️ {HEAD} · undone by <@U0LEAD> {DATE} (change #8)"
    assert buttons(message) == []


def test_an_undo_and_a_revert_say_what_they_put_back() -> None:
    back = [DiffEntry(path="workerSpec[WorkerGroup1].replica", before=3, after=2).model_dump(mode="json")]
    undo = blocks.change_card(change(id=8, action="undo", undo_of=7, diff=back, state="settled"))
    assert undo.text == "✅ <@U0ONCALL1> · *prod* · undo of #7: WorkerGroup1: 3 → 2 replicas · done"
    revert = blocks.change_card(change(id=9, action="revert", undo_of=7, diff=back, user_id="U0RAYBOT"))
    assert revert.text == "⏳ <@U0RAYBOT> · *prod* · automatic revert of #7: WorkerGroup1: 3 → 2 replicas · applying"


def test_start_and_stop_are_said_in_words_and_an_empty_diff_falls_back_to_what_was_asked() -> None:
    assert (
        blocks.change_card(change(action="stop", diff=[])).text
        == "⏳ <@U0ONCALL1> · *prod* · stop the cluster · applying"
    )
    assert "· resize WorkerGroup1=3 ·" in blocks.change_card(change(diff=[])).text


def test_the_card_is_a_pure_function_of_the_row() -> None:
    record = change(state="settled", duration_seconds=3600, revert_state="scheduled", revert_at=NOW)
    assert blocks.change_card(record) == blocks.change_card(record.model_copy())


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("revert", [None, *REVERT_STATES])
def test_every_state_and_revert_escapes_hostile_text_and_fits(state: str, revert: str | None) -> None:
    long = EVIL * 400
    record = change(
        state=state,
        alias=long,
        summary=long,
        diff=[DiffEntry(path=f"workerSpec[{EVIL}{i}].replica", before=EVIL, after=i).model_dump() for i in range(60)],
        error_code=long,
        error_message=long,
        last_summary=long,
        approval_reason="x" * 5000,
        expires_at=NOW,
        duration_seconds=3600,
        revert_state=revert,
        revert_at=NOW,
        revert_note=long,
        kept_by="U0LEAD" if revert == "cancelled" else None,
    )
    message = blocks.change_card(record)
    fits(message)
    shown = message.text + "".join(str(b) for b in message.blocks)
    assert "<!channel>" not in shown and "<@U0BOSS>" not in shown and "<https://evil" not in shown
    assert "&lt;!channel&gt;" in message.text
    headline = message.blocks[0]["text"]["text"]
    assert "\n" not in headline  # a line break in a name cannot start a fake line of raybot's


def test_a_user_id_that_is_not_one_is_refused() -> None:
    with pytest.raises(ValueError, match="not a Slack"):
        blocks.change_card(change(decided_by="<!here>", state="rejected"))


def test_a_request_names_who_may_approve_it() -> None:
    record = change(state="awaiting_approval", approval_reason="replica 30 above 20", expires_at=NOW)
    card = blocks.change_card(record, approvers="<@U0LEAD> or members of <!subteam^S0LEADS>")
    assert card.text.endswith("· awaiting approval by <@U0LEAD> or members of <!subteam^S0LEADS>")
