"""Offsets: a partition's commit position never passes a record whose writes are not acknowledged."""

from __future__ import annotations

from cdc_consumer.consumer import PartitionProgress, Record


def records(progress: PartitionProgress, offsets):
    made = [Record("t", 0, o) for o in offsets]
    for record in made:
        progress.add(record)
    return made


def finish(progress: PartitionProgress, record: Record) -> None:
    record.done = True
    progress.advance()


def test_nothing_is_committable_until_the_first_record_is_done():
    progress = PartitionProgress()
    first, second, third = records(progress, [10, 11, 12])
    finish(progress, third)
    finish(progress, second)
    assert progress.position is None and not progress.uncommitted
    finish(progress, first)
    assert progress.position == 13 and progress.uncommitted


def test_the_position_stops_at_the_first_unfinished_record():
    progress = PartitionProgress()
    a, b, c, d = records(progress, [0, 1, 5, 6])  # offsets may have gaps (compaction, transactions)
    for record in (a, b, d):
        finish(progress, record)
    assert progress.position == 2
    finish(progress, c)
    assert progress.position == 7


def test_a_committed_position_is_not_uncommitted_until_it_advances():
    progress = PartitionProgress()
    (record,) = records(progress, [3])
    finish(progress, record)
    progress.committed = progress.position
    assert not progress.uncommitted
    finish(progress, records(progress, [4])[0])
    assert progress.uncommitted and progress.position == 5
