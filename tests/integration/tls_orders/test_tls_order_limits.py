"""The `letsencrypt` recipe's availability and params, the CA's rate-limit back-off (an
AcmeError built as the acme client raises it: Pebble has no rate limits), Let's Encrypt's
duplicate-certificate limit, and orders a restart interrupted."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from integration.tls_orders.test_tls_order_endpoints import _final, csr
from integration.tls_orders.tls_orders_kit import FQDN, make_pool
from serverctl.acme.client import RATE_LIMITED, AcmeError
from serverctl.db.models import TlsOrder
from serverctl.db.types import utcnow
from serverctl.domain.principal import SYSTEM
from support.webui import login


def _recipe(env, pool_id, member_id):
    items = env.client.get(f"/api/pools/{pool_id}/members/{member_id}/recipes").json()["items"]
    return next(r for r in items if r["id"] == "letsencrypt")


def _apply(env, pool_id, member_id, body=None):
    return env.client.post(
        f"/api/pools/{pool_id}/members/{member_id}/recipes/letsencrypt/apply", json=body or {}
    )


def test_the_recipe_says_what_to_do_first_and_refuses_until_then(app_env, pdns):
    pool_id, member_id, _ = make_pool(app_env)
    recipe = _recipe(app_env, pool_id, member_id)
    assert recipe["title"] == "Let's Encrypt (failover / HAProxy)"
    assert "link a DNS provider to the pool first" in recipe["unavailable"]
    refused = _apply(app_env, pool_id, member_id)
    assert refused.status_code == 409
    assert "link a DNS provider to the pool first" in refused.json()["detail"]

    account = app_env.state.dns_accounts.create(SYSTEM, "pdns", "powerdns", pdns.powerdns_config())
    app_env.client.put(
        f"/api/pools/{pool_id}/dns",
        json={"provider_id": account["id"], "zone": pdns.zone, "label": "lb", "ttl": 60},
    )
    assert "configure ACME in Settings first" in _recipe(app_env, pool_id, member_id)["unavailable"]
    assert "configure ACME" in _apply(app_env, pool_id, member_id).json()["detail"]

    app_env.state.acme_settings.set(
        SYSTEM, directory_url="https://ca.invalid/dir", email="ops@demo.example"
    )
    recipe = _recipe(app_env, pool_id, member_id)
    assert recipe["unavailable"] is None
    assert recipe["state_label"] == f"the configuration references /etc/haproxy/certs/{FQDN}.pem"
    assert f"ssl crt /etc/haproxy/certs/{FQDN}.pem" in recipe["note"]
    assert recipe["disable_steps"] == []


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["www.other.example"], "not in the pool's zone"),
        ([FQDN], "given twice"),
        (["a.demo.example", "a.demo.example"], "given twice"),
        ([f"n{i}.demo.example" for i in range(10)], "at most 9"),
        (["*.demo.example"], "wildcard"),
    ],
)
def test_extra_names_are_checked(world, extra, fragment):
    answer = _apply(world.env, world.pool_id, world.member_id, {"extra_names": extra})
    assert answer.status_code == 422, answer.text
    assert fragment in answer.json()["detail"]


def test_apply_queues_tls_acme_issue_for_the_failover_name_and_extra_names(world):
    answer = _apply(
        world.env, world.pool_id, world.member_id, {"extra_names": ["WWW.demo.example"]}
    )
    assert answer.status_code == 202, answer.text
    run = world.api.get(f"/api/jobs/{answer.json()['job_id']}").json()
    assert run["params"]["step_params"] == [
        {"fqdn": FQDN, "names": [FQDN, "www.demo.example"], "force": False}
    ]
    step = world.claim()[0]
    assert step["type"] == "tls.acme_issue"
    assert step["params"]["names"] == [FQDN, "www.demo.example"]


class _RateLimited:
    """What AcmeClient raises when the CA answers rateLimited (with or without Retry-After)."""

    calls = 0

    def __init__(self, retry_after: float | None) -> None:
        self.retry_after = retry_after

    def __call__(self, settings):
        return self

    def issue(self, provider, zone, csr_pem, progress=None):
        _RateLimited.calls += 1
        raise AcmeError(
            "the CA refused the request: too many certificates already issued for this exact "
            f"set of domains [{RATE_LIMITED}]",
            acme_type=RATE_LIMITED,
            detail="too many certificates already issued for this exact set of domains",
            retry_after=self.retry_after,
        )


def _retry_in(world) -> timedelta:
    with world.env.state.db.session() as s:
        latest = s.scalars(select(TlsOrder).order_by(TlsOrder.id.desc())).first()
        assert latest is not None and latest.retry_at is not None
        return latest.retry_at - latest.updated_at


def _clear_backoff(world) -> None:
    with world.env.state.db.session() as s:
        s.execute(update(TlsOrder).values(retry_at=utcnow() - timedelta(seconds=1)))


def _order_once(world) -> dict:
    job_id = world.queue()
    world.claim()
    answer = world.order(job_id, csr(FQDN))
    assert answer.status_code == 202, answer.text
    final = _final(world, job_id)
    world.env.state.jobs.complete(world.member_id, job_id, "failed", "x", None, None)
    return final


def test_a_rate_limited_order_backs_off_that_name_set_and_doubles(world, monkeypatch):
    monkeypatch.setattr(world.env.state.tls_orders, "client", _RateLimited(None))
    failed = _order_once(world)
    assert failed["state"] == "failed"
    assert "too many certificates already issued" in failed["error"]
    assert _retry_in(world) == timedelta(hours=1)

    job_id = world.queue()
    world.claim()
    refused = world.order(job_id, csr(FQDN))
    assert refused.status_code == 409
    assert refused.json()["detail"].startswith("rate limited by the CA until ")
    assert "too many certificates already issued" in refused.json()["detail"]
    world.env.state.jobs.complete(world.member_id, job_id, "failed", "x", None, None)
    calls = _RateLimited.calls

    # Another name set of the same pool is not held back.
    other = world.queue([FQDN, "www.demo.example"])
    world.claim()
    assert world.order(other, csr(FQDN, "www.demo.example")).status_code == 202
    _final(world, other)
    world.env.state.jobs.complete(world.member_id, other, "failed", "x", None, None)
    assert _RateLimited.calls == calls + 1

    _clear_backoff(world)
    _order_once(world)
    assert _retry_in(world) == timedelta(hours=2), "doubled for a second one in a row"

    monkeypatch.setattr(world.env.state.tls_orders, "client", _RateLimited(7200.0 * 24))
    _clear_backoff(world)
    _order_once(world)
    assert _retry_in(world) == timedelta(hours=48), "the CA's Retry-After is kept"


def test_five_certificates_a_week_for_one_name_set_is_the_limit(world):
    now = utcnow()
    with world.env.state.db.session() as s:
        for index in range(5):
            job_id = world.queue()
            world.add_order(
                s,
                job_id,
                "valid",
                csr_sha256=f"{index}",
                created_at=now - timedelta(days=index),
                updated_at=now - timedelta(days=index),
            )
    # The five queued jobs were never claimed; this one is.
    with world.env.state.db.session() as s:
        s.execute(update(TlsOrder).values(updated_at=now - timedelta(days=1)))
    job_id = world.queue()
    for _ in range(6):
        claimed = world.claim()
        if claimed and claimed[0]["id"] == job_id:
            break
        if claimed:
            world.env.state.jobs.complete(
                world.member_id, claimed[0]["id"], "failed", "", None, None
            )
    refused = world.order(job_id, csr(FQDN))
    assert refused.status_code == 409
    assert "5 certificates were issued" in refused.json()["detail"]
    assert "Let's Encrypt allows 5" in refused.json()["detail"]


def test_orders_running_when_the_control_plane_stopped_fail_at_the_next_start(world):
    job_id = world.queue()
    world.claim()
    with world.env.state.db.session() as s:
        world.add_order(s, job_id, "running")
    # What the order worker does first when the control plane starts.
    assert world.env.state.tls_orders.recover() == 1
    answer = world.status(job_id).json()
    assert answer == {
        "state": "failed",
        "error": "the control plane restarted during the order; run the job again",
    }


def test_the_recipe_is_complete_when_the_configuration_references_the_pem(world):
    def beat(referenced: bool) -> None:
        answer = world.post(
            "/api/agents/heartbeat",
            {
                "ip": "127.0.0.2",
                "hostname": "edge-1",
                "version": "0.1.0",
                "haproxy": {
                    "monitored": True,
                    "active": True,
                    "source": "pidfile",
                    "certificates": [
                        {"path": f"/etc/haproxy/certs/{FQDN}.pem", "referenced": referenced}
                    ],
                },
            },
        )
        assert answer.status_code == 200, answer.text

    beat(False)
    assert _recipe(world.env, world.pool_id, world.member_id)["completed"] is False
    beat(True)
    assert _recipe(world.env, world.pool_id, world.member_id)["completed"] is True


def test_the_recipe_card_takes_extra_names_from_its_form(world):
    """The Recipes tab's field: space- or comma-separated names, queued like the API's list."""
    recipes = f"/pools/{world.pool_id}/members/{world.member_id}/recipes"
    csrf = login(world.env)
    card = world.env.client.get(recipes).text
    assert 'name="extra_names"' in card
    answer = world.env.client.post(
        f"{recipes}/letsencrypt/apply",
        data={"csrf_token": csrf, "extra_names": "www.demo.example, API.demo.example"},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    step = world.claim()[0]
    assert step["params"]["names"] == [FQDN, "www.demo.example", "api.demo.example"]
    # A name outside the zone is refused on the page with the recipe's own reason.
    refused = world.env.client.post(
        f"{recipes}/letsencrypt/apply",
        data={"csrf_token": csrf, "extra_names": "www.elsewhere.example"},
        follow_redirects=False,
    )
    assert refused.status_code == 422
    assert "elsewhere.example" in refused.text


def test_renew_now_takes_its_params_from_the_pool(world):
    """The Control panel's "Renew TLS certificate now" posts only the job type, as may the API:
    the pool's failover name fills in fqdn, names and force."""
    control = f"/pools/{world.pool_id}/members/{world.member_id}"
    api_job = world.api.post(
        f"/api/pools/{world.pool_id}/members/{world.member_id}/jobs",
        json={"type": "tls.acme_renew_force"},
    )
    assert api_job.status_code == 202, api_job.text
    csrf = login(world.env)
    assert 'data-job="tls.acme_renew_force"' in world.env.client.get(f"{control}/control").text
    answer = world.env.client.post(
        f"{control}/jobs",
        data={"csrf_token": csrf, "job_type": "tls.acme_renew_force"},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    renewals, _ = world.env.state.jobs.list_jobs(
        SYSTEM, world.pool_id, world.member_id, job_type="tls.acme_renew_force"
    )
    assert len(renewals) == 2
    assert all(j["params"] == {"fqdn": FQDN, "names": [FQDN], "force": True} for j in renewals)
