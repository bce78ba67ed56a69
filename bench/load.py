"""Signed Slack posts at a fixed concurrency, from a process of their own so that the timing shares no GIL."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from devtools.slack_client import signed_headers


@dataclass(frozen=True)
class LoadResult:
    """Per post, in the order given: latency (ms), HTTP status, answer text, and wall-clock send and answer times."""

    latencies_ms: list[float]
    statuses: list[int]
    texts: list[str]
    sent_at: list[float]
    answered_at: list[float]
    wall_s: float

    @property
    def rate(self) -> float:
        """Posts answered a second, over the whole run."""
        return len(self.latencies_ms) / self.wall_s


def run_load(url: str, secret: str, bodies: list[str], concurrency: int, timeout: float = 300.0) -> LoadResult:
    """Post `bodies` to `url` (each signed just before it is sent), at most `concurrency` at once."""
    job = {"url": url, "secret": secret, "bodies": bodies, "concurrency": concurrency}
    return LoadResult(**in_own_process("bench.load", job, timeout))


def in_own_process(module: str, job: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run `python -m module` with `job` as JSON on its standard input; what it printed, read as JSON."""
    command = [sys.executable, "-m", module]
    done = subprocess.run(command, input=json.dumps(job).encode(), capture_output=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed: {done.stderr.decode()[-2000:]}")
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


async def _post_all(url: str, secret: str, bodies: list[str], concurrency: int) -> dict[str, Any]:
    semaphore = asyncio.Semaphore(concurrency)
    count = len(bodies)
    latencies, statuses, texts = [0.0] * count, [0] * count, [""] * count
    sent_at, answered_at = [0.0] * count, [0.0] * count
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)

    async def post(session: aiohttp.ClientSession, index: int) -> None:
        async with semaphore:
            body = bodies[index]
            headers = signed_headers(secret, body)
            sent_at[index] = time.time()
            started = time.perf_counter()
            try:
                async with session.post(url, data=body.encode(), headers=headers) as response:
                    texts[index] = await response.text()
                    statuses[index] = response.status
            except (aiohttp.ClientError, TimeoutError) as err:
                texts[index], statuses[index] = repr(err), 0
            latencies[index] = (time.perf_counter() - started) * 1000
            answered_at[index] = time.time()

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(post(session, index) for index in range(count)))
    return {
        "latencies_ms": latencies,
        "statuses": statuses,
        "texts": texts,
        "sent_at": sent_at,
        "answered_at": answered_at,
        "wall_s": time.perf_counter() - started,
    }


def main() -> int:
    job = json.loads(sys.stdin.read())
    result = asyncio.run(_post_all(job["url"], job["secret"], job["bodies"], job["concurrency"]))
    sys.stdout.write(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
