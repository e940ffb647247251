import pytest

from bot import grammar
from bot.emr.changes import SetReplicas
from bot.grammar import (
    USAGE,
    Autoscale,
    Help,
    ListClusters,
    Resize,
    Show,
    UsageError,
    WhoAmI,
    parse,
)


def error(text: str) -> UsageError:
    with pytest.raises(UsageError) as info:
        parse(text)
    return info.value


# --- every form ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Help()),
        ("   \t ", Help()),
        ("help", Help()),
        ("help resize", Help("resize")),
        ("whoami", WhoAmI()),
        ("list", ListClusters()),
        ("show prod", Show("prod")),
        ("resize prod WorkerGroup1=10", Resize("prod", (SetReplicas(group="WorkerGroup1", replica=10),))),
        (
            "resize prod g1=2 g2=3",
            Resize("prod", (SetReplicas(group="g1", replica=2), SetReplicas(group="g2", replica=3))),
        ),
        ("resize prod g1 replicas=4", Resize("prod", (SetReplicas(group="g1", replica=4),))),
        (
            "resize prod g1 max=8 min=2 replicas=4",
            Resize("prod", (SetReplicas(group="g1", replica=4, min_replica=2, max_replica=8),)),
        ),
        ("resize prod g1 min=3", Resize("prod", (SetReplicas(group="g1", min_replica=3),))),
        ("resize prod g1 min=3 max=3", Resize("prod", (SetReplicas(group="g1", min_replica=3, max_replica=3),))),
        ("resize prod g1=999999", Resize("prod", (SetReplicas(group="g1", replica=999999),))),
        ("autoscale prod on", Autoscale("prod", True, None)),
        ("autoscale prod off", Autoscale("prod", False, None)),
        ("autoscale prod on idle=600", Autoscale("prod", True, 600)),
        ("  show\u00a0 prod  ", Show("prod")),
        ("/ray list", ListClusters()),
    ],
)
def test_parses(text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("command", "action", "cluster"),
    [
        (Help(), None, None),
        (WhoAmI(), None, None),
        (ListClusters(), "list", None),
        (Show("a"), "show", "a"),
        (Resize("a", ()), "resize", "a"),
        (Autoscale("a", True), "autoscale", "a"),
    ],
)
def test_action_and_cluster(command, action, cluster):
    assert command.action == action
    assert command.cluster == cluster


def test_commands_are_immutable_and_hashable():
    command = parse("resize prod g1=2")
    with pytest.raises(AttributeError):
        command.cluster = "other"
    assert hash(command) == hash(parse("resize prod g1=2"))


# --- case ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["LIST", "List", "lIsT"])
def test_subcommand_names_are_case_insensitive(text):
    assert parse(text) == ListClusters()


def test_keywords_are_case_insensitive_names_are_not():
    assert parse("RESIZE Prod g1 REPLICAS=2 Min=1 MAX=3") == Resize(
        "Prod", (SetReplicas(group="g1", replica=2, min_replica=1, max_replica=3),)
    )
    assert parse("Autoscale Prod ON IDLE=5") == Autoscale("Prod", True, 5)
    # Two groups that differ only in case are two groups.
    assert parse("resize prod wg=1 WG=2").changes == (
        SetReplicas(group="wg", replica=1),
        SetReplicas(group="WG", replica=2),
    )


# --- what Slack does to text --------------------------------------------------------------------------------------


def test_html_entities_are_unescaped_once():
    assert parse("show &lt;a&gt;&amp;b") == Show("<a>&b")
    assert parse("show a&amp;lt;b") == Show("a&lt;b")


def test_smart_quotes_become_plain():
    assert parse("show \u201cprod\u201d") == Show('"prod"')
    assert grammar.normalize("\u2018x\u2019") == "'x'"


# --- errors: the message names the token, the usage line is there ------------------------------------------------

RESIZE_USAGE = "/ray resize <cluster> <group>=<n> [<group>=<n> ...]"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("resize prod g1=0", "'0' in 'g1=0' must be at least 1"),
        ("resize prod g1=-1", "'-1' in 'g1=-1' must be at least 1"),
        ("resize prod g1=1.5", "'1.5' in 'g1=1.5' is not a positive whole number"),
        ("resize prod g1=1e3", "'1e3' in 'g1=1e3' is not a positive whole number"),
        ("resize prod g1=ten", "'ten' in 'g1=ten' is not a positive whole number"),
        ("resize prod g1=+3", "'+3' in 'g1=+3' is not a positive whole number"),
        ("resize prod g1=\u0663", "is not a positive whole number"),  # an Arabic-Indic digit three
        ("resize prod g1=1234567", "'1234567' in 'g1=1234567' is too large"),
        ("resize prod g1=007", "'007' in 'g1=007': write the number without leading zeros"),
        ("resize prod g1=", "'g1=' is missing a number"),
        ("resize prod =3", "'=3' is missing the group name"),
        ("resize prod g1=2 g1=3", "group 'g1' is given twice"),
        ("resize prod g1=2 g2", "expected <group>=<n>, not 'g2'"),
        ("resize prod replicas=3", "'replicas=3' needs a group"),
        ("resize prod g1 replicas=2 replicas=3", "replicas is given twice ('replicas=3')"),
        ("resize prod g1 min=1 MIN=2", "min is given twice ('MIN=2')"),
        ("resize prod g1 min=5 max=2", "min 5 is above max 2"),
        ("resize prod g1", "resize of group 'g1' needs replicas=<n>"),
        ("resize prod g1 5", "unexpected '5'; did you mean g1=5?"),
        ("resize prod g1 size=5", "unexpected 'size=5'"),
        ("resize prod g1 replicas=0", "'0' in 'replicas=0' must be at least 1"),
        ("resize prod g1 max=x", "'x' in 'max=x' is not a positive whole number"),
        ("resize prod", "resize needs at least one group"),
        ("resize", "resize needs a cluster"),
        ("resize g1=3", "resize needs a cluster before 'g1=3'"),
    ],
)
def test_resize_errors(text, message):
    exc = error(text)
    assert message in exc.message
    assert str(exc) == exc.message
    assert RESIZE_USAGE in exc.usage
    assert "/ray resize <cluster> <group> [replicas=<n>] [min=<n>] [max=<n>]" in exc.usage


