"""Modals and the App Home as Block Kit views: pure builders of domain state, tested as dicts."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from jit_lb.access.durations import format_duration
from jit_lb.access.policy import Target
from jit_lb.access.requests import MAX_TARGETS, AccessRequest
from jit_lb.access.stepup import StepUpIntent, intent_metadata
from slack_out.ids import ActionId, CallbackId
from slack_out.limits import MAX_NAMED, Blocks, clip, typed_blocks, when

View = dict[str, Any]
Approvers = tuple[list[str], list[str]]  # who may approve a target: user ids, and usergroups whose members may

MAX_OPTIONS = 100  # a static_select's options
MAX_OPTION_TEXT = 75
MAX_HOME_ITEMS = 7  # requests each home section lists (two blocks each: 3 sections stay under 50 blocks)
MAX_REASON = 500  # as the command's reason


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": clip(text, MAX_OPTION_TEXT) or "—", "emoji": True}


def _option(text: str, value: str, description: str = "") -> dict[str, Any]:
    option: dict[str, Any] = {"text": _plain(text), "value": value}
    if description.strip():
        option["description"] = _plain(description)
    return option


def _duration_option(duration: timedelta) -> dict[str, Any]:
    return _option(format_duration(duration), format_duration(duration))


def _modal(callback_id: str, title: str, submit: str, blocks: Blocks, metadata: dict[str, Any]) -> View:
    return {
        "type": "modal",
        "callback_id": callback_id,
        "title": _plain(title),
        "submit": _plain(submit),
        "close": _plain("Cancel"),
        "private_metadata": json.dumps(metadata, separators=(",", ":")),
        "blocks": blocks,
    }


def _text_input(block_id: str, label: str, *, optional: bool, multiline: bool, hint: str = "") -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "input",
        "block_id": block_id,
        "optional": optional,
        "label": _plain(label),
        "element": {
            "type": "plain_text_input",
            "action_id": block_id,
            "multiline": multiline,
            "max_length": MAX_REASON,
        },
    }
    if hint:
        block["hint"] = {"type": "plain_text", "text": clip(hint, 2000)}
    return block


def request_modal(
    targets: dict[str, Target],
    selected: str | Sequence[str] | None = None,
    approvers: Callable[[Target], Approvers] | None = None,
    duration: timedelta | None = None,
    reason: str | None = None,
) -> View:
    """The `jit_request` modal: only the targets the person may request, up to MAX_TARGETS of them in one request;
    durations and `--ip` follow the selection.

    `approvers` names who may approve each selected target (users, and usergroups whose members may), shown
    under the targets with how many approvals each needs, as `policy explain` says it.

    The target select dispatches its changes, so that the modal is updated with the durations every selected
    target allows, the reason hint and address field (`request_modal` again, with `selected`: one name, several
    joined by commas, or a list). `duration` and `reason` fill it in (Request again): a duration outside a
    selected target's limits falls back to the default.
    """
    names = sorted(targets)[:MAX_OPTIONS]
    wanted = selected.split(",") if isinstance(selected, str) else list(selected or [])
    chosen = [name for name in dict.fromkeys(wanted) if name in targets][:MAX_TARGETS] or names[:1]
    picked = [targets[name] for name in chosen]
    options = [_option(name, name, targets[name].description) for name in names]
    select: dict[str, Any] = {
        "type": "multi_static_select",
        "action_id": "target",
        "options": options,
        "max_selected_items": MAX_TARGETS,
    }
    if chosen:
        select["initial_options"] = [_option(name, name, targets[name].description) for name in chosen]
    blocks: Blocks = [
        {
            "type": "input",
            "block_id": "target",
            "dispatch_action": True,
            "label": _plain(f"Targets (up to {MAX_TARGETS}, each approved on its own)"),
            "element": select,
        }
    ]
    if picked and approvers is not None:
        blocks += [
            _approvers_context(target, *approvers(target), name) for name, target in zip(chosen, picked, strict=True)
        ]
    if picked:
        low, high = max(t.min_duration for t in picked), min(t.max_duration for t in picked)
        first = picked[0]
        # The durations every selected target allows (the first target's choices, within all of their limits).
        choices = [c for c in first.duration_choices() if low <= c <= high][:MAX_OPTIONS] or first.duration_choices()[
            :1
        ]
        default = min((t.default_duration for t in picked), default=choices[0])
        default = default if default in choices else choices[0]
        if duration is not None and low <= duration <= high:
            # The duration asked before, offered even where it is not one of the usual choices.
            choices = sorted({*choices[: MAX_OPTIONS - 1], duration})
            default = duration
        blocks.append(
            {
                "type": "input",
                "block_id": "duration",
                "label": _plain("For how long"),
                "element": {
                    "type": "static_select",
                    "action_id": "duration",
                    "options": [_duration_option(choice) for choice in choices],
                    "initial_option": _duration_option(default),
                },
            }
        )
        hint = next((t.reason_hint for t in picked if t.reason_hint), "")
        why = _text_input("reason", "Why", optional=False, multiline=True, hint=hint)
        if reason:
            why["element"]["initial_value"] = reason[:MAX_REASON]
        blocks.append(why)
        blocks.append(
            _text_input(
                "start",
                "Starting",
                optional=True,
                multiline=False,
                hint="Empty: now. Or a scheduled window: 2026-12-24T02:00Z (with a zone), or HH:MM in UTC.",
            )
        )
        if all(t.allow_requester_ip for t in picked):
            blocks.append(
                _text_input(
                    "ip",
                    "From which address (optional)",
                    optional=True,
                    multiline=False,
                    hint="One IPv4 or IPv6 host; left empty, your usual source address.",
                )
            )
    else:
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": "You may not request any target. Ask your platform team."},
            }
        )
    return _modal(CallbackId.REQUEST, "Request access", "Request", blocks, {"target": ",".join(chosen) or None})


def _approvers_context(target: Target, users: Sequence[str], groups: Sequence[str], name: str = "") -> dict[str, Any]:
    named = [f"<@{user}>" for user in users[:MAX_NAMED]] + [f"<!subteam^{group}>" for group in groups[:MAX_NAMED]]
    more = max(0, len(users) - MAX_NAMED) + max(0, len(groups) - MAX_NAMED)
    who = (
        ", ".join(named) + (f" and {more} more" if more else "") if named else "nobody but you: ask your platform team"
    )
    needed = target.approvals_required
    return {
        "type": "context",
        "elements": [
            {"type": "mrkdwn", "text": clip(f"{f'`{name}`: ' if name else ''}Approved by {needed} of: {who}", 3000)}
        ],
    }


def deny_modal(request: AccessRequest, required: bool, card: tuple[str, str] | None) -> View:
    """The `jit_deny` modal: why the request is denied (required or optional, as the target says)."""
    names = ", ".join(f"`{name}`" for name in request.group_targets or (request.target,))
    head = f"Deny `{request.visible_id}`: <@{request.requester}> asks for {names} for {request.duration_text}."
    if request.group:
        head += " This denies the targets of it that you may approve."
    blocks: Blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": head}},
        *typed_blocks("Their reason", request.reason),
        _text_input(
            "reason",
            "Why you deny it",
            optional=not required,
            multiline=True,
            hint="The requester, the approval thread and the audit log will read it.",
        ),
    ]
    metadata = {"request": request.visible_id, "card": list(card) if card else None}
    return _modal(CallbackId.DENY, "Deny access", "Deny", blocks, metadata)


def extend_modal(request: AccessRequest, target: Target) -> View:
    """The `jit_extend` modal of the App Home's Extend button: how much longer, and why."""
    choices = target.duration_choices()[:MAX_OPTIONS]
    blocks: Blocks = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f"Extend `{request.visible_id}` on `{request.target}`, now until {when(request.ends_at)}.",
            },
        },
        {
            "type": "input",
            "block_id": "duration",
            "label": _plain("How much longer"),
            "element": {
                "type": "static_select",
                "action_id": "duration",
                "options": [_duration_option(choice) for choice in choices],
            },
        },
        _text_input("reason", "Why", optional=False, multiline=True, hint=target.reason_hint or ""),
    ]
    return _modal(CallbackId.EXTEND, "Extend access", "Ask", blocks, {"request": request.visible_id})


