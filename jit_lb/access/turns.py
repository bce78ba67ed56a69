"""Calls made in one turn of an event loop, answered together: the web's loop asks Redis the same small thing for
many Slack requests at once (under a burst, tens in one turn), and one round trip for them all costs the loop and the
connection pool far less than one each."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class OneTurn(Generic[T, R]):
    """`await turn(item)` answers `item` together with every other item asked in the same turn of the loop.

    `run` gets the turn's items in the order asked and returns one answer for each, in that order: a value, or an
    exception that is that caller's alone. What `run` raises is every caller's. A caller that stops waiting (its client
    hung up) leaves the others' answers as they are.
    """

    def __init__(self, run: Callable[[list[T]], Awaitable[list[R | Exception]]]) -> None:
        self._run = run
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._running: set[asyncio.Task[None]] = set()  # held until done: the loop keeps only a weak reference

    async def __call__(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[R] = loop.create_future()
        self._waiting.append((item, answer))
        if len(self._waiting) == 1:
            loop.call_soon(self._start)
        return await answer

    def _start(self) -> None:
        batch, self._waiting = self._waiting, []
        task = asyncio.get_running_loop().create_task(self._answer(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _answer(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        answers: list[R | Exception]
        try:
            try:
                answers = await self._run([item for item, _ in batch])
            except Exception as err:  # each caller gets what the round trip raised (unavailable, unconfirmed, refused)
                answers = [err] * len(batch)
            if len(answers) != len(batch):
                answers = [RuntimeError(f"{len(answers)} answers for {len(batch)} calls")] * len(batch)
            for (_, waiting), answer in zip(batch, answers, strict=True):
                if waiting.done():
                    continue
                if isinstance(answer, Exception):
                    waiting.set_exception(answer)
                else:
                    waiting.set_result(answer)
        finally:  # cancelled (the process stopping): no caller waits for ever
            for _, waiting in batch:
                if not waiting.done():
                    waiting.cancel()
