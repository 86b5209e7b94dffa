"""Queue ids the feed has passed but not yet seen: the changes of transactions still open.

Ids come from a sequence when a change is made, not when it commits: a transaction that took
id 10 may commit after the one that took id 11. When a read sees 11 but not 10, 10 is an open
gap. Every transaction that could own it had its transaction id before that read's snapshot was
taken, so below the snapshot's xmax. Once a later snapshot's xmin reaches that xmax, all of them
have ended; a gap still unseen then was rolled back (or never written) and is forgotten.

Gaps are kept as ranges, so a rolled-back bulk insert of a million rows costs one entry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Gap:
    """Ids ``low``..``high`` (inclusive), unseen when a snapshot with this ``xmax`` was read."""

    low: int
    high: int
    xmax: int


class Gaps:
    """The open gaps below the feed's position, lowest first."""

    def __init__(self) -> None:
        self._gaps: list[Gap] = []

    def __len__(self) -> int:
        return sum(gap.high - gap.low + 1 for gap in self._gaps)

    def __bool__(self) -> bool:
        return bool(self._gaps)

    @property
    def ranges(self) -> tuple[list[int], list[int]]:
        """The low ends and the high ends, as the feed's query takes them."""
        return [gap.low for gap in self._gaps], [gap.high for gap in self._gaps]

    def __contains__(self, change_id: object) -> bool:
        return any(gap.low <= change_id <= gap.high for gap in self._gaps) if isinstance(change_id, int) else False

    def add_missing(self, after: int, seen: Iterable[int], up_to: int, xmax: int) -> None:
        """Record the ids in ``after+1``..``up_to`` that are not in ``seen`` (a read's new ids)."""
        expected = after + 1
        for change_id in sorted(seen):
            if change_id <= after or change_id > up_to:
                continue
            if change_id > expected:
                self._gaps.append(Gap(expected, change_id - 1, xmax))
            expected = change_id + 1
        if expected <= up_to:
            self._gaps.append(Gap(expected, up_to, xmax))
        self._gaps.sort(key=lambda gap: gap.low)

    def add_ids(self, ids: Iterable[int], xmax: int) -> None:
        """Record ``ids`` (any order) as gaps, in runs of consecutive ids."""
        run: list[int] = []
        for change_id in sorted(set(ids)):
            if run and change_id != run[-1] + 1:
                self._gaps.append(Gap(run[0], run[-1], xmax))
                run = []
            run.append(change_id)
        if run:
            self._gaps.append(Gap(run[0], run[-1], xmax))
        self._gaps.sort(key=lambda gap: gap.low)

    def fill(self, change_id: int) -> bool:
        """Take ``change_id`` out (it has been read); False if it was not an open gap."""
        for index, gap in enumerate(self._gaps):
            if gap.low <= change_id <= gap.high:
                parts = [Gap(low, high, gap.xmax) for low, high in
                         ((gap.low, change_id - 1), (change_id + 1, gap.high)) if low <= high]
                self._gaps[index:index + 1] = parts
                return True
        return False

    def forget_ended(self, xmin: int, *, below: int | None = None) -> int:
        """Forget the gaps whose transactions have all ended by a snapshot with this ``xmin``.

        Only call it with the snapshot of a read that fetched every visible gap (``below``: the
        read was cut short by its limit, so only gaps under that id were all fetched). Returns
        the number of ids forgotten.
        """
        kept: list[Gap] = []
        forgotten = 0
        for gap in self._gaps:
            if gap.xmax <= xmin and (below is None or gap.high < below):
                forgotten += gap.high - gap.low + 1
            else:
                kept.append(gap)
        self._gaps = kept
        return forgotten
