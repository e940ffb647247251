"""The `/ray` command grammar: text in, a typed command out (syntax only).

The text is what follows `/ray` (Slack's `text` field) or an app mention with
the bot's mention removed. Tokens are separated by whitespace; subcommand names
and keywords (`replicas=`, `on`, …) are case-insensitive, cluster aliases and
group names are taken exactly as written. Whether an alias or a group exists is
not decided here: that needs the config and the cluster.

Every subcommand is one entry of `SUBCOMMANDS` (name, usage lines with their
descriptions, parse function); the help text and the usage lines of errors are
derived from that table, so adding a subcommand is adding one entry.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from bot.emr.changes import SetReplicas

PREFIX = "/ray"
NUMBER_DIGITS_MAX = 6


# --- the commands -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Help:
    """`/ray help [<command>]`; `topic` narrows the help to one subcommand."""

    topic: str | None = None
    action: ClassVar[str | None] = None
    cluster: ClassVar[None] = None


@dataclass(frozen=True)
class WhoAmI:
    action: ClassVar[str | None] = None
    cluster: ClassVar[None] = None


@dataclass(frozen=True)
class ListClusters:
    action: ClassVar[str | None] = "list"
    cluster: ClassVar[None] = None


@dataclass(frozen=True)
class Show:
    cluster: str
    action: ClassVar[str | None] = "show"


@dataclass(frozen=True)
class Resize:
    """One or more groups' replicas and/or bounds; at most one change per group.

    With `for <duration>` (`duration_seconds`), the resize is temporary: raybot reverts it at expiry.
    """

    cluster: str
    changes: tuple[SetReplicas, ...]
    duration_seconds: int | None = None
    action: ClassVar[str | None] = "resize"


@dataclass(frozen=True)
class Edit:
    """Open the modal editor of a cluster (from a mention: a button that opens it)."""

    cluster: str
    action: ClassVar[str | None] = "edit"


@dataclass(frozen=True)
class Start:
    cluster: str
    action: ClassVar[str | None] = "start"


@dataclass(frozen=True)
class Stop:
    """Stop a cluster: answered with a confirmation that says what stops."""

    cluster: str
    action: ClassVar[str | None] = "stop"


@dataclass(frozen=True)
class History:
    cluster: str
    limit: int = 10
    action: ClassVar[str | None] = "history"


@dataclass(frozen=True)
class Undo:
    """Undo a change made in this channel: `change_id`, or the cluster's latest one that can be undone (None)."""

    cluster: str
    change_id: int | None = None
    action: ClassVar[str | None] = "undo"


@dataclass(frozen=True)
class Autoscale:
    cluster: str
    enabled: bool
    idle_timeout_seconds: int | None = None
    action: ClassVar[str | None] = "autoscale"


Command = Help | WhoAmI | ListClusters | Show | Resize | Autoscale | History | Edit | Start | Stop | Undo

HISTORY_MAX = 50
DURATION_UNITS = {"m": 60, "h": 3600, "d": 86400}
DURATION_MIN_SECONDS = 60
DURATION_MAX_SECONDS = 7 * 86400


