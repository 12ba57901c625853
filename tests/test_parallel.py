"""``bounded_map``: the one thread-pool loop of sources, cache and stores."""

from __future__ import annotations

import threading
import time

import pytest

from slipstream._parallel import bounded_map


def test_every_item_once_in_completion_or_input_order():
    def slow_square(i: int) -> int:
        time.sleep(0.001 * (i % 3))
        return i * i

    got = list(bounded_map(slow_square, range(50), threads=4))
    assert sorted(got) == [(i, i * i) for i in range(50)]
    assert list(bounded_map(slow_square, range(50), threads=4, ordered=True)) == \
        [(i, i * i) for i in range(50)]
    assert list(bounded_map(slow_square, range(5), threads=1)) == [(i, i * i) for i in range(5)]


def test_no_more_than_the_window_is_in_flight():
    lock = threading.Lock()
    live = [0]
    peak = [0]

    def work(i: int) -> int:
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(0.002)
        with lock:
            live[0] -= 1
        return i

    submitted = []

    def items():
        for i in range(40):
            submitted.append(i)
            yield i

    for consumed, _ in enumerate(bounded_map(work, items(), threads=3, window=5), 1):
        assert len(submitted) - consumed <= 5  # never more than the window ahead
    assert consumed == 40 and peak[0] <= 3


def test_the_first_error_is_raised_and_the_rest_dropped():
    started = []

    def work(i: int) -> int:
        started.append(i)
        if i == 2:
            raise ValueError("item 2 is bad")
        time.sleep(0.01)
        return i

    with pytest.raises(ValueError, match="item 2"):
        list(bounded_map(work, range(1000), threads=2, window=4))
    assert len(started) < 1000


def test_closing_early_joins_the_threads():
    gen = bounded_map(lambda i: i, range(1000), threads=3, thread_name="bm-test")
    next(gen)
    gen.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("bm-test")]
