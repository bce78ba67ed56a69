"""The whole product on one machine: private Redis, moto, the Slack stand-in, and the Procfile's processes."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import yaml

from devtools.faults import FAULTS
from devtools.haproxy import HaproxyServer
from devtools.moto_server import MotoServer, Network, seed_network
from devtools.pagerduty_standin import PagerDutyStandin
from devtools.ports import free_port
from devtools.processes import Stopping, poll
from devtools.redis_server import RedisServer
from devtools.sentinel import MASTER_NAME, SentinelTopology
from devtools.slack_client import SlackClient
from devtools.slack_standin import SlackStandin

ROOT = Path(__file__).resolve().parent.parent
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-1-test"


def procfile(path: Path = ROOT / "Procfile") -> dict[str, list[str]]:
    """Each Procfile line as a command, `python` meaning this interpreter."""
    commands = {}
    for line in path.read_text().splitlines():
        if ":" in line and not line.lstrip().startswith("#"):
            name, command = line.split(":", 1)
            words = shlex.split(command)
            commands[name.strip()] = [sys.executable if word == "python" else word for word in words]
    return commands


@dataclass
class Process:
    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(self.command, env=self.env, cwd=ROOT, stdout=log, stderr=log)
        log.close()

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.popen = None


@dataclass
class Stack(Stopping):
    """Start with `with Stack(policy=...) as stack:`; `policy` builds the policy from the seeded network."""

    policy: Callable[[Network], dict[str, Any]]
    sweep_interval: float = 60.0
    webs: int = 1
    workers: int = 1
    usergroups: dict[str, list[str]] = field(default_factory=dict)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="jitlb-stack-")))
    extra_env: dict[str, str] = field(default_factory=dict)
    keep_workdir: bool = False
    with_haproxy: bool = False
    socket_mode: bool = False
    durable_redis: bool = False  # Redis with an fsynced append-only file: a kill and a start keep its data
    sentinel: bool = False  # a master, a replica and three Sentinels (devtools/sentinel.py) instead of one Redis
    with_pagerduty: bool = False  # the PagerDuty stand-in, for auto-approval from on-call

    def __post_init__(self) -> None:
        self.redis = RedisServer(durable=self.durable_redis)
        self.topology = SentinelTopology() if self.sentinel else None
        self.moto = MotoServer()
        self.slack = SlackStandin()
        self.haproxy = HaproxyServer() if self.with_haproxy else None
        self.pagerduty = PagerDutyStandin() if self.with_pagerduty else None
        self.processes: list[Process] = []
        self.network: Network | None = None
        self.audit_path = self.workdir / "audit.log"
        self.policy_path = self.workdir / "policy.yml"
        self.web_ports: list[int] = []

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        # The Sentinels take seconds to meet: they do so while moto and the stand-in start.
        meeting = None
        if self.topology is not None:
            meeting = ThreadPoolExecutor(max_workers=1)
            topology_started = meeting.submit(self.topology.start)
        else:
            self.redis.start()
        self.moto.start()
        self.slack.start()
        if meeting is not None:
            topology_started.result()
            meeting.shutdown()
        if self.pagerduty is not None:
            self.pagerduty.start()
        for group, members in self.usergroups.items():
            self.slack.set_usergroup(group, members)
        self.network = seed_network(self.moto)
        if self.haproxy is not None:
            self.haproxy.start()
            self.network = dataclasses.replace(
                self.network, haproxy_runtime_api=self.haproxy.runtime_api_unix, haproxy_acl=self.haproxy.acl_file
            )
        self.policy_path.write_text(yaml.safe_dump(self.policy(self.network), sort_keys=False))
        commands = procfile()
        for index in range(self.webs):
            port = free_port()
            self.web_ports.append(port)
            self._spawn(f"web.{index + 1}", commands["web"], {"PORT": str(port)})
        for index in range(self.workers):
            self._spawn(f"worker.{index + 1}", self.worker_command())
        for name, command in commands.items():
            if name not in {"web", "worker"}:
                self._spawn(f"{name}.1", command)
        for port in self.web_ports:
            self.wait_healthy(port)
        if self.socket_mode:
            self.wait_for(self.slack.socket_connected, what="the web process's Socket Mode connection")
        return self

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "SLACK_", "JIT_"))}
        env.update(self.moto.env)
        env.update(
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=self.slack.api_url,
            REDIS_URL=self.redis_url,
            JIT_POLICY_FILE=str(self.policy_path),
            JIT_AUDIT_LOG=str(self.audit_path),
            JIT_SWEEP_INTERVAL=str(self.sweep_interval),
            PYTHONUNBUFFERED="1",
        )
        if self.socket_mode:
            env["SLACK_APP_TOKEN"] = APP_TOKEN
        if self.pagerduty is not None:
            env["PAGERDUTY_TOKEN"] = self.pagerduty.token
            env["PAGERDUTY_API_URL"] = self.pagerduty.api_url
        if self.topology is not None:
            env["REDIS_SENTINELS"] = self.topology.sentinels
            env["REDIS_SENTINEL_MASTER"] = MASTER_NAME
        env.update(self.extra_env)
        env.update(extra or {})
        return env

    def _spawn(self, name: str, command: list[str], extra: dict[str, str] | None = None) -> Process:
        process = Process(name, command, self.env(extra), self.workdir / f"{name}.log")
        process.start()
        self.processes.append(process)
        return process

    def worker_command(self) -> list[str]:
        """The Procfile's worker; with a fault asked for in `extra_env`, that worker with it (devtools/faults.py)."""
        if any(fault in self.extra_env for fault in FAULTS):
            return [sys.executable, "-m", "devtools.faults"]
        return procfile()["worker"]

    def start_worker(self) -> Process:
        return self._spawn(f"worker.{len(self.processes) + 1}", self.worker_command())

    def by_prefix(self, prefix: str) -> list[Process]:
        return [process for process in self.processes if process.name.startswith(prefix) and process.alive()]

    def wait_healthy(self, port: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if any(p.popen is not None and p.popen.poll() is not None for p in self.processes):
                break
            time.sleep(0.1)
        raise RuntimeError(f"web on port {port} did not become healthy:\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.log_path.name}\n{p.log_path.read_text()[-4000:]}" for p in self.processes if p.log_path.exists()
        )

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
        self.slack.stop()
        if self.pagerduty is not None:
            self.pagerduty.stop()
        if self.haproxy is not None:
            self.haproxy.close()
        self.moto.stop()
        self.redis.close()
        if self.topology is not None:
            self.topology.stop()
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def redis_url(self) -> str:
        """The master's URL now (with Sentinel: as the Sentinels name it, so after a failover the new one's)."""
        return self.topology.url if self.topology is not None else self.redis.url

    # --- talking to it ------------------------------------------------------------------------

    def client(self, web: int = 0) -> SlackClient:
        # Given the stand-in, every request carries a trigger id it issued, valid 3 seconds as Slack's are.
        return SlackClient(f"http://127.0.0.1:{self.web_ports[web]}", SIGNING_SECRET, standin=self.slack)

    def audit(self, request_id: str | None = None) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        records = [json.loads(line) for line in self.audit_path.read_text().splitlines() if line.strip()]
        return [r for r in records if request_id is None or r.get("request_id") == request_id]

    def events(self, request_id: str) -> list[str]:
        return [record["event"] for record in self.audit(request_id)]

    def sg_rules(self) -> list[dict[str, Any]]:
        assert self.network is not None
        ec2 = self.moto.client("ec2")
        rules = ec2.describe_security_group_rules(
            Filters=[{"Name": "group-id", "Values": [self.network.security_group_id]}]
        )["SecurityGroupRules"]
        return [rule for rule in rules if not rule["IsEgress"]]

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
        value = poll(predicate, timeout)
        if value is None:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.logs()}")
        return value
