"""The policy author's tools: explain, test, diff and schema, on policy.example.yml and edits of it."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from jit_lb.access.policy import parse_policy
from jit_lb.policytools.cli import main as policy_cli
from jit_lb.policytools.diff import diff
from jit_lb.policytools.explain import explain
from jit_lb.policytools.schema import SCHEMA_FILE, policy_schema, schema_text
from tests.helpers import ROOT

EXAMPLE = ROOT / "policy.example.yml"
CASES = ROOT / "policy.example.cases.yml"
OUTSIDE_FREEZE = datetime(2026, 12, 10, 9, 0, tzinfo=UTC)
IN_FREEZE = datetime(2026, 12, 24, 2, 0, tzinfo=UTC)


@pytest.fixture(name="example")
def fixture_example() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    return data


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = policy_cli(list(argv), out=out)
    return code, out.getvalue()


def write(path: Path, data: Any) -> str:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return str(path)


# --- explain ---------------------------------------------------------------------------------------


def test_explain_names_each_approver_with_the_entry_it_comes_from(example: dict[str, Any]) -> None:
    """Approvers reached through a role say so; a usergroup's members are listed when the directory knows them."""
    groups = {"S0NETOPS": ["U0NET1"], "S0SRE": ["U0DEV9"]}
    lines = explain(parse_policy(example), "lb-prod", OUTSIDE_FREEZE, groups.get)
    text = "\n".join(lines)
    assert "U0APPROVER1  from targets.lb-prod.approvers > role:netops (roles.netops)" in text
    assert "U0NET1  from targets.lb-prod.approvers > role:netops (roles.netops) > usergroup S0NETOPS" in text
    assert "U0DEV2  from targets.lb-prod.requesters" in text
    assert "1 distinct approval(s) required" in text
    assert "freezes in force now (2026-12-10 09:00 UTC): none" in text
    assert "freezes to come: freezes[0] 2026-12-20 00:00 UTC .. 2027-01-03 00:00 UTC: holiday change freeze" in text


def test_explain_without_a_directory_says_a_usergroup_is_unknown(example: dict[str, Any]) -> None:
    """Offline, a usergroup is named as such, never taken as empty."""
    text = "\n".join(explain(parse_policy(example), "edge-haproxy", OUTSIDE_FREEZE))
    assert "usergroup S0NETOPS (members not known here)  from targets.edge-haproxy.approvers" in text


def test_explain_for_a_user_says_why_not(example: dict[str, Any]) -> None:
    """With --user: during the freeze the SRE may not request, names the freeze, and may break glass."""
    lines = explain(parse_policy(example), "lb-prod", IN_FREEZE, None, user="U0DEV1")
    assert "U0DEV1 may not request lb-prod now: `lb-prod` is frozen until 2027-01-03 00:00 UTC" in "\n".join(lines)
    assert lines[-1] == "  break-glass: may (granted at once for 30m, reviewed within 1d)"


def test_explain_on_the_command_line(example: dict[str, Any]) -> None:
    """`policy explain FILE --target T --user U` prints who may approve and that U may request it."""
    code, out = run(
        "explain", str(EXAMPLE), "--target", "lb-prod-admin-path", "--user", "U0DEV2", "--at", "2026-12-10T09:00Z"
    )
    assert code == 0
    assert "U0DEV2 may request lb-prod-admin-path now; it needs approval: 2 of U0APPROVER1, U0APPROVER2" in out


