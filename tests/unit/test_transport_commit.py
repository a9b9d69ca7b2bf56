"""The worker's consumer never commits past a record a stream is still processing.

Faust's own offset arithmetic lets one missing offset at the head of the acked run pass as a
gap; with concurrent actors it is the record still in flight, and a crash lost it
(streams/transport.py, faust-streaming issue 606).
"""

from __future__ import annotations

import pytest
from faust.types import TP
from faust.types.tuples import Message

from streams.app import create_app
from streams.settings import Settings
from streams.transport import Consumer

TOPIC = "tidings.requests"
TP0, TP1 = TP(TOPIC, 0), TP(TOPIC, 1)


@pytest.fixture
async def consumer() -> Consumer:
    app = create_app(Settings())
    app.topics.add(app.topic(TOPIC))
    await app.topics._update_indices()  # marks the topic as acking, as a subscription does
    assert isinstance(app.consumer, Consumer)
    return app.consumer


def taken(consumer: Consumer, tp: TP, *offsets: int) -> list[Message]:
    """Records a stream took (tracked, not yet acked), as Faust's Stream does."""
    messages = [Message(tp.topic, tp.partition, offset, 0.0, 0, None, b"k", b"v", None)
                for offset in offsets]
    for message in messages:
        consumer.track_message(message)
    return messages


def ack(consumer: Consumer, *messages: Message) -> None:
    for message in messages:
        assert consumer.ack(message)


async def test_a_record_in_flight_at_the_committed_head_holds_the_commit(consumer):
    consumer._committed_offset[TP0] = 10
    slow, *fast = taken(consumer, TP0, 10, 11, 12, 13)
    ack(consumer, *fast)

    assert consumer._filter_committable_offsets([TP0]) == {}

    ack(consumer, slow)
    assert consumer._filter_committable_offsets([TP0]) == {TP0: 14}


async def test_the_first_commit_of_a_new_group_waits_for_the_first_record(consumer):
    first, *rest = taken(consumer, TP0, 0, 1, 2)
    ack(consumer, *rest)

    assert consumer._filter_committable_offsets([TP0]) == {}

    ack(consumer, first)
    assert consumer._filter_committable_offsets([TP0]) == {TP0: 3}


async def test_commits_up_to_the_record_in_flight_and_keeps_the_acks_beyond(consumer):
    consumer._committed_offset[TP0] = 10
    done, in_flight, later = taken(consumer, TP0, 10, 11, 12)
    ack(consumer, done, later)

    assert consumer._filter_committable_offsets([TP0]) == {TP0: 11}
    consumer._committed_offset[TP0] = 11

    ack(consumer, in_flight)
    assert consumer._filter_committable_offsets([TP0]) == {TP0: 13}


async def test_a_record_in_flight_holds_only_its_own_partition(consumer):
    consumer._committed_offset[TP0] = consumer._committed_offset[TP1] = 5
    slow, fast = taken(consumer, TP0, 5, 6)
    ack(consumer, fast, *taken(consumer, TP1, 5, 6))

    assert consumer._filter_committable_offsets([TP0, TP1]) == {TP1: 7}


async def test_offsets_never_fetched_still_count_as_acked(consumer):
    # A compacted topic or transaction markers: 11 and 12 were never handed to a stream.
    consumer._committed_offset[TP0] = 10
    ack(consumer, *taken(consumer, TP0, 10))
    await consumer._add_gap(TP0, 11, 12)
    ack(consumer, *taken(consumer, TP0, 13, 14))

    assert consumer._filter_committable_offsets([TP0]) == {TP0: 15}

