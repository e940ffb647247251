"""`raybot sandbox` in a real headless Chromium: the page, driven as a person would, against the real raybot.

The sandbox runs in-process (emulators and page server on a background loop, raybot in its subprocess). Each test
takes a screenshot into its temporary folder and asserts on the page's text (the DOM), never on pixels; what the
page shows is compared with what the EMR emulator recorded.
"""

from __future__ import annotations

import copy
import os
import re
import urllib.error
import urllib.request

import pytest

from bot.config import load_config
from bot.sandbox.run import SAMPLE_CONFIG, SETTLE_SECONDS, Alert, BackgroundSandbox, Sandbox, alert_for, seed_for
from bot.slack import alert_names
from tests.harness import CHROMIUM, CHROMIUM_ARGS, PROXY_VARS

playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed (/usr/bin/chromium); .ci/browser-setup installs it",
)
expect = playwright_api.expect
expect.set_options(timeout=15_000)  # an upper bound for one step; steps normally take milliseconds

WAIT_MS = 15_000
PROD = "ray-uiulpgow9xljimm1"
TRAIN_GPU = "ray-k3v8q2m7t5hzxa04"
FLEET = "ray-9w2n4b6c8d0fgh1j"
STAGING = "ray-p5r7s9u1w3y5a7c9"
WORKSPACE = "w-d2d82aa09155"
FOLLOW_LOOK_MS = 25_000  # raybot's follower looks again 10 s ± 20% after its first look; then it answers


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    saved = {name: os.environ.pop(name) for name in PROXY_VARS if name in os.environ}
    os.environ["ALIBABA_CLOUD_ECS_METADATA_DISABLED"] = "true"
    running = BackgroundSandbox(port=0, workdir=tmp_path_factory.mktemp("sandbox"))
    try:
        yield running.sandbox
    finally:
        running.stop()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def fresh(sandbox: Sandbox):
    """Clusters as seeded, no fault; returns how many cloud calls there were, so a test sees only its own.

    Clusters change at once unless a test lets them take emulated time (`sandbox.emr.settle_seconds`).
    """
    sandbox.emr.clear_faults()
    sandbox.emr.seed(copy.deepcopy(sandbox.page.seed))
    sandbox.emr.settle_seconds = 0
    yield len(sandbox.emr.calls)
    sandbox.emr.clear_faults()
    sandbox.emr.release_hanging()


