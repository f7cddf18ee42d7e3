"""The teacher client's retries, against a real HTTP client and a port where nothing listens."""

from __future__ import annotations

import time

import pytest

from salad_ray.teacher.client import HTTPClient, RetryingClient, TeacherUnavailable
from salad_ray.testing.processes import free_port


def test_a_teacher_that_cannot_be_reached_is_retried_with_growing_waits_then_named():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    client = RetryingClient(HTTPClient(url, model="m", timeout=5), retries=3, wait_s=0.05)
    t0 = time.perf_counter()
    with pytest.raises(TeacherUnavailable, match=rf"{url} is unreachable.*gave up after 3 retries"):
        client.topk([[1, 2, 3]], 2)
    assert client.retried == 3
    assert time.perf_counter() - t0 >= 0.05 * (1 + 2 + 4)  # waits of 0.05, 0.1, 0.2 s


def test_no_retries_fails_at_once():
    client = RetryingClient(HTTPClient(f"http://127.0.0.1:{free_port()}/v1", model="m"), retries=0, wait_s=10)
    t0 = time.perf_counter()
    with pytest.raises(TeacherUnavailable, match="gave up after 0 retries"):
        client.topk([[1, 2]], 1)
    assert client.retried == 0 and time.perf_counter() - t0 < 5
