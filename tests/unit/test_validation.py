import pytest

from serverctl.domain import validation
from serverctl.errors import ValidationError


@pytest.mark.parametrize("name", ["production-edge", "a", "edge2", "x" * 63])
def test_good_pool_names_pass(name):
    assert validation.pool_name(name) == name


@pytest.mark.parametrize("name", ["", "Bad Name", "-edge", "edge-", "x" * 64, "edge_1", "<b>"])
def test_bad_pool_names_are_refused_with_an_example(name):
    with pytest.raises(ValidationError, match="production-edge"):
        validation.pool_name(name)


def test_hostnames_are_normalised_to_lower_case_without_trailing_dot():
    assert validation.hostname("Edge-1.Example.com.") == "edge-1.example.com"


@pytest.mark.parametrize("name", ["", "edge 1", "-edge", "a" * 64, "edge_1", "<script>"])
def test_bad_hostnames_are_refused(name):
    with pytest.raises(ValidationError):
        validation.hostname(name)


def test_allowed_ips_accept_addresses_and_networks_and_drop_duplicates():
    got = validation.allowed_ips(["203.0.113.10", "198.51.100.0/24", "203.0.113.10/32", "::1"])
    assert got == ["203.0.113.10", "198.51.100.0/24", "::1"]


def test_allowed_ips_need_at_least_one_entry():
    with pytest.raises(ValidationError, match="at least one"):
        validation.allowed_ips([])


def test_allowed_ips_name_the_bad_entry():
    with pytest.raises(ValidationError, match="'edge-1'"):
        validation.allowed_ips(["203.0.113.10", "edge-1"])


@pytest.mark.parametrize("delay", [9, 121, 0, -5])
def test_failover_delay_outside_10_to_120_is_refused(delay):
    with pytest.raises(ValidationError, match="10-120"):
        validation.failover_delay(delay)
