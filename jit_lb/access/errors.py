"""The domain's error tree: every refusal and failure jit-lb can name, drawn once here.

JitError                       base; its message is a sentence for a person
├── RefusedError               refused: nothing changed, the person is told why (and a refusal is recorded)
│   ├── CommandError           a `/jit` command or form was refused (bad text, not allowed, out of range)
│   │   └── LockdownError      ...because a lockdown is on
│   ├── ApprovalError          a button click did not count
│   ├── TransitionError        a request is not in a state that allows the change
│   ├── NotFoundError          no such request
│   ├── LimitError             a requester is past one of the policy's `limits`
│   ├── MfaError               a step-up could not be done (not enrolled, locked out)
│   └── MalformedError         a signed request to the web is not something Slack sends
├── UnavailableError           unavailable: a part jit-lb needs could not be used; nothing changed, try again
│   ├── StoreUnavailableError  Redis could not be reached
│   ├── AuditUnavailableError  the audit log cannot be written, so the act it would record does not happen
│   ├── ProviderError          a load balancer call failed (unreachable, refused, throttled)
│   └── PagerDutyError         PagerDuty could not be asked (unreachable, too slow, refused)
└── SetupError                 what jit-lb was given is wrong: the process (or the tool) stops, saying so
    ├── PolicyError            the policy file is invalid
    ├── SettingsError          an environment variable is missing or invalid
    ├── MfaKeyError            JIT_MFA_KEY is missing or not a Fernet key while the policy requires MFA
    ├── PagerDutyConfigError   targets auto-approve from on-call but no PAGERDUTY_TOKEN was given
    ├── AuditFileError         an audit log file cannot be opened or read to its end
    └── PolicyToolError        a policy tool was asked about an unknown target, or given a bad cases file

What a person is told for any of them is decided in one place: `slack_out.sentences.error_reply`.
"""

from __future__ import annotations


class JitError(Exception):
    """Base of every error jit-lb raises on purpose; `str(err)` is a sentence for a person."""


# --- refused: the person is told why ---------------------------------------------------------------


class RefusedError(JitError):
    """Refused: nothing changed, and the person who asked is told why."""


class CommandError(RefusedError):
    """A `/jit` command was refused."""


LOCKED = "jit-lb is locked down: no new access until an admin lifts it (`/jit lockdown status` says who and why)"


class LockdownError(CommandError):
    """A request was refused because a lockdown is on."""


class ApprovalError(RefusedError):
    """A click on an approval card did not count."""


class TransitionError(RefusedError):
    """The request is not in a state that allows this change."""


class NotFoundError(RefusedError):
    """No request with that id."""


class LimitError(RefusedError):
    """A requester is past one of the policy's limits (`limits` in the policy file)."""


class MfaError(RefusedError):
    """A step-up could not be done: not enrolled, locked out, a wrong or used code; the message says which."""


class MalformedError(RefusedError):
    """The body is signed correctly but is not something Slack sends."""


# --- unavailable: try again ------------------------------------------------------------------------


class UnavailableError(JitError):
    """Unavailable: a part jit-lb needs could not be used, so nothing changed; trying again may work."""


class StoreUnavailableError(UnavailableError):
    """The state store (Redis) could not be reached."""


class AuditUnavailableError(UnavailableError):
    """The audit log cannot be written; the act it would record does not happen."""


class ProviderError(UnavailableError):
    """A load balancer call failed; the message says what, where, and what a person can do."""


class PagerDutyError(UnavailableError):
    """PagerDuty could not be asked: unreachable, too slow, or it refused the request."""


# --- setup: what jit-lb was given is wrong ---------------------------------------------------------


class SetupError(JitError):
    """What jit-lb was given (policy, environment, key, files) is wrong; the process or command stops."""


class PolicyError(SetupError):
    """The policy file is invalid."""


class SettingsError(SetupError):
    """An environment variable is missing or invalid."""


class MfaKeyError(SetupError):
    """JIT_MFA_KEY is missing or not a Fernet key while the policy requires MFA."""


class PagerDutyConfigError(SetupError):
    """Targets auto-approve from on-call but no PagerDuty token was given: the process does not start."""


class AuditFileError(SetupError):
    """A log file cannot be opened or read to its end (missing, unreadable, a damaged gzip stream)."""

    def __init__(self, file: str, line: int | None, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}" if line is not None else f"{file}: {message}")
        self.file = file
        self.line = line


class PolicyToolError(SetupError):
    """A policy tool (`python -m bot policy …`) cannot answer: an unknown target, a bad cases file."""
