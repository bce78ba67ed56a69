"""The domain's error tree: every refusal and failure the core can name.

JitError                   base; its message is meant for a person
├── PolicyError            the policy file is invalid (raised at start)
├── CommandError           a `/jit` command was refused (bad text, not allowed, out of range)
│   └── LockdownError      ...because a lockdown is on
├── ApprovalError          a button click did not count
├── TransitionError        a request is not in a state that allows the change
├── NotFoundError          no such request
├── StoreUnavailableError  Redis could not be reached
├── AuditUnavailableError  the audit log cannot be written, so the act it would record does not happen
└── PolicyToolError        a policy tool was asked about an unknown target, or given a bad cases file
"""

from __future__ import annotations


class JitError(Exception):
    """Base of every error the core raises; `str(err)` is a sentence for a person."""


class PolicyError(JitError):
    """The policy file is invalid."""


class CommandError(JitError):
    """A `/jit` command was refused."""


class ApprovalError(JitError):
    """A click on an approval card did not count."""


class TransitionError(JitError):
    """The request is not in a state that allows this change."""


class NotFoundError(JitError):
    """No request with that id."""


class StoreUnavailableError(JitError):
    """The state store (Redis) could not be reached."""


class AuditUnavailableError(JitError):
    """The audit log cannot be written; the act it would record does not happen."""


LOCKED = "jit-lb is locked down: no new access until an admin lifts it (`/jit lockdown status` says who and why)"


class LockdownError(CommandError):
    """A request was refused because a lockdown is on."""


class PolicyToolError(JitError):
    """A policy tool (`python -m bot policy …`) cannot answer: an unknown target, a bad cases file."""
