"""Calls made in one turn of an event loop, answered together: the web's loop asks Redis the same small things for
many Slack requests at once (under a burst, tens in one turn), and one round trip for them all costs the loop and the
connection pool far less than one each. OneTurn batches any call; TurnScripts sends Lua scripts' calls in one
pipeline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import redis.asyncio
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

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


class TurnScripts:
    """`await scripts(script, keys, args)`: a Lua script's call, sent with every other made in the same turn of the
    loop in one pipeline (not a transaction), so a burst of commands costs the loop one connection, one write and one
    read a turn, not one each.

    Each caller gets its own script's answer, or its own error (Redis refusing that call); a broken connection is every
    caller's, as redis-py's retry of the whole pipeline after it. Every script sent this way must be safe to run
    twice: the retry may run a call whose answer the broken connection lost. The scripts are called by their SHA, not
    loaded on every pipeline as redis-py's pipeline would; a Redis that does not know one yet (restarted, failed over)
    has it loaded by that call alone.
    """

    def __init__(self, client: Callable[[], redis.asyncio.Redis]) -> None:
        self._client = client
        self._turn: OneTurn[tuple[AsyncScript, list[str], list[str | float]], Any] = OneTurn(self._run)

    async def __call__(self, script: AsyncScript, keys: list[str], args: list[str | float]) -> Any:
        return await self._turn((script, keys, args))

    async def _run(self, calls: list[tuple[AsyncScript, list[str], list[str | float]]]) -> list[Any]:
        async with self._client().pipeline(transaction=False) as pipe:
            for script, keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            answers: list[Any] = await pipe.execute(raise_on_error=False)
        for index, answer in enumerate(answers):
            if isinstance(answer, NoScriptError):
                script, keys, args = calls[index]
                try:
                    answers[index] = await script(keys=keys, args=args)  # loads it, then calls it again
                except Exception as err:  # that caller's alone, as if its call had failed in the pipeline
                    answers[index] = err
        return answers
