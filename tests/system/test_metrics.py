"""/metrics of the Procfile's processes: the web's on PORT, a worker's on JIT_METRICS_PORT, each in a format promtool
accepts, moving as a request is granted and ends."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools.ports import free_port
from devtools.stack import Stack
from tests.helpers import granted, stack_policy

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(name="stack")
def fixture_stack() -> Iterator[Stack]:
    port = free_port()
    env = {"JIT_METRICS_PORT": str(port), "JIT_METRICS_HOST": "127.0.0.1"}
    with Stack(policy=stack_policy, sweep_interval=1.0, extra_env=env) as stack:
        stack.metrics_port = port  # type: ignore[attr-defined]
        yield stack


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain; version=")  # the text exposition format
        return str(answer.read().decode())


def _answers(port: int) -> bool:
    try:
        scrape(port)
    except OSError:
        return False
    return True


def parsed(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def get(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def promtool_accepts(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian's prometheus package; CI installs it)")
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_both_processes_serve_metrics_that_move_as_a_grant_lives_and_ends(stack: Stack) -> None:
    """Web and worker each pass `promtool check metrics`; a grant counts once in the worker, and ends there."""
    web_port, worker_port = stack.web_ports[0], stack.metrics_port  # type: ignore[attr-defined]
    stack.wait_for(lambda: _answers(worker_port), timeout=30, what="the worker's /metrics")
    for port in (web_port, worker_port):
        promtool_accepts(scrape(port))
    assert get(parsed(scrape(worker_port)), "jit_redis_up") == 1

    request_id = granted(stack, "U0DEV1", "request lb-prod 4s metrics in motion")
    timed = "jit_grant_seconds_count"
    stack.wait_for(lambda: get(parsed(scrape(worker_port)), timed, kind="aws_security_group"), what="the grant's time")

    web, worker = parsed(scrape(web_port)), parsed(scrape(worker_port))
    assert get(web, "jit_requests_total", target="lb-prod", outcome="created") == 1
    assert get(web, "jit_requests_total", target="lb-prod", outcome="approved") == 1
    assert get(worker, "jit_grant_seconds_count", kind="aws_security_group") == 1  # counted once, in the worker
    assert get(web, "jit_grant_seconds_count", kind="aws_security_group") == 0
    assert get(worker, "jit_grants_active", target="lb-prod") == get(web, "jit_grants_active", target="lb-prod") == 1

    stack.wait_for(lambda: "grant.revoked" in stack.events(request_id), timeout=20, what="the grant's end")
    # Observed just after the end's record is written: wait for the scrape that has it.
    ended = "jit_access_end_offset_seconds_count"
    stack.wait_for(lambda: get(parsed(scrape(worker_port)), ended, kind="aws_security_group"), what="the end's offset")

    final = scrape(worker_port)
    promtool_accepts(final)
    promtool_accepts(scrape(web_port))
    worker = parsed(final)
    assert get(worker, "jit_access_end_offset_seconds_count", kind="aws_security_group") == 1
    assert get(worker, "jit_access_end_offset_seconds_bucket", kind="aws_security_group", le="0.0") == 1  # on time
    assert get(worker, "jit_grants_active", target="lb-prod") is None
    assert (get(worker, "jit_sweep_seconds_count") or 0) >= 1
    assert get(worker, "jit_revoke_failures_total", kind="aws_security_group") == 0
