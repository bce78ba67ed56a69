"""The floor for slash-command latency: a Bolt AsyncApp whose `/jit` handler only acks, served by aiohttp.

The fair floor answers as jit-lb's web does, when the listener returns (`process_before_response=True`);
without it Bolt runs the listener in a task and polls for its ack every 10 ms, which flatters jit-lb.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from aiohttp import web
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from devtools.ports import free_port
from devtools.processes import serving


def build_bare_app(signing_secret: str, token: str, api_url: str, process_before_response: bool = True) -> AsyncApp:
    """Bolt's own request verification, and its one cached auth.test against `api_url` (as jit-lb's web does)."""
    # AsyncApp has no token_verification_enabled (only the sync App does): its auth.test runs once, then is cached.
    app = AsyncApp(
        client=AsyncWebClient(token=token, base_url=api_url),
        signing_secret=signing_secret,
        request_verification_enabled=True,
        process_before_response=process_before_response,
    )

    async def handle_command_jit(ack: AsyncAck) -> None:
        await ack()

    app.command("/jit")(handle_command_jit)
    return app


@dataclass(frozen=True)
class BareApp:
    """The bare app serving: its /slack/events URL, and its process id (for its CPU time)."""

    url: str
    pid: int


@contextlib.contextmanager
def bare_app_process(signing_secret: str, token: str, api_url: str, fair: bool = True) -> Iterator[BareApp]:
    """Run the bare app in a subprocess on a free loopback port; yield where it serves and its process id.

    `fair`: with `process_before_response=True`, as jit-lb's web; False: Bolt's default (acks polled every 10 ms).
    """
    port = free_port()
    command = [sys.executable, "-m", "bench.bare_app", "--port", str(port), "--secret", signing_secret]
    command += ["--token", token, "--api-url", api_url] + ([] if fair else ["--polled-ack"])
    with serving(command, port) as process:
        yield BareApp(f"http://127.0.0.1:{port}/slack/events", process.pid)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_app")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--polled-ack", action="store_true", help="Bolt's default: no process_before_response")
    args = parser.parse_args(argv)
    app = build_bare_app(args.secret, args.token, args.api_url, process_before_response=not args.polled_ack)
    web.run_app(app.web_app(), host="127.0.0.1", port=args.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