class UsageError(ValueError):
    """Text that is not a valid command.

    `message` names the offending token; `usage` holds the usage line(s) of the
    subcommand, or the whole help when the subcommand itself is unknown. A parse
    function may raise it without `usage`: `parse` fills it in.
    """

    def __init__(self, message: str, usage: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage


# --- token helpers ------------------------------------------------------------------------------------------------


def _q(token: str) -> str:
    return f"'{token}'"


def _number(value: str, token: str) -> int:
    """A positive decimal integer of at most NUMBER_DIGITS_MAX digits; the error names `token`."""
    where = _q(value) if value == token else f"{_q(value)} in {_q(token)}"
    if value == "":
        raise UsageError(f"{_q(token)} is missing a number after '='")
    if re.fullmatch(r"-?0+", value) or re.fullmatch(r"-[0-9]+", value):
        raise UsageError(f"{where} must be at least 1")
    if not re.fullmatch(r"[0-9]+", value):
        raise UsageError(f"{where} is not a positive whole number")
    if value.startswith("0"):
        raise UsageError(f"{where}: write the number without leading zeros")
    if len(value) > NUMBER_DIGITS_MAX:
        raise UsageError(f"{where} is too large (at most {NUMBER_DIGITS_MAX} digits)")
    return int(value)


def _cluster(args: Sequence[str], subcommand: str) -> str:
    if not args:
        raise UsageError(f"{subcommand} needs a cluster")
    if "=" in args[0]:
        raise UsageError(f"{subcommand} needs a cluster before {_q(args[0])}")
    return args[0]


def _no_more(args: Sequence[str]) -> None:
    if args:
        raise UsageError("unexpected " + " ".join(_q(a) for a in args))


def _split_keyword(token: str) -> tuple[str, str]:
    key, _, value = token.partition("=")
    return key, value


# --- one parse function per subcommand ----------------------------------------------------------------------------


def _parse_help(args: Sequence[str]) -> Help:
    if not args:
        return Help()
    topic = args[0].lower()
    if topic not in SUBCOMMANDS:
        raise UsageError(_unknown_message(args[0]))
    _no_more(args[1:])
    return Help(topic)


def _parse_whoami(args: Sequence[str]) -> WhoAmI:
    _no_more(args)
    return WhoAmI()


def _parse_list(args: Sequence[str]) -> ListClusters:
    _no_more(args)
    return ListClusters()


_RESIZE_KEYWORDS = {"replicas": "replica", "min": "min_replica", "max": "max_replica"}


def _duration(token: str) -> int:
    """`30m`, `2h`, `1d`: between a minute and a week, in seconds."""
    match = re.fullmatch(r"([1-9][0-9]{0,4})([mhdMHD])", token)
    if match is None:
        raise UsageError(f"{_q(token)} is not a duration; write it like 30m, 2h or 1d")
    seconds = int(match.group(1)) * DURATION_UNITS[match.group(2).lower()]
    if not DURATION_MIN_SECONDS <= seconds <= DURATION_MAX_SECONDS:
        raise UsageError(f"{_q(token)}: a temporary resize lasts from 1m to 7d")
    return seconds


def _parse_resize(args: Sequence[str]) -> Resize:
    cluster = _cluster(args, "resize")
    rest = list(args[1:])
    duration: int | None = None
    if len(rest) >= 2 and rest[-2].lower() == "for":
        duration = _duration(rest[-1])
        rest = rest[:-2]
    elif rest and rest[-1].lower() == "for":
        raise UsageError("'for' needs a duration such as 2h")
    if not rest:
        raise UsageError("resize needs at least one group: <group>=<n>, or <group> replicas=<n>")
    if "=" in rest[0]:
        return Resize(cluster, _resize_pairs(rest), duration)
    return Resize(cluster, (_resize_keywords(rest[0], rest[1:]),), duration)


def _one_cluster(name: str, make: Callable[[str], Command]) -> Callable[[Sequence[str]], Command]:
    """The parser of `<name> <cluster>`."""

    def parse_one(args: Sequence[str]) -> Command:
        cluster = _cluster(args, name)
        _no_more(args[1:])
        return make(cluster)

    return parse_one


def _parse_history(args: Sequence[str]) -> History:
    cluster = _cluster(args, "history")
    rest = args[1:]
    if not rest:
        return History(cluster)
    limit = _number(rest[0], rest[0])
    if limit > HISTORY_MAX:
        raise UsageError(f"history shows at most {HISTORY_MAX} changes, not {limit}")
    _no_more(rest[1:])
    return History(cluster, limit)


def _parse_undo(args: Sequence[str]) -> Undo:
    cluster = _cluster(args, "undo")
    rest = args[1:]
    if not rest:
        return Undo(cluster)
    _no_more(rest[1:])
    return Undo(cluster, _number(rest[0].removeprefix("#"), rest[0]))


def _resize_pairs(tokens: Sequence[str]) -> tuple[SetReplicas, ...]:
    """`<group>=<n> [<group>=<n> ...]`."""
    changes: dict[str, SetReplicas] = {}
    for token in tokens:
        if "=" not in token:
            raise UsageError(f"expected <group>=<n>, not {_q(token)}")
        group, value = _split_keyword(token)
        if not group:
            raise UsageError(f"{_q(token)} is missing the group name before '='")
        if group.lower() in _RESIZE_KEYWORDS:
            # Most likely the group was forgotten; a group really called "min" can use the keyword form.
            raise UsageError(f"{_q(token)} needs a group: resize <cluster> <group> {token}")
        if group in changes:
            raise UsageError(f"group {_q(group)} is given twice")
        changes[group] = SetReplicas(group=group, replica=_number(value, token))
    return tuple(changes.values())


def _resize_keywords(group: str, tokens: Sequence[str]) -> SetReplicas:
    """`<group> [replicas=<n>] [min=<n>] [max=<n>]`."""
    values: dict[str, int] = {}
    for token in tokens:
        key, value = _split_keyword(token)
        field = _RESIZE_KEYWORDS.get(key.lower()) if "=" in token else None
        if field is None:
            if re.fullmatch(r"[0-9]+", token):
                raise UsageError(f"unexpected {_q(token)}; did you mean {group}={token}?")
            raise UsageError(f"unexpected {_q(token)}; expected replicas=<n>, min=<n> or max=<n>")
        if field in values:
            raise UsageError(f"{key.lower()} is given twice ({_q(token)})")
        values[field] = _number(value, token)
    if not values:
        raise UsageError(f"resize of group {_q(group)} needs replicas=<n>, min=<n> or max=<n>")
    low, high = values.get("min_replica"), values.get("max_replica")
    if low is not None and high is not None and low > high:
        raise UsageError(f"min {low} is above max {high}")
    return SetReplicas(group=group, **values)


def _parse_autoscale(args: Sequence[str]) -> Autoscale:
    cluster = _cluster(args, "autoscale")
    rest = args[1:]
    if not rest:
        raise UsageError("autoscale needs on or off")
    switch = rest[0].lower()
    if switch not in ("on", "off"):
        raise UsageError(f"expected on or off, not {_q(rest[0])}")
    idle: int | None = None
    for token in rest[1:]:
        key, value = _split_keyword(token)
        if "=" not in token or key.lower() != "idle":
            raise UsageError(f"unexpected {_q(token)}; expected idle=<seconds>")
        if idle is not None:
            raise UsageError(f"idle is given twice ({_q(token)})")
        idle = _number(value, token)
    return Autoscale(cluster, switch == "on", idle)


# --- the table ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subcommand:
    """One entry of the grammar: `lines` are (syntax after "/ray ", description) pairs; `examples` whole commands
    after "/ray " that `parse` accepts (a test holds them to that)."""

    name: str
    lines: tuple[tuple[str, str], ...]
    parse: Callable[[Sequence[str]], Command]
    examples: tuple[str, ...] = ()

    @property
    def brief(self) -> str:
        """What the command does, in a few words: its first line's description."""
        return self.lines[0][1]


SUBCOMMANDS: dict[str, Subcommand] = {
    s.name: s
    for s in (
        Subcommand(
            "help", (("help [<command>]", "this help, or the usage of one command"),), _parse_help, ("help resize",)
        ),
        Subcommand("whoami", (("whoami", "what you may do here, and why"),), _parse_whoami, ("whoami",)),
        Subcommand("list", (("list", "clusters this channel may see, with their groups"),), _parse_list, ("list",)),
        Subcommand(
            "show",
            (("show <cluster>", "a cluster's status, head and every worker group"),),
            _one_cluster("show", Show),
            ("show prod",),
        ),
        Subcommand(
            "resize",
            (
                ("resize <cluster> <group>=<n> [<group>=<n> ...]", "set replicas of one or more groups"),
                ("resize <cluster> <group> [replicas=<n>] [min=<n>] [max=<n>]", "set replicas and bounds of one group"),
                ("resize <cluster> … for <30m|2h|1d>", "a temporary resize: reverted by itself at expiry"),
            ),
            _parse_resize,
            (
                "resize prod WorkerGroup1=4",
                "resize prod WorkerGroup1=4 WorkerGroup2=2",
                "resize prod WorkerGroup1 replicas=4 min=1 max=10",
                "resize prod WorkerGroup1=8 for 2h",
            ),
        ),
        Subcommand(
            "autoscale",
            (("autoscale <cluster> on|off [idle=<seconds>]", "switch autoscaling, optionally its idle timeout"),),
            _parse_autoscale,
            ("autoscale prod on idle=600", "autoscale prod off"),
        ),
        Subcommand(
            "edit",
            (("edit <cluster>", "edit every field of the cluster in a dialog"),),
            _one_cluster("edit", Edit),
            ("edit prod",),
        ),
        Subcommand(
            "start", (("start <cluster>", "start a stopped cluster"),), _one_cluster("start", Start), ("start prod",)
        ),
        Subcommand(
            "stop",
            (("stop <cluster>", "stop a running cluster (asks for confirmation)"),),
            _one_cluster("stop", Stop),
            ("stop prod",),
        ),
        Subcommand(
            "undo",
            (("undo <cluster> [#<n>]", "undo your channel's latest change to it (or change #n), as Undo does"),),
            _parse_undo,
            ("undo prod", "undo prod #12"),
        ),
        Subcommand(
            "history",
            (("history <cluster> [<n>]", "the last n changes (default 10)"),),
            _parse_history,
            ("history prod", "history prod 20"),
        ),
    )
}


def _usage(sub: Subcommand) -> str:
    return "\n".join(f"{PREFIX} {syntax}" for syntax, _ in sub.lines)


USAGE: dict[str, str] = {name: _usage(sub) for name, sub in SUBCOMMANDS.items()}


# --- entry point ----------------------------------------------------------------------------------------------------

_ENTITIES = {"&lt;": "<", "&gt;": ">", "&amp;": "&"}
_ENTITY = re.compile("|".join(_ENTITIES))
_SMART_QUOTES = str.maketrans(
    {"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2018": "'", "\u2019": "'", "\u201a": "'"}
)


def normalize(text: str) -> str:
    """Undo what Slack does to typed text: HTML entities for &, <, > and typographic quotes."""
    # One pass, so "&amp;lt;" becomes "&lt;" and not "<".
    return _ENTITY.sub(lambda m: _ENTITIES[m.group(0)], text).translate(_SMART_QUOTES)


def _unknown_message(name: str) -> str:
    close = difflib.get_close_matches(name.lower(), list(SUBCOMMANDS), n=1)
    if close:
        return f"unknown command {_q(name)}; did you mean {close[0]}?"
    return f"unknown command {_q(name)}; commands: {', '.join(SUBCOMMANDS)}"


def parse(text: str) -> Command:
    """Parse the text of a `/ray` command (or a mention without the bot's mention); empty text is Help.

    Raises UsageError, whose message names the offending token and whose usage is
    the subcommand's usage lines (the whole help for an unknown subcommand).
    """
    tokens = normalize(text).split()
    if tokens and tokens[0].lower() == PREFIX:
        # "@raybot /ray list" is a natural thing to type in a thread.
        tokens = tokens[1:]
    if not tokens:
        return Help()
    name = tokens[0].lower()
    sub = SUBCOMMANDS.get(name)
    if sub is None:
        raise UsageError(_unknown_message(tokens[0]), "\n".join(_usage(s) for s in SUBCOMMANDS.values()))
    try:
        return sub.parse(tokens[1:])
    except UsageError as exc:
        raise UsageError(exc.message, exc.usage or _usage(sub)) from None
