"""Hot-path metric children: what they fold into the exposition equals direct prometheus_client use."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from eventd.metrics import DURATION_BUCKETS, Metrics

durations = st.lists(st.one_of(st.sampled_from(DURATION_BUCKETS), st.floats(0, 2000)), max_size=50)


@given(durations, st.integers(0, 5))
def test_loop_children_expose_what_direct_children_would(values: list[float], scrapes: int) -> None:
    folded, direct = Metrics(), Metrics()
    for index, value in enumerate(values):
        folded.loop_histogram(folded.duration, "fn").observe(value)
        folded.loop_counter(folded.invocations, "fn", "success").inc()
        direct.duration.labels("fn").observe(value)
        direct.invocations.labels("fn", "success").inc()
        if scrapes and index % (scrapes + 1) == 0:
            folded.exposition()  # folding part-way must not lose or double anything

    def series(text: bytes) -> dict[str, float]:
        return {name: float(value) for name, _, value in (line.rpartition(" ") for line in text.decode().splitlines())
                if name.startswith(("eventd_invocation_duration_seconds", "eventd_invocations_total"))}

    for _ in range(2):  # a second scrape adds nothing
        got, want = series(folded.exposition()), series(direct.exposition())
        assert got.keys() == want.keys()
        for name, value in want.items():
            # counts exactly; the sum may differ in its last bits (the same additions, in another order)
            assert math.isclose(got[name], value, rel_tol=1e-9) if name.endswith("_sum{function=\"fn\"}") \
                else got[name] == value, name