@pytest.mark.parametrize(
    ("text", "message", "usage"),
    [
        ("autoscale prod", "autoscale needs on or off", "autoscale <cluster> on|off"),
        ("autoscale prod maybe", "expected on or off, not 'maybe'", "autoscale <cluster> on|off"),
        ("autoscale prod on idle=0", "'0' in 'idle=0' must be at least 1", "autoscale"),
        ("autoscale prod on idle=10m", "'10m' in 'idle=10m' is not a positive whole number", "autoscale"),
        ("autoscale prod on idle=1 idle=2", "idle is given twice ('idle=2')", "autoscale"),
        ("autoscale prod on fast", "unexpected 'fast'", "autoscale"),
        ("autoscale", "autoscale needs a cluster", "autoscale"),
        ("show", "show needs a cluster", "/ray show <cluster>"),
        ("show prod staging", "unexpected 'staging'", "/ray show <cluster>"),
        ("list everything now", "unexpected 'everything' 'now'", "/ray list"),
        ("whoami please", "unexpected 'please'", "/ray whoami"),
        ("help resize more", "unexpected 'more'", "/ray help"),
        ("help resise", "unknown command 'resise'; did you mean resize?", "/ray help"),
    ],
)
def test_other_errors(text, message, usage):
    exc = error(text)
    assert message in exc.message
    assert usage in exc.usage


def test_unknown_subcommand_suggests_the_closest_and_shows_all_help():
    exc = error("resise prod g1=2")
    assert exc.message == "unknown command 'resise'; did you mean resize?"
    assert exc.usage == "\n".join(USAGE.values())  # every command's usage; `/ray help` has what each does
    assert error("SHWO prod").message == "unknown command 'SHWO'; did you mean show?"


def test_unknown_subcommand_without_a_close_match_lists_them_all():
    exc = error("frobnicate")
    assert (
        exc.message == "unknown command 'frobnicate'; commands: "
        "help, whoami, list, show, resize, autoscale, edit, start, stop, undo, history"
    )


# --- the table ----------------------------------------------------------------------------------------------------


def test_usage_comes_from_the_table():
    assert list(USAGE) == list(grammar.SUBCOMMANDS)
    for name, usage in USAGE.items():
        assert usage.splitlines() == [f"/ray {syntax}" for syntax, _ in grammar.SUBCOMMANDS[name].lines]
    assert USAGE["show"] == "/ray show <cluster>"


@pytest.mark.parametrize("name", list(grammar.SUBCOMMANDS))
def test_every_command_has_examples_that_parse(name):
    sub = grammar.SUBCOMMANDS[name]
    assert sub.examples, f"{name} has no example for /ray help {name}"
    for example in sub.examples:
        assert type(parse(example)).__name__ == type(sub.parse(example.split()[1:])).__name__
        assert example.split()[0] == name


def test_adding_a_subcommand_is_one_entry(monkeypatch):
    entry = grammar.Subcommand("ping", (("ping", "answers pong"),), lambda args: grammar.WhoAmI())
    monkeypatch.setitem(grammar.SUBCOMMANDS, "ping", entry)
    assert parse("PING") == WhoAmI()
    assert "/ray ping" in error("frobnicate").usage
    assert "did you mean ping?" in error("pnig").message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("resize prod g1=3 for 2h", 7200),
        ("resize prod g1 replicas=3 for 30m", 1800),
        ("resize prod g1=3 FOR 1D", 86400),
    ],
)
def test_temporary_resize_duration(text, seconds):
    command = parse(text)
    assert isinstance(command, Resize)
    assert command.duration_seconds == seconds
    assert command.changes[0].replica == 3


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("resize prod g1=3 for", "needs a duration"),
        ("resize prod g1=3 for 2w", "'2w' is not a duration"),
        ("resize prod g1=3 for 8d", "from 1m to 7d"),
        ("resize prod for 2h", "at least one group"),
    ],
)
def test_temporary_resize_errors(text, fragment):
    assert fragment in error(text).message


def test_undo():
    from bot.grammar import Undo

    assert parse("undo prod") == Undo("prod")
    assert parse("undo prod #12") == Undo("prod", 12) == parse("undo prod 12")
    assert "needs a cluster" in error("undo").message
    assert error("undo prod #0").message == "'0' in '#0' must be at least 1"
    assert error("undo prod last").message == "'last' is not a positive whole number"
    assert error("undo prod 1 2").message == "unexpected '2'"


def test_history():
    from bot.grammar import History

    assert parse("history prod") == History("prod", 10)
    assert parse("history prod 3") == History("prod", 3)
    assert "at most 50" in error("history prod 51").message
    assert "needs a cluster" in error("history").message
