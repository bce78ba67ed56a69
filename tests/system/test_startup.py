"""Processes refuse to start half-configured, each with one message naming what is wrong."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from devtools.ports import free_port
from tests.helpers import valid

ROOT = Path(__file__).resolve().parents[2]


def run(module: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SLACK_", "JIT_", "REDIS_", "PAGERDUTY_"))
    }
    return subprocess.run(
        [sys.executable, "-m", module],
        env={**base, **env},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(name="policy_file")
def fixture_policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yml"
    path.write_text(yaml.safe_dump(valid()))
    return path


@pytest.mark.parametrize(
    ("module", "env", "expected"),
    [
        ("bot", {"SLACK_SIGNING_SECRET": "s"}, "SLACK_BOT_TOKEN: is required"),
        ("bot", {"SLACK_BOT_TOKEN": "xoxp-user-token", "SLACK_SIGNING_SECRET": "s"}, "SLACK_BOT_TOKEN: must be a bot"),
        ("bot", {"SLACK_BOT_TOKEN": "xoxb-1"}, "SLACK_SIGNING_SECRET: is required in HTTP mode"),
        ("bot", {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xoxb-2"}, "SLACK_APP_TOKEN: must be an app-level"),
        ("bot", {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "PORT": "http"}, "PORT: "),
        (
            "bot",
            {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "REDIS_URL": "localhost:6379"},
            "REDIS_URL: must be a redis://",
        ),
        ("workers", {"SLACK_BOT_TOKEN": "xoxb-1", "JIT_SWEEP_INTERVAL": "0"}, "JIT_SWEEP_INTERVAL: "),
        ("workers", {"SLACK_BOT_TOKEN": "xoxb-1", "REDIS_SENTINELS": "10.0.0.1"}, "REDIS_SENTINELS: `10.0.0.1` is not"),
        ("bot", {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "REDIS_SENTINELS": "a:1,b:x"}, "`b:x`"),
    ],
)
def test_bad_setting_stops_the_process(policy_file: Path, module: str, env: dict[str, str], expected: str) -> None:
    """A missing or invalid variable stops `web` or `worker` at start with a message naming it."""
    result = run(module, {"JIT_POLICY_FILE": str(policy_file), **env})
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("module", ["bot", "workers"])
def test_invalid_policy_stops_the_process(tmp_path: Path, module: str) -> None:
    """An invalid policy stops each process at start naming the file and the field."""
    data = valid()
    data["targets"]["lb-prod"]["grant"]["ports"] = []
    path = tmp_path / "policy.yml"
    path.write_text(yaml.safe_dump(data))
    result = run(module, {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "JIT_POLICY_FILE": str(path)})
    assert result.returncode == 2
    assert f"{path}: targets.lb-prod.grant.ports" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("module", ["bot", "workers"])
@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (None, "JIT_MFA_KEY: is required because these targets require MFA: lb-prod"),
        ("not-a-fernet-key", "JIT_MFA_KEY: is not a Fernet key"),
    ],
)
def test_mfa_without_its_key_stops_the_process(tmp_path: Path, module: str, key: str | None, expected: str) -> None:
    """A policy that requires MFA with no key, or a key that is not a Fernet key, stops each process at start."""
    data = valid()
    data["targets"]["lb-prod"]["require_mfa"] = True
    path = tmp_path / "policy.yml"
    path.write_text(yaml.safe_dump(data))
    env = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "JIT_POLICY_FILE": str(path)}
    result = run(module, env | ({"JIT_MFA_KEY": key} if key else {}))
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("module", ["bot", "workers"])
@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "PAGERDUTY_TOKEN: is required because these targets auto-approve from on-call: lb-prod"),
        ({"PAGERDUTY_TOKEN": "t", "PAGERDUTY_API_URL": "api.pagerduty.com"}, "PAGERDUTY_API_URL: must be an http(s)"),
    ],
)
def test_on_call_without_pagerduty_stops_the_process(
    tmp_path: Path, module: str, env: dict[str, str], expected: str
) -> None:
    """A target that auto-approves from on-call with no PAGERDUTY_TOKEN, or a PAGERDUTY_API_URL that is not a URL,
    stops each process at start naming the variable."""
    data = valid()
    data["targets"]["lb-prod"]["auto_approve"] = {"on_call": {"schedules": ["PSCHED01"]}}
    path = tmp_path / "policy.yml"
    path.write_text(yaml.safe_dump(data))
    result = run(
        module, {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "JIT_POLICY_FILE": str(path), **env}
    )
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_healthz_is_503_without_redis(policy_file: Path) -> None:
    """/healthz says 503 when Redis cannot be reached, and the web process keeps running."""
    port = free_port()
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SLACK_", "JIT_", "REDIS_", "PAGERDUTY_"))
    }
    env = {
        **base,
        "SLACK_BOT_TOKEN": "xoxb-1",
        "SLACK_SIGNING_SECRET": "s",
        "JIT_POLICY_FILE": str(policy_file),
        "PORT": str(port),
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "bot"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        status = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and status is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
                    status = answer.status
            except urllib.error.HTTPError as err:
                status = err.code
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        assert status == 503
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(timeout=10)
