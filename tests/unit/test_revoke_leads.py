"""Each grant's revoke lead: a margin plus the jobs ahead of it, at the costs measured from the workers' jobs."""

from __future__ import annotations

import pytest

from workers.reconcile import RevokeCosts, revoke_lead, revoke_leads

END = 1_000
SPEC_A, SPEC_B = '{"group": "a"}', '{"group": "b"}'
# 0.2 s a job until access is gone, then 0.01 s a grant for its record (the first's too); three workers.
COSTS = RevokeCosts(wait=0.0, per_job=0.2, first_record=0.01, per_grant=0.01, workers=3)


def due(ends: list[tuple[str, int, str]], now: float, costs: RevokeCosts = COSTS) -> list[tuple[str, int]]:
    return revoke_leads(ends, now, 1.0, costs)[0]


def test_one_job_needs_its_time_until_access_is_gone() -> None:
    """One grant: margin 1 s plus the 0.2 s its job takes until access is gone; not the records that follow."""
    assert pytest.approx(revoke_lead(1, 1, COSTS, margin=1.0)) == 1.2


def test_jobs_side_by_side_on_the_workers_cost_one_job() -> None:
    """Three jobs of 50 grants on three workers run side by side: each is gone 0.2 s after it starts."""
    assert pytest.approx(revoke_lead(3, 150, COSTS, margin=1.0)) == 1.2


def test_a_job_more_than_the_workers_waits_for_a_whole_job() -> None:
    """Four jobs of 50 on three workers: the fourth starts once one of the first three has also written its 50
    records (0.2 + 50 x 0.01 s), and is gone 0.2 s later."""
    assert pytest.approx(revoke_lead(4, 200, COSTS, margin=1.0)) == 1.0 + 0.7 + 0.2


def test_one_worker_takes_the_jobs_one_after_another() -> None:
    """Three jobs of one grant on one worker: two whole jobs, then the third until access is gone."""
    alone = RevokeCosts(wait=0.0, per_job=0.2, first_record=0.01, per_grant=0.01, workers=1)
    assert pytest.approx(revoke_lead(3, 3, alone, margin=1.0)) == 1.0 + 2 * 0.21 + 0.2


def test_the_lead_is_at_most_a_minute() -> None:
    """However much work is ahead, no revoke is queued more than 60 s before its end."""
    assert (
        revoke_lead(
            1_000, 10_000, RevokeCosts(wait=0.0, per_job=5.0, first_record=0.1, per_grant=0.1, workers=1), margin=1.0
        )
        == 60.0
    )


def test_measured_costs_are_clamped() -> None:
    """A wild measurement (a negative wait or span, a minute's wait or job, no worker seen) stays within bounds."""
    assert RevokeCosts(0.0, 0.01, 0.0, 0.0, 1) == RevokeCosts.clamped(-1.0, -3.0, -1.0, -1.0, 0)
    assert RevokeCosts(10.0, 10.0, 10.0, 1.0, 4) == RevokeCosts.clamped(30.0, 60.0, 30.0, 5.0, 4)


def test_nothing_is_due_before_its_lead() -> None:
    """One grant: queued 1.2 s before its end, not earlier."""
    ends = [("jit-aaaaaa", END, SPEC_A)]
    assert due(ends, END - 1.21) == []
    assert due(ends, END - 1.19) == [("jit-aaaaaa", END)]


def test_grants_of_one_spec_ending_together_are_one_job() -> None:
    """200 grants of one spec ending together are one job: their lead is that of one job, not of 200 grants."""
    ends = [(f"jit-a{n:05d}", END, SPEC_A) for n in range(200)]
    assert due(ends, END - 1.21) == []
    queued, lead = revoke_leads(ends, END - 1.19, 1.0, COSTS)
    assert ([(rid, end) for rid, end, _ in ends], 1.2) == (queued, pytest.approx(lead))


def test_the_first_to_end_go_first_and_each_only_as_early_as_needed() -> None:
    """Per spec, 50 grants ending at 1,000 and 50 at 1,001, on one worker: the first 50 are due 1.2 s ahead (one
    job), the second 50 1.9 s ahead of theirs (a whole job of 50 before theirs), not before."""
    one = RevokeCosts(wait=0.0, per_job=0.2, first_record=0.01, per_grant=0.01, workers=1)
    first = [(f"jit-a{n:05d}", END, SPEC_A) for n in range(50)]
    second = [(f"jit-b{n:05d}", END + 1, SPEC_B) for n in range(50)]
    ends = first + second
    assert due(ends, END - 1.21, one) == []
    assert [(rid, end) for rid, end, _ in first] == due(ends, END - 1.19, one)
    assert [(rid, end) for rid, end, _ in first] == due(ends, END + 1 - 1.91, one)
    assert [(rid, end) for rid, end, _ in ends] == due(ends, END + 1 - 1.89, one)


def test_a_later_grant_due_first_takes_the_earlier_ones_with_it() -> None:
    """When a later end's lead opens first (many jobs ahead of it), every grant ending before it is queued with it,
    so that the queue runs in the order of the ends; the lead reported is the later one's."""
    one = RevokeCosts(wait=0.0, per_job=0.5, first_record=0.0, per_grant=0.0, workers=1)
    ends = [("jit-early1", END, SPEC_A)] + [(f"jit-l{n:05d}", END + 1, f'{{"group": "{n}"}}') for n in range(9)]
    queued, lead = revoke_leads(ends, END + 1 - 5.99, 1.0, one)  # ten jobs, one after another: due 6 s ahead
    assert ([(rid, end) for rid, end, _ in ends], 6.0) == (queued, pytest.approx(lead))


def test_the_wait_in_the_queue_comes_first() -> None:
    """Jobs measured waiting 0.5 s in the queue (the workers busy with grants and notices) queue the revoke 0.5 s
    earlier."""
    busy = RevokeCosts(wait=0.5, per_job=0.2, first_record=0.01, per_grant=0.01, workers=3)
    assert revoke_lead(1, 1, busy, margin=1.0) == pytest.approx(1.7)


def test_a_batch_reads_the_surroundings_once_with_its_first_record() -> None:
    """Four jobs of 50 on three workers, the first record 0.3 s (the surroundings read for the batch), each further
    one 0.01 s: the fourth job waits for 0.2 + 0.3 + 49 x 0.01 s, then is gone 0.2 s later."""
    costs = RevokeCosts(wait=0.0, per_job=0.2, first_record=0.3, per_grant=0.01, workers=3)
    assert revoke_lead(4, 200, costs, margin=1.0) == pytest.approx(1.0 + 0.2 + 0.3 + 0.49 + 0.2)