def test_explain_of_an_unknown_target_names_the_targets(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown target: exit 2 and the targets there are."""
    code, _ = run("explain", str(EXAMPLE), "--target", "lb-nope")
    assert code == 2
    assert "no target `lb-nope` in the policy; its targets: edge-haproxy, lb-prod" in capsys.readouterr().err


# --- test ------------------------------------------------------------------------------------------


def test_the_example_cases_hold_on_the_example_policy() -> None:
    """`python -m bot policy test policy.example.yml policy.example.cases.yml` exits 0, one line a case."""
    done = subprocess.run(
        [sys.executable, "-m", "bot", "policy", "test", str(EXAMPLE), str(CASES)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    cases = yaml.safe_load(CASES.read_text(encoding="utf-8"))
    lines = done.stdout.splitlines()
    assert (done.returncode, lines[-1]) == (0, f"{len(cases)} passed, 0 failed"), done.stdout + done.stderr
    assert len(lines) == len(cases) + 1
    assert all(line.startswith("ok    ") for line in lines[:-1])


def test_a_case_that_does_not_hold_is_named_with_what_happened(tmp_path: Path) -> None:
    """Exit 1; each failing case's line says what was expected and what the policy did instead."""
    cases = [
        {"name": "dev2 is refused", "user": "U0DEV2", "target": "lb-prod", "at": "2026-12-10T09:00:00Z"}
        | {"expect": "refused"},
        {"user": "U0DEV1", "target": "lb-prod-admin-path", "expect": "needs_approval", "approvers": ["U0APPROVER1"]},
        {"user": "U0DEV1", "target": "lb-prod", "at": "2026-12-24T02:00:00Z", "expect": "refused"}
        | {"because": "frozen"},
    ]
    code, out = run("test", str(EXAMPLE), write(tmp_path / "cases.yml", cases))
    lines = out.splitlines()
    assert code == 1
    assert lines[0] == (
        "FAIL  dev2 is refused: expected refused; got needs approval: 1 of U0APPROVER1, U0APPROVER2 "
        "(and the members of S0NETOPS, not known here)"
    )
    assert lines[1] == (
        "FAIL  #2 U0DEV1 lb-prod-admin-path: expected needs approval by U0APPROVER1; U0APPROVER2 can approve it too"
    )
    assert lines[2].startswith("ok    #3 U0DEV1 lb-prod at 2026-12-24T02:00:00Z: refused: `lb-prod` is frozen")
    assert lines[3] == "1 passed, 2 failed"


def test_a_usergroup_given_on_the_command_line_counts(tmp_path: Path) -> None:
    """--usergroup S…=U…: a member of the approvers' usergroup is among who could approve."""
    cases = [
        {"user": "U0DEV1", "target": "edge-haproxy", "expect": "needs_approval", "approvers": ["U0NET1", "U0NET2"]}
    ]
    path = write(tmp_path / "cases.yml", cases)
    assert run("test", str(EXAMPLE), path)[0] == 1
    assert run("test", str(EXAMPLE), path, "--usergroup", "S0NETOPS=U0NET1,U0NET2")[0] == 0


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ({"user": "U0DEV1", "target": "lb-prod", "expect": "granted"}, "case #1: expect: Input should be"),
        ({"user": "U0DEV1", "target": "lb-prod", "expect": "refused", "colour": 1}, "case #1: colour: unknown field"),
        ({"user": "U0DEV1", "target": "lb-prod", "expect": "needs_approval", "because": "x"}, "because: only with"),
        ({"user": "U0DEV1", "target": "lb-prod", "expect": "refused", "duration": "1x"}, "`1x` is not a duration"),
    ],
)
def test_a_bad_cases_file_is_refused_naming_the_case(
    tmp_path: Path, case: dict[str, Any], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 naming the case and field at fault; nothing is judged."""
    code, out = run("test", str(EXAMPLE), write(tmp_path / "cases.yml", [case]))
    assert (code, out) == (2, "")
    assert expected in capsys.readouterr().err


# --- diff ------------------------------------------------------------------------------------------


def test_diff_names_targets_added_removed_and_what_changed(example: dict[str, Any], tmp_path: Path) -> None:
    """Added, removed, a grant spec, approvers through a role, a limit, and a principal's address."""
    edited = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    edited["targets"]["lb-new"] = edited["targets"].pop("lb-prod-admin-path")
    edited["targets"]["lb-prod"]["grant"]["ports"] = [443, 8443]
    edited["roles"]["netops"] = ["U0APPROVER1", "U0APPROVER3", "S0NETOPS"]
    edited["targets"]["edge-haproxy"]["max_duration"] = "2h"
    edited["targets"]["lb-prod-config"]["requesters"] = ["U0DEV1", "U0DEV2"]
    edited["principals"]["U0DEV2"]["aws_role_name"] = "dev2-admin"
    lines = diff(parse_policy(example), parse_policy(edited))
    assert lines == [
        "targets added: lb-new",
        "targets removed: lb-prod-admin-path (their grants end)",
        "targets changed:",
        "  edge-haproxy:",
        "    limits: max_duration: 4h -> 2h",
        "  lb-prod:",
        "    grant spec (its active grants end, reason policy): grant.ports: [443] -> [443, 8443]",
        "    approvers: who may approve: +U0APPROVER3 -U0APPROVER2",
        "  lb-prod-config:",
        "    requesters: requesters: [U0DEV1] -> [U0DEV1, U0DEV2]; who may request: +U0DEV2",
        "policy-wide changes:",
        "  principals.U0DEV2.aws_role_name: (unset) -> dev2-admin",
        "  roles.netops: [U0APPROVER1, U0APPROVER2, S0NETOPS] -> [U0APPROVER1, U0APPROVER3, S0NETOPS]",
    ]


def test_diff_of_a_policy_with_itself_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same file twice: nothing added, removed or changed; without REDIS_URL no grants are read."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    code, out = run("diff", str(EXAMPLE), str(EXAMPLE))
    assert (code, out.splitlines()) == (
        0,
        [
            "targets added: none",
            "targets removed: none",
            "targets changed: none",
            "policy-wide changes: none",
            "active grants: not read (REDIS_URL is not set)",
        ],
    )


# --- schema ----------------------------------------------------------------------------------------


def test_the_schema_kept_beside_the_example_is_the_generated_one() -> None:
    """policy.schema.json (which the example's yaml-language-server line names) is what `policy schema` prints."""
    assert (ROOT / SCHEMA_FILE).read_text(encoding="utf-8") == schema_text()
    assert "# yaml-language-server: $schema=./policy.schema.json" in EXAMPLE.read_text(encoding="utf-8")
    code, out = run("schema")
    assert (code, json.loads(out)) == (0, policy_schema())


def test_the_example_policy_validates_against_the_schema(example: dict[str, Any]) -> None:
    """The schema is a valid draft 2020-12 schema, and policy.example.yml meets it."""
    jsonschema.Draft202012Validator.check_schema(policy_schema())
    assert list(jsonschema.Draft202012Validator(policy_schema()).iter_errors(example)) == []


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda p: p["targets"]["lb-prod"].update(colour="red"), ["targets", "lb-prod"]),
        (lambda p: p["targets"]["lb-prod"].update(max_duration="1x"), ["targets", "lb-prod", "max_duration"]),
        (lambda p: p["targets"]["lb-prod"]["grant"].update(kind="f5_bigip"), ["targets", "lb-prod", "grant"]),
        (lambda p: p.pop("approver_channel"), []),
    ],
)
def test_the_schema_refuses_what_the_models_refuse(example: dict[str, Any], change: Any, path: list[str]) -> None:
    """An unknown field, a duration that does not parse, an unknown kind, a missing field: the schema says no."""
    change(example)
    errors = list(jsonschema.Draft202012Validator(policy_schema()).iter_errors(example))
    assert errors, "the schema accepted it"
    assert list(errors[0].absolute_path)[: len(path)] == path