def _item(request: AccessRequest, state: str, buttons: Sequence[tuple[str, str, str | None]]) -> Blocks:
    """One request: who, what, its state (mrkdwn, our words), its reason as typed (plain_text), its buttons."""
    head = f"`{request.visible_id}` `{request.target}` for <@{request.requester}> ({request.duration_text}): {state}"
    elements = [
        {"type": "button", "action_id": action, "text": _plain(label), "value": request.id}
        | ({"style": style} if style else {})
        for action, label, style in buttons
    ]
    reason = {"type": "plain_text", "text": clip(" ".join(request.reason.split()), 300) or "—"}
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": head}, "fields": [reason]},
        {"type": "actions", "block_id": f"{buttons[0][0]}-{request.id}", "elements": elements},
    ]


def _home_section(title: str, requests: list[AccessRequest], render: Any, empty: str) -> Blocks:
    blocks: Blocks = [{"type": "header", "text": _plain(title)}]
    if not requests:
        return [*blocks, {"type": "context", "elements": [{"type": "mrkdwn", "text": empty}]}]
    for request in requests[:MAX_HOME_ITEMS]:
        blocks.extend(render(request))
    if len(requests) > MAX_HOME_ITEMS:
        more = f"… and {len(requests) - MAX_HOME_ITEMS} more: `/jit list` shows them all"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]})
    return blocks


