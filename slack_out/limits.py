"""Slack's Block Kit limits, and the small pieces every message is built of: escaping, clipping, text objects."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

Blocks = list[dict[str, Any]]


@dataclass(frozen=True)
class Message:
    """A Slack message as a builder makes it: the notification text and the blocks, together."""

    text: str
    blocks: Blocks


# Slack's Block Kit limits: past any one of them Slack refuses the whole message (invalid_blocks).
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_FIELD_TEXT = 2000
MAX_FIELDS = 10
MAX_HEADER_TEXT = 150
MAX_BUTTON_TEXT = 75
MAX_CONTEXT_ELEMENTS = 10
MAX_TEXT = 4000  # a message's own text: Slack takes 40,000 but advises 4,000, and ours are notices
MAX_TYPED_SECTIONS = 2  # typed text past two sections (6,000 characters) is cut, saying by how much
MAX_LISTED = 100  # objects a summary lists before "… and N more"
MAX_NAMED = 20  # people a line names before "and N more"
MAX_LINE = 300  # one listed object, or a policy's description
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def escape(text: str) -> str:
    """Text shown as typed inside mrkdwn or a notification: Slack's escaping, so it mentions and links nobody."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """`text` within `limit` characters, ending in "…" when cut."""
    head, rest = split_at(text, limit)
    return head if not rest else split_at(text, limit - 1)[0] + "…"


def split_at(text: str, limit: int) -> tuple[str, str]:
    """The longest head of `text` within `limit` characters, and the rest.

    Characters are counted as UTF-16 units (an emoji is two), never fewer than Slack counts them.
    """
    astral = len(_ASTRAL.findall(text, 0, limit))
    if not astral:
        return text[:limit], text[limit:]
    size = limit - astral
    units = size + len(_ASTRAL.findall(text, 0, size))
    while size < len(text):
        step = 2 if text[size] > "\uffff" else 1
        if units + step > limit:
            break
        units, size = units + step, size + 1
    return text[:size], text[size:]


def utf16_len(text: str) -> int:
    return len(text) + len(_ASTRAL.findall(text))


def mrkdwn(text: str) -> dict[str, Any]:
    """A mrkdwn text object of our own words (typed text inside is escaped first), within a section's limit."""
    return {"type": "mrkdwn", "text": clip(text, MAX_SECTION_TEXT) if text.strip() else "—"}


def plain(text: str) -> dict[str, Any]:
    """A plain_text object: shown as is, no formatting, mention or link."""
    return {"type": "plain_text", "text": clip(text, MAX_SECTION_TEXT) if text.strip() else "—"}


def section(text: dict[str, Any], block_id: str | None = None) -> dict[str, Any]:
    return {"type": "section", "text": text} | ({"block_id": block_id} if block_id else {})


def typed_blocks(label: str, text: str) -> Blocks:
    """Text a person typed (a reason), shown as typed: a bold label, then the text in plain_text sections.

    plain_text can neither format, mention nor link; past MAX_TYPED_SECTIONS sections the rest is cut, saying so.
    """
    chunks: list[str] = []
    rest = text.strip() or "—"
    while rest and len(chunks) < MAX_TYPED_SECTIONS:
        head, rest = split_at(rest, MAX_SECTION_TEXT)
        chunks.append(head)
    if rest:
        note = f" … ({len(rest)} more characters not shown)"
        chunks[-1] = split_at(chunks[-1], MAX_SECTION_TEXT - len(note))[0] + note
    return [section(mrkdwn(f"*{label}*"))] + [section(plain(chunk)) for chunk in chunks if chunk.strip()]


def packed(lines: Sequence[str], limit: int = MAX_SECTION_TEXT) -> list[str]:
    """Lines joined by newlines into as few texts within `limit` as they fit (a longer line is clipped)."""
    texts: list[str] = []
    current, size = "", 0
    for whole in lines:
        line = clip(whole, limit)
        length = utf16_len(line)
        if current and size + 1 + length <= limit:
            current, size = f"{current}\n{line}", size + 1 + length
            continue
        if current:
            texts.append(current)
        current, size = line, length
    if current:
        texts.append(current)
    return texts


def list_blocks(title: str, items: Sequence[str]) -> Blocks:
    """`title` and a line an item, in plain_text sections; past MAX_LISTED items, "… and N more"."""
    lines = [title] + [f"• {clip(item, MAX_LINE)}" for item in items[:MAX_LISTED]]
    if len(items) > MAX_LISTED:
        lines.append(f"… and {len(items) - MAX_LISTED} more")
    elif not items:
        lines[0] += " —"
    return [section(plain(text)) for text in packed(lines)]


def bounded(lines: Sequence[str], limit: int = MAX_TEXT) -> str:
    """Lines joined by newlines within `limit`; when they do not all fit, the last says how many were left out."""
    text = "\n".join(lines)
    if utf16_len(text) <= limit:
        return text
    kept: list[str] = []
    size = 0
    for index, line in enumerate(lines):
        more = f"… and {len(lines) - index} more"
        if size + utf16_len(line) + 1 + len(more) > limit:
            return "\n".join([*kept, more])
        kept.append(line)
        size += utf16_len(line) + 1
    return text


def capped(blocks: Blocks) -> Blocks:
    """At most MAX_BLOCKS blocks: past them, the last says how many were left out (builders stay well within)."""
    if len(blocks) <= MAX_BLOCKS:
        return blocks
    left_out = len(blocks) - MAX_BLOCKS + 1
    return [*blocks[: MAX_BLOCKS - 1], context_block(f"… and {left_out} more blocks not shown")]


def when(moment: datetime | None) -> str:
    """A time as Slack shows it to each reader in their own zone, with a UTC fallback."""
    if moment is None:
        return "—"
    fallback = moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time_secs}}|{fallback}>"


def people(users: Sequence[str]) -> str:
    named = ", ".join(f"<@{user}>" for user in users[:MAX_NAMED]) or "—"
    return named + (f" and {len(users) - MAX_NAMED} more" if len(users) > MAX_NAMED else "")


def context_block(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [mrkdwn(text)]}
