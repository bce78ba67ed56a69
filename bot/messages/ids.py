"""Action and block ids Slack echoes back to us: one place, so that builders and listeners agree."""

from __future__ import annotations

from enum import StrEnum


class ActionId(StrEnum):
    APPROVE = "jit_approve"
    DENY = "jit_deny"


class BlockId(StrEnum):
    DECISION = "decision"
    SUMMARY = "summary"
