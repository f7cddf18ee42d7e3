"""The trainer's read-ahead of its stream (salad_ray.train.data.ReadAhead), without Ray."""

from __future__ import annotations

import threading

import pytest

from salad_ray.train.data import ReadAhead


def test_items_arrive_in_order_and_the_end_stays_the_end():
    stream = ReadAhead(iter(range(10)), depth=3)
    assert list(stream) == list(range(10))
    with pytest.raises(StopIteration):
        next(stream)


def test_it_reads_up_to_its_depth_before_the_consumer_asks():
    read, third = [], threading.Event()

    def items():
        for i in range(100):
            read.append(i)
            if len(read) == 3:
                third.set()
            yield i

    stream = ReadAhead(items(), depth=2)
    assert third.wait(10), "nothing was read before the first next()"
    # two wait in the queue and the reader holds a third; it reads no further until one is taken
    assert threading.Event().wait(0.2) is False and len(read) == 3
    assert next(stream) == 0


def test_a_reader_error_is_raised_to_the_consumer_after_the_items_before_it():
    def items():
        yield 1
        raise ValueError("shard row 7 holds another sample")

    stream = ReadAhead(items(), depth=4)
    assert next(stream) == 1
    with pytest.raises(ValueError, match="shard row 7"):
        next(stream)
