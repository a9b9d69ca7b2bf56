"""`_QueueRoom`: the bound that lets the consumer hand records over without a task each."""

from mode.utils.queues import FlowControlEvent, FlowControlQueue

from streams.transport import _QueueRoom


def queues(*sizes: int) -> tuple[FlowControlEvent, list[FlowControlQueue[int]]]:
    flow = FlowControlEvent(initially_suspended=False)
    made = [FlowControlQueue(maxsize=size, flow_control=flow, clear_on_resume=True)
            for size in sizes]
    return flow, made


async def test_room_is_the_smallest_free_space_of_any_queue() -> None:
    flow, (small, large) = queues(3, 10)
    room = _QueueRoom(flow)

    taken = 0
    while room.take():
        small.put_nowait(taken)  # every record reaches every queue at most once
        large.put_nowait(taken)
        taken += 1

    assert taken == 3
    assert small.full()


async def test_room_counts_again_once_a_stream_took_events() -> None:
    flow, (queue,) = queues(2)
    room = _QueueRoom(flow)
    for value in range(2):
        assert room.take()
        queue.put_nowait(value)
    assert not room.take()

    queue.get_nowait()

    assert room.take()
    queue.put_nowait(2)
    assert not room.take()


async def test_unbounded_queues_leave_room() -> None:
    flow, _ = queues(0, 0)
    room = _QueueRoom(flow)

    assert all(room.take() for _ in range(10_000))


async def test_a_partly_filled_queue_bounds_the_count() -> None:
    flow, (queue,) = queues(5)
    for value in range(4):
        queue.put_nowait(value)
    room = _QueueRoom(flow)

    assert room.take()
    queue.put_nowait(4)
    assert not room.take()
