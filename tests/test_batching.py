"""The batch policy is pure: property-tested against a model of Lambda's flush rule."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from eventd.batching import Batcher, BatchPolicy


@given(
    st.integers(1, 50), st.integers(1, 5000), st.floats(0, 10),
    st.lists(st.tuples(st.integers(1, 2000), st.floats(0, 3)), max_size=200),
)
def test_batches_respect_count_bytes_and_window(max_records: int, max_bytes: int, window: float,
                                                arrivals: list[tuple[int, float]]) -> None:
    batcher: Batcher[int] = Batcher(BatchPolicy(max_records, max_bytes, window))
    now = 0.0
    flushed: list[list[int]] = []
    sizes = {}
    for index, (size, gap) in enumerate(arrivals):
        now += gap
        if batcher.ready(now):
            deadline = batcher.deadline()
            assert deadline is not None and (batcher.full or now >= deadline)
            flushed.append(batcher.flush())
        if not batcher.fits(size):
            flushed.append(batcher.flush())
        batcher.add(index, size, now)
        sizes[index] = size
        if batcher.full:
            flushed.append(batcher.flush())
    flushed.append(batcher.flush())
    # nothing lost, nothing duplicated, order kept
    assert [i for batch in flushed for i in batch] == list(range(len(arrivals)))
    for batch in flushed:
        assert len(batch) <= max_records
        # over the byte cap only as a lone oversized record
        assert sum(sizes[i] for i in batch) <= max_bytes or len(batch) == 1


def test_window_starts_with_the_first_record() -> None:
    batcher: Batcher[str] = Batcher(BatchPolicy(10, 1000, window=2.0))
    assert batcher.deadline() is None and not batcher.ready(100.0)
    batcher.add("a", 1, now=5.0)
    assert batcher.deadline() == 7.0
    assert not batcher.ready(6.9)
    batcher.add("b", 1, now=6.0)
    assert batcher.ready(7.0)
    assert batcher.flush() == ["a", "b"] and batcher.deadline() is None
