"""A reverse proxy in front of moto that delays every AWS call by a fixed time, as a real region's round trip does.

moto answers in well under a millisecond, AWS in tens of milliseconds: the workers' AWS calls are sent
here (`AWS_ENDPOINT_URL`), held for `--delay` seconds, then passed to moto and its answer passed back
unchanged. It runs as a process of its own, so that its waiting costs the benchmark's process nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Iterator

import aiohttp
from aiohttp import web

from devtools.ports import free_port
from devtools.processes import serving

# Hop-by-hop headers, and the ones aiohttp sets again from the body it sends on.
DROPPED = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


def build_proxy(target: str, delay: float) -> web.Application:
    """An aiohttp app that forwards every request to `target` after `delay` seconds."""
    app = web.Application(client_max_size=64 * 1024 * 1024)

    async def start_session(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False, timeout=aiohttp.ClientTimeout(total=300)
        )

    async def close_session(app: web.Application) -> None:
        await app["session"].close()

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        await asyncio.sleep(delay)
        headers = {key: value for key, value in request.headers.items() if key.lower() not in DROPPED}
        async with app["session"].request(
            request.method, target + request.path_qs, headers=headers, data=body, allow_redirects=False
        ) as answer:
            payload = await answer.read()
            kept = {key: value for key, value in answer.headers.items() if key.lower() not in DROPPED}
            return web.Response(status=answer.status, headers=kept, body=payload)

    app.on_startup.append(start_session)
    app.on_cleanup.append(close_session)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


@contextlib.contextmanager
def latency_proxy(target: str, delay: float) -> Iterator[str]:
    """Run the proxy in a subprocess on a free loopback port; yield its endpoint (`http://127.0.0.1:<port>`)."""
    port = free_port()
    command = [sys.executable, "-m", "bench.latency_proxy", "--port", str(port), "--target", target]
    command += ["--delay", str(delay)]
    with serving(command, port):
        yield f"http://127.0.0.1:{port}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.latency_proxy")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target", required=True, help="moto's endpoint, e.g. http://127.0.0.1:5000")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds added to every call (default 0.05)")
    args = parser.parse_args(argv)
    web.run_app(build_proxy(args.target.rstrip("/"), args.delay), host="127.0.0.1", port=args.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
