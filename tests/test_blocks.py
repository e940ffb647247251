import json
from typing import Any

import pytest

from bot import grammar
from bot.emr.changes import DiffEntry
from bot.emr.errors import EmrError
from bot.emr.models import RayCluster
from bot.slack import blocks, limits, mrkdwn
from bot.slack.blocks import SlackMessage

EVIL = "<!channel> <@U123> & <!here|here> @channel"
RAW_MARKUP = ("<!channel>", "<@U123>", "<!here", "@channel")


def texts(message: SlackMessage) -> list[str]:
    """Every string Slack will render: the fallback text and every `text` inside the blocks."""
    out = [message.text]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "text" and isinstance(value, str):
                    out.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(message.blocks)
    return out


def rendered(message: SlackMessage) -> str:
    return "\n".join(texts(message))


def assert_fits(message: SlackMessage) -> None:
    assert isinstance(message.text, str) and message.text
    assert limits.check_message_limits(message.blocks, message.text) == []
    json.dumps(message.blocks)  # plain dicts, ready for the Web API
    for block in message.blocks:
        for text_object in _text_objects(block):
            if text_object.get("type") == "mrkdwn":
                assert text_object.get("verbatim") is True


def _text_objects(node: Any) -> list[dict]:
    found = []
    if isinstance(node, dict):
        if node.get("type") in ("mrkdwn", "plain_text"):
            found.append(node)
        for value in node.values():
            found += _text_objects(value)
    elif isinstance(node, list):
        for item in node:
            found += _text_objects(item)
    return found


def assert_no_raw_markup(message: SlackMessage) -> None:
    for text in texts(message):
        for markup in RAW_MARKUP:
            assert markup not in text, (markup, text)


def group(index: int, name: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "groupName": name or f"WorkerGroup{index}",
        "workerType": "cpu",
        "replica": 2,
        "minReplica": 1,
        "maxReplica": 4,
        "cpu": "8",
        "memory": "32Gi",
        **extra,
    }


def cluster(groups: int, **fields: Any) -> RayCluster:
    body = {
        "clusterId": "rc-0123456789",
        "name": "ray-prod",
        "state": "RUNNING",
        "description": "training",
        "headSpec": {"queueName": "dev_queue", "cpu": "4", "memory": "16Gi", "enableAutoScaling": False},
        "workerSpec": [group(i) for i in range(groups)],
    }
    body.update(fields)
    return RayCluster.model_validate(body)


def huge_cluster(groups: int) -> RayCluster:
    """Every string as long and as escape-heavy as a hostile API answer could make it."""
    long = "&<>`" * 500
    return cluster(
        0,
        name=long,
        description=long,
        message=long,
        state=long,
        headSpec={"queueName": long, "cpu": long, "memory": long, "gpuSpec": long},
        workerSpec=[
            group(i, name=f"{i}{long}", workerType=long, cpu=long, memory=long, gpuSpec=long) for i in range(groups)
        ],
    )


# --- mrkdwn -----------------------------------------------------------------------------------------------------------


def test_escape_neutralizes_mentions_links_and_entities():
    assert mrkdwn.escape("<!channel> <@U123> a&b") == "&lt;!channel&gt; &lt;@U123&gt; a&amp;b"
    assert mrkdwn.escape("&amp;") == "&amp;amp;"
    assert mrkdwn.escape("hi @here and @Everyone") == "hi @\u2060here and @\u2060Everyone"
    assert mrkdwn.escape("@channel0") == "@\u2060channel0"
    assert mrkdwn.escape("a@b.org") == "a@b.org"


def test_code_cannot_be_broken_out_of():
    assert mrkdwn.code("a`b") == "`a\u02cbb`"
    assert mrkdwn.code("<@U1>\nx") == "`&lt;@U1&gt; x`"
    assert mrkdwn.code("") == "` `"
    assert mrkdwn.code("&" * 10, limit=7) == "`&amp;…`"


def test_preformatted_escapes_and_keeps_the_fence():
    assert mrkdwn.preformatted("a ``` <b>") == "```\na \u02cb\u02cb\u02cb &lt;b&gt;\n```"


