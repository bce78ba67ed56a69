"""Grant and revoke times on a real NGINX: the provider alone, and through the product as the Procfile runs it."""

from __future__ import annotations

import http.client
import re
import socket
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.grants import log, ms, wait_until
from bench.stats import Row, latency_row
from devtools.haproxy import http_status
from devtools.moto_server import Network
from devtools.nginx import NginxServer, nginx_binary
from devtools.stack import Stack
from jit_lb.access.policy import NginxAllowlistGrant
from workers.providers.base import GrantOrder
from workers.providers.nginx import NginxAllowlistProvider

SOURCE = "127.0.0.2"
REQUESTER = "U0NGINX"
APPROVER = "U0APPROVER1"
APPROVALS = "C0APPROVALS"
POLL_S = 0.01


def nginx_figures(provider_rounds: int, flow_rounds: int, busy_rounds: int) -> list[Row]:
    """Every NGINX row; none (one row saying so) when nginx is not installed."""
    if nginx_binary() is None:
        return [Row("NGINX", "skipped", note="nginx is not installed")]
    return [*provider_times(provider_rounds), *busy_revoke(busy_rounds), *through_the_product(flow_rounds)]


def order(spec: NginxAllowlistGrant, round_: int) -> GrantOrder:
    ends = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=10)
    return GrantOrder(f"jit-bench{round_}", "edge-nginx", spec, ends, cidr=f"{SOURCE}/32")


def provider_times(rounds: int) -> list[Row]:
    """apply and drop one after the other, with a kept-alive connection from the source open across both."""
    with NginxServer(shutdown_timeout="10s") as server:
        spec = NginxAllowlistGrant.model_validate(server.grant_spec())
        provider = NginxAllowlistProvider(spec)
        tests, grants, revokes = [], [], []
        for round_ in range(rounds):
            started = time.monotonic()
            provider.nginx.dump()
            tests.append(ms(time.monotonic() - started))
            started = time.monotonic()
            [obj] = provider.apply(order(spec, round_))
            grants.append(ms(time.monotonic() - started))
            kept = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5, source_address=(SOURCE, 0))
            with closing(kept):
                status = http_status(server.port, SOURCE, kept)  # opened, answered, and kept alive
                if status != 200:
                    raise RuntimeError(f"NGINX answered {status} during the grant")
                started = time.monotonic()
                provider.drop(obj, {obj.leases[0].request_id})
                revokes.append(ms(time.monotonic() - started))
    note = "worker_shutdown_timeout 10s; a kept-alive connection from the source open"
    return [
        latency_row("NGINX: `nginx -T` (test and dump the configuration)", tests),
        latency_row("NGINX grant: write, test, SIGHUP, old workers stop accepting", grants, note=note),
        latency_row("NGINX revoke: write, test, SIGHUP, every old worker exited", revokes, note=note),
    ]


def busy_revoke(rounds: int) -> list[Row]:
    """A revoke while another source downloads: the old worker keeps serving it until worker_shutdown_timeout."""
    with NginxServer(shutdown_timeout="3s") as server:
        spec = NginxAllowlistGrant.model_validate(server.grant_spec())
        provider = NginxAllowlistProvider(spec)
        other = order(spec, 0)
        provider.apply(GrantOrder("jit-benchother", "edge-nginx", spec, other.ends_at, cidr="127.0.0.3/32"))
        revokes = []
        for round_ in range(rounds):
            [obj] = provider.apply(order(spec, round_))
            with socket.create_connection(("127.0.0.1", server.port), source_address=("127.0.0.3", 0)) as download:
                download.sendall(b"GET /stream HTTP/1.1\r\nHost: bench\r\n\r\n")
                download.recv(12)
                started = time.monotonic()
                provider.drop(obj, {obj.leases[0].request_id})
                revokes.append(ms(time.monotonic() - started))
    return [
        latency_row(
            "NGINX revoke while another source downloads",
            revokes,
            note="worker_shutdown_timeout 3s: the revoke waits for the old worker that serves the download",
        )
    ]


def policy(server: NginxServer) -> Any:
    def build(network: Network) -> dict[str, Any]:
        return {
            "approver_channel": APPROVALS,
            "principals": {REQUESTER: {"source_cidr": f"{SOURCE}/32"}},
            "targets": {
                "edge-nginx": {
                    "min_duration": "1s",
                    "max_duration": "1h",
                    "approvers": [APPROVER],
                    "grant": server.grant_spec(),
                }
            },
        }

    return build


def through_the_product(rounds: int) -> list[Row]:
    """Approve click answered → the source's first 200; `/jit revoke` answered → its first 403 and grant.revoked."""
    with NginxServer(shutdown_timeout="10s") as server, Stack(policy=policy(server), workers=1) as stack:
        client = stack.client()
        to_allowed, to_refused, to_revoked = [], [], []
        for round_ in range(rounds):
            answer = client.command(REQUESTER, f"request edge-nginx 10m bench round {round_}").json()["text"]
            match = re.search(r"jit-[a-z0-9]{6}", answer)
            if match is None:
                raise RuntimeError(f"the request was refused: {answer}")
            request_id = match.group(0)
            card = stack.slack.wait_for(
                lambda rid=request_id: next(
                    (m for m in stack.slack.messages(APPROVALS) if rid in m.get("text", "") and "thread_ts" not in m),
                    None,
                )
            )
            client.click(APPROVER, "jit_approve", request_id, APPROVALS, card["ts"])
            clicked = time.monotonic()
            if wait_until(lambda: http_status(server.port, SOURCE) == 200, timeout=20, every=POLL_S):
                to_allowed.append(ms(time.monotonic() - clicked))
            stack.wait_for(lambda rid=request_id: "grant.applied" in stack.events(rid), what="grant.applied")
            client.command(REQUESTER, f"revoke {request_id}")
            asked = time.monotonic()
            if wait_until(lambda: http_status(server.port, SOURCE) == 403, timeout=20, every=POLL_S):
                to_refused.append(ms(time.monotonic() - asked))
            stack.wait_for(lambda rid=request_id: "grant.revoked" in stack.events(rid), what="grant.revoked")
            to_revoked.append(ms(time.monotonic() - asked))
        log(f"NGINX through the product: {rounds} grants and revokes")
    return [
        latency_row("NGINX: approve click answered → source's first 200", to_allowed),
        latency_row("NGINX: `/jit revoke` answered → source's first 403", to_refused),
        latency_row("NGINX: `/jit revoke` answered → grant.revoked recorded", to_revoked, note="1 web, 1 worker"),
    ]
