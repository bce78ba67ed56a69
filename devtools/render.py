"""Block Kit as a person would see it, in text: modals, the App Home and messages, for the demo and for reading."""

from __future__ import annotations

import re
from typing import Any

WIDTH = 72


_DATE = re.compile(r"<!date\^[^|>]*\|([^>]*)>")
_MENTION = re.compile(r"<([@#])([A-Z0-9]+)(?:\|[^>]*)?>")


def _text(obj: Any) -> str:
    """What Slack shows for a text object: dates in the reader's form (here their fallback), @people, #channels."""
    text = str(obj.get("text", "")) if isinstance(obj, dict) else str(obj or "")
    if isinstance(obj, dict) and obj.get("type") == "plain_text":
        return text
    text = _DATE.sub(r"\1", text)
    text = _MENTION.sub(r"\1\2", text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _boxed(title: str, lines: list[str], footer: str = "") -> str:
    inner = WIDTH - 4
    out = ["┌" + "─" * (WIDTH - 2) + "┐", f"│ {title[:inner]:<{inner}} │", "├" + "─" * (WIDTH - 2) + "┤"]
    for line in lines:
        for part in _wrap(line, inner):
            out.append(f"│ {part:<{inner}} │")
    if footer:
        out += ["├" + "─" * (WIDTH - 2) + "┤", f"│ {footer[:inner]:>{inner}} │"]
    out.append("└" + "─" * (WIDTH - 2) + "┘")
    return "\n".join(out)


def _wrap(line: str, width: int) -> list[str]:
    parts: list[str] = []
    for raw in line.split("\n") or [""]:
        rest = raw
        while len(rest) > width:
            cut = rest.rfind(" ", 0, width)
            cut = cut if cut > 0 else width
            parts.append(rest[:cut])
            rest = rest[cut:].lstrip()
        parts.append(rest)
    return parts


def _element(element: dict[str, Any]) -> str:
    kind = element.get("type")
    if kind == "button":
        return f"[ {_text(element.get('text'))} ]"
    if kind == "static_select":
        chosen = element.get("initial_option")
        options = ", ".join(_text(option.get("text")) for option in element.get("options", []))
        return f"[ {_text(chosen['text']) if chosen else 'Choose…'} ▾ ]  ({options})"
    if kind == "multi_static_select":
        picked = ", ".join(_text(option.get("text")) for option in element.get("initial_options", [])) or "Choose…"
        options = ", ".join(_text(option.get("text")) for option in element.get("options", []))
        return f"[ {picked} ▾▾ ]  ({options})"
    if kind == "plain_text_input":
        return "[ " + ("…" * 3) + (" (several lines)" if element.get("multiline") else "") + " ]"
    return f"[{kind}]"


def blocks_lines(blocks: list[dict[str, Any]]) -> list[str]:
    """Each block as the lines it shows."""
    lines: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            lines += ["", _text(block.get("text")).upper()]
        elif kind == "section":
            if block.get("text"):
                lines.append(_text(block.get("text")))
            lines += ["  " + _text(field) for field in block.get("fields", [])]
        elif kind == "context":
            lines.append("  · " + " ".join(_text(element) for element in block.get("elements", [])))
        elif kind == "actions":
            lines.append("  " + "  ".join(_element(element) for element in block.get("elements", [])))
        elif kind == "input":
            optional = " (optional)" if block.get("optional") else ""
            lines.append(f"{_text(block.get('label'))}{optional}")
            lines.append("  " + _element(block.get("element", {})))
            if block.get("hint"):
                lines.append("  ↳ " + _text(block["hint"]))
        elif kind == "divider":
            lines.append("─" * 20)
    return lines


def render_view(view: dict[str, Any], errors: dict[str, str] | None = None) -> str:
    """A modal or home tab, boxed; a modal's errors are shown under their block, as Slack shows them."""
    lines = blocks_lines(view.get("blocks", []))
    for block, message in (errors or {}).items():
        lines.append(f"⚠ {block}: {message}")
    if view.get("type") == "home":
        return _boxed("App Home · jit-lb", lines)
    footer = f"{_text(view.get('close'))}   {_text(view.get('submit'))}"
    return _boxed(_text(view.get("title")), lines, footer)


def render_message(message: dict[str, Any]) -> str:
    """A message as shown: its blocks when it has them, its text otherwise."""
    blocks = message.get("blocks")
    return "\n".join(blocks_lines(blocks)) if isinstance(blocks, list) and blocks else str(message.get("text", ""))


def readable(text: str) -> str:
    """Slack mrkdwn as a person reads it: dates in their fallback form, @people and #channels."""
    return _text({"type": "mrkdwn", "text": text})