def home_view(grants: list[AccessRequest], pending: list[AccessRequest], awaiting: list[AccessRequest]) -> View:
    """The App Home: the person's active grants, their pending requests, and what waits for their approval."""

    def grant(request: AccessRequest) -> Blocks:
        state = f"granted until {when(request.ends_at)}"
        buttons = [(ActionId.REVOKE, "End now", "danger"), (ActionId.EXTEND, "Extend…", None)]
        return _item(request, state, buttons)

    def mine(request: AccessRequest) -> Blocks:
        if request.waits_for_start:
            state = f"approved, scheduled: starts {when(request.starts_at)}"
        else:
            state = f"waiting for approval ({len(request.approvals)} of {request.approvals_required})"
            if request.starts_at is not None:
                state += f", starts {when(request.starts_at)}"
        return _item(request, state, [(ActionId.CANCEL, "Cancel", None)])

    def theirs(request: AccessRequest) -> Blocks:
        if request.extension is not None and request.extension.outcome == "pending":
            state = f"asks to extend by {request.extension.duration_text}"
        else:
            state = f"waiting, expires {when(request.pending_until)}"
        buttons = [(ActionId.APPROVE, "Approve", "primary"), (ActionId.DENY, "Deny", "danger")]
        return _item(request, state, buttons)

    blocks = [
        *_home_section("Your access now", grants, grant, "No active grants. `/jit` opens the request form."),
        *_home_section("Your pending requests", pending, mine, "Nothing pending."),
        *_home_section("Waiting for your approval", awaiting, theirs, "Nothing waits for you."),
    ]
    return {"type": "home", "callback_id": CallbackId.HOME, "blocks": blocks}


def field_values(state: dict[str, Any]) -> dict[str, str]:
    """A view submission's `state.values` as {block_id: value}, for the input kinds our views use."""
    values: dict[str, str] = {}
    for block_id, actions in (state.get("values") or {}).items():
        if not isinstance(actions, dict):
            continue
        for action in actions.values():
            if not isinstance(action, dict):
                continue
            option = action.get("selected_option")
            value = option.get("value") if isinstance(option, dict) else action.get("value")
            several = action.get("selected_options")
            if isinstance(several, list):  # a multi-select: its values joined as the command joins targets
                value = ",".join(str(o.get("value")) for o in several if isinstance(o, dict))
            if isinstance(value, str):
                values[str(block_id)] = value
    return values


def mfa_modal(intent: StepUpIntent, what: str) -> View:
    """The `jit_mfa` step-up modal: a 6-digit code for `what`; `intent` (what the code unlocks) rides in metadata."""
    blocks: Blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": what}},
        {
            "type": "input",
            "block_id": "code",
            "label": _plain("Code from your authenticator"),
            "element": {
                "type": "plain_text_input",
                "action_id": "code",
                "min_length": 6,
                "max_length": 6,
                "placeholder": _plain("123456"),
            },
            "hint": {"type": "plain_text", "text": "Six digits; a code works once."},
        },
    ]
    return _modal(CallbackId.MFA, "Confirm it's you", "Confirm", blocks, intent_metadata(intent))
