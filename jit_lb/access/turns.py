"""Calls made in one turn of an event loop, answered together: the web's loop asks Redis the same small things for
many Slack requests at once (under a burst, tens in one turn), and one round trip for them all costs the loop and the
connection pool far less than one each. OneTurn batches any call; TurnScripts sends Lua scripts' calls in one
pipeline."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import redis.asyncio
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


_Call = tuple[str, list[str], list[str | float]]  # a script's source, its KEYS and its ARGV


class TurnScripts:
    """`await scripts(source, keys, args)`: a Lua script's call, sent with every other made in the same turn of the
    loop in one pipeline (not a transaction), so a burst of commands costs the loop one connection, one write and one
    read a turn, not one each.

    Each caller gets its own script's answer, or its own error (Redis refusing that call); a broken connection is every
    caller's, as redis-py's retry of the whole pipeline after it. Every script sent this way must be safe to run
    twice: the retry may run a call whose answer the broken connection lost. The scripts are called by their SHA, not
    loaded on every pipeline as redis-py's pipeline would. A Redis that does not know some (restarted, failed over)
    answers NOSCRIPT to their calls alone: the turn's other callers are answered at once, and the forgotten calls are
    sent again in one more pipeline that loads each of their scripts once.
    """

    def __init__(self, client: Callable[[], redis.asyncio.Redis]) -> None:
        self._client = client
        self._turn: OneTurn[_Call, Any] = OneTurn(self._run)
        self._shas: dict[str, str] = {}
        self._resending: set[asyncio.Task[list[Any]]] = set()  # held until done: the loop keeps a weak reference

    async def __call__(self, source: str, keys: list[str], args: list[str | float]) -> Any:
        answer = await self._turn((source, keys, args))
        if isinstance(answer, _Resent):
            answer = (await asyncio.shield(answer.answers))[answer.index]  # shielded: one caller gone stops no other
            if isinstance(answer, Exception):
                raise answer
        return answer

    def _sha(self, source: str) -> str:
        sha = self._shas.get(source)
        if sha is None:
            sha = self._shas[source] = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()  # its name
        return sha

    async def _run(self, calls: list[_Call]) -> list[Any]:
        async with self._client().pipeline(transaction=False) as pipe:
            for source, keys, args in calls:
                pipe.evalsha(self._sha(source), len(keys), *keys, *args)
            answers: list[Any] = await pipe.execute(raise_on_error=False)
        forgotten = [index for index, answer in enumerate(answers) if isinstance(answer, NoScriptError)]
        if forgotten:
            resend = asyncio.get_running_loop().create_task(self._resend([calls[index] for index in forgotten]))
            self._resending.add(resend)
            resend.add_done_callback(_settled(self._resending))
            for position, index in enumerate(forgotten):
                answers[index] = _Resent(resend, position)
        return answers

    async def _resend(self, calls: list[_Call]) -> list[Any]:
        """The calls Redis answered NOSCRIPT, in one pipeline: each distinct script loaded once, then every call."""
        sources = list(dict.fromkeys(source for source, _, _ in calls))
        async with self._client().pipeline(transaction=False) as pipe:
            for source in sources:
                pipe.script_load(source)
            for source, keys, args in calls:
                pipe.evalsha(self._sha(source), len(keys), *keys, *args)
            answers: list[Any] = await pipe.execute(raise_on_error=False)
        # A script Redis would not load: its error is the answer of each of its calls that found no script.
        loaded = dict(zip(sources, answers, strict=False))
        return [
            loaded[source] if isinstance(answer, NoScriptError) and isinstance(loaded[source], Exception) else answer
            for (source, _, _), answer in zip(calls, answers[len(sources) :], strict=True)
        ]


@dataclass(frozen=True)
class _Resent:
    """A call sent again (Redis had forgotten its script): its answer is `answers`' at `index`, once it is done."""

    answers: asyncio.Task[list[Any]]
    index: int


def _settled(running: set[asyncio.Task[list[Any]]]) -> Callable[[asyncio.Task[list[Any]]], None]:
    """A done callback that lets `running` drop a task, its error read (every caller waiting for it has it already)."""

    def drop(task: asyncio.Task[list[Any]]) -> None:
        running.discard(task)
        if not task.cancelled():
            task.exception()

    return drop
