"""Slack's limits, the one place they are written down, and checks for the ones slack_sdk does not enforce.

Lengths are counted in characters (Python `len`), as slack_sdk counts them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# --- timing -----------------------------------------------------------------------------------------------------------
ACK_DEADLINE_SECONDS = 3  # a slash command, interaction or event must be acknowledged within 3 s
TRIGGER_ID_TTL_SECONDS = 3  # a trigger_id opens a modal only within 3 s of the interaction, and only once
SIGNATURE_MAX_AGE_SECONDS = 300  # requests whose X-Slack-Request-Timestamp is older are rejected (replay guard)
RESPONSE_URL_USES = 5  # a response_url accepts at most 5 posts
RESPONSE_URL_TTL_SECONDS = 1800  # … within 30 minutes of the interaction
CHAT_POST_PER_CHANNEL_PER_SECOND = 1  # chat.postMessage: about one message per second per channel, bursts tolerated

# --- messages ---------------------------------------------------------------------------------------------------------
MESSAGE_BLOCKS_MAX = 50  # blocks in one message (chat.postMessage, chat.update, response_url)
MESSAGE_TEXT_MAX = 40000  # top-level `text` of a message; Slack truncates longer text

# --- blocks and their parts -------------------------------------------------------------------------------------------
SECTION_TEXT_MAX = 3000  # section block `text`
SECTION_FIELDS_MAX = 10  # section block `fields` items
FIELD_TEXT_MAX = 2000  # each section field's text
HEADER_TEXT_MAX = 150  # header block plain_text
CONTEXT_ELEMENTS_MAX = 10  # context block `elements`
ACTIONS_ELEMENTS_MAX = 25  # actions block `elements`
BLOCK_ID_MAX = 255  # `block_id` of any block
ACTION_ID_MAX = 255  # `action_id` of any interactive element
BUTTON_TEXT_MAX = 75  # button label
BUTTON_VALUE_MAX = 2000  # button `value`
INPUT_LABEL_MAX = 2000  # input block label
INPUT_HINT_MAX = 2000  # input block hint
PLACEHOLDER_MAX = 150  # placeholder of inputs and selects
PLAIN_TEXT_INPUT_MAX = 3000  # max_length of a plain_text_input
STATIC_SELECT_OPTIONS_MAX = 100  # options of a static_select (and option groups of one)
OPTION_TEXT_MAX = 75  # an option's text
OPTION_VALUE_MAX = 150  # an option's value
CONFIRM_TITLE_MAX = 100  # confirmation dialog title
CONFIRM_TEXT_MAX = 300  # confirmation dialog text

# --- modals -----------------------------------------------------------------------------------------------------------
MODAL_BLOCKS_MAX = 100  # blocks in one modal view
MODAL_TITLE_MAX = 24  # modal title (plain_text)
MODAL_BUTTON_TEXT_MAX = 24  # modal submit and close labels
PRIVATE_METADATA_MAX = 3000  # view `private_metadata`
CALLBACK_ID_MAX = 255  # view `callback_id`
EXTERNAL_ID_MAX = 255  # view `external_id`
MODAL_STACK_MAX = 3  # views a modal stack holds (views.push beyond fails)


def _text(obj: Any) -> str:
    if isinstance(obj, Mapping):
        return str(obj.get("text") or "")
    return str(obj or "")


def _element_problems(where: str, element: Mapping[str, Any]) -> list[str]:
    out = []
    action_id = element.get("action_id")
    if action_id is not None and len(action_id) > ACTION_ID_MAX:
        out.append(f"{where}: action_id is {len(action_id)} characters (max {ACTION_ID_MAX})")
    if element.get("type") == "button":
        if len(_text(element.get("text"))) > BUTTON_TEXT_MAX:
            out.append(f"{where}: button text over {BUTTON_TEXT_MAX} characters")
        if len(element.get("value") or "") > BUTTON_VALUE_MAX:
            out.append(f"{where}: button value over {BUTTON_VALUE_MAX} characters")
    options = element.get("options")
    if options is not None and len(options) > STATIC_SELECT_OPTIONS_MAX:
        out.append(f"{where}: {len(options)} options (max {STATIC_SELECT_OPTIONS_MAX})")
    return out


def block_problems(blocks: Sequence[Mapping[str, Any]], *, max_blocks: int) -> list[str]:
    """Every Slack limit the serialized `blocks` break, as readable lines; empty when they fit."""
    out = []
    if len(blocks) > max_blocks:
        out.append(f"{len(blocks)} blocks (max {max_blocks})")
    for index, block in enumerate(blocks):
        where = f"block {index} ({block.get('type')})"
        block_id = block.get("block_id")
        if block_id is not None and len(block_id) > BLOCK_ID_MAX:
            out.append(f"{where}: block_id is {len(block_id)} characters (max {BLOCK_ID_MAX})")
        kind = block.get("type")
        if kind == "section":
            if "text" not in block and "fields" not in block:
                out.append(f"{where}: a section needs text or fields")
            if len(_text(block.get("text"))) > SECTION_TEXT_MAX:
                out.append(f"{where}: text is {len(_text(block['text']))} characters (max {SECTION_TEXT_MAX})")
            fields = block.get("fields") or []
            if len(fields) > SECTION_FIELDS_MAX:
                out.append(f"{where}: {len(fields)} fields (max {SECTION_FIELDS_MAX})")
            for number, field in enumerate(fields):
                if len(_text(field)) > FIELD_TEXT_MAX:
                    out.append(f"{where}: field {number} is {len(_text(field))} characters (max {FIELD_TEXT_MAX})")
            if isinstance(block.get("accessory"), Mapping):
                out += _element_problems(f"{where} accessory", block["accessory"])
        elif kind == "header":
            if len(_text(block.get("text"))) > HEADER_TEXT_MAX:
                out.append(f"{where}: header text over {HEADER_TEXT_MAX} characters")
        elif kind == "context":
            elements = block.get("elements") or []
            if len(elements) > CONTEXT_ELEMENTS_MAX:
                out.append(f"{where}: {len(elements)} elements (max {CONTEXT_ELEMENTS_MAX})")
        elif kind == "actions":
            elements = block.get("elements") or []
            if len(elements) > ACTIONS_ELEMENTS_MAX:
                out.append(f"{where}: {len(elements)} elements (max {ACTIONS_ELEMENTS_MAX})")
            for number, element in enumerate(elements):
                out += _element_problems(f"{where} element {number}", element)
        elif kind == "input":
            if len(_text(block.get("label"))) > INPUT_LABEL_MAX:
                out.append(f"{where}: label over {INPUT_LABEL_MAX} characters")
            if isinstance(block.get("element"), Mapping):
                out += _element_problems(f"{where} element", block["element"])
    return out


def check_message_limits(blocks: Sequence[Mapping[str, Any]], text: str = "") -> list[str]:
    """The limits a message breaks (≤ 50 blocks, section text ≤ 3000, ≤ 10 fields of ≤ 2000, header ≤ 150, …)."""
    out = block_problems(blocks, max_blocks=MESSAGE_BLOCKS_MAX)
    if len(text) > MESSAGE_TEXT_MAX:
        out.append(f"text is {len(text)} characters (max {MESSAGE_TEXT_MAX})")
    return out


def check_modal_limits(view: Mapping[str, Any]) -> list[str]:
    """The limits a modal view breaks: its blocks (≤ 100), title, button labels, private_metadata."""
    out = block_problems(view.get("blocks") or [], max_blocks=MODAL_BLOCKS_MAX)
    for key, limit in (("title", MODAL_TITLE_MAX), ("submit", MODAL_BUTTON_TEXT_MAX), ("close", MODAL_BUTTON_TEXT_MAX)):
        if len(_text(view.get(key))) > limit:
            out.append(f"{key} is {len(_text(view.get(key)))} characters (max {limit})")
    metadata = view.get("private_metadata") or ""
    if len(metadata) > PRIVATE_METADATA_MAX:
        out.append(f"private_metadata is {len(metadata)} characters (max {PRIVATE_METADATA_MAX})")
    for key, limit in (("callback_id", CALLBACK_ID_MAX), ("external_id", EXTERNAL_ID_MAX)):
        if len(view.get(key) or "") > limit:
            out.append(f"{key} over {limit} characters")
    return out
