"""An aiohttp app served on 127.0.0.1 from a thread of its own: the life cycle every stand-in shares."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self

from aiohttp import web

from devtools.ports import free_port


class LoopbackServer:
    """Start with `with Server() as server:` (or `start()`/`stop()`); subclasses add their routes in `routes`."""

    name = "stand-in"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def api_url(self) -> str:
        """The URL a client is given."""
        return f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        """Add the server's routes (and shutdown hooks) to `app`."""
        raise NotImplementedError

    def start(self) -> Self:
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(ready, failure), name=self.name, daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure or not ready.is_set():
            cause = failure[0] if failure else None
            raise RuntimeError(f"the {self.name} did not start on port {self.port}") from cause
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.stop()

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        app = web.Application()
        self.routes(app)
        runner = web.AppRunner(app, access_log=None)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        except OSError as err:
            failure.append(err)
            loop.run_until_complete(runner.cleanup())
            loop.close()
            ready.set()
            return
        self._loop = loop
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()


def serve_standin(standin: Callable[..., LoopbackServer], description: str, token: str, argv: list[str] | None) -> None:
    """A stand-in's `main`: `--port` and `--token` (default `token`), its API URL printed, run until interrupted."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--token", default=token)
    options = parser.parse_args(argv)
    with standin(options.token, port=options.port) as server:
        print(server.api_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
