"""`policy diff` against a real Redis: the active grants an edit would end, read without changing anything."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest
import redis
import yaml

from jit_lb.access import requests
from jit_lb.access.policy import load_policy, spec_record
from jit_lb.access.store import RequestStore
from jit_lb.policytools.cli import main as policy_cli
from tests.helpers import NOW, ROOT, pending

EXAMPLE = ROOT / "policy.example.yml"


def _granted(store: RequestStore, request_id: str, target: str, spec: dict[str, object]) -> None:
    request = store.create(lambda _: pending(request_id).model_copy(update={"target": target}))
    store.transition(request.id, lambda r: requests.approve(r, "U0APPROVER1", NOW))
    store.transition(
        request.id,
        lambda r: requests.grant(r, NOW, NOW + timedelta(minutes=10), [], verified=True).model_copy(
            update={"grant_spec": spec}
        ),
    )


def _contents(client: redis.Redis) -> dict[bytes, bytes | None]:
    return {key: client.dump(key) for key in sorted(client.keys("*"))}


def test_diff_names_the_active_grants_an_edit_would_end_and_changes_nothing(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A grant of a target whose spec changes and one of a removed target are listed; one untouched is not."""
    old = load_policy(EXAMPLE)
    store = RequestStore(redis_client)
    _granted(store, "jit-aaaaaa", "lb-prod", spec_record(old.targets["lb-prod"].grant))
    _granted(store, "jit-bbbbbb", "lb-prod-admin-path", spec_record(old.targets["lb-prod-admin-path"].grant))
    _granted(store, "jit-cccccc", "edge-haproxy", spec_record(old.targets["edge-haproxy"].grant))
    edited = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    edited["targets"]["lb-prod"]["grant"]["ports"] = [8443]
    del edited["targets"]["lb-prod-admin-path"]
    new = tmp_path / "policy.yml"
    new.write_text(yaml.safe_dump(edited), encoding="utf-8")
    before = _contents(redis_client)
    monkeypatch.setenv("REDIS_URL", redis_url)

    out = io.StringIO()
    assert policy_cli(["diff", str(EXAMPLE), str(new)], out=out) == 0

    lines = out.getvalue().splitlines()
    ended = lines[lines.index("active grants this edit would end (reason policy): 2 of 3") + 1 :]
    assert ended == [
        "  jit-aaaaaa  lb-prod  U0DEV1 (203.0.113.7/32) until 2026-11-23T12:10:00Z: "
        "the grant spec of `lb-prod` changes",
        "  jit-bbbbbb  lb-prod-admin-path  U0DEV1 (203.0.113.7/32) until 2026-11-23T12:10:00Z: "
        "its target `lb-prod-admin-path` leaves the policy",
    ]
    assert _contents(redis_client) == before


def test_diff_says_when_redis_cannot_be_reached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """REDIS_URL set but nothing listening: the policy changes are still printed, and the grants said unread."""
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    out = io.StringIO()
    assert policy_cli(["diff", str(EXAMPLE), str(EXAMPLE)], out=out) == 0
    assert out.getvalue().splitlines()[-1].startswith("active grants: not read (Redis could not be reached")
