"""Audit records as OCSF 1.7.0 events (docs/ocsf-export.md): one table says which class, activity, status and
severity each event name becomes; everything else is read from the record the same way for every event."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import metadata
from typing import Any

OCSF_VERSION = "1.7.0"
PRODUCT = "jit-lb"
VENDOR = "jit-lb"

# Categories and classes used, by uid: class_uid = category_uid * 1000 + the class's number in its category.
CATEGORIES = {3: "Identity & Access Management"}
CLASSES = {
    3001: "Account Change",
    3002: "Authentication",
    3003: "Authorize Session",
    3004: "Entity Management",
    3005: "User Access Management",
}
ACTIVITIES = {
    3001: {10: "MFA Factor Enable", 11: "MFA Factor Disable", 99: "Other"},
    3002: {1: "Logon", 99: "Other"},
    3003: {1: "Assign Privileges", 99: "Other"},
    3004: {3: "Update", 12: "Suspend", 13: "Resume", 99: "Other"},
    3005: {1: "Assign Privileges", 2: "Revoke Privileges", 99: "Other"},
}
SEVERITIES = {1: "Informational", 2: "Low", 3: "Medium", 4: "High"}
STATUSES = {0: "Unknown", 1: "Success", 2: "Failure", 99: "Other"}

SUCCESS, FAILURE, OTHER = 1, 2, 99
INFO, LOW, MEDIUM, HIGH = 1, 2, 3, 4


@dataclass(frozen=True)
class Mapping:
    """What one event name becomes: class, activity (and its name when it is Other), status, severity."""

    class_uid: int
    activity_id: int
    status_id: int
    severity_id: int
    activity_name: str | None = None  # for activity 99 (Other): what it is
    status: str | None = None  # for status 99 (Other): what it is

    @property
    def category_uid(self) -> int:
        return self.class_uid // 1000


# The mapping table (docs/ocsf-export.md prints it from here).
MAPPINGS: dict[str, Mapping] = {
    # A request and its decision: Authorize Session (approvals decide whether privileges are assigned).
    "request.created": Mapping(3003, 99, OTHER, INFO, "Request", "Pending"),
    "request.refused": Mapping(3003, 99, FAILURE, INFO, "Request"),
    "request.approved": Mapping(3003, 1, SUCCESS, INFO),
    "request.denied": Mapping(3003, 1, FAILURE, INFO),
    "request.expired": Mapping(3003, 1, FAILURE, INFO),
    "request.cancelled": Mapping(3003, 1, FAILURE, INFO),
    "approval.refused": Mapping(3003, 1, FAILURE, LOW),
    "extension.requested": Mapping(3003, 99, OTHER, INFO, "Request Extension", "Pending"),
    "extension.approved": Mapping(3003, 1, SUCCESS, INFO),
    "extension.denied": Mapping(3003, 1, FAILURE, INFO),
    "extension.refused": Mapping(3003, 1, FAILURE, INFO),  # approved, then refused when the markers were to move
    "review.acknowledged": Mapping(3003, 99, SUCCESS, INFO, "Review Break-Glass"),
    "review.flagged": Mapping(3003, 99, FAILURE, HIGH, "Review Break-Glass"),
    # Access at the load balancer: User Access Management.
    "grant.applied": Mapping(3005, 1, SUCCESS, INFO),
    "grant.breakglass": Mapping(3005, 1, SUCCESS, MEDIUM),
    "grant.extended": Mapping(3005, 1, SUCCESS, INFO),
    "grant.failed": Mapping(3005, 1, FAILURE, MEDIUM),
    "grant.warned": Mapping(3005, 99, SUCCESS, INFO, "Warn Of End"),
    "grant.activity": Mapping(3005, 99, SUCCESS, INFO, "Session Activity"),
    "grant.revoked": Mapping(3005, 2, SUCCESS, INFO),
    "grant.revoke_failed": Mapping(3005, 2, FAILURE, HIGH),
    "sweep.removed": Mapping(3005, 2, SUCCESS, LOW),
    "sweep.reported": Mapping(3005, 99, OTHER, MEDIUM, "Report Unmanaged Object", "Left alone"),
    # Step-up MFA: Authentication for a code, Account Change for an enrolment and its reset.
    "mfa.verified": Mapping(3002, 99, SUCCESS, INFO, "Step-Up"),
    "mfa.failed": Mapping(3002, 99, FAILURE, LOW, "Step-Up"),
    "mfa.enrolled": Mapping(3001, 10, SUCCESS, INFO),
    "mfa.reset": Mapping(3001, 11, SUCCESS, MEDIUM),
    "mfa.cancelled": Mapping(3001, 11, FAILURE, INFO),  # an enrolment not confirmed in time: its secret destroyed
    # jit-lb itself, its policy and its log: Entity Management (the entity is jit-lb's access, its policy, a chain).
    "lockdown.started": Mapping(3004, 12, SUCCESS, HIGH),
    "lockdown.ended": Mapping(3004, 13, SUCCESS, LOW),
    "policy.reloaded": Mapping(3004, 3, SUCCESS, INFO),
    "policy.refused": Mapping(3004, 3, FAILURE, MEDIUM),
    "audit.checkpoint": Mapping(3004, 99, SUCCESS, INFO, "Audit Checkpoint"),
}
# An event this table does not know (one added after it): Entity Management, Other, named by the event; never dropped.
UNKNOWN = Mapping(3004, 99, 0, INFO)
# What a person did or had done to them, by class: the user whose access (or step-up) the event is about.
_NEEDS_USER = frozenset({3001, 3002, 3003, 3005})


@cache
def product_version() -> str:
    try:
        return metadata.version("jit-lb")
    except metadata.PackageNotFoundError:
        return "unknown"


def to_ocsf(record: dict[str, Any], labels: list[str] | None = None) -> dict[str, Any]:
    """The OCSF event of one audit record; `labels` mark what the reader could not verify (`unverified: …`)."""
    event = str(record.get("event", ""))
    mapping = MAPPINGS.get(event, UNKNOWN)
    class_uid, activity_id = mapping.class_uid, mapping.activity_id
    activity = mapping.activity_name or (ACTIVITIES[class_uid][activity_id] if mapping is not UNKNOWN else event)
    out: dict[str, Any] = {
        "class_uid": class_uid,
        "class_name": CLASSES[class_uid],
        "category_uid": mapping.category_uid,
        "category_name": CATEGORIES[mapping.category_uid],
        "activity_id": activity_id,
        "activity_name": activity,
        "type_uid": class_uid * 100 + activity_id,
        "type_name": f"{CLASSES[class_uid]}: {activity}",
        "time": _millis(record.get("ts")),
        "severity_id": mapping.severity_id,
        "severity": SEVERITIES[mapping.severity_id],
        "status_id": mapping.status_id,
        "status": mapping.status or STATUSES[mapping.status_id],
        "message": _message(event, record),
        "metadata": _metadata(record, labels),
        "unmapped": record,
    }
    if actor := record.get("actor"):
        system = actor == "system"  # jit-lb itself: a worker's job, the sweep, a policy reload
        out["actor"] = {
            "user": {"uid": str(actor), "type_id": 3 if system else 1, "type": "System" if system else "User"}
        }
    detail = _detail(record)
    if detail:
        out["status_detail"] = detail
    if class_uid in _NEEDS_USER:
        out["user"] = {"uid": _subject(record)}
    if class_uid in {3003, 3005}:
        out["privileges"] = [_privilege(record)]
    if class_uid == 3005 and record.get("target"):
        out["resources"] = [{"name": str(record["target"]), "type": "jit-lb target"}]
    if class_uid == 3002:
        out["is_mfa"] = True
    if class_uid == 3004:
        out["entity"] = _entity(event, record)
    return out


def _entity(event: str, record: dict[str, Any]) -> dict[str, Any]:
    """What a jit-lb-wide event manages: the policy file, an audit chain, or jit-lb's access as a whole."""
    if event.startswith("policy."):
        return {"name": str(record.get("file") or "policy"), "type": "Policy", "type_id": 5}
    if event == "audit.checkpoint":
        return {"name": str(record.get("chain") or "audit chain"), "type": "Audit log chain", "type_id": 99}
    return {"name": PRODUCT, "type": "Access service", "type_id": 99}


