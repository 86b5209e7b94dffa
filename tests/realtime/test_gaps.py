"""Open gaps: ids passed but unseen, kept as ranges, filled one by one, forgotten once their writers ended."""

from __future__ import annotations

from gatehouse.realtime.gaps import Gaps


def test_missing_ids_become_ranges_and_fill_splits_them() -> None:
    gaps = Gaps()
    gaps.add_missing(after=10, seen=[13, 17], up_to=17, xmax=500)
    assert gaps.ranges == ([11, 14], [12, 16])
    assert len(gaps) == 5 and 15 in gaps and 13 not in gaps
    assert gaps.fill(15)
    assert gaps.ranges == ([11, 14, 16], [12, 14, 16])
    assert not gaps.fill(15)  # never twice


def test_gaps_are_forgotten_once_xmin_reaches_their_xmax() -> None:
    gaps = Gaps()
    gaps.add_missing(after=0, seen=[2], up_to=2, xmax=100)
    gaps.add_missing(after=2, seen=[5], up_to=5, xmax=200)
    assert gaps.forget_ended(99) == 0
    assert gaps.forget_ended(100) == 1 and gaps.ranges == ([3], [4])
    # A read cut short by its limit at id 4 did not fetch everything at or above it.
    assert gaps.forget_ended(300, below=4) == 0
    assert gaps.forget_ended(300) == 2 and not gaps


def test_ids_become_runs() -> None:
    gaps = Gaps()
    gaps.add_ids([9, 3, 4, 5, 7], xmax=1)
    assert gaps.ranges == ([3, 7, 9], [5, 7, 9])
