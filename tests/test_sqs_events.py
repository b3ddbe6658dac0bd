"""Queue mappings build SQS events two ways: `sqs_record` (dicts, for filters and for batches with
attributes or a group; `SqsEvents.event` is their JSON) and `SqsEvents.fields` (the records' fields,
which the handler process makes into the event). Both must give the handler the same event."""

from __future__ import annotations

import json

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from eventd.events import SqsEvents, batch_event, sqs_record
from eventd.runtimes.protocol import SqsFields, sqs_event
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


@given(queue=queues, batch=st.lists(messages, min_size=1, max_size=5))
def test_the_event_a_handler_builds_from_fields_is_the_json_one(queue: str, batch: list[Message]) -> None:
    fields = SqsEvents(queue).fields(batch)
    assert isinstance(fields, SqsFields)
    # as the frame carries them: msgpack there and back, as the handler process unpacks them
    frame = msgpack.unpackb(msgpack.packb((fields.source_arn, fields.region, fields.rows)), raw=False)
    assert sqs_event(*frame) == json.loads(SqsEvents(queue).event(batch))


def test_a_batch_with_message_attributes_or_a_group_goes_as_json() -> None:
    plain = Message("q", "a", b"x", {}, {}, 1.0, 1, None, 0.0, "1:1", 1, None)
    tagged = Message("q", "b", b"y", {"k": {"DataType": "String", "StringValue": "v"}}, {}, 1.0, 1, None, 0.0,
                     "2:1", 2, None)
    grouped = Message("q", "c", b"z", {}, {}, 1.0, 1, None, 0.0, "3:1", 3, "g")
    events = SqsEvents("q")
    for batch in ([plain, tagged], [grouped, plain]):
        assert events.fields(batch) == batch_event([sqs_record("q", m) for m in batch])
