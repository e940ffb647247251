"""Which cluster and worker group a Slack message (an alert) names: pure reading, no I/O.

The message shortcut uses these to open the quick resize of the cluster an alert is about. A name counts only as a
whole word: `prod` is named by "prod is slow", "`prod`", "*prod*", "prod." or "<https://console/…/prod|prod>", but
not by "non-prod", "prod-eu", "prod.example.com" or "my_prod". Aliases match in any case ("PROD is down"); cluster
ids and group names, which the cloud spells, match exactly.

Slack's markup is read, not matched: `<@U…>`, `<#C…|name>` and `<!…>` (mentions and broadcasts) name no cluster and
are dropped; a link `<url|label>` counts with both its URL and its label; the entities &amp; &lt; &gt; are read as
the characters they stand for; code spans and formatting marks are only punctuation.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# Raybot never reads more of a message than this: an alert is short, and a hostile payload may not be.
TEXT_MAX = 100_000
_DEPTH_MAX = 12  # blocks nest (rich_text → section → elements); deeper is not a message Slack sends

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_ANGLED = re.compile(r"<([^<>\n]{0,2000})>")
# Formatting marks and code fences are never part of a name: they separate words.
_MARKS = str.maketrans({"*": " ", "~": " ", "`": " "})
# Fields of a legacy attachment that hold text people read.
_ATTACHMENT_TEXTS = ("pretext", "title", "text", "fallback", "footer", "author_name")


def message_texts(message: Any) -> list[str]:
    """Every text of a message payload that people read, in reading order: `text`, the blocks' texts, then each
    attachment's (pretext, title, text, fallback, fields, its blocks). Anything not a string is skipped; at most
    TEXT_MAX characters in all."""
    out: list[str] = []
    budget = [TEXT_MAX]

    def take(value: Any) -> None:
        if isinstance(value, str) and value and budget[0] > 0:
            out.append(value[: budget[0]])
            budget[0] -= len(out[-1])

    if not isinstance(message, Mapping):
        return out
    take(message.get("text"))
    _block_texts(message.get("blocks"), take, 0)
    attachments = message.get("attachments")
    for attachment in attachments if isinstance(attachments, list) else []:
        if not isinstance(attachment, Mapping):
            continue
        for key in _ATTACHMENT_TEXTS:
            take(attachment.get(key))
        fields = attachment.get("fields")
        for item in fields if isinstance(fields, list) else []:
            if isinstance(item, Mapping):
                take(item.get("title"))
                take(item.get("value"))
        _block_texts(attachment.get("blocks"), take, 0)
    return out


def _block_texts(node: Any, take: Any, depth: int) -> None:
    """The `text` strings (and link URLs) anywhere inside blocks: section and context text objects, rich text."""
    if depth > _DEPTH_MAX:
        return
    if isinstance(node, list):
        for item in node:
            _block_texts(item, take, depth + 1)
        return
    if not isinstance(node, Mapping):
        return
    for key, value in node.items():
        if key == "text" and isinstance(value, str):
            take(value)
        elif key == "url" and isinstance(value, str) and node.get("type") == "link":
            take(value)
        elif isinstance(value, list | Mapping):
            _block_texts(value, take, depth + 1)


def readable(text: str) -> str:
    """`text` as people read it: mentions dropped, links as "url label", entities decoded, marks as spaces."""

    def angled(match: re.Match[str]) -> str:
        inner = match.group(1)
        if inner[:1] in ("@", "#", "!"):
            return " "  # a mention, a channel (whose label is a channel name, not a cluster), a broadcast
        url, _, label = inner.partition("|")
        return f" {url} {label} "

    return html.unescape(_ANGLED.sub(angled, text)).translate(_MARKS)


def _edge(text: str, index: int, step: int) -> bool:
    """Whether the character at `index`, looking outwards by `step` (-1 left, +1 right), ends a word there.

    Letters, digits, '-' and '_' continue a word; a '.' continues it only when a word character follows it
    (so "prod." ends a sentence but "prod.example" is a host). Underscores are italics when the run of them is
    itself followed by a word's end: "_prod_" names prod, "my_prod" does not.
    """
    if index < 0 or index >= len(text):
        return True
    char = text[index]
    if char == ".":
        beyond = index + step
        return not (0 <= beyond < len(text) and text[beyond] in _NAME_CHARS)
    if char == "_":
        beyond = index
        while 0 <= beyond < len(text) and text[beyond] == "_":
            beyond += step
        return beyond < 0 or beyond >= len(text) or text[beyond] not in _NAME_CHARS
    return char not in _NAME_CHARS


def names_whole(text: str, name: str, *, ignore_case: bool = False) -> int | None:
    """Where `name` first stands as a whole word in `text` (already `readable`), or None."""
    if not name:
        return None
    haystack, needle = (text.lower(), name.lower()) if ignore_case else (text, name)
    start = haystack.find(needle)
    while start != -1:
        end = start + len(needle)
        if _edge(haystack, start - 1, -1) and _edge(haystack, end, +1):
            return start
        start = haystack.find(needle, start + 1)
    return None


def _first_positions(texts: Sequence[str], names: Iterable[tuple[str, str, bool]]) -> dict[str, tuple[int, int]]:
    """For each (key, name, ignore_case): the (text index, offset) where the name first stands, if anywhere."""
    found: dict[str, tuple[int, int]] = {}
    for key, name, ignore_case in names:
        # A name is looked for as `readable` shows it: a group called "gpu *spot*" is seen as "gpu  spot ".
        seen = name.translate(_MARKS).strip()
        for index, text in enumerate(texts):
            at = names_whole(text, seen, ignore_case=ignore_case)
            if at is not None:
                place = (index, at)
                if key not in found or place < found[key]:
                    found[key] = place
                break
    return found


def named_clusters(texts: Sequence[str], clusters: Mapping[str, str]) -> list[str]:
    """The aliases of `clusters` (alias → clusterId, as in the config) that `texts` name by alias (any case) or by
    clusterId (exactly), in the order they are first named. An alias whose clusterId is named counts as named."""
    readable_texts = [readable(t) for t in texts]
    candidates: list[tuple[str, str, bool]] = []
    for alias, cluster_id in clusters.items():
        candidates.append((alias, alias, True))
        candidates.append((alias, cluster_id, False))
    found = _first_positions(readable_texts, candidates)
    return sorted(found, key=lambda alias: found[alias])


def named_groups(texts: Sequence[str], group_names: Sequence[str]) -> list[str]:
    """The worker groups (of `group_names`, from the cluster's spec) that `texts` name, exactly and as whole words,
    in the order they are first named. A group whose name holds another's ("WorkerGroup10", "WorkerGroup1") is not
    taken for the shorter one."""
    readable_texts = [readable(t) for t in texts]
    found = _first_positions(readable_texts, [(name, name, False) for name in dict.fromkeys(group_names) if name])
    return sorted(found, key=lambda name: found[name])
