"""`raybot sandbox` in a real headless Chromium: the page, driven as a person would, against the real raybot.

The sandbox runs in-process (emulators and page server on a background loop, raybot in its subprocess). Each test
takes a screenshot into its temporary folder and asserts on the page's text (the DOM), never on pixels; what the
page shows is compared with what the EMR emulator recorded.
"""

from __future__ import annotations

import copy
import os
import re

import pytest

from bot.sandbox.run import BackgroundSandbox, Sandbox
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
WORKSPACE = "w-d2d82aa09155"


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
    """Clusters as seeded, no fault; returns how many cloud calls there were, so a test sees only its own."""
    sandbox.emr.clear_faults()
    sandbox.emr.seed(copy.deepcopy(sandbox.page.seed))
    yield len(sandbox.emr.calls)
    sandbox.emr.clear_faults()
    sandbox.emr.release_hanging()


@pytest.fixture
def page(browser, request, tmp_path):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
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
        re.compile(r"#incident grants resize on prod, train-gpu, fleet only to members of @oncall")
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

    expect(modal).to_contain_text("Applied")
    [update] = cloud_calls(sandbox, fresh, "UpdateRayCluster", FLEET)
    groups = update.json["workerSpec"]
    assert len(groups) == 50
    assert [g["replica"] for g in groups if g["groupName"] == "group-07"] == [4]
    modal.locator(".bk-modal-x").click()  # ✕ closes the whole stack (the bottom button would go back one view)
    expect(page.locator("#modal-layer")).to_be_hidden()
    root = page.locator("#messages .message", has_text="fleet").filter(has_text="done")
    root.locator(".replies-link").click()
    expect(page.locator("#thread")).to_contain_text(f"requestId {update.request_id}")
