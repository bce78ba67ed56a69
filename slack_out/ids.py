"""Action and block ids Slack echoes back to us: one place, so that builders and listeners agree."""

from __future__ import annotations

from enum import StrEnum


class ActionId(StrEnum):
    APPROVE = "jit_approve"
    DENY = "jit_deny"
    REVOKE = "jit_revoke"  # the App Home's End now
    EXTEND = "jit_extend"  # the App Home's Extend…
    CANCEL = "jit_cancel"  # the App Home's Cancel of one's own pending request
    TARGET = "target"  # the request modal's target select, which updates the modal
    REVIEW_OK = "jit_review_ok"  # a break-glass grant's review: acknowledged
    REVIEW_FLAG = "jit_review_flag"  # ...or flagged for the admins
    REREQUEST = "jit_rerequest"  # Request again, on the requester's message of an ended, denied or expired request


class CallbackId(StrEnum):
    """Views and shortcuts: the request modal (and its shortcut), the deny and extend modals, the App Home."""

    REQUEST = "jit_request"
    DENY = "jit_deny"
    EXTEND = "jit_extend"
    MFA = "jit_mfa"
    HOME = "jit_home"


class BlockId(StrEnum):
    DECISION = "decision"
    SUMMARY = "summary"
    REVIEW = "review"
    REREQUEST = "rerequest"
