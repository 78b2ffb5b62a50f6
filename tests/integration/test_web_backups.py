"""The backup pages through the real web routes: a member's Restore Backups tab, Review &
restore, the pool's Disaster Recovery tab, Settings → Backups (against a real S3 API server,
moto, for the S3 store) and the Overview's Backups tile.

Snapshots are written into the database the way a finished backup job leaves them; the agents'
side of backups runs for real in tests/e2e/test_browser_restore.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient

from serverctl.db.models import BackupSnapshot
from serverctl.db.types import utcnow
from serverctl.domain.principal import SYSTEM
from support.s3 import MotoS3
from support.webui import login

EDGE_1, EDGE_2 = "127.0.0.2", "127.0.0.3"
HX = {"HX-Request": "true"}
CFG = "/etc/haproxy/haproxy.cfg"
CERT = "/etc/haproxy/certs/site.pem"
FILES = [
    {
        "path": CFG,
        "type": "file",
        "size": 120,
        "mode": "0640",
        "owner": "root:haproxy",
        "sha256": "a" * 64,
    },
    {
        "path": CERT,
        "type": "file",
        "size": 3000,
        "mode": "0600",
        "owner": "root:root",
        "sha256": "b" * 64,
    },
]


@pytest.fixture
def pool(app_env: Any) -> dict[str, Any]:
    state = app_env.state
    created = state.pools.create_pool(SYSTEM, "edge", "haproxy")
    one = state.pools.add_member(SYSTEM, created["id"], "edge-1", [EDGE_1])
    two = state.pools.add_member(SYSTEM, created["id"], "edge-2", [EDGE_2])
    return {
        "id": created["id"],
        "members": [one.member["id"], two.member["id"]],
        "secrets": [one.secret, two.secret],
    }


def _snapshot(
    env: Any,
    pool_id: int,
    member_id: int | None,
    hostname: str,
    state: str = "completed",
    files: list[dict[str, Any]] | None = None,
    kind: str = "haproxy",
    error: str | None = None,
) -> int:
    """A snapshot row as a finished backup job leaves it."""
    done = state == "completed"
    with env.state.db.session() as s:
        snap = BackupSnapshot(
            pool_id=pool_id,
            member_id=member_id,
            hostname=hostname,
            kind=kind,
            state=state,
            store="local",
            location={"directory": str(env.state.settings.data_dir / "backups")},
            key=f"edge/{hostname}/20261124T030000Z-x.tar.gz",
            size=18234 if done else None,
            sha256="c" * 64 if done else None,
            manifest={
                "files": files if files is not None else FILES,
                "skipped": [],
                "config_valid": True,
            }
            if done
            else None,
            haproxy_version="2.6.12" if done else None,
            source="operator",
            enqueued_by="user:ops",
            completed_at=utcnow() if state != "running" else None,
            error=error,
        )
        s.add(snap)
        s.flush()
        return int(snap.id)


def _beat(env: Any, secret: str, hostname: str, ip: str, **backup_files: Any) -> None:
    """A heartbeat through the real route from the member's address; `backup_files` as the
    agent reports them (`ufw`, `files`)."""
    block: dict[str, Any] = {
        "monitored": True,
        "active": True,
        "source": "pidfile",
        "version": "2.6.12",
    }
    if backup_files:
        block["backup_files"] = backup_files
    client = TestClient(env.client.app, client=(ip, 50000))
    try:
        answer = client.post(
            "/api/agents/heartbeat",
            json={"ip": ip, "hostname": hostname, "version": "0.1.0", "haproxy": block},
            headers={"Authorization": f"Bearer {secret}"},
        )
    finally:
        client.close()
    assert answer.status_code == 200, answer.text


def _jobs(env: Any, pool_id: int) -> list[dict[str, Any]]:
    return list(env.state.jobs.list_jobs(SYSTEM, pool_id)[0])


# -- the Restore Backups tab ----------------------------------------------------------------------


def test_restore_backups_tab_lists_snapshots_newest_first_with_the_failure_reason(app_env, pool):
    first = _snapshot(app_env, pool["id"], 1, "edge-1")
    failed = _snapshot(app_env, pool["id"], 1, "edge-1", "failed", error="upload refused: 403")
    login(app_env, "ops", "operator")
    page = app_env.client.get("/pools/1/members/1/backups")
    assert page.status_code == 200
    assert re.search(
        r'<a href="/pools/1/members/1/backups" class="current">Restore Backups', page.text
    )
    rows = re.findall(r'data-snapshot-id="(\d+)" data-state="(\w+)"', page.text)
    assert rows == [(str(failed), "failed"), (str(first), "completed")]
    assert "upload refused: 403" in page.text
    assert "18 KiB" in page.text and "2.6.12" in page.text and "user:ops" in page.text
    assert (
        f'href="/pools/1/members/1/backups/{first}" data-action="review">Review &amp; restore'
        in page.text
    )
    assert 'id="back-up-now"' in page.text
    assert 'id="back-up-ufw"' not in page.text  # the agent reports no ufw
    live = app_env.client.get("/pools/1/members/1/backups/live", headers=HX)
    assert live.status_code == 200 and 'id="snapshots"' in live.text
    assert 'id="tab-dot-1"' in live.text  # the tab dots ride along, as on every polled tab


def test_back_up_now_queues_the_backup_and_follows_the_job_until_it_ends(app_env, pool):
    csrf = login(app_env, "ops", "operator")
    answer = app_env.client.post(
        "/pools/1/members/1/backups",
        data={"kind": "haproxy", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    job = _jobs(app_env, pool["id"])[0]
    assert (job["type"], job["member_id"], job["state"]) == ("haproxy.backup", 1, "pending")
    assert answer.headers["location"] == f"/pools/1/members/1/backups?job={job['id']}"
    page = app_env.client.get(answer.headers["location"])
    follow = f'hx-get="/pools/1/backup-jobs/{job["id"]}" hx-trigger="every 2s"'
    assert follow in page.text and 'data-job-state="pending"' in page.text
    partial = app_env.client.get(f"/pools/1/backup-jobs/{job['id']}", headers=HX)
    assert follow in partial.text
    app_env.state.jobs.cancel(SYSTEM, job["id"])
    ended = app_env.client.get(f"/pools/1/backup-jobs/{job['id']}", headers=HX)
    assert 'data-job-state="cancelled"' in ended.text
    assert "hx-trigger" not in ended.text  # a finished job stops polling
    assert app_env.client.get("/pools/1/backup-jobs/999").status_code == 404


def test_ufw_button_shows_only_when_the_agent_reports_ufw(app_env, pool):
    csrf = login(app_env, "ops", "operator")
    _beat(app_env, pool["secrets"][0], "edge-1", EDGE_1, ufw=False, files=[])
    refused = app_env.client.post(
        "/pools/1/members/1/backups", data={"kind": "ufw", "csrf_token": csrf}
    )
    assert refused.status_code == 409 and "reports no ufw" in refused.text
    assert 'id="back-up-ufw"' not in refused.text
    _beat(app_env, pool["secrets"][0], "edge-1", EDGE_1, ufw=True, files=[])
    page = app_env.client.get("/pools/1/members/1/backups")
    assert 'id="back-up-ufw"' in page.text
    app_env.client.post("/pools/1/members/1/backups", data={"kind": "ufw", "csrf_token": csrf})
    assert _jobs(app_env, pool["id"])[0]["type"] == "backup.ufw"
    bad = app_env.client.post(
        "/pools/1/members/1/backups", data={"kind": "etc", "csrf_token": csrf}
    )
    assert bad.status_code == 422 and "kind must be one of" in bad.text
    assert len(_jobs(app_env, pool["id"])) == 1


def test_review_shows_what_a_restore_would_change_on_the_member(app_env, pool):
    snap = _snapshot(app_env, pool["id"], 1, "edge-1")
    login(app_env, "ops", "operator")
    page = app_env.client.get(f"/pools/1/members/1/backups/{snap}")
    assert page.status_code == 200
    assert 'id="restore-diff" data-known="false"' in page.text
    assert "has not reported its files yet" in page.text
    reported = [
        {"path": CFG, "sha256": "a" * 64},  # the same
        {"path": CERT, "sha256": "d" * 64},  # changed since
        {"path": "/etc/haproxy/conf.d/extra.cfg", "sha256": "e" * 64},  # not in the snapshot
    ]
    _beat(app_env, pool["secrets"][0], "edge-1", EDGE_1, ufw=False, files=reported)
    page = app_env.client.get(f"/pools/1/members/1/backups/{snap}")
    assert re.search(
        r'data-known="true" data-added="0" data-changed="1" data-removed="1" data-unchanged="1"',
        page.text,
    )
    assert f"<code>{CERT}</code> <small>replaced" in page.text
    assert "<code>/etc/haproxy/conf.d/extra.cfg</code> <small>moved away" in page.text
    assert 'id="restore-button"' in page.text and 'id="download-archive"' in page.text
    assert f"<code>{CFG}</code>" in page.text  # the file list
    assert app_env.client.get("/pools/1/members/1/backups/999").status_code == 404


def test_restore_button_queues_the_restore_onto_this_member(app_env, pool):
    snap = _snapshot(app_env, pool["id"], 1, "edge-1")
    csrf = login(app_env, "ops", "operator")
    answer = app_env.client.post(
        f"/pools/1/members/1/backups/{snap}/restore",
        data={"csrf_token": csrf},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    job = _jobs(app_env, pool["id"])[0]
    assert (job["type"], job["member_id"], job["params"]) == (
        "haproxy.restore",
        1,
        {"snapshot_id": snap},
    )
    assert answer.headers["location"] == f"/pools/1/members/1/backups/{snap}?job={job['id']}"
    page = app_env.client.get(answer.headers["location"])
    assert f'data-job-id="{job["id"]}"' in page.text and "Restore · job" in page.text
    failed = _snapshot(app_env, pool["id"], 1, "edge-1", "failed", error="boom")
    refused = app_env.client.post(
        f"/pools/1/members/1/backups/{failed}/restore", data={"csrf_token": csrf}
    )
    assert refused.status_code == 409
    assert len(_jobs(app_env, pool["id"])) == 1


def test_a_failed_snapshot_is_deleted_from_the_tab(app_env, pool):
    failed = _snapshot(app_env, pool["id"], 1, "edge-1", "failed", error="boom")
    csrf = login(app_env, "ops", "operator")
    answer = app_env.client.post(
        f"/pools/1/members/1/backups/{failed}/delete", data={"csrf_token": csrf}
    )
    assert answer.status_code == 200 and f"Snapshot {failed} deleted" in answer.text
    assert app_env.state.backups.list_snapshots(SYSTEM, 1, 1) == []


def test_backup_schedule_form_saves_shows_next_runs_and_refuses_bad_input(app_env, pool):
    csrf = login(app_env, "ops", "operator")
    page = app_env.client.get("/pools/1/members/1/backups")
    assert "separate from the presets" in page.text and 'id="policy-default"' in page.text
    saved = app_env.client.post(
        "/pools/1/members/1/backups/policy",
        data={"cron": "0 3 * * *", "keep_last": "5", "keep_days": "", "csrf_token": csrf},
    )
    assert saved.status_code == 200 and "Backup schedule saved." in saved.text
    assert re.search(r'<ul class="next-runs" id="next-runs"><li>[^<]*03:00:00 UTC', saved.text)
    policy = app_env.state.backups.get_policy(SYSTEM, 1, 1)
    assert (policy["cron"], policy["keep_last"], policy["keep_days"]) == ("0 3 * * *", 5, None)
    for cron, keep_last, message in [
        ("nope", "5", "cron expression"),
        ("0 3 * * *", "five", "Keep last must be a whole number"),
        ("0 3 * * *", "0", "keep_last"),
    ]:
        bad = app_env.client.post(
            "/pools/1/members/1/backups/policy",
            data={"cron": cron, "keep_last": keep_last, "csrf_token": csrf},
        )
        assert bad.status_code == 422, (cron, keep_last)
        assert 'id="policy-error"' in bad.text and message in bad.text
        assert f'name="cron" value="{cron}"' in bad.text  # the form as typed
    assert app_env.state.backups.get_policy(SYSTEM, 1, 1)["keep_last"] == 5  # unchanged


def test_viewer_sees_backups_and_the_diff_but_no_action_buttons(app_env, pool):
    snap = _snapshot(app_env, pool["id"], 1, "edge-1")
    csrf = login(app_env, "vera", "viewer")
    page = app_env.client.get("/pools/1/members/1/backups")
    assert page.status_code == 200 and f'data-snapshot-id="{snap}"' in page.text
    for button in ('id="back-up-now"', 'data-action="delete"', 'id="policy-save"'):
        assert button not in page.text
    assert re.search(r"<fieldset disabled>\s*<label>Cron expression", page.text)
    review = app_env.client.get(f"/pools/1/members/1/backups/{snap}")
    assert 'id="restore-diff"' in review.text
    assert 'id="restore-button"' not in review.text and 'id="download-archive"' not in review.text
    dr = app_env.client.get("/pools/1/dr")
    assert dr.status_code == 200
    assert 'id="provision-form"' not in dr.text
    picker = app_env.client.get(f"/pools/1/dr/picker?target_member_id=2&snapshot_id={snap}")
    assert 'id="restore-diff"' in picker.text and 'id="dr-restore-button"' not in picker.text
    for url in ("/pools/1/members/1/backups", f"/pools/1/members/1/backups/{snap}/restore"):
        assert app_env.client.post(url, data={"csrf_token": csrf}).status_code == 403
    assert _jobs(app_env, pool["id"]) == []
    assert app_env.client.get(f"/pools/1/members/1/backups/{snap}/archive").status_code == 403


def test_backup_forms_need_the_csrf_token(app_env, pool):
    snap = _snapshot(app_env, pool["id"], 1, "edge-1")
    login(app_env, "ops", "operator")
    for url, data in [
        ("/pools/1/members/1/backups", {"kind": "haproxy"}),
        (f"/pools/1/members/1/backups/{snap}/restore", {}),
        ("/pools/1/dr/restore", {"target_member_id": "2", "snapshot_id": str(snap)}),
        ("/pools/1/dr/provision", {"member_id": "2"}),
        ("/pools/1/members/1/backups/policy", {"cron": "0 3 * * *"}),
    ]:
        assert app_env.client.post(url, data=data).status_code == 403, url
    assert _jobs(app_env, pool["id"]) == []


# -- Disaster Recovery ----------------------------------------------------------------------------


def test_dr_tab_is_shown_for_haproxy_pools_with_two_members_only(app_env):
    state = app_env.state
    state.pools.create_pool(SYSTEM, "edge", "haproxy")
    state.pools.add_member(SYSTEM, 1, "edge-1", [EDGE_1])
    login(app_env, "ops", "operator")
    overview = app_env.client.get("/pools/1")
    assert 'id="dr-tab"' not in overview.text and "Disaster Recovery" not in overview.text
    alone = app_env.client.get("/pools/1/dr")
    assert alone.status_code == 404 and "needs two or more members" in alone.text
    state.pools.add_member(SYSTEM, 1, "edge-2", [EDGE_2])
    overview = app_env.client.get("/pools/1")
    assert '<a href="/pools/1/dr" class="" id="dr-tab">Disaster Recovery</a>' in overview.text
    dr = app_env.client.get("/pools/1/dr")
    assert dr.status_code == 200
    assert 'class="current" id="dr-tab"' in dr.text
    assert 'id="cross-restore"' in dr.text and 'id="rebuild"' in dr.text
    assert 'href="/pools/1#add-member"' in dr.text  # the checklist links the right places
    state.pools.create_pool(SYSTEM, "workers", "linux")
    state.pools.add_member(SYSTEM, 2, "worker-1", ["127.0.0.4"])
    state.pools.add_member(SYSTEM, 2, "worker-2", ["127.0.0.5"])
    assert 'id="dr-tab"' not in app_env.client.get("/pools/2").text
    linux = app_env.client.get("/pools/2/dr")
    assert linux.status_code == 404 and "Generic Linux pool" in linux.text


def test_dr_cross_member_restore_offers_other_members_snapshots_and_shows_the_diff(app_env, pool):
    own = _snapshot(app_env, pool["id"], 2, "edge-2")
    other = _snapshot(app_env, pool["id"], 1, "edge-1")
    _snapshot(app_env, pool["id"], 1, "edge-1", "failed", error="boom")  # not offered
    csrf = login(app_env, "ops", "operator")
    page = app_env.client.get("/pools/1/dr")
    # The first standby is the default target; its own snapshot is not among the choices.
    assert re.search(r'<option value="2" selected>edge-2', page.text)
    offered = re.findall(r'<option value="(\d+)" >#', page.text)
    assert offered == [str(other)] and str(own) not in offered
    picker = app_env.client.get(
        f"/pools/1/dr/picker?target_member_id=2&snapshot_id={other}", headers=HX
    )
    assert f"Snapshot #{other} of edge-1 onto edge-2" in picker.text
    assert 'data-known="false"' in picker.text  # edge-2 has not reported its files
    assert f'name="snapshot_id" value="{other}"' in picker.text
    onto_1 = app_env.client.get("/pools/1/dr/picker?target_member_id=1", headers=HX)
    assert re.findall(r'<option value="(\d+)" >#', onto_1.text) == [str(own)]
    answer = app_env.client.post(
        "/pools/1/dr/restore",
        data={"target_member_id": "2", "snapshot_id": str(other), "csrf_token": csrf},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    job = _jobs(app_env, pool["id"])[0]
    assert (job["type"], job["member_id"], job["params"]) == (
        "haproxy.restore",
        2,
        {"snapshot_id": other},
    )
    followed = app_env.client.get(answer.headers["location"])
    assert f'data-job-id="{job["id"]}"' in followed.text
    for target, snapshot, message in [
        ("2", "", "choose the target member and the snapshot"),
        ("2", str(own), "not a completed HAProxy backup of another member"),
        ("x", str(other), "must be chosen from the list"),
    ]:
        data = {"target_member_id": target, "snapshot_id": snapshot}
        bad = app_env.client.post("/pools/1/dr/restore", data={**data, "csrf_token": csrf})
        assert bad.status_code == 422 and message in bad.text, data
        assert 'id="restore-error"' in bad.text
    assert len(_jobs(app_env, pool["id"])) == 1


def test_dr_provision_standby_uses_the_active_members_latest_backup(app_env, pool):
    csrf = login(app_env, "ops", "operator")
    page = app_env.client.get("/pools/1/dr")
    assert 'id="no-active-backup"' in page.text
    assert re.search(r'id="provision-button" disabled', page.text)
    refused = app_env.client.post(
        "/pools/1/dr/provision",
        data={"member_id": "2", "install_haproxy": "auto", "csrf_token": csrf},
    )
    assert refused.status_code == 409 and "has no completed HAProxy backup yet" in refused.text
    _snapshot(app_env, pool["id"], 1, "edge-1")
    latest = _snapshot(app_env, pool["id"], 1, "edge-1")
    page = app_env.client.get("/pools/1/dr")
    assert f'/pools/1/members/1/backups/{latest}">#{latest}</a>' in page.text
    bad = app_env.client.post(
        "/pools/1/dr/provision",
        data={"member_id": "2", "install_haproxy": "maybe", "csrf_token": csrf},
    )
    assert bad.status_code == 422 and "Install HAProxy must be one of" in bad.text
    active = app_env.client.post(
        "/pools/1/dr/provision", data={"member_id": "1", "csrf_token": csrf}
    )
    assert active.status_code == 409 and "is the active member" in active.text
    answer = app_env.client.post(
        "/pools/1/dr/provision",
        data={"member_id": "2", "install_haproxy": "auto", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    job_id = int(re.search(r"job=(\d+)", answer.headers["location"]).group(1))
    job = app_env.state.jobs.get(SYSTEM, job_id)
    assert job["type"] == "recipe" and job["params"]["recipe"] == "provision-standby"
    # edge-2 reported no HAProxy: "auto" installs it before the restore.
    assert [s["type"] for s in job["steps"]] == ["haproxy.install", "haproxy.restore"]
    page = app_env.client.get(answer.headers["location"])
    assert "Provision standby · job" in page.text and "haproxy.install" in page.text


# -- Settings → Backups ---------------------------------------------------------------------------


@pytest.fixture
def s3() -> Iterator[MotoS3]:
    with MotoS3() as server:
        server.create_bucket("edge-backups")
        yield server


def test_store_settings_save_s3_test_it_and_never_show_the_secret(app_env, s3):
    csrf = login(app_env)
    page = app_env.client.get("/settings/backup-store")
    assert page.status_code == 200 and 'href="/settings/backup-store"' in page.text  # top nav
    assert "Local directory" in page.text
    fields = app_env.client.get("/settings/backup-store/fields?kind=s3", headers=HX).text
    for name in ("bucket", "prefix", "region", "endpoint_url"):
        assert f'name="cfg_{name}"' in fields
    for name in ("access_key_id", "secret_access_key"):
        assert f'<input type="password" name="secret_{name}"' in fields
    form = {
        "kind": "s3",
        "cfg_bucket": "edge-backups",
        "cfg_region": s3.region,
        "cfg_endpoint_url": s3.endpoint_url,
        "secret_access_key_id": s3.access_key_id,
        "secret_secret_access_key": s3.secret_access_key,
        "csrf_token": csrf,
    }
    bad = app_env.client.post("/settings/backup-store", data={**form, "cfg_bucket": "x"})
    assert bad.status_code == 422 and 'id="store-error"' in bad.text
    assert s3.secret_access_key not in bad.text and 'value="x"' in bad.text
    assert app_env.state.backup_stores.view(SYSTEM)["kind"] == "local"
    saved = app_env.client.post("/settings/backup-store", data=form)
    assert saved.status_code == 200 and "Saved: new backups go to this store" in saved.text
    assert s3.secret_access_key not in saved.text and s3.access_key_id not in saved.text
    assert "access_key_id, secret_access_key" in saved.text  # which secrets are set
    assert 'placeholder="stored: leave empty to keep it"' in saved.text
    tested = app_env.client.post(
        "/settings/backup-store/test", data={"csrf_token": csrf}, headers=HX
    )
    assert 'data-ok="true"' in tested.text, tested.text
    # Saving again with the secret boxes empty keeps the stored secrets.
    again = {k: v for k, v in form.items() if not k.startswith("secret_")}
    assert "Saved" in app_env.client.post("/settings/backup-store", data=again).text
    assert (
        'data-ok="true"'
        in app_env.client.post(
            "/settings/backup-store/test", data={"csrf_token": csrf}, headers=HX
        ).text
    )
    wrong = {**form, "secret_secret_access_key": "not-the-secret"}
    app_env.client.post("/settings/backup-store", data=wrong)
    failed = app_env.client.post("/settings/backup-store/test", data={"csrf_token": csrf})
    assert 'data-ok="false"' in failed.text and "not-the-secret" not in failed.text


def test_only_admins_change_the_store(app_env):
    csrf = login(app_env, "ops", "operator")
    page = app_env.client.get("/settings/backup-store")
    assert page.status_code == 200 and "Only admins change the backup store." in page.text
    assert 'id="store-save"' not in page.text and 'id="store-test"' not in page.text
    answer = app_env.client.post(
        "/settings/backup-store", data={"kind": "local", "csrf_token": csrf}
    )
    assert answer.status_code == 403
    assert app_env.state.backup_stores.view(SYSTEM)["updated_by"] is None


# -- Overview and escaping ------------------------------------------------------------------------


def test_overview_backups_tile_counts_snapshots_and_flags_a_failed_member(app_env, pool):
    _snapshot(app_env, pool["id"], 1, "edge-1")
    _snapshot(app_env, pool["id"], 2, "edge-2")
    login(app_env, "ops", "operator")
    tile = re.compile(
        r'<div class="kpi ([a-z]*)" data-kpi="backups"[^>]*><span>Backups</span>'
        r"<strong>(\d+)</strong>"
    )
    assert tile.search(app_env.client.get("/pools/1/cards").text).groups() == ("", "2")
    _snapshot(app_env, pool["id"], 2, "edge-2", "failed", error="boom")
    cards = app_env.client.get("/pools/1/cards").text
    assert tile.search(cards).groups() == ("flagged", "2")
    assert 'title="edge-2: last backup failed"' in cards


def test_markup_in_hostnames_paths_and_errors_is_escaped(app_env, pool):
    markup = "<script>alert(1)</script>"
    files = [{**FILES[0], "path": "/etc/haproxy/certs/<img src=x onerror=alert(2)>.pem"}]
    lost = _snapshot(app_env, pool["id"], None, markup, files=files)
    _snapshot(app_env, pool["id"], 1, "edge-1", "failed", error=f"agent said {markup}")
    login(app_env, "ops", "operator")
    pages = [
        app_env.client.get("/pools/1/members/1/backups").text,
        app_env.client.get(f"/pools/1/members/1/backups/{lost}").text,
        app_env.client.get("/pools/1/dr").text,
        app_env.client.get(f"/pools/1/dr/picker?target_member_id=2&snapshot_id={lost}").text,
    ]
    for text in pages:
        assert "<script>alert(1)</script>" not in text and "<img src=x" not in text
    assert "agent said &lt;script&gt;alert(1)&lt;/script&gt;" in pages[0]
    assert "Snapshot 1 of &lt;script&gt;" in pages[1] and "&lt;img src=x" in pages[1]
    assert '<optgroup label="&lt;script&gt;alert(1)&lt;/script&gt;">' in pages[2]
    assert "onto edge-2" in pages[3] and "&lt;script&gt;" in pages[3]


# -- against a real `serverctl serve` ------------------------------------------------------------


def test_backup_pages_on_a_real_server(server):
    with server.api() as api:
        created = api.post("/api/pools", json={"name": "edge"}).json()
        base = f"/api/pools/{created['id']}/members"
        api.post(base, json={"hostname": "edge-1", "allowed_ips": [EDGE_1]})
    with httpx.Client(base_url=server.url, timeout=10) as web:
        logged_in = web.post("/login", data={"name": "admin", "password": server.admin_password})
        assert logged_in.status_code == 303, logged_in.text
        pool_url = f"/pools/{created['id']}"
        assert 'id="dr-tab"' not in web.get(pool_url).text
        assert web.get(f"{pool_url}/dr").status_code == 404
        with server.api() as api:
            api.post(base, json={"hostname": "edge-2", "allowed_ips": [EDGE_2]})
        for url in (f"{pool_url}/members/1/backups", f"{pool_url}/dr", "/settings/backup-store"):
            page = web.get(url)
            assert page.status_code == 200, url
            assert 'id="dr-tab"' in page.text or url.startswith("/settings")
        tile = re.search(
            r'data-kpi="backups"[^>]*><span>Backups</span><strong>(\d+)',
            web.get(f"{pool_url}/cards").text,
        )
        assert tile is not None and tile.group(1) == "0"


def test_a_ufw_snapshot_is_shown_for_reference_without_a_restore(app_env, pool):
    files = [{**FILES[0], "path": "/etc/ufw/user.rules"}]
    ufw = _snapshot(app_env, pool["id"], 1, "edge-1", files=files, kind="ufw")
    login(app_env, "ops", "operator")
    tab = app_env.client.get("/pools/1/members/1/backups")
    assert re.search(rf'data-snapshot-id="{ufw}" data-state="completed" data-kind="ufw"', tab.text)
    assert f'/backups/{ufw}" data-action="review">Details</a>' in tab.text
    page = app_env.client.get(f"/pools/1/members/1/backups/{ufw}")
    assert "ServerCTL does not restore them" in page.text
    assert 'id="restore-button"' not in page.text and 'id="download-archive"' in page.text
