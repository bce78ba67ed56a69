"""`audit who` and `audit report` read a request's story from its records alone, streaming."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jit_lb.audit import cli
from jit_lb.audit.files import Line
from jit_lb.audit.trails import LINGER, Filters, Reading, report, who
from jit_lb.audit.writer import AuditLog

T0 = datetime(2026, 11, 23, 21, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def rec(event: str, request_id: str, at: datetime, **fields: Any) -> dict[str, Any]:
    """A record as the writer makes it: the request's fields on every request event."""
    return {
        "ts": iso(at),
        "event": event,
        "request_id": request_id,
        "target": fields.pop("target", "lb-prod"),
        "actor": fields.pop("actor", "system"),
        "requester": fields.pop("requester", "U0DEV1"),
        "request_reason": "OPS-1 why",
        "source_cidr": "203.0.113.7/32",
        "approvers": fields.pop("approvers", ["U0APPROVER1"]),
        **fields,
    }


def lines_of(*records: dict[str, Any]) -> list[Line]:
    return [Line("audit.log", n, json.dumps(r).encode() + b"\n") for n, r in enumerate(records, 1)]


def grant(request_id: str, start: datetime, minutes: int, **fields: Any) -> list[dict[str, Any]]:
    """created, approved, applied: a grant of `minutes` from `start`, not yet ended."""
    return [
        rec("request.created", request_id, start, actor="U0DEV1", status="pending", **fields),
        rec("request.approved", request_id, start, actor="U0APPROVER1", status="approved", **fields),
        rec(
            "grant.applied",
            request_id,
            start,
            status="granted",
            granted_at=start.isoformat(),
            ends_at=(start + timedelta(minutes=minutes)).isoformat(),
            **fields,
        ),
    ]


def revoked(request_id: str, start: datetime, at: datetime, reason: str = "expired", **fields: Any) -> dict[str, Any]:
    return rec(
        "grant.revoked",
        request_id,
        at,
        status="revoked",
        reason=reason,
        granted_at=start.isoformat(),
        ended_at=at.isoformat(),
        lasted_seconds=int((at - start).total_seconds()),
        **fields,
    )


def test_who_counts_a_grant_from_its_apply_to_its_revoke() -> None:
    """Inside the grant it is named; before it and at its revoke, nobody."""
    log = lines_of(*grant("jit-aaaaaa", T0, 30), revoked("jit-aaaaaa", T0, T0 + timedelta(minutes=10), "revoked"))

    def at(moment: datetime) -> list[str]:
        return [g["request_id"] for g in who("lb-prod", moment, Reading(log))]

    assert at(T0 + timedelta(minutes=5)) == ["jit-aaaaaa"]
    assert at(T0 - timedelta(seconds=1)) == []
    assert at(T0 + timedelta(minutes=10)) == []
    assert who("lb-other", T0 + timedelta(minutes=5), Reading(log)) == []


def test_who_follows_an_extension_and_counts_an_unrevoked_grant_until_its_end() -> None:
    """An extension moves the end; with no revoke in the log, the grant counts until its ends_at, and says so."""
    log = lines_of(
        *grant("jit-bbbbbb", T0, 30),
        rec("grant.extended", "jit-bbbbbb", T0 + timedelta(minutes=20), ends_at=iso(T0 + timedelta(minutes=60))),
        rec("grant.revoke_failed", "jit-bbbbbb", T0 + timedelta(minutes=60), error="throttled"),
    )

    (found,) = who("lb-prod", T0 + timedelta(minutes=45), Reading(log))
    assert found["until"] == iso(T0 + timedelta(minutes=60))
    assert found["how"] == "no revoke in the log yet; a revoke failed"
    assert who("lb-prod", T0 + timedelta(minutes=60), Reading(log)) == []


