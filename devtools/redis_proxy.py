"""A loopback TCP proxy in front of Redis that can hold back the answers to chosen commands, as a partition that
falls after a command was sent does: the command reaches Redis and is done, its answer arrives late or never.

`hold(b"jit:signed:")` makes every connection whose outgoing bytes contain that string stop passing Redis's answers
back for `seconds` (the client's read times out meanwhile); `release()` ends it for connections that hold later.
`cut(b"EXEC")` cuts the next connection that sends it, before Redis sees it; `lose(b"EVALSHA")` passes the next such
command on to Redis and cuts its connection as Redis answers (done, but the client hears a broken connection).
Only for tests: one thread a direction a connection, nothing it starts outlives `with`.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time

from devtools.ports import free_port


class HoldingProxy:
    """Forward 127.0.0.1:`port` to Redis on 127.0.0.1:`upstream`, holding answers as `hold` asks."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._patterns: tuple[bytes, ...] = ()
        self._seconds = 0.0
        self._once = False
        self._cut: tuple[bytes, ...] = ()
        self._lose: tuple[bytes, ...] = ()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._thread = threading.Thread(target=self._accept, name="redis-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def hold(self, *patterns: bytes, seconds: float = 5.0, once: bool = False) -> None:
        """From now on, a connection that sends any of `patterns` gets no answer for `seconds` after it (only the first
        such connection, `once`)."""
        with self._lock:
            self._patterns, self._seconds, self._once = patterns, seconds, once

    def cut(self, *patterns: bytes) -> None:
        """The first connection from now on that sends any of `patterns` is cut before they reach Redis (a partition
        that falls just as they are sent): nothing of that chunk is done."""
        with self._lock:
            self._cut = patterns

    def lose(self, *patterns: bytes) -> None:
        """The first connection from now on that sends any of `patterns` has them done by Redis, and is cut when Redis
        answers, the answer dropped (a partition that falls after the command arrived): the client may try again."""
        with self._lock:
            self._lose = patterns

    def release(self) -> None:
        with self._lock:
            self._patterns = ()

    def __enter__(self) -> HoldingProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopped.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            held_until = [0.0, 0.0]  # answers held until; 1.0 in the second once the next answer is to be lost
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._out, args=(client, server, held_until), daemon=True).start()
            threading.Thread(target=self._back, args=(server, client, held_until), daemon=True).start()

    def _out(self, client: socket.socket, server: socket.socket, held_until: list[float]) -> None:
        """Client to Redis: passed on at once; a chunk naming a held pattern holds this connection's answers."""
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                with self._lock:
                    if any(pattern in data for pattern in self._cut):
                        self._cut = ()
                        break
                    if any(pattern in data for pattern in self._lose):
                        self._lose = ()
                        held_until[1] = 1.0
                    if any(pattern in data for pattern in self._patterns):
                        held_until[0] = time.monotonic() + self._seconds
                        if self._once:
                            self._patterns = ()
                server.sendall(data)
        for sock in (server, client):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _back(self, server: socket.socket, client: socket.socket, held_until: list[float]) -> None:
        """Redis to client: passed on unless held, and then only once the hold is over."""
        with contextlib.suppress(OSError, ValueError):  # ValueError: select on a socket the other side closed
            while True:
                ready, _, _ = select.select([server], [], [], 0.05)
                if self._stopped.is_set():
                    return
                if not ready:
                    continue
                while time.monotonic() < held_until[0] and not self._stopped.is_set():
                    time.sleep(0.02)
                data = server.recv(65536)
                if not data or held_until[1]:
                    break
                client.sendall(data)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RDWR if held_until[1] else socket.SHUT_WR)
