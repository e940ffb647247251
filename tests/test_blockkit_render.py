"""The sandbox's Block Kit renderer (bot/sandbox/web/blockkit.js), run in headless Chromium on the messages and
views raybot actually sends, built here by bot.slack.blocks and bot.slack.modals from the seed clusters.

What a person would read is checked as text; escaping is checked as structure (no element that markup in a
cluster name or description could have created); the state the renderer reads back from its inputs is handed to
raybot's own parsers, which must accept it as they accept Slack's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.emr.changes import DiffEntry
from bot.emr.errors import EmrError
from bot.emr.models import RayCluster
from bot.slack import blocks, modals
from bot.slack import quick_resize as quick
from bot.store import ChangeRecord
from tests.harness import CHROMIUM, CHROMIUM_ARGS

BLOCKKIT_JS = Path(__file__).resolve().parents[1] / "bot" / "sandbox" / "web" / "blockkit.js"
SEED = json.loads((Path(__file__).resolve().parents[1] / "bot" / "sandbox" / "seed_clusters.json").read_text())
playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed (/usr/bin/chromium); .ci/browser-setup installs it",
)
expect = playwright_api.expect

# The names the page knows, and a recorder of what the renderer reports as a person's actions.
PAGE_SETUP = """
window.ACTIONS = [];
window.CTX = {
  users: {U0ONCALL1: {name: "Olivia (on-call)"}, U0RAYBOT: {name: "raybot"}},
  channels: {C0ONCALL01: {name: "incident"}},
  usergroups: {S0ONCALL: {handle: "oncall"}},
  now: Date.UTC(2024, 10, 26, 12, 0, 0),
  onAction: (action) => window.ACTIONS.push(action),
};
"""


def cluster(name: str) -> RayCluster:
    return RayCluster.model_validate(next(c for c in SEED if c["name"] == name))


@pytest.fixture(scope="module")
def page():
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(5000)
        page.set_content('<!doctype html><html><body><div id="root"></div></body></html>')
        page.add_script_tag(path=str(BLOCKKIT_JS))
        page.add_script_tag(content=PAGE_SETUP)
        yield page
        browser.close()


@pytest.fixture(autouse=True)
def empty(page):
    page.evaluate("() => { window.ACTIONS = []; document.getElementById('root').replaceChildren(); }")


def show_blocks(page, message_blocks: list[dict]):
    page.evaluate(
        "(blocks) => document.getElementById('root').replaceChildren(BlockKit.renderBlocks(blocks, window.CTX))",
        message_blocks,
    )
    return page.locator("#root")


def show_view(page, view: dict):
    page.evaluate(
        "(view) => document.getElementById('root').replaceChildren(BlockKit.renderView(view, window.CTX))", view
    )
    return page.locator("#root")


def read_state(page) -> dict:
    return page.evaluate("() => BlockKit.readState(document.getElementById('root'))")


def text(page) -> str:
    return page.evaluate("() => document.getElementById('root').textContent")


def count(page, selector: str) -> int:
    return page.locator(f"#root {selector}").count()


# --- messages ---------------------------------------------------------------------------------------------------------


def test_change_succeeded_shows_ids_diff_and_undo(page):
    diff = [DiffEntry(path="workerSpec[WorkerGroup1].replica", before=2, after=3)]
    message = blocks.change_succeeded("prod", "ray-uiulpgow9xljimm1", "1EEB1317-C185", diff, change_id=7)
    show_blocks(page, message.blocks)
    shown = text(page)
    assert (
        "📨 prod change accepted, applying: WorkerGroup1: 2 → 3 replicas\n"
        "clusterId ray-uiulpgow9xljimm1 · requestId 1EEB1317-C185" in shown
    )
    assert "workerSpec" not in shown
    assert page.locator("#root .bk-code").all_text_contents() == ["ray-uiulpgow9xljimm1", "1EEB1317-C185"]
    assert page.locator("#root .bk-button").all_text_contents() == ["Undo"]

    page.locator("#root .bk-button", has_text="Undo").click()
    [action] = page.evaluate("() => window.ACTIONS")
    assert action == {
        "type": "button",
        "action_id": blocks.UNDO_ACTION,
        "block_id": "b1",  # raybot's actions block has no block_id; the renderer names it, as Slack does
        "text": {"type": "plain_text", "text": "Undo"},
        "value": "7",
    }


def test_cluster_detail_of_the_50_group_cluster(page):
    message = blocks.cluster_detail("fleet", cluster("fleet-50"))
    show_blocks(page, message.blocks)
    shown = text(page)
    assert "fleet · fleet-50" in shown and "State Running" in shown
    assert "Worker groups (50)" in shown
    assert "group-01" in shown and "group-50" in shown
    fields = page.locator("#root .bk-field").all_text_contents()
    assert [f.split("\n")[0] for f in fields] == ["Queue", "CPU", "Memory", "GPU", "Autoscaling", "Release"]
    # One line per group in plain text, not a preformatted table a narrow column would cut off.
    assert count(page, ".bk-pre") == 0 and count(page, ".bk-block") == len(message.blocks)


def test_cluster_list_with_a_failed_read(page):
    rows = [
        ("prod", cluster("prod")),
        ("train-gpu", cluster("train-gpu")),
        (
            "ghost",
            EmrError(
                action="GetRayCluster",
                code="RayClusterNotFound",
                message="The cluster does not exist.",
                request_id="REQ-1234",
            ),
        ),
    ]
    show_blocks(page, blocks.cluster_list(rows).blocks)
    shown = text(page)
    assert "Ray clusters visible here (3)" in shown
    assert "a10-small: 2 replicas (min 1, max 4)" in shown
    assert "ghost ❌ could not be read: RayClusterNotFound · RequestId REQ-1234" in shown
    assert page.locator("#root .bk-bold").first.text_content() == "Ray clusters visible here"


def test_denial_reason_renders_channel_and_user_group(page):
    show_blocks(
        page,
        blocks.denied("<#C0ONCALL01> grants resize on prod only to members of <!subteam^S0ONCALL>").blocks,
    )
    assert text(page) == "🚫 Not allowed: #incident grants resize on prod only to members of @oncall"
    assert page.locator("#root .bk-channel").get_attribute("data-channel") == "C0ONCALL01"
    assert page.locator("#root .bk-usergroup").get_attribute("data-usergroup") == "S0ONCALL"


def test_change_failed_shows_code_message_and_request_id(page):
    message = blocks.change_failed("prod", "Throttling.User", "Request was denied due to user flow control.", "RID-9")
    show_blocks(page, message.blocks)
    assert text(page) == (
        "❌ The change to prod failed. The cloud refused it: nothing changed on the cluster. "
        "The service was throttling requests; try again in a minute.\n"
        "Code Throttling.User · RequestId RID-9\n"
        "Message Request was denied due to user flow control."
    )


def test_approval_request_buttons_keep_their_style(page):
    diff = [DiffEntry(path="workerSpec[a10-small].replica", before=2, after=30).model_dump(mode="json")]
    record = ChangeRecord(
        id=5,
        created_at=0.0,
        updated_at=0.0,
        version=0,
        state="awaiting_approval",
        team_id="T0TEAM",
        user_id="U0ONCALL1",
        channel_id="C0ONCALL01",
        thread_ts=None,
        root_ts="1.000001",
        alias="train-gpu",
        workspace="w-1",
        cluster_id="ray-1",
        region="cn-hangzhou",
        action="resize",
        summary="resize a10-small=30",
        spec_before=None,
        body=None,
        diff=diff,
        approval_reason="above 20",
        expires_at=1732622400.0,
    )
    show_blocks(page, blocks.change_card(record).blocks)
    shown = text(page)
    assert "🕒 @Olivia (on-call) · train-gpu · a10-small: 2 → 30 replicas · awaiting approval" in shown
    # <!date^…|fallback> is shown as a date, its fallback kept as the tooltip; never as raw markup.
    assert "<!date" not in shown and "The request expires" in shown
    assert page.locator("#root .bk-date").get_attribute("title") == "2024-11-26 12:00 UTC"
    assert page.locator("#root .bk-button.bk-primary").text_content() == "Approve"
    assert page.locator("#root .bk-button.bk-danger").text_content() == "Reject"


def test_what_a_cluster_or_a_person_wrote_is_shown_as_text_never_as_markup(page):
    evil = cluster("prod").model_copy(
        update={
            "name": "prod <!channel> <@U0BOSS> *bold*",
            "description": '<img src=x onerror="window.PWNED=1"> & <https://evil.example|docs> <script>x()</script>',
        }
    )
    show_blocks(page, blocks.cluster_detail("prod", evil).blocks)
    shown = text(page)
    assert "prod <!channel> <@U0BOSS>" in shown
    assert '<img src=x onerror="window.PWNED=1"> & <https://evil.example|docs> <script>x()</script>' in shown
    for selector in ("img", "script", "a", ".bk-broadcast", ".bk-mention", "[onerror]"):
        assert count(page, selector) == 0, selector
    assert page.evaluate("() => window.PWNED") is None
    # plain_text (a modal title, a button) is not parsed at all: markup in it is text too.
    show_blocks(page, [{"type": "header", "text": {"type": "plain_text", "text": "<b>hi</b> &lt;x&gt;"}}])
    assert text(page) == "<b>hi</b> &lt;x&gt;" and count(page, "b") == 0


def test_mrkdwn_formatting(page):
    source = (
        "*bold* _italic_ ~gone~ `a <b> c` <@U0ONCALL1> <@U0NOBODY> <#C0ONCALL01|ops> <!subteam^S0ONCALL> "
        "<!here> <https://example.com/x?a=1&amp;b=2|the docs> <javascript:alert(1)|click> a*b*c 3 &lt; 4 &amp;&amp; "
        "&amp;lt; :warning:\n```\nline <1>\n  &amp; two\n```\nafter"
    )
    page.evaluate("(s) => document.getElementById('root').replaceChildren(BlockKit.mrkdwn(s, window.CTX))", source)
    assert page.locator("#root .bk-bold").text_content() == "bold"
    assert page.locator("#root .bk-italic").text_content() == "italic"
    assert page.locator("#root .bk-strike").text_content() == "gone"
    assert page.locator("#root .bk-code").text_content() == "a <b> c"
    assert page.locator("#root .bk-mention").all_text_contents() == [
        "@Olivia (on-call)",
        "@U0NOBODY",
        "@oncall",
        "@here",
    ]
    assert page.locator("#root .bk-channel").text_content() == "#ops"
    link = page.locator("#root a")
    assert link.count() == 1 and link.get_attribute("href") == "https://example.com/x?a=1&b=2"
    assert link.text_content() == "the docs" and link.get_attribute("rel") == "noopener noreferrer"
    assert page.locator("#root .bk-pre").text_content() == "line <1>\n  & two"
    shown = text(page)
    assert "click" in shown and "a*b*c" in shown and "3 < 4 && &lt; ⚠️" in shown and shown.endswith("after")


# --- modals -----------------------------------------------------------------------------------------------------------


def fleet_draft() -> modals.Draft:
    return modals.new_draft("fleet", cluster("fleet-50"), channel_id="C0ONCALL01", thread_ts=None, user_id="U0ONCALL1")


def test_overview_of_the_50_group_cluster_renders_every_input_and_reads_back_as_slack_sends(page):
    draft = fleet_draft()
    view = modals.overview_view(draft)
    view["id"] = "V0OVERVIEW"
    show_view(page, view)
    assert page.locator("#root .bk-modal-title").text_content() == "Edit fleet"
    assert page.locator("#root .bk-modal-submit").text_content() == "Review"
    assert page.locator("#root .bk-modal-close").text_content() == "Cancel"
    assert page.locator("#root .bk-header").all_text_contents() == [
        "Cluster",
        "Head",
        "Worker groups (50 of at most 50)",
    ]
    assert count(page, ".bk-input") == sum(b["type"] == "input" for b in view["blocks"])
    assert count(page, "textarea.bk-textarea") == 1  # the description is multiline
    assert count(page, "input.bk-number-input") == 1  # idle timeout
    group_options = page.locator('#root select[data-action-id="groups"] option').all_text_contents()
    assert group_options[0] == "Choose a group to edit" and group_options[1] == "group-01"
    assert "group-50" in group_options and "Add a new group" not in group_options  # 50 is the most there may be
    assert page.locator('#root select[data-action-id="head.autoscaling"]').evaluate(
        "(s) => s.options[s.selectedIndex].text"
    ) == ("On" if cluster("fleet-50").head_spec.enable_auto_scaling else "Off")
    assert page.evaluate("() => BlockKit.validate(document.getElementById('root'))") == {}

    values = read_state(page)
    assert values["name"] == {"name": {"type": "plain_text_input", "value": "fleet-50"}}
    assert values[modals.BLOCK_GROUPS] == {modals.ACTION_EDIT_GROUP: {"type": "static_select", "selected_option": None}}
    # raybot's parser reads the untouched form as "nothing changed".
    result = modals.parse_overview(values, draft)
    assert result.ok and result.edited == draft.edited


def test_picking_a_group_in_a_dispatch_select_reports_the_option(page):
    view = modals.overview_view(fleet_draft())
    show_view(page, view)
    page.locator('#root select[data-action-id="groups"]').select_option(label="group-07")
    [action] = page.evaluate("() => window.ACTIONS")
    assert action["type"] == "static_select" and action["block_id"] == modals.BLOCK_GROUPS
    assert action["selected_option"] == {
        "text": {"type": "plain_text", "text": "group-07", "emoji": True},
        "value": "6",
    }


def test_a_select_with_a_confirm_asks_first(page):
    show_view(page, modals.overview_view(fleet_draft()))
    page.locator(f'#root select[data-action-id="{modals.ACTION_REMOVE_GROUP}"]').select_option(label="group-02")
    dialog = page.locator(".bk-confirm")
    expect(dialog).to_contain_text("Remove this group?")
    dialog.locator(".bk-confirm-deny").click()
    assert page.evaluate("() => window.ACTIONS") == []
    assert page.locator(f'#root select[data-action-id="{modals.ACTION_REMOVE_GROUP}"]').input_value() == ""

    page.locator(f'#root select[data-action-id="{modals.ACTION_REMOVE_GROUP}"]').select_option(label="group-02")
    page.locator(".bk-confirm .bk-confirm-ok").click()
    [action] = page.evaluate("() => window.ACTIONS")
    assert action["action_id"] == modals.ACTION_REMOVE_GROUP and action["selected_option"]["value"] == "1"


def test_group_editor_round_trips_through_raybots_parser(page):
    draft = fleet_draft()
    show_view(page, modals.group_view(draft, "group-07"))
    assert "Worker group group-07 of fleet." in text(page)
    replicas = page.locator('#root [data-block-id="group.replica"] input')
    assert replicas.input_value() == "2"
    remove = page.locator('#root [data-block-id="group.remove"] input[type="checkbox"]')
    assert remove.count() == 1 and not remove.is_checked()
    assert "Its replicas stop when the change is applied" in text(page)

    untouched = read_state(page)
    assert untouched["group.remove"] == {"group.remove": {"type": "checkboxes", "selected_options": []}}
    assert modals.parse_group(untouched, draft, "group-07").edited == draft.edited

    replicas.fill("4")
    changed = modals.parse_group(read_state(page), draft, "group-07")
    assert changed.ok and [g["replica"] for g in changed.edited["workerSpec"] if g["groupName"] == "group-07"] == [4]

    remove.check()
    assert modals.parse_group(read_state(page), draft, "group-07").removed


def test_client_side_checks_and_inline_errors(page):
    show_view(page, modals.group_view(fleet_draft(), None))  # a new group: name, type and replicas are required
    page.locator('#root [data-block-id="group.name"] input').fill("")
    page.locator('#root [data-block-id="group.replica"] input').fill("1.5")
    errors = page.evaluate("() => BlockKit.validate(document.getElementById('root'))")
    assert errors == {
        "group.name": "Please complete this required field.",
        "group.replica": "Please enter a whole number.",
    }
    # What raybot answers with response_action "errors" goes under the input it names.
    page.evaluate(
        "() => BlockKit.showErrors(document.getElementById('root'), "
        "{'group.max': 'Max replicas <b>3</b> is below 4', 'nowhere': 'general problem'})"
    )
    error = page.locator('#root [data-block-id="group.max"] .bk-error')
    expect(error).to_have_text("Max replicas <b>3</b> is below 4")
    assert page.locator("#root .bk-error-general").text_content() == "general problem"
    assert count(page, ".bk-has-error") == 1 and count(page, ".bk-error b") == 0


def test_confirm_view_shows_the_diff_and_apply(page):
    draft = fleet_draft()
    edited = modals.parse_group(
        {"group.replica": {"group.replica": {"type": "number_input", "value": "4"}}}, draft, "group-07"
    ).edited
    draft = draft.model_copy(update={"edited": edited})
    show_view(page, modals.confirm_view(draft, modals.review_diff(draft)))
    assert page.locator("#root .bk-modal-title").text_content() == "Review changes"
    assert "Review the change to fleet: 1 field (before → after)." in text(page)
    assert "• group-07: 2 → 4 replicas" in text(page) and "workerSpec" not in text(page)
    assert page.locator("#root .bk-modal-submit").text_content() == "Apply"
    assert page.locator("#root .bk-modal-close").text_content() == "Back"


def test_radio_buttons_static_select_with_groups_and_state_kept_across_an_update(page):
    view = {
        "type": "modal",
        "id": "V0RADIO",
        "title": {"type": "plain_text", "text": "Pick"},
        "submit": {"type": "plain_text", "text": "Go"},
        "blocks": [
            {
                "type": "input",
                "block_id": "size",
                "label": {"type": "plain_text", "text": "Size"},
                "element": {
                    "type": "radio_buttons",
                    "action_id": "size",
                    "options": [
                        {"text": {"type": "plain_text", "text": "Small"}, "value": "s"},
                        {"text": {"type": "mrkdwn", "text": "*Large*"}, "value": "l"},
                    ],
                    "initial_option": {"text": {"type": "plain_text", "text": "Small"}, "value": "s"},
                },
            },
            {
                "type": "input",
                "block_id": "zone",
                "optional": True,
                "label": {"type": "plain_text", "text": "Zone"},
                "element": {
                    "type": "static_select",
                    "action_id": "zone",
                    "option_groups": [
                        {
                            "label": {"type": "plain_text", "text": "Hangzhou"},
                            "options": [{"text": {"type": "plain_text", "text": "hz-a"}, "value": "hz-a"}],
                        },
                        {
                            "label": {"type": "plain_text", "text": "Beijing"},
                            "options": [{"text": {"type": "plain_text", "text": "bj-c"}, "value": "bj-c"}],
                        },
                    ],
                },
            },
        ],
    }
    show_view(page, view)
    assert page.locator("#root .bk-optional").all_text_contents() == [" (optional)"]
    assert page.locator("#root optgroup").evaluate_all("(gs) => gs.map((g) => g.label)") == ["Hangzhou", "Beijing"]
    page.locator("#root .bk-choice", has_text="Large").locator("input").check()
    page.locator('#root select[data-action-id="zone"]').select_option(label="bj-c")
    state = read_state(page)
    assert state == {
        "size": {"size": {"type": "radio_buttons", "selected_option": view["blocks"][0]["element"]["options"][1]}},
        "zone": {
            "zone": {
                "type": "static_select",
                "selected_option": {"text": {"type": "plain_text", "text": "bj-c"}, "value": "bj-c"},
            }
        },
    }
    assert page.evaluate("() => window.ACTIONS") == []  # inputs without dispatch_action report nothing until submit
    # views.update with the same block and action ids keeps what the person chose, as Slack does.
    kept = page.evaluate(
        "([view, previous]) => { const root = document.getElementById('root');"
        " root.replaceChildren(BlockKit.renderView(view, Object.assign({}, window.CTX, {previous})));"
        " return BlockKit.readState(root); }",
        [view, state],
    )
    assert kept == state


def test_unknown_blocks_and_images_never_fetch_anything(page):
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    show_blocks(
        page,
        [
            {"type": "image", "image_url": "https://example.com/cat.png", "alt_text": "a cat"},
            {
                "type": "context",
                "elements": [{"type": "image", "image_url": "https://example.com/x.png", "alt_text": "x"}],
            },
            {"type": "video", "title": {"type": "plain_text", "text": "v"}},
            {"type": "divider"},
        ],
    )
    assert "[image: a cat]" in text(page) and "[video block is not shown here]" in text(page)
    assert count(page, "img") == 0 and count(page, "hr.bk-divider") == 1
    assert requests == []


# --- inputs that dispatch: block_actions as Slack sends them (dispatch_action, dispatch_action_config) -------------


@pytest.fixture
def clocked(page):
    """A page of its own whose timers run only when the test lets time pass (page.clock): the debounce of
    on_character_entered is checked without waiting on the wall clock."""
    context = page.context.browser.new_context()
    other = context.new_page()
    other.set_default_timeout(5000)
    other.clock.install()
    other.clock.pause_at(1_700_000_000_000)
    other.set_content('<!doctype html><html><body><div id="root"></div></body></html>')
    other.add_script_tag(path=str(BLOCKKIT_JS))
    other.add_script_tag(content=PAGE_SETUP)
    yield other
    context.close()


def quick_view_of_prod() -> tuple[quick.QuickDraft, dict]:
    where = {"channel_id": "C0ONCALL01", "thread_ts": None, "user_id": "U0ONCALL1"}
    draft = quick.new_quick_draft("prod", cluster("prod"), **where, named_groups=["WorkerGroup2"])
    return draft, quick.quick_view(draft, [], quick.Preview(draft.group))


def actions(page) -> list[dict]:
    return page.evaluate("() => window.ACTIONS")


def test_a_number_input_dispatches_what_is_typed_once_typing_pauses(clocked):
    draft, view = quick_view_of_prod()
    show_view(clocked, view)
    replicas = clocked.locator(f'#root [data-block-id="{quick.BLOCK_REPLICAS}"] input')
    replicas.press_sequentially("12")
    replicas.press("Enter")  # on_character_entered only: Enter sends nothing of its own
    assert actions(clocked) == []
    clocked.clock.run_for(299)
    assert actions(clocked) == []  # still typing, as far as the page can tell
    clocked.clock.run_for(1)
    [action] = actions(clocked)  # one block_actions for the pause, not one per key
    assert action == {
        "type": "number_input",
        "action_id": quick.ACTION_REPLICAS,
        "block_id": quick.BLOCK_REPLICAS,
        "value": "12",
    }
    # raybot reads the action and the view's state as it reads Slack's.
    state = read_state(clocked)
    assert quick.typed_replicas(state, action["value"]) == "12"
    assert quick.chosen_group(draft, state) == "WorkerGroup2"

    replicas.press("Backspace")  # a character removed is dispatched too
    clocked.clock.run_for(300)
    assert actions(clocked)[-1]["value"] == "1"
    replicas.press("Backspace")
    clocked.clock.run_for(300)
    assert actions(clocked)[-1]["value"] is None  # emptied: null, as in the view's state
    replicas.press_sequentially("3")
    replicas.press("Backspace")  # back to what was last sent: nothing new to send
    clocked.clock.run_for(1000)
    assert len(actions(clocked)) == 3


def test_what_is_typed_is_sent_when_the_input_loses_focus(clocked):
    _, view = quick_view_of_prod()
    show_view(clocked, view)
    clocked.locator(f'#root [data-block-id="{quick.BLOCK_REPLICAS}"] input').press_sequentially("4")
    clocked.locator(f'#root select[data-action-id="{quick.ACTION_GROUP}"]').focus()
    assert [a["value"] for a in actions(clocked)] == ["4"]
    clocked.clock.run_for(1000)
    assert len(actions(clocked)) == 1  # the pending one was that one


def test_a_dispatching_select_in_an_input_block_reports_the_group_picked(clocked):
    draft, view = quick_view_of_prod()
    show_view(clocked, view)
    select = clocked.locator(f'#root select[data-action-id="{quick.ACTION_GROUP}"]')
    select.select_option(label="WorkerGroup1 · 2 replicas")
    [action] = actions(clocked)
    assert (action["type"], action["block_id"]) == ("static_select", quick.BLOCK_GROUP)
    assert quick.chosen_group(draft, read_state(clocked), action["selected_option"]["value"]) == "WorkerGroup1"


def text_input_view(config: dict | None, *, multiline: bool = False) -> dict:
    element = {"type": "plain_text_input", "action_id": "q", "multiline": multiline}
    if config is not None:
        element["dispatch_action_config"] = config
    return {
        "type": "modal",
        "callback_id": "t",
        "title": {"type": "plain_text", "text": "Search"},
        "blocks": [
            {
                "type": "input",
                "block_id": "search",
                "dispatch_action": True,
                "label": {"type": "plain_text", "text": "Cluster"},
                "element": element,
            }
        ],
    }


def test_a_text_input_dispatches_on_enter_by_default(clocked):
    show_view(clocked, text_input_view(None))
    box = clocked.locator("#root .bk-text-input")
    box.press_sequentially("prod")
    clocked.clock.run_for(1000)
    assert actions(clocked) == []  # typing alone sends nothing: on_enter_pressed is the default
    box.press("Enter")
    assert actions(clocked) == [{"type": "plain_text_input", "action_id": "q", "block_id": "search", "value": "prod"}]


def test_a_text_input_may_dispatch_on_both_triggers(clocked):
    show_view(clocked, text_input_view({"trigger_actions_on": ["on_enter_pressed", "on_character_entered"]}))
    box = clocked.locator("#root .bk-text-input")
    box.press_sequentially("fl")
    box.press("Enter")  # Enter sends at once, and the pause after it has nothing new
    clocked.clock.run_for(1000)
    assert [a["value"] for a in actions(clocked)] == ["fl"]
    box.press_sequentially("eet")
    clocked.clock.run_for(300)
    assert [a["value"] for a in actions(clocked)] == ["fl", "fleet"]


def test_enter_in_a_multiline_input_is_a_new_line(clocked):
    show_view(clocked, text_input_view(None, multiline=True))
    box = clocked.locator("#root .bk-textarea")
    box.press_sequentially("line")
    box.press("Enter")
    assert actions(clocked) == [] and box.input_value() == "line\n"
    box.press("Control+Enter")
    assert [a["value"] for a in actions(clocked)] == ["line\n"]