def test_who_counts_a_break_glass_grant_from_its_apply_and_names_it() -> None:
    """A break-glass, recorded at once and applied a moment later, counts from the apply, marked break-glass."""
    applied = T0 + timedelta(seconds=2)
    log = lines_of(
        rec("request.created", "jit-glass0", T0, actor="U0DEV1", break_glass=True, approvers=[]),
        rec("grant.breakglass", "jit-glass0", T0, actor="U0DEV1", approvers=[]),
        rec(
            "grant.applied", "jit-glass0", applied, granted_at=applied.isoformat(), ends_at=iso(T0 + timedelta(hours=1))
        ),
    )

    assert who("lb-prod", T0 + timedelta(seconds=1), Reading(log)) == []
    (found,) = who("lb-prod", applied, Reading(log))
    assert (found["break_glass"], found["granted_at"]) == (True, iso(applied))


def test_who_keeps_only_the_targets_open_grants() -> None:
    """Thousands of ended grants leave nothing behind: memory follows the open ones."""
    records = []
    for n in range(2000):
        start = T0 + timedelta(minutes=n)
        records += [*grant(f"jit-{n:06d}", start, 1), revoked(f"jit-{n:06d}", start, start + timedelta(seconds=30))]
        records.append(rec("grant.activity", f"jit-{n:06d}", start + timedelta(seconds=31), changes=[]))
    moment = T0 + timedelta(minutes=1000, seconds=10)

    assert [g["request_id"] for g in who("lb-prod", moment, Reading(lines_of(*records)))] == ["jit-001000"]


def test_report_gives_one_row_a_request_with_its_late_activity() -> None:
    """A revoked grant (its grant.activity after the revoke), a denial with MFA: one row each, closed order."""
    end = T0 + timedelta(minutes=30)
    change = {"what": "rule tcp/22", "before": None, "after": "10.0.0.0/8"}
    records = [
        *grant("jit-aaaaaa", T0, 30),
        rec("request.created", "jit-denied", T0, requester="U0DEV2", status="pending", with_mfa=True),
        rec("request.denied", "jit-denied", T0, actor="U0APPROVER1", status="denied", deny_reason="no ticket"),
        revoked("jit-aaaaaa", T0, end),
        rec("grant.activity", "jit-aaaaaa", end, changes=[change]),
    ]

    rows = list(report(Reading(lines_of(*records)), Filters()))

    assert [r["request_id"] for r in rows] == ["jit-denied", "jit-aaaaaa"]
    denied, granted = rows
    assert (denied["outcome"], denied["end_reason"], denied["ended_by"], denied["mfa"]) == (
        "denied",
        "no ticket",
        "U0APPROVER1",
        True,
    )
    assert (granted["outcome"], granted["end_reason"], granted["lasted"], granted["changes"]) == (
        "revoked",
        "expired",
        "30m",
        [change],
    )


def test_report_forgets_closed_requests_an_hour_of_log_time_later() -> None:
    """Rows come as requests close plus LINGER; a record of a given row much later does not make a second row."""
    later = T0 + 3 * LINGER
    records = [
        *grant("jit-early0", T0, 1),
        revoked("jit-early0", T0, T0 + timedelta(minutes=1)),
        *grant("jit-later0", later, 1),
        rec("grant.activity", "jit-early0", later, changes=[]),
    ]
    reading = iter(report(Reading(lines_of(*records)), Filters()))

    assert next(reading)["request_id"] == "jit-early0"
    assert [r["request_id"] for r in reading] == ["jit-later0"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (Filters(), ["jit-nov000", "jit-dec000"]),
        (Filters(since=T0 + timedelta(days=20)), ["jit-dec000"]),
        (Filters(until=T0 + timedelta(days=20)), ["jit-nov000"]),
        (Filters(user="U0DEV2"), ["jit-dec000"]),
        (Filters(user="U0APPROVER9"), ["jit-dec000"]),
        (Filters(target="lb-prod"), ["jit-nov000"]),
    ],
)
def test_report_filters_by_window_user_and_target(filters: Filters, expected: list[str]) -> None:
    """--since/--until keep requests whose life overlaps; --user the requester or an approver; --target its own."""
    december = T0 + timedelta(days=30)
    records = [
        *grant("jit-nov000", T0, 10),
        revoked("jit-nov000", T0, T0 + timedelta(minutes=10)),
        *grant("jit-dec000", december, 10, target="lb-alb", requester="U0DEV2", approvers=["U0APPROVER9"]),
    ]

    assert [r["request_id"] for r in report(Reading(lines_of(*records)), filters)] == expected