@pytest.fixture
def page(browser, request, tmp_path):
    width = getattr(request, "param", 1600)
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    console_errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and console_errors.append(message.text))
    page.on("pageerror", lambda error: console_errors.append(str(error)))
    yield page
    page.screenshot(path=str(tmp_path / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert not console_errors, console_errors


def open_as(page, sandbox: Sandbox, who: str, channel: str = "C0ONCALL01") -> None:
    page.goto(f"{sandbox.url}/#as={who}&in={channel}")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#connection")).to_have_text("live")


def type_in(page, text: str) -> None:
    page.locator("#composer").fill(text)
    page.locator("#composer").press("Enter")


def cloud_calls(sandbox: Sandbox, since: int, action: str, cluster_id: str) -> list:
    return [c for c in sandbox.emr.calls[since:] if c.action == action and c.path.endswith("/" + cluster_id)]


def test_resize_answers_in_the_thread_with_cluster_id_and_request_id(sandbox, page, fresh, tmp_path):
    open_as(page, sandbox, "oncall")
    type_in(page, "/ray resize prod WorkerGroup1=3")

    root = page.locator("#messages .message", has_text="WorkerGroup1: 2 → 3 replicas · done")
    expect(root).to_contain_text("✅")
    expect(root).to_contain_text("@Olivia (on-call)")  # <@U0ONCALL1> rendered as a mention
    [update] = cloud_calls(sandbox, fresh, "UpdateRayCluster", PROD)
    assert update.status == 200 and update.json["workerSpec"][0]["replica"] == 3

    root.locator(".replies-link").click()
    thread = page.locator("#thread")
    expect(thread).to_contain_text(f"clusterId {PROD}")
    expect(thread).to_contain_text(f"requestId {update.request_id}")
    expect(thread).to_contain_text("2 → 3")
    # The side panel shows the same call, with its body.
    call = page.locator("#emr-calls .emr-call", has_text=update.request_id)
    expect(call).to_contain_text("UpdateRayCluster")
    expect(call).to_contain_text("200")
    call.locator("summary").click()
    expect(call.locator(".emr-body")).to_contain_text('"replica": 3')
    page.screenshot(path=str(tmp_path / "resize-thread.png"))


def test_a_viewer_is_denied_with_the_reason(sandbox, page, fresh):
    open_as(page, sandbox, "viewer")
    type_in(page, "/ray resize prod WorkerGroup1=3")

    answer = page.locator("#messages .message.ephemeral", has_text="Not allowed")
    expect(answer).to_contain_text("Only visible to you")
    # The reason, with the config's ids rendered as Slack shows them.
    expect(answer).to_contain_text(
        re.compile(r"in #incident, only members of @oncall or @Ada.* may resize prod\. Ask one of them")
    )
    assert cloud_calls(sandbox, fresh, "UpdateRayCluster", PROD) == []
    assert sandbox.emr.cluster(WORKSPACE, PROD)["workerSpec"][0]["replica"] == 2

    # Someone else does not see it.
    open_as(page, sandbox, "oncall")
    expect(page.locator("#messages")).not_to_contain_text("Not allowed")


def test_a_throttling_fault_is_reported_with_its_code_and_request_id(sandbox, page, fresh):
    open_as(page, sandbox, "oncall")
    page.locator("#fault-kind").select_option("throttled")
    page.locator("#fault-action").select_option("UpdateRayCluster")
    page.locator("#fault-inject").click()
    expect(page.locator("#faults")).to_contain_text("throttled · UpdateRayCluster")

    type_in(page, "/ray resize train-gpu a10-small=3")
    root = page.locator("#messages .message", has_text="a10-small: 2 → 3 replicas")
    expect(root).to_contain_text("failed")
    attempts = cloud_calls(sandbox, fresh, "UpdateRayCluster", TRAIN_GPU)
    assert attempts and all(a.code == "Throttling.User" for a in attempts)

    root.locator(".replies-link").click()
    thread = page.locator("#thread")
    expect(thread).to_contain_text("Code Throttling.User")
    expect(thread).to_contain_text(f"RequestId {attempts[-1].request_id}")
    expect(page.locator("#emr-calls .emr-call", has_text=attempts[-1].request_id)).to_contain_text("Throttling.User")
    assert sandbox.emr.cluster(WORKSPACE, TRAIN_GPU)["workerSpec"][0]["replica"] == 2

    page.locator("#fault-clear").click()
    expect(page.locator("#faults")).to_contain_text("No fault")


def test_edit_the_50_group_cluster_in_modals(sandbox, page, fresh, tmp_path):
    open_as(page, sandbox, "oncall")
    type_in(page, "/ray edit fleet")

    modal = page.locator("#modal-layer .bk-modal")
    expect(modal).to_contain_text("Editing fleet")  # "Loading…" replaced by the overview (views.update)
    expect(modal).to_contain_text("Worker groups (50 of at most 50)")
    expect(modal).to_contain_text("group-50")
    page.screenshot(path=str(tmp_path / "edit-overview.png"))
    modal.locator('select[data-action-id="groups"]').select_option(label="group-07")  # dispatch_action → views.push

    expect(modal).to_contain_text("Worker group group-07 of fleet")
    replicas = modal.locator('[data-block-id="group.replica"] input')
    expect(replicas).to_have_value("2")
    replicas.fill("0")
    modal.locator(".bk-modal-submit").click()
    # raybot's answer: response_action "errors", shown under the input.
    expect(modal.locator('[data-block-id="group.replica"] .bk-error')).to_contain_text("at least 1")
    page.screenshot(path=str(tmp_path / "edit-group-error.png"))

    replicas.fill("4")
    modal.locator(".bk-modal-submit").click()  # plain ack: back to the overview, which raybot updates
    expect(modal).to_contain_text("1 field changed so far")
    modal.locator(".bk-modal-submit").click()  # Review → response_action "push"

    expect(modal).to_contain_text("Review the change to fleet")
    expect(modal).to_contain_text("2 → 4")
    page.screenshot(path=str(tmp_path / "edit-confirm.png"))
    modal.locator(".bk-modal-submit").click()  # Apply → "update", then views.update with the outcome

    expect(modal).to_contain_text("accepted the change")
    [update] = cloud_calls(sandbox, fresh, "UpdateRayCluster", FLEET)
    groups = update.json["workerSpec"]
    assert len(groups) == 50
    assert [g["replica"] for g in groups if g["groupName"] == "group-07"] == [4]
    modal.locator(".bk-modal-x").click()  # ✕ closes the whole stack (the bottom button would go back one view)
    expect(page.locator("#modal-layer")).to_be_hidden()
    root = page.locator("#messages .message", has_text="fleet").filter(has_text="done")
    root.locator(".replies-link").click()
    expect(page.locator("#thread")).to_contain_text(f"requestId {update.request_id}")


# --- layout, approvals, start, the cloud panel ---------------------------------------------------------------------

COLUMNS = """() => {
    const box = (id) => { const n = document.getElementById(id); if (!n || n.hidden) return null;
        const r = n.getBoundingClientRect(); return {left: r.left, right: r.right, width: r.width}; };
    return {viewport: document.documentElement.clientWidth, scroll: document.documentElement.scrollWidth,
            bodyScroll: document.body.scrollWidth, sidebar: box("sidebar"), channel: box("channel"),
            thread: box("thread"), cloud: box("cloud"),
            messagesOverflow: document.getElementById("messages").scrollWidth
                - document.getElementById("messages").clientWidth};
}"""


def assert_layout(page, *, thread_open: bool) -> dict:
    """No sideways scroll, no blank column, the channel at least half of what the sidebar and cloud panel leave."""
    cols = page.evaluate(COLUMNS)
    assert cols["scroll"] <= cols["viewport"] and cols["bodyScroll"] <= cols["viewport"], cols
    assert cols["messagesOverflow"] <= 0, cols
    shown = [cols[name] for name in ("sidebar", "channel", "thread", "cloud") if cols[name] is not None]
    assert (cols["thread"] is not None) == thread_open, cols
    # The columns tile the window edge to edge: nothing left blank between or after them.
    assert shown[0]["left"] == 0 and abs(shown[-1]["right"] - cols["viewport"]) <= 1, cols
    for left, right in zip(shown, shown[1:], strict=False):
        assert abs(left["right"] - right["left"]) <= 1, cols
    free = cols["viewport"] - cols["sidebar"]["width"] - cols["cloud"]["width"]
    assert cols["channel"]["width"] >= free / 2 - 1, cols
    return cols


def open_thread_of(page, text: str):
    root = page.locator("#messages .message", has_text=text).last
    root.locator(".replies-link").click()
    expect(page.locator("#thread")).to_be_visible()
    return root


@pytest.mark.parametrize("page", [1280, 1440, 1920], indirect=True)
def test_the_channel_takes_the_free_width_and_a_long_path_does_not_reflow_it(sandbox, page, fresh):
    open_as(page, sandbox, "oncall")
    type_in(page, "/ray help")
    expect(page.locator("#messages .message.ephemeral").last).to_contain_text("resize")
    before = assert_layout(page, thread_open=False)

    # A request with a very long path reaches the cloud API (unsigned: refused, but shown in the panel).
    long_path = f"{sandbox.emr.url}/api/v1/workspaces/{'w' * 400}/raycluster/{'r' * 400}"
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(urllib.request.Request(long_path, headers={"x-acs-action": "GetRayCluster"}))
    expect(page.locator("#emr-calls .emr-call").first).to_contain_text("GetRayCluster")
    after = assert_layout(page, thread_open=False)
    assert (after["cloud"], after["channel"]) == (before["cloud"], before["channel"])

    type_in(page, "@raybot show prod")
    open_thread_of(page, "show prod")
    expect(page.locator("#thread")).to_contain_text(PROD)
    assert_layout(page, thread_open=True)
    page.locator("#thread-close").click()
    assert_layout(page, thread_open=False)


def test_a_dismissed_answer_stays_dismissed_after_a_reload(sandbox, page, fresh):
    open_as(page, sandbox, "viewer")
    refusals = page.locator("#messages .message.ephemeral", has_text="Not allowed")
    before = refusals.count()  # earlier tests of this module may have left some
    type_in(page, "/ray resize prod WorkerGroup1=3")
    expect(refusals).to_have_count(before + 1)
    refusals.last.locator(".dismiss").click()
    expect(refusals).to_have_count(before)
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#connection")).to_have_text("live")
    type_in(page, "/ray whoami")  # something new arrives: the channel has been drawn since the reload
    expect(page.locator("#messages .message.ephemeral").last).not_to_contain_text("Not allowed")
    expect(refusals).to_have_count(before)


def test_a_hanging_call_says_how_long_it_has_been_waiting(sandbox, page, fresh):
    open_as(page, sandbox, "oncall")
    sandbox.emr.inject("hang", action="GetRayCluster")
    type_in(page, "/ray show prod")
    held = sandbox.emr.wait_for_held("GetRayCluster", timeout=15)
    pending = page.locator("#emr-calls .emr-call", has_text=held.request_id).locator(".emr-status")
    expect(pending).to_have_text(re.compile(r"^waiting… [1-9]\d* s$"))
    first = int(pending.inner_text().split()[1])
    expect(pending).not_to_have_text(f"waiting… {first} s")  # it counts on while the call hangs
    sandbox.emr.clear_faults()  # raybot's retries (if it is still trying) are answered
    sandbox.emr.release_hanging()
    expect(pending).to_have_text("503")  # the held call itself: answered at last


@pytest.mark.parametrize("page", [1280], indirect=True)
def test_a_big_change_is_asked_by_one_person_and_approved_by_another(sandbox, page, fresh):
    open_as(page, sandbox, "oncall")
    type_in(page, "/ray resize train-gpu cpu-preprocess=8")
    request = page.locator("#messages .message", has_text="cpu-preprocess").last
    expect(request.locator(".bk-button", has_text="Approve")).to_be_visible()
    assert cloud_calls(sandbox, fresh, "UpdateRayCluster", TRAIN_GPU) == []  # nothing sent before a second person

    # The requester may not approve their own change: told so in the request's thread, only to them.
    request.locator(".bk-button", has_text="Approve").click()
    expect(request.locator(".replies-link")).to_contain_text("1 only visible to you")
    assert cloud_calls(sandbox, fresh, "UpdateRayCluster", TRAIN_GPU) == []

    open_as(page, sandbox, "approver")
    request = page.locator("#messages .message", has_text="cpu-preprocess").last
    request.locator(".bk-button", has_text="Approve").click()
    expect(request.locator(".bk-button", has_text="Approve")).to_have_count(0)  # decided: the buttons are gone
    update = sandbox.emr.wait_for_call(
        lambda c: c.action == "UpdateRayCluster" and c.path.endswith(TRAIN_GPU) and c.status == 200, timeout=15
    )
    assert [g["replica"] for g in update.json["workerSpec"] if g["groupName"] == "cpu-preprocess"] == [8]
    open_thread_of(page, "cpu-preprocess")
    expect(page.locator("#thread")).to_contain_text(update.request_id)  # applied, with the cloud's requestId
    assert_layout(page, thread_open=True)


@pytest.mark.parametrize("page", [1440], indirect=True)
def test_start_brings_the_workers_up_over_emulated_time_and_ends_settled(sandbox, page, fresh):
    sandbox.emr.settle_seconds = SETTLE_SECONDS  # as `raybot sandbox` runs: a start takes emulated time
    open_as(page, sandbox, "admin")
    type_in(page, "/ray start staging")
    start = sandbox.emr.wait_for_call(
        lambda c: c.action == "StartRayCluster" and c.path.endswith(STAGING + "/start") and c.status == 200,
        timeout=15,
    )
    root = page.locator("#messages .message", has_text="staging").last
    expect(root).to_contain_text("Starting")  # raybot follows: the cluster is on its way, workers not up yet
    assert sandbox.emr.cluster(WORKSPACE, STAGING)["state"] == "Starting"

    expect(page.locator("#settle-note")).to_contain_text(f"{SETTLE_SECONDS:g} s")
    with page.expect_response("**/api/skip") as skipped:
        page.locator("#skip").click()  # the emulated time passes at once
    assert skipped.value.ok
    running = sandbox.emr.cluster(WORKSPACE, STAGING)
    assert running["state"] == "Running"
    assert [i["type"] for i in running["instances"]].count("Worker") == running["workerSpec"][0]["replica"]

    open_thread_of(page, "staging")
    expect(page.locator("#thread")).to_contain_text(start.request_id)
    expect(page.locator("#thread")).to_contain_text("settled", timeout=FOLLOW_LOOK_MS)
    expect(page.locator("#thread")).not_to_contain_text("not settled")
    assert_layout(page, thread_open=True)


# --- from an alert to a resized cluster: the message shortcut and the quick resize -----------------------------------


def quick_modal(page):
    return page.locator("#modal-layer .bk-modal")


@pytest.mark.parametrize("page", [1280], indirect=True)
def test_an_alert_is_resized_in_the_quick_resize_with_a_live_preview(sandbox, page, fresh, tmp_path):
    open_as(page, sandbox, "oncall")
    alerts = page.locator("#messages .message", has_text="RayTaskBacklog")
    before = alerts.count()  # the sandbox opens on one; earlier tests may have posted more
    assert before >= 1
    page.locator("#post-alert").click()
    expect(alerts).to_have_count(before + 1)
    alert = alerts.last
    expect(alert.locator(".author")).to_have_text("Alertmanager")  # another app's message, not raybot's
    alert.hover()
    alert.locator(".more-button").click()
    alert.locator(".shortcut-item").click()  # ⋯ → Ray cluster action: message_action with the alert

    modal = quick_modal(page)
    expect(modal).to_contain_text(f"clusterId {PROD}")  # "Reading prod…" replaced by the quick resize
    group = modal.locator('select[data-action-id="quick.group"]')
    expect(group.locator("option:checked")).to_have_text("WorkerGroup2 · 1 replica")  # the group the alert names
    effect = modal.locator('[data-block-id="quick.effect"]')
    expect(effect).to_contain_text("Type the new number of replicas")

    replicas = modal.locator('[data-block-id="quick.replicas"] input')
    replicas.press_sequentially("5")  # number_input, on_character_entered: block_actions → views.update
    expect(effect).to_contain_text("WorkerGroup2: 1 → 5 replicas (+4)")
    expect(replicas).to_be_focused()  # the update did not take the input from under the person's fingers
    expect(replicas).to_have_value("5")
    page.screenshot(path=str(tmp_path / "quick-preview.png"))

    # Above the role's approval threshold (6): the view says so, and Submit becomes a request.
    replicas.fill("7")
    expect(effect).to_contain_text("Needs a second person's approval")
    expect(modal.locator(".bk-modal-submit")).to_have_text("Request approval")
    # Above what the group may have: the limit is shown as it is typed, and Submit refuses it under the input.
    replicas.fill("12")
    expect(effect).to_contain_text("12 is above the maximum of WorkerGroup2 (8)")
    expect(modal.locator('[data-block-id="quick.limits"]')).to_contain_text("at most 40 replicas per group")
    modal.locator(".bk-modal-submit").click()
    expect(modal.locator('[data-block-id="quick.replicas"] .bk-error')).to_contain_text("above the maximum")
    assert cloud_calls(sandbox, fresh, "UpdateRayCluster", PROD) == []

    replicas.fill("5")
    expect(effect).to_contain_text("1 → 5 replicas")
    expect(modal.locator(".bk-modal-submit")).to_have_text("Resize")
    modal.locator(".bk-modal-submit").click()
    expect(modal).to_contain_text("accepted the resize")
    [update] = cloud_calls(sandbox, fresh, "UpdateRayCluster", PROD)
    groups = {g["groupName"]: g["replica"] for g in update.json["workerSpec"]}
    assert groups == {"WorkerGroup1": 2, "WorkerGroup2": 5}
    modal.locator(".bk-modal-x").click()
    expect(page.locator("#modal-layer")).to_be_hidden()

    alert.locator(".replies-link").click()  # the answer is in the alert's thread
    thread = page.locator("#thread")
    expect(thread).to_contain_text(f"requestId {update.request_id}")
    expect(thread).to_contain_text("1 → 5")
    expect(page.locator("#emr-calls .emr-call", has_text=update.request_id)).to_contain_text("UpdateRayCluster")
    assert_layout(page, thread_open=True)


def test_the_sandboxs_alert_names_a_cluster_and_its_roomiest_group_as_raybot_reads_them():
    config = load_config(str(SAMPLE_CONFIG))
    seed = seed_for(config)
    alert = alert_for(config, seed)
    assert alert == Alert("prod", "WorkerGroup2")  # WorkerGroup2 has 1 of at most 8 replicas; WorkerGroup1 2 of 4
    texts = alert_names.message_texts({"text": alert.text()})
    clusters = {alias: entry.cluster for alias, entry in config.clusters.items()}
    assert alert_names.named_clusters(texts, clusters) == ["prod"]
    assert alert_names.named_groups(texts, ["WorkerGroup1", "WorkerGroup2"]) == ["WorkerGroup2"]
    # A config without prod: its first cluster; one whose cluster has no group: no alert to post.
    without_prod = config.model_copy(update={"clusters": {k: v for k, v in config.clusters.items() if k != "prod"}})
    assert alert_for(without_prod, seed) == Alert("train-gpu", "cpu-preprocess")
    bare = [dict(c, workerSpec=[]) for c in seed]
    assert alert_for(config, bare) is None
