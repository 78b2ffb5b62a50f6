"""How the CA's problem documents become the operator's error (no CA needed: Pebble has no
rate limits to provoke): the CA's own detail and type, and a rate limit's Retry-After."""

from __future__ import annotations

import datetime
import email.utils

import pytest
import requests
from acme import messages

from serverctl.acme.client import AcmeError, _problem, parse_retry_after


def _response(**headers: str) -> requests.Response:
    response = requests.Response()
    response.status_code = 429
    response.headers.update(headers)
    return response


def test_a_rate_limit_keeps_the_cas_words_and_its_retry_after():
    error = messages.Error(
        typ="urn:ietf:params:acme:error:rateLimited",
        detail="too many certificates (5) already issued for this exact set of identifiers",
    )
    failed = _problem(error, "the CA refused the request", _response(**{"Retry-After": "3600"}))
    assert isinstance(failed, AcmeError) and failed.rate_limited
    assert failed.retry_after == 3600
    assert failed.detail == error.detail and error.detail in failed.message
    assert "[urn:ietf:params:acme:error:rateLimited]" in failed.message
    assert "wait 3600 s" in failed.message


def test_subproblems_are_named_with_their_identifier():
    error = messages.Error.from_json(
        {
            "type": "urn:ietf:params:acme:error:rejectedIdentifier",
            "detail": "Error creating new order",
            "subproblems": [
                {
                    "type": "urn:ietf:params:acme:error:rejectedIdentifier",
                    "detail": "Domain name is blocked",
                    "identifier": {"type": "dns", "value": "lb.example.com"},
                }
            ],
        }
    )
    failed = _problem(error, "the CA refused the request", None)
    assert not failed.rate_limited and failed.retry_after is None
    assert "lb.example.com: Domain name is blocked" in failed.message


@pytest.mark.parametrize(
    ("header", "low", "high"),
    [("120", 120, 120), (None, None, None), ("soon", None, None), ("", None, None)],
)
def test_retry_after_in_seconds(header, low, high):
    seconds = parse_retry_after(header)
    assert seconds == low == high


def test_retry_after_as_an_http_date():
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=2)
    seconds = parse_retry_after(email.utils.format_datetime(when, usegmt=True))
    assert seconds is not None and 7100 < seconds <= 7200
