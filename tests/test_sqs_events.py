"""Queue mappings build SQS events two ways: `sqs_record` (dicts, for filters and for messages with
attributes or a group) and `SqsEvents` (bytes straight away, for the rest). Both must send the same
event, byte for byte."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from eventd.events import SqsEvents, batch_event, sqs_record
from eventd.store.queues import Message

messages = st.builds(
    lambda seq, body, count, sent, first, id_: Message(
        "q", id_, body, {}, {}, sent, count, first, 0.0, f"{seq}:{count}", seq, None),
    seq=st.integers(min_value=1, max_value=2**62),
    body=st.binary(max_size=200) | st.text(max_size=100).map(str.encode),  # invalid UTF-8 too
    count=st.integers(min_value=1, max_value=1000),
    sent=st.floats(min_value=0, max_value=4e9),
    first=st.none() | st.floats(min_value=0, max_value=4e9),
    id_=st.text(min_size=1, max_size=40),
)


queues = st.sampled_from(["orders", "q%s", "100%", "a%%b", 'q"x', "é"]) | st.text(min_size=1, max_size=30)


@given(queue=queues, batch=st.lists(messages, min_size=1, max_size=5))
def test_the_fast_sqs_event_is_the_reference_one_byte_for_byte(queue: str, batch: list[Message]) -> None:
    for message in batch:
        message.queue = queue
    assert SqsEvents(queue).event(batch) == batch_event([sqs_record(queue, m) for m in batch])
