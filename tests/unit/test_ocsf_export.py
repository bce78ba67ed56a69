"""`audit export --format ocsf`: each record an OCSF 1.7.0 event the OCSF schema accepts, verified as it is read."""

from __future__ import annotations

import gzip
import io
import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from jit_lb.audit import cli
from jit_lb.audit.chain import Hasher, canonical
from jit_lb.audit.ocsf import ACTIVITIES, CLASSES, MAPPINGS, OCSF_VERSION, SEVERITIES, STATUSES
from jit_lb.audit.writer import EVENTS, AuditLog
from tests.helpers import ROOT
from tests.ocsf_schema import OcsfSchema

KEY = "unit-test-audit-key-0123456789abcdef"


@pytest.fixture(name="schema", scope="module")
def fixture_schema() -> OcsfSchema:
    return OcsfSchema(OCSF_VERSION)


@pytest.fixture(name="keyed")
def fixture_keyed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JIT_AUDIT_KEY", KEY)


def write_log(path: Path, events: list[str]) -> list[dict[str, Any]]:
    """Records as the product's writer makes them (its chain, its hashes), one for each event name."""
    log = AuditLog.open(str(path))
    log.start_chain("test", SecretStr(KEY))
    for event in events:
        person = "U0DEV1" if event.startswith(("mfa.", "request.created", "request.refused")) else "system"
        log.record(
            event,
            actor=person,
            target="lb-prod",
            request_id="jit-abcdef",
            requester="U0DEV2",
            source_cidr="203.0.113.7/32",
            reason="expired",
        )
    log.close()
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def tampered_log(folder: Path, edits: dict[int, tuple[str, str]], inserted: dict[int, str] | None = None) -> Path:
    """`audit.log` of four records (created, approved, applied, revoked), then in line i `old` replaced by `new` for
    each `i: (old, new)` of `edits`, and each line of `inserted` put in at its index."""
    path = folder / "audit.log"
    write_log(path, ["request.created", "request.approved", "grant.applied", "grant.revoked"])
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    for index, (old, new) in edits.items():
        lines[index] = lines[index].replace(old, new)
    for index, line in (inserted or {}).items():
        lines.insert(index, line)
    path.write_text("".join(lines), encoding="utf-8")
    return path


def export(*args: str) -> tuple[int, list[dict[str, Any]]]:
    out = io.StringIO()
    code = cli.main(["export", "--format", "ocsf", *args], out=out)
    return code, [json.loads(line) for line in out.getvalue().splitlines()]


def test_every_event_the_product_writes_has_a_mapping() -> None:
    """The mapping table names every event name of the audit log: none falls back to the catch-all."""
    assert set(MAPPINGS) == set(EVENTS)


def test_every_event_exports_as_an_event_the_ocsf_schema_accepts(
    tmp_path: Path, schema: OcsfSchema, keyed: None
) -> None:
    """One line a record; each valid against its OCSF 1.7.0 class: required attributes, types, enums, objects."""
    records = write_log(tmp_path / "audit.log", sorted(EVENTS))
    code, events = export(str(tmp_path / "audit.log"))
    assert (code, len(events)) == (0, len(records))
    problems = {event["metadata"]["event_code"]: schema.problems(event) for event in events}
    assert {code: found for code, found in problems.items() if found} == {}


def test_an_event_carries_the_record_its_hash_time_and_actor(tmp_path: Path, keyed: None) -> None:
    """metadata.uid is the record's hash, unmapped the record itself, time its ts in ms, type_uid class*100+activity."""
    (record,) = write_log(tmp_path / "audit.log", ["grant.revoked"])
    _, (event,) = export(str(tmp_path / "audit.log"))
    millis = int(datetime.fromisoformat(record["ts"].replace("Z", "+00:00")).timestamp() * 1000)
    assert (event["class_uid"], event["category_uid"], event["activity_id"], event["type_uid"]) == (3005, 3, 2, 300502)
    assert (event["time"], event["metadata"]["uid"], event["unmapped"]) == (millis, record["hash"], record)
    assert event["actor"]["user"]["uid"] == "system"
    assert (event["user"]["uid"], event["status_id"], event["status_detail"]) == ("U0DEV2", 1, "expired")
    assert event["metadata"]["product"] == {"name": "jit-lb", "vendor_name": "jit-lb", "version": "0.1.0"}
    assert (event["metadata"]["version"], event["metadata"]["correlation_uid"]) == ("1.7.0", "jit-abcdef")