@pytest.mark.parametrize(
    ("helper", "good", "expected", "bad"),
    [
        (mrkdwn.user, "U0123ABC", "<@U0123ABC>", ["U1> <!channel", "u123", "", "C123", "U1"]),
        (mrkdwn.user, "W0123ABC", "<@W0123ABC>", ["W0123ABC|x"]),
        (mrkdwn.channel, "C0123ABC", "<#C0123ABC>", ["C1> <!channel", "#general", "U123"]),
        (mrkdwn.usergroup, "S0123ABC", "<!subteam^S0123ABC>", ["S1>", "oncall"]),
    ],
)
def test_mentions_validate_ids(helper, good, expected, bad):
    assert helper(good) == expected
    for value in bad:
        with pytest.raises(ValueError):
            helper(value)


def test_truncate():
    assert mrkdwn.truncate("abcdef", 6) == "abcdef"
    assert mrkdwn.truncate("abcdef", 4) == "abc…"
    assert len(mrkdwn.truncate("x" * 5000, 3000)) == 3000
    # never half an entity or half a mention
    assert mrkdwn.truncate("ab&amp;cd", 5) == "ab…"
    assert mrkdwn.truncate("ab <@U123> cd", 8) == "ab …"
    with pytest.raises(ValueError):
        mrkdwn.truncate("abc", 0)


# --- the limits checker finds what it should ----------------------------------------------------------------------


