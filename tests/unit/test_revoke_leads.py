"""Each grant's revoke lead: a margin plus the work ending at or before it, at the measured rate."""

from __future__ import annotations

from workers.reconcile import revoke_leads

END = 1_000


def due(ends: list[tuple[str, int]], now: float, margin: float, rate: float) -> list[tuple[str, int]]:
    return revoke_leads(ends, now, margin, rate)[0]


def test_nothing_is_due_before_its_lead() -> None:
    """One grant, margin 1 s, 10 revokes a second: queued 1.1 s before its end, not earlier."""
    ends = [("jit-aaaaaa", END)]
    assert due(ends, END - 1.2, margin=1.0, rate=10.0) == []
    assert ends == due(ends, END - 1.1, margin=1.0, rate=10.0)


def test_the_first_to_end_go_first_and_each_only_as_early_as_needed() -> None:
    """100 grants ending at 1,000 and 100 at 1,001, at 200 a second: the first hundred are due 1.5 s ahead (1 s of
    margin, 0.5 s of work), the second hundred 2 s ahead of theirs (the 200 ahead of them take 1 s), not before."""
    ends = [(f"jit-a{n:05d}", END) for n in range(100)] + [(f"jit-b{n:05d}", END + 1) for n in range(100)]
    assert due(ends, END - 1.51, margin=1.0, rate=200.0) == []
    assert ends[:100] == due(ends, END - 1.5, margin=1.0, rate=200.0)
    assert ends[:100] == due(ends, END - 1.01, margin=1.0, rate=200.0)
    assert ends == due(ends, END - 1.0, margin=1.0, rate=200.0)


def test_a_later_grant_due_first_takes_the_earlier_ones_with_it() -> None:
    """When a later end's lead opens first (much work ahead of it), every grant ending before it is queued with it,
    so that the queue runs in the order of the ends."""
    ends = [("jit-early1", END)] + [(f"jit-l{n:05d}", END + 1) for n in range(99)]
    queued, lead = revoke_leads(ends, END - 9.0, margin=1.0, rate=10.0)  # the 100 take 10 s: due 11 s before END + 1
    assert (ends, 11.0) == (queued, lead)


def test_the_lead_is_at_most_a_minute() -> None:
    """However much work is ahead, no revoke is queued more than 60 s before its end."""
    ends = [(f"jit-{n:06d}", END) for n in range(10_000)]
    assert due(ends, END - 60.5, margin=1.0, rate=1.0) == []
    assert ends == due(ends, END - 60.0, margin=1.0, rate=1.0)
