"""Asking PagerDuty who is on call: through real HTTP to the PagerDuty stand-in, with its shapes and refusals."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from devtools.pagerduty_standin import TEST_TOKEN, PagerDutyStandin
from jit_lb.access.oncall import PagerDuty

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(name="pd")
def fixture_pd() -> Iterator[PagerDutyStandin]:
    with PagerDutyStandin() as standin:
        standin.add_user("PUSER01", "dev1@example.com", "Dev One")
        standin.add_user("PUSER02", "dev2@example.com", "Dev Two")
        yield standin


def client(pd: PagerDutyStandin, token: str = TEST_TOKEN, timeout: float = 1.5) -> PagerDuty:
    return PagerDuty(token, pd.api_url, timeout=timeout)


def test_the_primary_on_call_qualifies_with_the_shift(pd: PagerDutyStandin) -> None:
    """A primary on one of the schedules is on call, with the schedule, level and shift PagerDuty gave."""
    pd.put_on_call("PUSER01", "PSCHED01", level=1, start=NOW - timedelta(hours=1), end=NOW + timedelta(hours=2))
    answer = client(pd).on_call("dev1@example.com", ["PSCHED01"], 1, NOW)
    assert answer.shift is not None
    assert (answer.shift.schedule, answer.shift.escalation_level) == ("PSCHED01", 1)
    assert answer.shift.end == NOW + timedelta(hours=2)
    oncalls = pd.calls("/oncalls")[-1]
    assert ("user_ids[]", "PUSER01") in oncalls.query
    assert ("schedule_ids[]", "PSCHED01") in oncalls.query
    assert oncalls.headers["Authorization"] == f"Token token={TEST_TOKEN}"


def test_a_secondary_does_not_count_when_only_the_primary_does(pd: PagerDutyStandin) -> None:
    """Level 2 of the escalation policy is not the primary: no shift, and the sentence says why."""
    pd.put_on_call("PUSER01", "PSCHED01", level=2, start=NOW - timedelta(hours=1), end=NOW + timedelta(hours=1))
    answer = client(pd).on_call("dev1@example.com", ["PSCHED01"], 1, NOW)
    assert answer.shift is None
    assert "escalation level 2" in answer.why_not


def test_another_schedule_or_another_time_does_not_count(pd: PagerDutyStandin) -> None:
    """On call in a schedule the target does not name, or in a shift that has ended, is not on call."""
    pd.put_on_call("PUSER01", "POTHER1", start=NOW - timedelta(hours=1), end=NOW + timedelta(hours=1))
    pd.put_on_call("PUSER01", "PSCHED01", start=NOW - timedelta(hours=3), end=NOW - timedelta(hours=1))
    answer = client(pd).on_call("dev1@example.com", ["PSCHED01"], 1, NOW)
    assert answer.shift is None
    assert answer.why_not == "not on call now in PSCHED01"


def test_an_unknown_email_is_said(pd: PagerDutyStandin) -> None:
    answer = client(pd).on_call("nobody@example.com", ["PSCHED01"], 1, NOW)
    assert answer.shift is None
    assert "no user with the e-mail nobody@example.com" in answer.why_not


@pytest.mark.parametrize(("status", "said"), [(500, "HTTP 500"), (429, "HTTP 429: Rate Limit Exceeded")])
def test_a_refusal_is_no_shift_and_says_why(pd: PagerDutyStandin, status: int, said: str) -> None:
    """A 5xx or a rate limit is answered at once as 'ask a human', never slept through."""
    pd.fail_next(status)
    answer = client(pd).on_call("dev1@example.com", ["PSCHED01"], 1, NOW)
    assert answer.shift is None
    assert said in answer.why_not


def test_a_wrong_token_is_refused_as_pagerduty_refuses_it(pd: PagerDutyStandin) -> None:
    answer = client(pd, token="not-the-token").on_call("dev1@example.com", ["PSCHED01"], 1, NOW)
    assert answer.shift is None
    assert "HTTP 401: Unauthorized" in answer.why_not


def test_a_slow_pagerduty_is_no_answer(pd: PagerDutyStandin) -> None:
    """Slower than the timeout: not on call as far as jit-lb knows, and the sentence says PagerDuty did not answer."""
    pd.put_on_call("PUSER01", "PSCHED01", start=NOW - timedelta(hours=1), end=NOW + timedelta(hours=1))
    pd.delay = 1.0
    answer = client(pd, timeout=0.2).on_call("dev1@example.com", ["PSCHED01"], 1, NOW)
    assert answer.shift is None
    assert "no answer within the timeout" in answer.why_not


def test_answers_each_within_the_timeout_but_slow_together_are_no_answer(pd: PagerDutyStandin) -> None:
    """Each answer comes within a call's timeout, but finding the person and then their on-calls takes longer than
    the whole check may: not on call as far as jit-lb knows (the card would wait on every page otherwise)."""
    pd.put_on_call("PUSER01", "PSCHED01", start=NOW - timedelta(hours=1), end=NOW + timedelta(hours=1))
    pd.delay = 0.6
    answer = PagerDuty(TEST_TOKEN, pd.api_url, timeout=1.0, budget=1.0).on_call(
        "dev1@example.com", ["PSCHED01"], 1, NOW
    )
    assert answer.shift is None
    assert "no answer within the timeout" in answer.why_not


def test_pagerduty_unreachable_is_no_answer() -> None:
    standin = PagerDutyStandin()  # never started: nothing listens on its port
    answer = client(standin).on_call("dev1@example.com", ["PSCHED01"], 1, NOW)
    assert answer.shift is None
    assert answer.why_not.startswith("PagerDuty could not be asked")


def test_every_page_is_read(pd: PagerDutyStandin) -> None:
    """The qualifying entry on the second page of on-calls still counts (limit, offset, more)."""
    for n in range(120):
        pd.put_on_call("PUSER01", f"POTHER{n:03d}", start=NOW - timedelta(hours=1), end=NOW + timedelta(hours=1))
    pd.put_on_call("PUSER01", "PSCHED01", start=NOW - timedelta(hours=1), end=NOW + timedelta(hours=1))
    schedules = [f"POTHER{n:03d}" for n in range(120)] + ["PSCHED01"]
    answer = client(pd).on_call("dev1@example.com", schedules, 1, NOW)
    assert answer.shift is not None
    assert [call.query for call in pd.calls("/oncalls") if ("offset", "100") in call.query]