def written(path: Path, records: list[dict[str, Any]]) -> None:
    """The records as the real writer chains them (without a key), at their own times."""
    audit = AuditLog.open(str(path))
    for record in map(dict, records):
        event, actor, target = record.pop("event"), record.pop("actor"), record.pop("target")
        audit.record(event, actor=actor, target=target, request_id=record.pop("request_id"), **record)
    audit.close()


def test_who_and_report_refuse_a_log_that_does_not_verify(tmp_path: Path) -> None:
    """A forged revoke appended to a whole log (no chain fields): `who` does not say nobody had access, nor does
    `report` give a row; each exits 1 naming the line."""
    path = tmp_path / "audit.log"
    written(path, grant("jit-aaaaaa", T0, 30))
    with path.open("a") as log:
        log.write(json.dumps(revoked("jit-aaaaaa", T0, T0 + timedelta(minutes=1))) + "\n")

    for args in (["who", "lb-prod", "--at", "2026-11-23T21:10:00Z"], ["report"]):
        out = io.StringIO()
        assert cli.main([*args, str(path)], out=out) == 1
        assert out.getvalue() == ""


def test_the_cli_writes_a_csv_header_and_json_lines(tmp_path: Path) -> None:
    """CSV: the header, then a row with approvers space-separated and MFA yes/no; JSON: one object a line."""
    path = tmp_path / "audit.log"
    records = [*grant("jit-aaaaaa", T0, 30), revoked("jit-aaaaaa", T0, T0 + timedelta(minutes=30))]
    written(path, records)

    out = io.StringIO()
    assert cli.main(["report", str(path)], out=out) == 0
    header, row = out.getvalue().splitlines()
    assert header.split(",")[:4] == ["request_id", "requester", "target", "reason"]
    assert row.startswith("jit-aaaaaa,U0DEV1,lb-prod,OPS-1 why,203.0.113.7/32,U0APPROVER1,")

    out = io.StringIO()
    assert cli.main(["report", "--format", "json", str(path)], out=out) == 0
    assert [json.loads(line)["lasted_seconds"] for line in out.getvalue().splitlines()] == [1800]

    out = io.StringIO()
    assert cli.main(["who", "lb-prod", "--at", "2026-11-23T21:10:00+00:00", str(path)], out=out) == 0
    assert "jit-aaaaaa  U0DEV1  from 203.0.113.7/32" in out.getvalue()
    assert cli.main(["who", "lb-prod", "--at", "yesterday", str(path)], out=io.StringIO()) == 2


def test_a_request_of_several_targets_gives_a_row_and_a_grant_a_target() -> None:
    """Records of two targets under one request id, told apart by `part`: `report` gives a row for each target
    and `who` names the request for the target it asks about, each closed by its own revoke."""
    end = T0 + timedelta(minutes=20)
    records = [
        *grant("jit-abcdef", T0, 30, part="jit-abcdef-1"),
        *grant("jit-abcdef", T0, 30, part="jit-abcdef-2", target="lb-alb"),
        revoked("jit-abcdef", T0, end, reason="revoked", part="jit-abcdef-1"),
        revoked("jit-abcdef", T0, end, reason="revoked", part="jit-abcdef-2", target="lb-alb"),
    ]

    rows = list(report(Reading(lines_of(*records)), Filters()))

    assert [(r["request_id"], r["target"], r["end_reason"]) for r in rows] == [
        ("jit-abcdef", "lb-prod", "revoked"),
        ("jit-abcdef", "lb-alb", "revoked"),
    ]
    during = T0 + timedelta(minutes=5)
    assert [g["request_id"] for g in who("lb-alb", during, Reading(lines_of(*records)))] == ["jit-abcdef"]
    assert who("lb-alb", end + timedelta(minutes=1), Reading(lines_of(*records))) == []
