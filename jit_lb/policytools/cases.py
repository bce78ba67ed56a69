"""`policy test`: a YAML list of cases (docs/policy-tools.md), each judged as the product would judge it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from jit_lb.access.durations import format_duration
from jit_lb.access.errors import PolicyToolError
from jit_lb.access.policy import Duration, Policy
from jit_lb.policytools.judge import Directory, Verdict, judge_break_glass, judge_request


class Case(BaseModel):
    """One case: who asks for what (and when), and what the policy must make of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None  # how the case is called in the output; default `#<n> <user> <target>`
    user: str = Field(min_length=1)
    target: str = Field(min_length=1)
    duration: Duration | None = None  # default: the target's default_duration
    at: datetime | None = None  # the instant judged (freezes); default: now
    reason: str | None = None  # judged against the target's reason rule when given
    expect: Literal["refused", "needs_approval", "auto_approved", "break_glass"]
    because: str | None = None  # refused: a substring of the refusal
    approvers: list[str] | None = None  # needs_approval: exactly the user ids who could approve
    approvals_required: int | None = Field(default=None, ge=1)  # needs_approval
    on_call: bool = False  # assume PagerDuty says the user is on call (auto_approved)
    # What the user types: `/jit request` or `/jit breakglass`; default breakglass for expect: break_glass.
    command: Literal["request", "breakglass"] = None  # type: ignore[assignment] # filled in by _fits_expectation

    @model_validator(mode="after")
    def _fits_expectation(self) -> Case:
        if self.at is not None and self.at.tzinfo is None:
            raise ValueError("at: needs a time zone, e.g. 2026-12-24T02:00:00Z")
        if self.because is not None and self.expect != "refused":
            raise ValueError("because: only with expect: refused")
        if (self.approvers is not None or self.approvals_required is not None) and self.expect != "needs_approval":
            raise ValueError("approvers and approvals_required: only with expect: needs_approval")
        if self.command is None:
            object.__setattr__(self, "command", "breakglass" if self.expect == "break_glass" else "request")
        return self

    def label(self, number: int) -> str:
        parts = [self.name or f"#{number} {self.user} {self.target}"]
        if self.duration is not None and self.name is None:
            parts.append(format_duration(self.duration))
        if self.at is not None and self.name is None:
            parts.append(f"at {self.at.isoformat().replace('+00:00', 'Z')}")
        return " ".join(parts)


@dataclass(frozen=True)
class Result:
    """A case judged: whether it holds, and the line that says so."""

    case: Case
    passed: bool
    line: str


def load_cases(path: str | Path) -> list[Case]:
    """Read a cases file; raise PolicyToolError naming the case and field at fault."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise PolicyToolError(f"{path}: cannot be read ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise PolicyToolError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, list) or not data:
        raise PolicyToolError(f"{path}: a cases file is a YAML list of cases (user, target, expect, …)")
    cases = []
    for number, item in enumerate(data, 1):
        try:
            cases.append(Case.model_validate(item))
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
            raise PolicyToolError(
                f"{path}: case #{number}: {where + ': ' if where else ''}{message.removeprefix('Value error, ')}"
            ) from None
    return cases


def run_cases(policy: Policy, cases: list[Case], now: datetime, directory: Directory = None) -> list[Result]:
    """Judge every case, each at its own `at` (or `now`)."""
    return [_run(policy, case, number, now, directory) for number, case in enumerate(cases, 1)]


def summary(results: list[Result]) -> str:
    passed = sum(result.passed for result in results)
    return f"{passed} passed, {len(results) - passed} failed"


def _run(policy: Policy, case: Case, number: int, now: datetime, directory: Directory) -> Result:
    label = case.label(number)
    at = case.at or now
    if case.command == "breakglass":
        verdict = judge_break_glass(policy, case.user, case.target, at, directory, case.duration)
    else:
        verdict = judge_request(policy, case.user, case.target, at, directory, case.duration, case.reason, case.on_call)
    wrong = _mismatch(case, verdict)
    if wrong is None:
        return Result(case, True, f"ok    {label}: {verdict.describe()}")
    return Result(case, False, f"FAIL  {label}: expected {_expected(case)}; {wrong}")


def _expected(case: Case) -> str:
    text = case.expect.replace("_", " ")
    if case.because is not None:
        text += f" because {case.because!r}"
    if case.approvers is not None:
        text += f" by {', '.join(sorted(case.approvers))}"
    if case.approvals_required is not None:
        text += f" ({case.approvals_required} required)"
    return text


def _mismatch(case: Case, verdict: Verdict) -> str | None:
    """What happened instead of what the case expects, or None when it holds."""
    if verdict.outcome != case.expect:
        return f"got {verdict.describe()}"
    if case.because is not None and case.because.lower() not in verdict.why.lower():
        return f"refused, but for another reason: {verdict.why}"
    if case.approvers is not None and set(case.approvers) != verdict.approvers:
        return _approver_mismatch(set(case.approvers), verdict)
    if case.approvals_required is not None and case.approvals_required != verdict.approvals_required:
        return f"it needs {verdict.approvals_required} approval(s), not {case.approvals_required}"
    return None


def _approver_mismatch(expected: set[str], verdict: Verdict) -> str:
    parts = []
    if missing := expected - verdict.approvers:
        parts.append(f"{', '.join(sorted(missing))} cannot approve it")
    if extra := verdict.approvers - expected:
        parts.append(f"{', '.join(sorted(extra))} can approve it too")
    if verdict.unknown_groups:
        parts.append(f"members of {', '.join(verdict.unknown_groups)} not known here (--usergroup or SLACK_BOT_TOKEN)")
    return "; ".join(parts)
