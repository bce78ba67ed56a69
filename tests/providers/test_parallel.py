"""each_of and in_parallel, which a lockdown's deletes and an IAM listing run through where a load balancer takes one
object a call."""

from __future__ import annotations

import threading

import pytest

from jit_lb.access.errors import ProviderError
from workers.providers.base import each_of, in_parallel


@pytest.mark.parametrize("threads", [1, 4])
def test_every_item_is_tried_and_the_first_refusal_raises(threads: int) -> None:
    """A refused call stops none of the others: every item is tried, then the first refusal in order raises."""
    tried: list[int] = []
    lock = threading.Lock()

    def call(item: int) -> int:
        with lock:
            tried.append(item)
        if item in (3, 6):
            raise ProviderError(f"item {item} refused")
        return item

    with pytest.raises(ProviderError, match="item 3 refused"):
        in_parallel(call, list(range(8)), threads)
    assert sorted(tried) == list(range(8))
    assert [(o.item, o.value, str(o.error) if o.error else None) for o in each_of(call, [2, 3], threads)] == [
        (2, 2, None),
        (3, None, "item 3 refused"),
    ]
    assert in_parallel(call, [0, 1, 2], threads) == [0, 1, 2]


@pytest.mark.parametrize("threads", [1, 4])
def test_an_error_that_is_no_refusal_raises_as_it_is(threads: int) -> None:
    """A bug (or a job's timeout) is not an item's outcome: it raises as it is, not as a refusal to carry on past."""

    def call(item: int) -> int:
        if item == 1:
            raise KeyError("a bug")
        return item

    with pytest.raises(KeyError, match="a bug"):
        each_of(call, [0, 1, 2], threads)


def test_the_calls_run_side_by_side() -> None:
    """Four calls that each wait for the other three all return: they run at once, not one after another."""
    together = threading.Barrier(4, timeout=5)
    assert in_parallel(lambda item: (together.wait(), item)[1], ["a", "b", "c", "d"], 4) == ["a", "b", "c", "d"]
