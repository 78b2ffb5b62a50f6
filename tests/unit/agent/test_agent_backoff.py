from __future__ import annotations

import pytest

from balctl.backoff import Backoff


def test_delays_double_up_to_the_cap() -> None:
    backoff = Backoff(initial=1.0, factor=2.0, cap=30.0)
    assert [backoff.next_delay() for _ in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert backoff.failures == 8


def test_reset_starts_again_from_the_initial_delay() -> None:
    backoff = Backoff()
    for _ in range(4):
        backoff.next_delay()
    backoff.reset()
    assert backoff.failures == 0
    assert backoff.next_delay() == 1.0


def test_a_long_outage_does_not_overflow() -> None:
    backoff = Backoff()
    for _ in range(5000):
        delay = backoff.next_delay()
    assert delay == 30.0


def test_jitter_only_shortens_and_never_passes_the_cap() -> None:
    backoff = Backoff(jitter=0.2)
    delays = [backoff.next_delay() for _ in range(200)]
    assert 0.8 <= delays[0] <= 1.0
    assert all(24.0 <= d <= 30.0 for d in delays[10:])


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Backoff(initial=0)
    with pytest.raises(ValueError):
        Backoff(initial=10, cap=5)
