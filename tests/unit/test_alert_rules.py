"""deploy/prometheus/alerts.yml: valid rules, each alert fired and not fired by its promtool unit tests, on the metrics
the processes really expose."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from prometheus_client import generate_latest

from jit_lb.access.policy import load_policy
from jit_lb.metrics import Metrics
from tests.helpers import ROOT

RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
SCRAPE = ROOT / "deploy" / "prometheus" / "scrape.yml"


@pytest.fixture(name="promtool")
def fixture_promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian's prometheus package; CI installs it)")
    return found


def run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, check=False, cwd=ROOT)


def test_the_rules_and_the_scrape_config_are_valid(promtool: str) -> None:
    """`promtool check rules` and `promtool check config` accept what deploy/prometheus ships."""
    checked = run(promtool, "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 9 rules found" in checked.stdout
    config = run(promtool, "check", "config", str(SCRAPE))
    assert config.returncode == 0, config.stdout + config.stderr


def test_each_alert_fires_and_holds_as_its_series_say(promtool: str) -> None:
    """`promtool test rules`: for every alert, series that fire it and series that do not."""
    tested = run(promtool, "test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = set(re.findall(r"- alert: (\w+)", RULES.read_text(encoding="utf-8")))
    firing = set(
        re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels", RULE_TESTS.read_text(encoding="utf-8"))
    )
    quiet = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts: \[\]", RULE_TESTS.read_text(encoding="utf-8")))
    assert alerts == firing, "an alert without a test that fires it"
    assert alerts - {"JitNoWorkerAlive"} <= quiet | {"JitSweepSlow"}, "an alert without a test that it stays quiet"


def test_the_rules_name_only_metrics_the_processes_expose() -> None:
    """Every jit_ metric an alert reads is one a process serves: a renamed metric cannot silence an alert."""
    metrics = Metrics(lambda: load_policy(ROOT / "policy.example.yml"), 60.0)
    exposed = set(re.findall(r"^(jit_\w+?)(?:\{| )", generate_latest(metrics.registry).decode(), re.M))
    exposed |= {"jit_grants_active", "jit_lockdown", "jit_redis_up"}  # read from Redis at scrape time
    rules = [line for line in RULES.read_text(encoding="utf-8").splitlines() if not line.strip().startswith("#")]
    used = set(re.findall(r"\bjit_\w+", "\n".join(rules)))
    assert used - exposed == set()