def test_checker_reports_each_broken_limit():
    section = {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}
    fields = {"type": "section", "fields": [{"type": "mrkdwn", "text": "y" * 2001}] * 11}
    header = {"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}
    context = {"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}
    problems = limits.check_message_limits([section, fields, header, context] + [{"type": "divider"}] * 47)
    assert any("51 blocks" in p for p in problems)
    assert any("block 0" in p and "3001" in p for p in problems)
    assert any("block 1" in p and "11 fields" in p for p in problems)
    assert any("block 1" in p and "field 0 is 2001" in p for p in problems)
    assert any("block 2" in p and "header" in p for p in problems)
    assert any("block 3" in p and "11 elements" in p for p in problems)
    assert limits.check_message_limits([{"type": "divider"}], "t" * 40001) == ["text is 40001 characters (max 40000)"]
    assert limits.check_message_limits([{"type": "divider"}] * 50) == []


def test_modal_checker():
    view = {
        "type": "modal",
        "title": {"type": "plain_text", "text": "t" * 25},
        "private_metadata": "m" * 3001,
        "blocks": [{"type": "divider"}] * 101,
    }
    problems = limits.check_modal_limits(view)
    assert len(problems) == 3
    assert limits.check_modal_limits({**view, "title": {"text": "ok"}, "private_metadata": "", "blocks": []}) == []


# --- simple answers -----------------------------------------------------------------------------------------------


def test_usage_error_shows_message_and_escaped_usage():
    exc = pytest.raises(grammar.UsageError, grammar.parse, "resize prod <!channel>=0").value
    message = blocks.usage_error(exc.message, exc.usage)
    assert_fits(message)
    assert_no_raw_markup(message)
    text = rendered(message)
    assert "&lt;!channel&gt;=0" in text
    assert "/ray resize &lt;cluster&gt; &lt;group&gt;=&lt;n&gt;" in text


def test_usage_error_with_the_whole_help():
    exc = pytest.raises(grammar.UsageError, grammar.parse, "resise").value
    message = blocks.usage_error(exc.message, exc.usage)
    assert_fits(message)
    for name in grammar.SUBCOMMANDS:
        assert f"/ray {name}" in rendered(message)


def test_help_message_lists_every_subcommand_one_per_line():
    message = blocks.help_message()
    assert_fits(message)
    text = rendered(message)
    for name, sub in grammar.SUBCOMMANDS.items():
        assert f"`/ray {name}` {mrkdwn.escape(sub.brief)}" in text
    assert "what you may do here, and why" in text
    # Readable in a narrow column: no preformatted block whose lines would be cut off.
    assert "```" not in text


@pytest.mark.parametrize("topic", list(grammar.SUBCOMMANDS))
def test_help_of_one_command_shows_its_usage_and_examples(topic):
    message = blocks.help_message(topic)
    assert_fits(message)
    text = rendered(message)
    sub = grammar.SUBCOMMANDS[topic]
    for syntax, description in sub.lines:
        assert mrkdwn.code(f"/ray {syntax}") in text
        assert mrkdwn.escape(description) in text
    for example in sub.examples:
        assert f"`/ray {example}`" in text
    others = [name for name in grammar.SUBCOMMANDS if name != topic and not topic.startswith(name)]
    assert not any(f"`/ray {name}" in text for name in others if name != "help")


def test_denied_and_internal_error():
    # The policy's reason is mrkdwn from config ids; its mentions of channels and groups must survive.
    message = blocks.denied("<#C0ONCALL01> grants resize on prod* only to members of <!subteam^S0ONCALL>")
    assert_fits(message)
    assert "<#C0ONCALL01>" in message.text and "<!subteam^S0ONCALL>" in message.text
    assert "Not allowed" in message.text

    message = blocks.internal_error("ab12cd")
    assert_fits(message)
    assert "`ab12cd`" in message.text
    assert "Traceback" not in rendered(message)
    assert_no_raw_markup(blocks.internal_error(EVIL))


# --- /ray list --------------------------------------------------------------------------------------------------------


def test_cluster_list_row_format():
    message = blocks.cluster_list([("prod", cluster(2)), ("empty", cluster(0))])
    assert_fits(message)
    text = rendered(message)
    assert "*prod* `RUNNING` · ray-prod" in text
    assert "• WorkerGroup0: 2 replicas (min 1, max 4)\n• WorkerGroup1: 2 replicas (min 1, max 4)" in text
    assert "*empty*" in text and "no worker groups" in text


def test_cluster_list_with_no_clusters():
    message = blocks.cluster_list([])
    assert_fits(message)
    assert "No clusters" in message.text


def test_cluster_list_shows_failed_reads():
    failed = EmrError(action="GetRayCluster", code="Forbidden.NoPermission", message="denied", request_id="RID-1")
    silent = EmrError(action="GetRayCluster", code="Timeout", message="no answer")
    message = blocks.cluster_list([("prod", failed), ("dev", silent), ("ok", cluster(1))])
    assert_fits(message)
    text = rendered(message)
    assert "`Forbidden.NoPermission` · RequestId `RID-1`" in text
    assert "could not be read: `Timeout`\n" in text
    assert "2 could not be read" in text


@pytest.mark.parametrize("groups", [0, 1, 50])
def test_cluster_list_of_50_clusters_fits(groups):
    rows = [(f"cluster-{i}", cluster(groups)) for i in range(50)]
    message = blocks.cluster_list(rows)
    assert_fits(message)
    text = rendered(message)
    for i in range(50):
        assert f"*cluster-{i}*" in text


def test_cluster_list_of_hostile_clusters_fits_and_says_what_it_cut():
    error = EmrError(action="GetRayCluster", code="&<>" * 100, message="&<>" * 1000, request_id="<!channel>" * 20)
    rows = [(f"{i}{EVIL * 20}", huge_cluster(50) if i % 2 else error) for i in range(600)]
    message = blocks.cluster_list(rows)
    assert_fits(message)
    assert_no_raw_markup(message)
    assert "and 120 more clusters" in rendered(message)


def test_cluster_list_of_a_50_group_cluster_is_compact():
    message = blocks.cluster_list([("prod", cluster(50))])
    assert_fits(message)
    text = rendered(message)
    assert "50 worker groups, 100 replicas in all" in text
    assert "• WorkerGroup0: 2 replicas (min 1, max 4)" in text
    assert "and 47 more groups" in text
    assert text.count("\n") < 10


def test_cluster_list_cuts_groups_that_do_not_fit():
    rows = [(f"c{i}", huge_cluster(50)) for i in range(50)]
    message = blocks.cluster_list(rows)
    assert_fits(message)
    assert "more groups" in rendered(message)


def test_cluster_list_escapes_names():
    bad = cluster(1, name=EVIL, workerSpec=[group(0, name=EVIL)])
    message = blocks.cluster_list([(EVIL, bad)])
    assert_fits(message)
    assert_no_raw_markup(message)
    assert "&lt;!channel&gt; &lt;@U123&gt; &amp;" in rendered(message)


# --- /ray show --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("groups", [0, 1, 50])
def test_cluster_detail_fits(groups):
    message = blocks.cluster_detail("prod", cluster(groups))
    assert_fits(message)
    text = rendered(message)
    assert f"*Worker groups* ({groups})" in text
    for i in range(groups):
        assert f"• *WorkerGroup{i}*: 2 replicas (min 1, max 4)" in text
    if not groups:
        assert "no worker groups" in text


def test_cluster_detail_content():
    c = cluster(
        1,
        headSpec={
            "queueName": "q1",
            "cpu": "4",
            "memory": "16Gi",
            "enableAutoScaling": True,
            "idleTimeoutSeconds": 600,
        },
        workerSpec=[group(0, workerType="gpu", gpuSpec="1*A10")],
    )
    text = rendered(blocks.cluster_detail("prod", c))
    assert "*prod* · ray-prod" in text
    assert "State `RUNNING` · clusterId `rc-0123456789`" in text
    assert "*Autoscaling*\non, idle 600 s" in text
    assert "*Queue*\nq1" in text and "*Memory*\n16 GiB" in text
    # One wrapping line per group, not a table a channel column would cut off.
    assert "• *WorkerGroup0*: 2 replicas (min 1, max 4), type gpu, 8 CPU, 32 GiB memory, GPU 1*A10" in text
    assert "```" not in text
    assert "*Autoscaling*\noff" in rendered(blocks.cluster_detail("prod", cluster(1)))


def test_cluster_detail_of_a_hostile_cluster_fits():
    message = blocks.cluster_detail(EVIL * 50, huge_cluster(50))
    assert_fits(message)
    assert_no_raw_markup(message)
    # every group's line is still there: 50 groups pack into a few sections
    assert "more group" not in rendered(message)
    assert len(message.blocks) < limits.MESSAGE_BLOCKS_MAX


def test_cluster_detail_with_too_many_groups_says_how_many_are_missing():
    message = blocks.cluster_detail("prod", huge_cluster(1000))
    assert_fits(message)
    assert "more groups" in rendered(message)


def test_cluster_detail_escapes():
    c = cluster(1, name=EVIL, description=EVIL, workerSpec=[group(0, name=EVIL, workerType="a`b```c")])
    message = blocks.cluster_detail(EVIL, c)
    assert_fits(message)
    assert_no_raw_markup(message)
    text = rendered(message)
    assert "&lt;!channel&gt; &lt;@U123&gt; &amp;" in text
    assert "type a`b```c" in text


# --- the life of one change ---------------------------------------------------------------------------------------


def test_change_succeeded_renders_the_diff():
    diff = [
        DiffEntry(path="workerSpec[WorkerGroup1].replica", before=2, after=4),
        DiffEntry(path="workerSpec[g2]", before=None, after={"groupName": "g2", "replica": 1}),
        DiffEntry(path="workerSpec[old]", before={"groupName": "old"}, after=None),
        DiffEntry(path="description", before="a", after="b"),
        DiffEntry(path="headSpec.gftConfig.redisPassword", before="hunter2", after="hunter3"),
        DiffEntry(path="headSpec.gftConfig", before=None, after={"redisUrl": "r", "redisPassword": "hunter4"}),
    ]
    message = blocks.change_succeeded("prod", "rc-1", "REQ-1", diff)
    assert_fits(message)
    text = rendered(message)
    assert "clusterId `rc-1` · requestId `REQ-1`" in text
    assert message.text.startswith(
        "📨 *prod* change accepted, applying: WorkerGroup1: 2 → 4 replicas; g2 added (1 replica); old removed"
    )
    assert "• WorkerGroup1: 2 → 4 replicas" in text
    assert "• g2 added: 1 replica" in text
    assert "• old removed" in text
    assert "• description: a → b" in text
    assert "• fault tolerance Redis password: changed" in text
    assert "hunter" not in text and "workerSpec" not in text and "headSpec" not in text


def test_change_succeeded_without_request_id_or_diff():
    message = blocks.change_succeeded("prod", "rc-1", None, [])
    assert_fits(message)
    assert "none" not in message.text.replace("no change", "")
    assert "requestId" not in message.text
    assert "no change" in rendered(message)


def test_long_diffs_are_cut_with_a_count():
    diff = [DiffEntry(path=f"workerSpec[{EVIL}{i}].env", before="&" * 500, after="<" * 500) for i in range(400)]
    message = blocks.change_succeeded("prod", "rc-1", "REQ", diff)
    assert_fits(message)
    assert_no_raw_markup(message)
    text = rendered(message)
    shown = text.count("• ")
    assert 0 < shown < 400
    assert f"and {400 - shown} more changes" in text


def test_diff_of_50_groups_fits():
    diff = [DiffEntry(path=f"workerSpec[WorkerGroup{i}].replica", before=1, after=2) for i in range(50)]
    message = blocks.change_succeeded("prod", "rc-1", "REQ", diff)
    assert_fits(message)
    text = rendered(message)
    assert all(f"• WorkerGroup{i}: 1 → 2 replicas" in text for i in range(50))
    assert "… and 46 more changes" in message.text


@pytest.mark.parametrize(("request_id", "shown"), [("REQ-9", "*RequestId* `REQ-9`"), (None, "`InvalidParameter`\n")])
def test_change_failed(request_id, shown):
    message = blocks.change_failed("prod", "InvalidParameter", "replica must be <= 10 & >= 1", request_id)
    assert_fits(message)
    text = rendered(message)
    assert "none" not in text
    assert "*Code* `InvalidParameter`" in text
    assert shown in text
    assert "*Message* replica must be &lt;= 10 &amp; &gt;= 1" in text


def test_change_failed_says_which_cluster_what_was_tried_and_that_nothing_changed():
    message = blocks.change_failed(
        "prod",
        "Throttling.User",
        "Request was denied due to user flow control.",
        None,
        what="WorkerGroup1: 2 → 3 replicas",
        cluster_id="rc-1",
        action="UpdateRayCluster",
        attempts=4,
    )
    text = rendered(message)
    assert "The change to *prod* (clusterId `rc-1`) failed: WorkerGroup1: 2 → 3 replicas" in text
    assert "(`UpdateRayCluster`, 4 attempts)" in text
    assert "nothing changed on the cluster" in text
    assert "throttling" in text
    assert "RequestId" not in text


def test_cloud_error_names_the_cluster_and_attempts_and_says_whether_anything_changed():
    text = rendered(blocks.cloud_error("GetRayCluster", "Timeout", "no answer", None, cluster_id="rc-1", attempts=3))
    assert "`GetRayCluster` for cluster `rc-1` failed (3 attempts). Nothing was changed." in text
    assert "RequestId" not in text
    text = rendered(blocks.cloud_error("StopRayCluster", "Timeout", "no answer", "R-1", may_have_changed=True))
    assert "may have been applied" in text and "*RequestId* `R-1`" in text
    named = rendered(blocks.cloud_error("GetRayCluster", "Timeout", "no answer", None, cluster_id="rc-1", alias="prod"))
    assert "`GetRayCluster` for *prod* (clusterId `rc-1`) failed. Nothing was changed." in named


def test_change_failed_with_hostile_fields_fits():
    message = blocks.change_failed(EVIL * 100, EVIL * 100, EVIL * 1000, EVIL * 100)
    assert_fits(message)
    assert_no_raw_markup(message)


def test_nothing_to_change():
    message = blocks.nothing_to_change("prod", f"resize {EVIL} to 2")
    assert_fits(message)
    assert_no_raw_markup(message)
    assert message.text.startswith("➖ *prod* already matches resize")
    assert "nothing was sent" in message.text


def test_whoami_names_each_cluster_once_in_words():
    from bot.permissions import Grant

    grant = Grant(
        role="viewer", clusters=("*",), aliases=("prod", "staging"), actions=("*",), limits="no limits", why="x"
    )
    text = rendered(blocks.whoami("U0ABC123", "C0ABC123", [grant]))
    assert "• *viewer* on every cluster (prod, staging): every action; no limits" in text
    named = Grant(
        role="oncall", clusters=("prod*",), aliases=("prod",), actions=("resize",), limits="no limits", why="x"
    )
    assert "• *oncall* on prod: resize" in rendered(blocks.whoami("U0ABC123", "C0ABC123", [named]))


def test_a_change_in_doubt_and_its_verdict_carry_the_request_id_of_the_answer_when_one_came():
    checking = rendered(blocks.outcome_checking("prod", 7, "WorkerGroup1: 2 → 3 replicas", "ServiceUnavailable", "R-7"))
    assert "(ServiceUnavailable · RequestId `R-7`)" in checking
    assert "RequestId" not in rendered(blocks.outcome_checking("prod", 7, "x", "Timeout"))
    missed = rendered(blocks.outcome_known("prod", 7, "x", False, request_id="R-7"))
    assert "the cluster does not hold it (the call: RequestId `R-7`)" in missed
    assert "RequestId" not in rendered(blocks.outcome_known("prod", 7, "x", False))
