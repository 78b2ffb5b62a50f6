"""The login throttle's rules, on an injected clock: per source and account, per source, a
sliding window, and never a lock that follows the account to other addresses."""

from __future__ import annotations

import pytest

from serverctl.domain import login_throttle
from serverctl.domain.login_throttle import LoginThrottle, ThrottleLimits, source_key

ATTACKER = "198.51.100.7"
ADMIN_DESK = "192.0.2.10"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def throttle(clock: Clock) -> LoginThrottle:
    return LoginThrottle(ThrottleLimits(5, 20, 300.0), clock)


def fail(throttle: LoginThrottle, source: str, name: str, times: int) -> None:
    for _ in range(times):
        assert throttle.retry_after(source, name) is None
        throttle.failed(source, name)


def test_five_failures_for_one_account_pause_that_source_for_that_account(throttle, clock):
    fail(throttle, ATTACKER, "admin", 4)
    assert throttle.retry_after(ATTACKER, "admin") is None
    throttle.failed(ATTACKER, "admin")
    assert throttle.retry_after(ATTACKER, "admin") == 300
    clock.now += 100
    assert throttle.retry_after(ATTACKER, "admin") == 200


def test_the_pause_never_follows_the_account_to_another_address(throttle):
    fail(throttle, ATTACKER, "admin", 5)
    assert throttle.retry_after(ATTACKER, "admin") is not None
    assert throttle.retry_after(ADMIN_DESK, "admin") is None


def test_the_same_source_may_still_try_other_accounts_until_its_own_limit(throttle):
    fail(throttle, ATTACKER, "admin", 5)
    assert throttle.retry_after(ATTACKER, "alice") is None


def test_twenty_failures_from_one_source_pause_every_account_from_it(throttle):
    for index in range(20):
        fail(throttle, ATTACKER, f"user{index}", 1)
    assert throttle.retry_after(ATTACKER, "someone-new") == 300
    assert throttle.retry_after(ADMIN_DESK, "someone-new") is None


def test_the_window_slides_one_failure_at_a_time(throttle, clock):
    for _ in range(5):
        throttle.failed(ATTACKER, "admin")
        clock.now += 10
    # Failures at 1000, 1010, ..., 1040; now 1050. The first leaves the window at 1300.
    assert throttle.retry_after(ATTACKER, "admin") == 250
    clock.now = 1300.5
    assert throttle.retry_after(ATTACKER, "admin") is None
    throttle.failed(ATTACKER, "admin")
    # Four left in the window plus this one: paused again until the one at 1010 leaves.
    assert throttle.retry_after(ATTACKER, "admin") == 10


def test_a_success_clears_only_its_own_pair(throttle):
    fail(throttle, ATTACKER, "admin", 4)
    fail(throttle, ATTACKER, "alice", 4)
    throttle.succeeded(ATTACKER, "alice")
    fail(throttle, ATTACKER, "alice", 4)
    # admin's count from this source is untouched by alice's success.
    throttle.failed(ATTACKER, "admin")
    assert throttle.retry_after(ATTACKER, "admin") is not None


def test_a_success_does_not_reset_the_per_source_count(throttle):
    for index in range(19):
        fail(throttle, ATTACKER, f"user{index}", 1)
    throttle.succeeded(ATTACKER, "mallory")  # the attacker's own, real account
    throttle.failed(ATTACKER, "user-last")
    assert throttle.retry_after(ATTACKER, "mallory") == 300


def test_account_names_are_counted_case_and_space_insensitively(throttle):
    for name in ("admin", "Admin", " ADMIN", "admin ", "aDmIn"):
        throttle.failed(ATTACKER, name)
    assert throttle.retry_after(ATTACKER, "admin") is not None


def test_an_ipv6_host_is_counted_per_64(throttle):
    for suffix in range(5):
        throttle.failed(f"2001:db8:1:2::{suffix + 1}", "admin")
    assert throttle.retry_after("2001:db8:1:2:ffff::9", "admin") is not None
    assert throttle.retry_after("2001:db8:1:3::1", "admin") is None


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("2001:db8::1", "2001:db8::/64"),
        ("not an address", "not an address"),
        (None, "unknown"),
    ],
)
def test_source_keys(address, key):
    assert source_key(address) == key


def test_memory_stays_bounded_under_a_flood_of_names(throttle, monkeypatch):
    monkeypatch.setattr(login_throttle, "MAX_TRACKED_KEYS", 100)
    for index in range(1000):
        throttle.failed(f"203.0.113.{index % 250}", f"name-{index}")
    assert throttle.tracked() <= 100


def test_expired_counters_are_dropped_when_read(throttle, clock):
    throttle.failed(ATTACKER, "admin")
    assert throttle.tracked() == 2  # the pair and the source
    clock.now += 301
    assert throttle.retry_after(ATTACKER, "admin") is None
    assert throttle.tracked() == 0


def test_a_long_name_is_counted_by_its_start(throttle):
    long_name = "a" * 10_000
    fail(throttle, ATTACKER, long_name, 5)
    assert throttle.retry_after(ATTACKER, long_name[:128] + "different tail") is not None
