from ipaddress import ip_network

from serverctl.domain.client_ip import resolve

TRUSTED = [ip_network("10.0.0.0/8")]


def _headers(**values):
    normalised = {k.replace("_", "-").lower(): v for k, v in values.items()}
    return normalised.get


def test_forwarding_headers_from_an_untrusted_peer_are_ignored():
    got = resolve("203.0.113.5", _headers(cf_connecting_ip="198.51.100.1"), TRUSTED)
    assert got == "203.0.113.5"


def test_forwarding_headers_are_ignored_when_no_proxy_is_trusted():
    assert resolve("10.0.0.1", _headers(x_forwarded_for="198.51.100.1"), []) == "10.0.0.1"


def test_cf_connecting_ip_from_a_trusted_proxy_is_believed():
    got = resolve("10.0.0.1", _headers(cf_connecting_ip="198.51.100.1"), TRUSTED)
    assert got == "198.51.100.1"


def test_x_real_ip_from_a_trusted_proxy_is_believed():
    assert resolve("10.0.0.1", _headers(x_real_ip="198.51.100.2"), TRUSTED) == "198.51.100.2"


def test_x_forwarded_for_takes_the_last_hop_that_is_not_a_trusted_proxy():
    header = _headers(x_forwarded_for="192.0.2.99, 198.51.100.3, 10.0.0.7")
    assert resolve("10.0.0.1", header, TRUSTED) == "198.51.100.3"


def test_garbage_in_forwarding_headers_falls_back_to_the_peer():
    header = _headers(cf_connecting_ip="not-an-ip", x_forwarded_for="junk")
    assert resolve("10.0.0.1", header, TRUSTED) == "10.0.0.1"
