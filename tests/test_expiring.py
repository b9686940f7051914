"""``producer.expiring.Expiring``: what the producer keeps of the fleet is read again after its time to live."""

from __future__ import annotations

import pytest

from producer import expiring
from producer.expiring import Expiring


def test_a_value_is_fetched_once_per_time_to_live_or_when_asked_fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(expiring.time, "monotonic", lambda: now[0])
    fetched: list[int] = []

    def fetch() -> int:
        fetched.append(len(fetched) + 1)
        return fetched[-1]

    value = Expiring(fetch, ttl_s=10.0)
    assert fetched == []  # nothing read until asked
    assert value.get() == 1
    now[0] = 110.0
    assert value.get() == 1  # still within its 10 s
    now[0] = 110.1
    assert value.get() == 2  # older than 10 s: read again
    assert value.get(fresh=True) == 3  # asked fresh: read now, whatever its age
    now[0] = 120.0
    assert value.get() == 3 and fetched == [1, 2, 3]
