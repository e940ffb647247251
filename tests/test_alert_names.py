"""Which cluster and worker group an alert names: whole words, Slack's markup read as people read it."""

from __future__ import annotations

import pytest

from bot.slack.alert_names import TEXT_MAX, message_texts, named_clusters, named_groups, readable

PROD_ID = "ray-uiulpgow9xljimm1"
CLUSTERS = {"prod": PROD_ID, "prod-eu": "ray-eu0000000000000", "staging": "ray-p5r7s9u1w3y5a7c9", "ml_prod": "ray-ml"}
GROUPS = ["WorkerGroup1", "WorkerGroup10", "WorkerGroup2", "a10-small", "gpu (spot) *x*"]


def clusters_in(text: str) -> list[str]:
    return named_clusters([text], CLUSTERS)


@pytest.mark.parametrize(
    "text",
    [
        "prod is slow",
        "Alert: PROD is slow",  # aliases in any case
        "cluster prod.",
        "(prod)",
        "prod/WorkerGroup1 saturated",
        "cluster=prod,region=cn",
        "`prod`",
        "```prod```",
        "*prod* _prod_ ~prod~",
        "_prod_",
        "&lt;prod&gt;",
        "&amp;prod",
        "<https://grafana.example/d/x?var-cluster=prod|dashboard>",  # the URL of a link
        "<https://console.example/ray|prod console>",  # the label of a link
        f"see {PROD_ID}",
        f"<https://console.example/ray/{PROD_ID}/overview|open>",
        f"id: `{PROD_ID}`",
    ],
)
def test_a_cluster_named_by_alias_or_id(text: str) -> None:
    assert clusters_in(text) == ["prod"]


@pytest.mark.parametrize(
    "text",
    [
        "non-prod is fine",
        "prod2 is slow",
        "production is slow",
        "reproduce it",
        "my_prod_thing",
        "prod.example.com is down",
        "api.prod is down",
        "<#C0PROD|prod> has the details",  # a channel called prod is not the cluster
        "<@U0PROD> is on call",
        "<!subteam^S0PROD|prod-team>",
        "<!here|prod>",
        PROD_ID.upper(),  # cluster ids are exact
        PROD_ID[:-1],
        PROD_ID + "0",
        f"x{PROD_ID}",
        "",
    ],
)
def test_no_cluster_named(text: str) -> None:
    assert [alias for alias in clusters_in(text) if alias == "prod"] == []


def test_longer_aliases_are_not_taken_for_shorter_ones() -> None:
    assert clusters_in("prod-eu is slow") == ["prod-eu"]
    assert clusters_in("ml_prod is slow") == ["ml_prod"]


def test_several_clusters_in_the_order_first_named_and_an_alias_with_its_id_counts_once() -> None:
    assert clusters_in("staging then prod then staging") == ["staging", "prod"]
    assert clusters_in(f"prod ({PROD_ID})") == ["prod"]
    assert named_clusters(["nothing here", f"later {PROD_ID}", "staging"], CLUSTERS) == ["prod", "staging"]


def test_two_aliases_of_one_cluster_named_by_its_id_are_both_named() -> None:
    assert named_clusters([PROD_ID], {"prod": PROD_ID, "main": PROD_ID}) == ["prod", "main"]


def test_groups_match_exactly_as_whole_words() -> None:
    assert named_groups(["WorkerGroup2 is saturated"], GROUPS) == ["WorkerGroup2"]
    assert named_groups(["WorkerGroup10 is saturated"], GROUPS) == ["WorkerGroup10"]
    assert named_groups(["workergroup2 is saturated"], GROUPS) == []  # group names are exact
    assert named_groups(["WorkerGroup2 and then WorkerGroup1"], GROUPS) == ["WorkerGroup2", "WorkerGroup1"]
    assert named_groups(["a10-small: pending"], GROUPS) == ["a10-small"]
    assert named_groups(["a10-smaller"], GROUPS) == []
    # Names with characters regular expressions would read are matched literally; formatting marks are
    # punctuation, so a name holding them is matched as people see it.
    assert named_groups(["group gpu (spot) *x*: full"], GROUPS) == ["gpu (spot) *x*"]
    assert named_groups(["group gpu (spot) *y*: full"], GROUPS) == []
    assert named_groups(["WorkerGroup2"], []) == []
    assert named_groups(["x"], ["", "x"]) == ["x"]


def test_readable_drops_mentions_and_keeps_links_and_entities() -> None:
    text = readable("<@U1> <#C1|prod> <!here> <https://a/b|label> &lt;x&gt; &amp; *b*")
    assert "U1" not in text and "prod" not in text and "here" not in text
    assert "https://a/b" in text and "label" in text and "<x>" in text and "&" in text and "*" not in text


def test_every_text_of_a_message_is_read() -> None:
    message = {
        "text": "top",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": "in a section"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "in a context"}]},
            {
                "type": "rich_text",
                "elements": [
                    {
                        "type": "rich_text_section",
                        "elements": [
                            {"type": "text", "text": "rich"},
                            {"type": "link", "url": f"https://console/{PROD_ID}", "text": "console"},
                        ],
                    }
                ],
            },
        ],
        "attachments": [
            {
                "fallback": "fallback text",
                "pretext": "pre",
                "title": "title",
                "text": "attachment text",
                "fields": [{"title": "Cluster", "value": "staging"}, "not a field"],
                "blocks": [{"type": "section", "text": {"type": "plain_text", "text": "attachment block"}}],
            },
            "not an attachment",
        ],
    }
    texts = message_texts(message)
    for expected in ("top", "in a section", "in a context", "rich", "console", "fallback text", "pre", "title"):
        assert expected in texts
    assert f"https://console/{PROD_ID}" in texts
    assert "attachment text" in texts and "staging" in texts and "attachment block" in texts
    assert named_clusters(texts, CLUSTERS) == ["prod", "staging"]


def test_an_alert_only_in_attachments_names_its_cluster() -> None:
    message = {"text": "", "attachments": [{"fallback": "[FIRING:1] RayBacklog prod WorkerGroup2"}]}
    texts = message_texts(message)
    assert named_clusters(texts, CLUSTERS) == ["prod"]
    assert named_groups(texts, GROUPS) == ["WorkerGroup2"]


@pytest.mark.parametrize(
    "message",
    [
        None,
        "text",
        [],
        {"text": 5, "blocks": "x", "attachments": {"text": "prod"}},
        {"text": None, "blocks": [None, 1, [], {"text": {"text": ["prod"]}}], "attachments": [None, {"fields": 3}]},
        {"text": "\ud800 prod \udfff"},  # lone surrogates, as a forged payload can carry
    ],
)
def test_hostile_shapes_are_read_as_far_as_they_go(message: object) -> None:
    texts = message_texts(message)
    assert all(isinstance(t, str) for t in texts)
    named_clusters(texts, CLUSTERS)
    named_groups(texts, GROUPS)


def test_deep_and_huge_messages_are_bounded() -> None:
    deep: dict = {"type": "section", "text": {"type": "mrkdwn", "text": "prod"}}
    for _ in range(5000):  # deeper than recursion allows: never followed that far
        deep = {"elements": [deep]}
    assert message_texts({"blocks": [deep]}) == []
    huge = {"text": "x " * TEXT_MAX, "attachments": [{"text": "prod"}]}
    texts = message_texts(huge)
    assert sum(map(len, texts)) <= TEXT_MAX
    assert named_clusters(texts, CLUSTERS) == []  # past what is read
    crowded = "prod_" * 20_000 + "_" * 20_000 + " prod"
    assert named_clusters([crowded], CLUSTERS) == ["prod"]