def test_export_streams_rotated_and_gzipped_files_oldest_first(tmp_path: Path, keyed: None) -> None:
    """audit.log.2.gz, audit.log.1 and audit.log, given in any order: every record once, in the order written."""
    records = write_log(tmp_path / "audit.log", ["request.created", "request.approved", "grant.applied"] * 3)
    lines = (tmp_path / "audit.log").read_bytes().splitlines(keepends=True)
    (tmp_path / "audit.log.2.gz").write_bytes(gzip.compress(b"".join(lines[:3])))
    (tmp_path / "audit.log.1").write_bytes(b"".join(lines[3:6]))
    (tmp_path / "audit.log").write_bytes(b"".join(lines[6:]))
    code, events = export(*(str(tmp_path / name) for name in ("audit.log", "audit.log.1", "audit.log.2.gz")))
    assert (code, [event["metadata"]["uid"] for event in events]) == (0, [record["hash"] for record in records])


def test_an_edited_line_stops_the_export_naming_it(
    tmp_path: Path, keyed: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A record edited after it was written: what came before is exported, then exit 1 naming the line."""
    path = tampered_log(tmp_path, {2: ('"requester": "U0DEV2"', '"requester": "U0MALLORY"')})
    code, events = export(str(path))
    assert (code, [event["metadata"]["event_code"] for event in events]) == (1, ["request.created", "request.approved"])
    err = capsys.readouterr().err
    assert f"audit export: stopped: {path}:3: edited: its hash does not match its content" in err
    assert "(2 events exported before it)" in err


def test_with_flag_unverified_the_bad_line_is_labelled_and_the_rest_verified(
    tmp_path: Path, keyed: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """--flag-unverified: the edited line and a line of garbage are labelled `unverified`; the others are not."""
    path = tampered_log(tmp_path, {1: ('"actor": "system"', '"actor": "U0MALLORY"')}, {3: "not json at all\n"})
    code, events = export("--flag-unverified", str(path))
    labelled = [("unverified" in event["metadata"].get("labels", [])) for event in events]
    assert (code, labelled) == (1, [False, True, False, True, False])
    assert events[1]["unmapped"]["actor"] == "U0MALLORY"
    assert events[3]["raw_data"] == "not json at all"
    assert "audit export: 2 of 5 events labelled unverified" in capsys.readouterr().err


def test_a_log_rehashed_without_the_key_is_not_exported_as_sound(
    tmp_path: Path, keyed: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whoever edits a keyed log and recomputes plain SHA-256 hashes is caught at the first such line."""
    path = tmp_path / "audit.log"
    write_log(path, ["request.created"])
    shutil.copy(path, tmp_path / "kept.log")
    record = json.loads(path.read_text(encoding="utf-8"))
    record["requester"] = "U0MALLORY"
    record["hash"] = Hasher(None)(canonical(record))
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    assert export(str(path)) == (1, [])
    assert "re-hashed without the key" in capsys.readouterr().err
    assert export(str(tmp_path / "kept.log"))[0] == 0


def test_the_docs_mapping_table_is_the_code_s() -> None:
    """docs/ocsf-export.md lists each event with the class, activity, type_uid, status and severity it exports as."""
    text = (ROOT / "docs" / "ocsf-export.md").read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("`") and "." in cells[0]:
            rows[cells[0].strip("`")] = cells[1:]
    expected = {}
    for event, m in MAPPINGS.items():
        activity = m.activity_name or ACTIVITIES[m.class_uid][m.activity_id]
        status = STATUSES[m.status_id] + (f" ({m.status})" if m.status else "")
        expected[event] = [
            f"{m.class_uid} {CLASSES[m.class_uid]}",
            f"{m.activity_id} {activity}",
            str(m.class_uid * 100 + m.activity_id),
            status,
            f"{m.severity_id} {SEVERITIES[m.severity_id]}",
        ]
    assert rows == expected
