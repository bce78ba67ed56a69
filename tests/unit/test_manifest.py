"""manifest.yml is a manifest Slack accepts, and declares every surface and scope jit-lb uses (docs/slack-app.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "tests" / "data" / "slack-manifest-schema"
# The URL prefix under which the vendored entry schema names the versioned ones (see its README).
SCHEMA_URL = "https://raw.githubusercontent.com/slackapi/manifest-schema/v0.5.0/"
EVENTS_URL = "https://jit-lb.example.com/slack/events"

# Every bot scope jit-lb needs, with what needs it; the manifest asks for these and nothing more.
SCOPES = {
    "commands": "the /jit slash command and the jit_request global shortcut",
    "chat:write": "chat.postMessage, chat.update, chat.postEphemeral, chat.delete: cards, replies, DMs, refusals",
    "im:write": "conversations.open: the DM channel id that files.completeUploadExternal needs",
    "usergroups:read": "usergroups.users.list: usergroup approvers",
    "files:write": "files.uploadV2, files.delete: the QR code of an MFA enrolment, deleted once confirmed",
    "users:read": "users.info: a requester's profile, to find them in PagerDuty for auto-approval",
    "users:read.email": "users.info's profile.email, when the policy names no e-mail",
}
# The scope each Web API method the code may call needs (None: none). A method not listed here fails
# test_every_web_api_method_the_code_calls_is_covered until it is added, with its scope.
METHOD_SCOPES: dict[str, str | None] = {
    "auth.test": None,
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "chat.postEphemeral": "chat:write",
    "chat.delete": "chat:write",
    "chat.getPermalink": None,
    "users.info": "users:read",
    "conversations.open": "im:write",
    "usergroups.users.list": "usergroups:read",
    "views.open": None,
    "views.push": None,
    "views.update": None,
    "views.publish": None,
    "files.uploadV2": "files:write",
    "files.getUploadURLExternal": "files:write",
    "files.completeUploadExternal": "files:write",
    "files.delete": "files:write",
}
_FAMILIES = "chat|views|files|usergroups|users|conversations|reactions|pins|bookmarks|team|auth|apps"
# A method named as a string ("chat.postMessage") or called through slack_sdk (client.views_open(...)).
_NAMED = re.compile(rf"[\"']((?:{_FAMILIES})\.[A-Za-z][A-Za-z.]*)[\"']")
_CALLED = re.compile(rf"\.((?:{_FAMILIES})_[A-Za-z0-9_]+)\(")


@pytest.fixture(name="manifest")
def fixture_manifest() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "manifest.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(name="validator")
def fixture_validator() -> Draft7Validator:
    """Slack's entry schema, its versioned schemas found in tests/data by the URLs it names them by."""
    registry: Registry[Any] = Registry()
    for path in (SCHEMAS / "schemas").glob("*.json"):
        resource = Resource.from_contents(json.loads(path.read_text()), default_specification=DRAFT7)
        registry = registry.with_resource(f"{SCHEMA_URL}schemas/{path.name}", resource)
    entry = json.loads((SCHEMAS / "manifest.schema.json").read_text())
    Draft7Validator.check_schema(entry)
    return Draft7Validator(entry, registry=registry)


def code_methods() -> set[str]:
    """The Web API methods that slack_out/, bot/ and workers/ name or call."""
    found: set[str] = set()
    for folder in ("slack_out", "bot", "workers"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            found |= set(_NAMED.findall(text))
            for called in _CALLED.findall(text):
                found.add({"files_upload_v2": "files.uploadV2"}.get(called, called.replace("_", ".", 1)))
    return found


def test_the_manifest_matches_slacks_schema(manifest: dict[str, Any], validator: Draft7Validator) -> None:
    """manifest.yml validates against Slack's published app manifest schema, with no error at all."""
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]
    assert errors == []


def test_the_schema_refuses_a_broken_manifest(manifest: dict[str, Any], validator: Draft7Validator) -> None:
    """The check has teeth: a shortcut without a description, or an unknown setting, is refused."""
    shortcut = {"name": "Request access", "type": "global", "callback_id": "jit_request"}
    assert not validator.is_valid({**manifest, "features": {**manifest["features"], "shortcuts": [shortcut]}})
    assert not validator.is_valid({**manifest, "settings": {**manifest["settings"], "home_tab": True}})


def test_the_request_shortcut_and_the_command_are_declared(manifest: dict[str, Any]) -> None:
    """A global shortcut with callback_id jit_request, and /jit, both as Slack's surfaces for a request."""
    features = manifest["features"]
    shortcuts = {(s["type"], s["callback_id"]): s["name"] for s in features["shortcuts"]}
    assert shortcuts == {("global", "jit_request"): "Request access"}
    assert [(c["command"], c.get("url")) for c in features["slash_commands"]] == [("/jit", EVENTS_URL)]


def test_the_home_tab_and_its_event_are_declared(manifest: dict[str, Any]) -> None:
    """The App Home tab is on, and app_home_opened is sent to the events URL."""
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    events = manifest["settings"]["event_subscriptions"]
    assert (events["request_url"], events["bot_events"]) == (EVENTS_URL, ["app_home_opened"])
    interactivity = manifest["settings"]["interactivity"]
    assert (interactivity["is_enabled"], interactivity["request_url"]) == (True, EVENTS_URL)


def test_the_bot_scopes_are_the_ones_jit_lb_needs(manifest: dict[str, Any]) -> None:
    """The bot asks for every scope in SCOPES, and for nothing else."""
    assert sorted(SCOPES) == sorted(manifest["oauth_config"]["scopes"]["bot"])


def test_every_web_api_method_the_code_calls_is_covered() -> None:
    """Each Web API method bot/ and workers/ use is known here, and the scope it needs is in SCOPES."""
    methods = code_methods()
    assert "chat.postMessage" in methods, "the scan of bot/ and workers/ found nothing: is the pattern stale?"
    unknown = sorted(methods - METHOD_SCOPES.keys())
    assert unknown == [], "add each to METHOD_SCOPES with the scope it needs"
    needed = {scope for method in methods if (scope := METHOD_SCOPES[method]) is not None}
    undeclared = sorted(needed - SCOPES.keys())
    assert undeclared == [], "add each to SCOPES and to manifest.yml"