def _metadata(record: dict[str, Any], labels: list[str] | None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "version": OCSF_VERSION,
        "product": {"name": PRODUCT, "vendor_name": VENDOR, "version": product_version()},
        "event_code": str(record.get("event", "")),
        "log_name": "jit-lb audit log",
    }
    if isinstance(record.get("hash"), str):
        meta["uid"] = record["hash"]
    if isinstance(record.get("request_id"), str):
        meta["correlation_uid"] = record["request_id"]  # every event of one request shares it
    if isinstance(record.get("seq"), int) and not isinstance(record.get("seq"), bool):
        meta["sequence"] = record["seq"]
    if isinstance(record.get("ts"), str):
        meta["original_time"] = record["ts"]
    if labels:
        meta["labels"] = labels
    return meta


def _millis(ts: Any) -> int:
    """ISO 8601 (as the log writes it) to epoch milliseconds; a record without a readable time gets 0."""
    if not isinstance(ts, str):
        return 0
    try:
        moment = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return 0
    return int(moment.timestamp() * 1000) if moment.tzinfo is not None else 0


def _subject(record: dict[str, Any]) -> str:
    """Whose access or step-up the event is about: the requester, the user named, else whoever acted."""
    for field in ("requester", "user"):
        if isinstance(record.get(field), str) and record[field]:
            return str(record[field])
    return str(record.get("actor") or "unknown")


def _privilege(record: dict[str, Any]) -> str:
    target = record.get("target")
    source = record.get("source_cidr") or record.get("role_name")
    if not target:
        return "jit-lb access"
    return f"access to {target}" + (f" from {source}" if source else "")


def _detail(record: dict[str, Any]) -> str | None:
    """The record's own words for how it ended or why (an end reason, a refusal, an error)."""
    parts = [str(record[field]) for field in ("reason", "why", "error") if isinstance(record.get(field), str)]
    return "; ".join(dict.fromkeys(parts)) or None


def _message(event: str, record: dict[str, Any]) -> str:
    words = [event or "record without an event"]
    if record.get("request_id"):
        words.append(str(record["request_id"]))
    if record.get("target"):
        words.append(f"on {record['target']}")
    if record.get("actor"):
        words.append(f"by {record['actor']}")
    return " ".join(words)


def unreadable(raw: bytes, labels: list[str]) -> dict[str, Any]:
    """A line that is not a JSON record (exported with --flag-unverified): a Base Event carrying the line as read."""
    event = to_ocsf({}, labels)
    event["message"] = "a line of the audit log that is not a JSON record"
    event["raw_data"] = raw.decode("utf-8", "replace").rstrip("\n")
    return event
