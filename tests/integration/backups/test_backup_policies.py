"""Per-member backup policies: the schedule that queues backups, retention, the tidy-up of
backups whose jobs ended without a result, and the Overview's summary of stale and failed ones.
Against the real app, its SQLite database and the local store."""

from __future__ import annotations

from datetime import timedelta

import pytest
from backup_protocol import backup_world, make_archive
from sqlalchemy import select, update

from serverctl.db.models import BackupPolicy, BackupSnapshot, BackupTransfer, Job, Pool
from serverctl.db.types import utcnow
from serverctl.domain.principal import SYSTEM


@pytest.fixture
def world(tmp_path):
    with backup_world(tmp_path, ("lb1", "lb2", "lb3")) as made:
        yield made


def _policy_url(world, member):
    return f"/api/pools/{world.pool_id}/members/{member.member_id}/backup-policy"


def _set(world, member, **body):
    return world.client.put(_policy_url(world, member), json=body)


def _age(world, snapshot_id, days):
    """Move a snapshot back in time (the sandbox clock cannot be waited out)."""
    with world.state.db.session() as s:
        s.execute(
            update(BackupSnapshot)
            .where(BackupSnapshot.id == snapshot_id)
            .values(created_at=utcnow() - timedelta(days=days))
        )


def _snapshot_ids(world, member):
    items = world.client.get(world.backups_url(member)).json()["items"]
    return [s["id"] for s in items]


# -- the policy itself --------------------------------------------------------------------------


def test_a_member_without_a_policy_keeps_its_last_30_on_demand(world):
    policy = world.client.get(_policy_url(world, world.members[0])).json()
    assert policy["cron"] is None and policy["next_runs"] == []
    assert (policy["keep_last"], policy["keep_days"], policy["default"]) == (30, None, True)


def test_setting_a_policy_answers_its_next_runs(world):
    lb1 = world.members[0]
    answer = _set(world, lb1, cron="0  3 * * *", keep_last=5, keep_days=None)
    assert answer.status_code == 200, answer.text
    policy = answer.json()
    assert (policy["cron"], policy["keep_last"], policy["keep_days"]) == ("0 3 * * *", 5, None)
    assert policy["default"] is False and policy["updated_by"] == "token:tests"
    assert len(policy["next_runs"]) == 3
    assert all(run.endswith("T03:00:00Z") for run in policy["next_runs"])
    assert policy["next_run_at"] == policy["next_runs"][0]
    assert world.client.get(_policy_url(world, lb1)).json() == policy
    audit = world.client.get("/api/audit").json()["items"][0]
    assert audit["action"] == "backup.policy.update" and audit["detail"]["keep_last"] == 5
    off = _set(world, lb1, cron=None, keep_last=None, keep_days=90).json()
    assert (off["cron"], off["next_run_at"], off["next_runs"]) == (None, None, [])


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"cron": "every night"}, "needs 5 fields"),
        ({"cron": "61 3 * * *"}, "is not valid"),
        ({"keep_last": 0}, "keep_last must be a whole number 1-1000"),
        ({"keep_last": 1001}, "keep_last must be a whole number 1-1000"),
        ({"keep_days": 3651}, "keep_days must be a whole number 1-3650"),
        ({"keep_last": True}, "keep_last"),
        ({"keep_last": "5"}, "keep_last"),
        ({"retention": 5}, "retention"),
    ],
)
def test_a_bad_policy_is_refused_with_the_reason_and_changes_nothing(world, body, reason):
    lb1 = world.members[0]
    _set(world, lb1, cron="0 3 * * *", keep_last=7)
    answer = _set(world, lb1, **body)
    assert answer.status_code == 422
    assert reason in answer.json()["detail"]
    kept = world.client.get(_policy_url(world, lb1)).json()
    assert (kept["cron"], kept["keep_last"]) == ("0 3 * * *", 7)


def test_viewers_read_policies_and_operators_set_them(world):
    lb1 = world.members[0]
    viewer = world.as_role("viewer")
    assert world.client.get(_policy_url(world, lb1), headers=viewer).status_code == 200
    refused = world.client.put(_policy_url(world, lb1), json={"keep_last": 3}, headers=viewer)
    assert refused.status_code == 403
    missing = world.client.get(f"/api/pools/{world.pool_id}/members/999/backup-policy")
    assert missing.status_code == 404


# -- the schedule -------------------------------------------------------------------------------


def _make_due(world, member, minutes=1):
    due = utcnow() - timedelta(minutes=minutes)
    with world.state.db.session() as s:
        s.execute(
            update(BackupPolicy)
            .where(BackupPolicy.member_id == member.member_id)
            .values(next_run_at=due)
        )
    return due


def test_a_due_policy_queues_one_backup_and_moves_its_next_run_on(world):
    lb1, lb2 = world.members[:2]
    _set(world, lb1, cron="*/5 * * * *", keep_last=10)
    _set(world, lb2, cron="0 3 * * *", keep_last=10)
    _make_due(world, lb1)
    # The app's own backups loop may get there first: assert what was queued, not the count.
    world.state.backups.run_due()
    jobs = world.client.get(f"/api/pools/{world.pool_id}/jobs").json()["items"]
    assert [(j["member_id"], j["type"], j["source"]) for j in jobs] == [
        (lb1.member_id, "haproxy.backup", "cron")
    ]
    assert jobs[0]["enqueued_by"] == f"backup-schedule:{lb1.member_id}"
    policy = world.client.get(_policy_url(world, lb1)).json()
    assert policy["last_run_at"] is not None
    assert policy["next_run_at"] > policy["last_run_at"]
    world.state.backups.run_due()
    assert world.client.get(f"/api/pools/{world.pool_id}/jobs").json()["total"] == 1

    job = lb1.claim()
    assert job["type"] == "haproxy.backup"
    snapshot = world.client.get(f"/api/backups/{job['params']['snapshot_id']}").json()
    assert (snapshot["source"], snapshot["enqueued_by"]) == (
        "cron",
        f"backup-schedule:{lb1.member_id}",
    )


def test_the_same_due_time_queues_its_backup_once(world):
    lb1 = world.members[0]
    _set(world, lb1, cron="*/5 * * * *")
    due = _make_due(world, lb1)
    world.state.backups.run_due()
    with world.state.db.session() as s:
        s.execute(update(BackupPolicy).values(next_run_at=due))
    world.state.backups.run_due()
    assert world.client.get(f"/api/pools/{world.pool_id}/jobs").json()["total"] == 1


def test_a_due_policy_that_cannot_queue_does_not_stop_the_others(world):
    lb1, lb2 = world.members[:2]
    (boxed,) = world.add_pool("boxes", ["box1"])
    with world.state.db.session() as s:
        s.execute(update(Pool).where(Pool.id == boxed.pool_id).values(template="linux"))
    for member in (boxed, lb2):
        world.state.backups.set_policy(
            SYSTEM, member.pool_id, member.member_id, "*/5 * * * *", None, None
        )
        _make_due(world, member)
    # box1 reports no HAProxy in a Generic Linux pool: its backup is refused, lb2's is queued.
    world.state.backups.run_due()
    assert world.client.get(f"/api/pools/{world.pool_id}/jobs").json()["total"] == 1
    assert world.client.get(f"/api/pools/{boxed.pool_id}/jobs").json()["total"] == 0


# -- retention ----------------------------------------------------------------------------------


def test_keep_last_deletes_the_oldest_snapshots_and_their_files(world):
    lb1 = world.members[0]
    _set(world, lb1, keep_last=2)
    first = world.back_up(lb1)
    second = world.back_up(lb1)
    third = world.back_up(lb1)
    assert _snapshot_ids(world, lb1) == [third["id"], second["id"]]
    gone = world.data_dir / "backups" / first["key"]
    assert not gone.exists()
    assert not gone.with_name(gone.name.replace(".tar.gz", ".manifest.json")).exists()
    assert (world.data_dir / "backups" / third["key"]).exists()
    audit = [
        e
        for e in world.client.get("/api/audit").json()["items"]
        if e["action"] == "backup.retention"
    ]
    assert audit[0]["detail"] == {"deleted": [first["id"]]}
    assert audit[0]["actor"] == "system:backup-retention"


def test_keep_days_deletes_snapshots_older_than_the_limit(world):
    lb1 = world.members[0]
    _set(world, lb1, keep_last=None, keep_days=7)
    old = world.back_up(lb1)
    recent = world.back_up(lb1)
    _age(world, old["id"], 8)
    _age(world, recent["id"], 6)
    newest = world.back_up(lb1)
    assert _snapshot_ids(world, lb1) == [newest["id"], recent["id"]]


def test_the_newest_completed_snapshot_is_never_deleted(world):
    lb1 = world.members[0]
    _set(world, lb1, keep_days=1)
    only = world.back_up(lb1)
    _age(world, only["id"], 400)
    world.enqueue(lb1)
    job = lb1.claim()
    lb1.complete(job["id"], state="failed", summary="no space left")
    assert world.state.backups.work.apply_retention(lb1.member_id, "haproxy") == 0
    assert only["id"] in _snapshot_ids(world, lb1)


def test_failed_snapshots_are_counted_apart_from_completed_ones(world):
    lb1 = world.members[0]
    _set(world, lb1, keep_last=1)
    failed_ids = []
    for _ in range(2):
        world.enqueue(lb1)
        job = lb1.claim()
        lb1.complete(job["id"], state="failed", summary="boom")
        failed_ids.append(job["params"]["snapshot_id"])
    kept = world.back_up(lb1)
    # The completed one is kept; of the failures, only the newest stays.
    assert _snapshot_ids(world, lb1) == [kept["id"], failed_ids[1]]


def test_without_a_policy_the_last_30_are_kept(world):
    lb1 = world.members[0]
    with world.state.db.session() as s:
        for n in range(32):
            s.add(
                BackupSnapshot(
                    pool_id=world.pool_id,
                    member_id=lb1.member_id,
                    hostname="lb1",
                    kind="haproxy",
                    state="completed",
                    store="local",
                    location={"directory": str(world.data_dir / "backups")},
                    key=f"edge/lb1/20260101T0000{n:02d}Z-{n}.tar.gz",
                    source="operator",
                    enqueued_by="token:tests",
                    created_at=utcnow() - timedelta(hours=40 - n),
                )
            )
    assert world.state.backups.work.apply_retention(lb1.member_id, "haproxy") == 2
    assert len(_snapshot_ids(world, lb1)) == 30


def test_retention_is_per_kind(world):
    lb1 = world.members[0]
    _set(world, lb1, keep_last=1)
    lb1.heartbeat(backup_files={"ufw": True, "files": []})
    world.enqueue(lb1, kind="ufw")
    job = lb1.claim()
    archive = make_archive({"/etc/ufw/user.rules": b"*filter\nCOMMIT\n"})
    lb1.put(job["params"]["upload"]["path"], archive.data)
    lb1.complete(job["id"], result=archive.result(job["params"]["snapshot_id"]))
    haproxy = world.back_up(lb1)
    assert sorted(_snapshot_ids(world, lb1)) == sorted(
        [job["params"]["snapshot_id"], haproxy["id"]]
    )


# -- tidying ------------------------------------------------------------------------------------


def test_tidy_fails_snapshots_whose_job_ended_without_a_result(world):
    lb1, lb2 = world.members[:2]
    world.enqueue(lb1)
    cancelled = lb1.claim()
    world.client.post(f"/api/jobs/{cancelled['id']}/cancel")
    world.enqueue(lb2)
    timed_out = lb2.claim()
    with world.state.db.session() as s:
        s.execute(
            update(Job)
            .where(Job.id == timed_out["id"])
            .values(started_at=utcnow() - timedelta(hours=1))
        )
    world.state.jobs.reap()
    world.enqueue(lb1)
    still_running = lb1.claim()

    world.state.backups.tidy()  # (or the app's backups loop did it already)
    first = world.client.get(f"/api/backups/{cancelled['params']['snapshot_id']}").json()
    assert first["state"] == "failed"
    assert first["error"] == "the backup job ended cancelled: cancelled by token:tests"
    second = world.client.get(f"/api/backups/{timed_out['params']['snapshot_id']}").json()
    assert second["state"] == "failed" and "ended timed_out: no result" in second["error"]
    third = world.client.get(f"/api/backups/{still_running['params']['snapshot_id']}").json()
    assert third["state"] == "running"
    alerts = world.client.get(f"/api/pools/{world.pool_id}/alerts/history").json()["items"]
    assert sorted(a["member_id"] for a in alerts if a["kind"] == "backup.failed") == sorted(
        [lb1.member_id, lb2.member_id]
    )


def test_tidy_deletes_expired_transfers(world):
    lb1 = world.members[0]
    world.enqueue(lb1)
    job = lb1.claim()
    with world.state.db.session() as s:
        s.execute(update(BackupTransfer).values(expires_at=utcnow() - timedelta(seconds=1)))
    expired = lb1.put(job["params"]["upload"]["path"], b"late")
    assert expired.status_code == 410
    assert "expired" in expired.json()["detail"]
    world.state.backups.tidy()
    with world.state.db.session() as s:
        assert s.scalars(select(BackupTransfer)).all() == []
    assert lb1.put(job["params"]["upload"]["path"], b"late").status_code == 404


# -- the Overview's summary ---------------------------------------------------------------------


def test_pool_summary_flags_failed_and_stale_members(world):
    lb1, lb2, lb3 = world.members
    world.back_up(lb1)
    world.back_up(lb2)
    world.enqueue(lb2)
    job = lb2.claim()
    lb2.complete(job["id"], state="failed", summary="disk full")
    # lb1: hourly, last backup 3 h ago (over 2 × 1 h + 10 min): stale.
    _set(world, lb1, cron="0 * * * *")
    with world.state.db.session() as s:
        s.execute(
            update(BackupSnapshot)
            .where(BackupSnapshot.member_id == lb1.member_id)
            .values(completed_at=utcnow() - timedelta(hours=3))
        )
    # lb3: scheduled daily two days ago, never backed up: stale.
    _set(world, lb3, cron="0 3 * * *")
    with world.state.db.session() as s:
        s.execute(
            update(BackupPolicy)
            .where(BackupPolicy.member_id == lb3.member_id)
            .values(updated_at=utcnow() - timedelta(days=2))
        )

    summary = world.state.backups.pool_summary(world.pool_id)
    assert summary["snapshots"] == 2
    members = summary["members"]
    assert (members[lb1.member_id]["failed"], members[lb1.member_id]["stale"]) == (False, True)
    assert members[lb1.member_id]["last_state"] == "completed"
    assert (members[lb2.member_id]["failed"], members[lb2.member_id]["stale"]) == (True, False)
    assert members[lb2.member_id]["last_state"] == "failed"
    assert members[lb2.member_id]["last_backup_at"] is not None
    assert (members[lb3.member_id]["failed"], members[lb3.member_id]["stale"]) == (False, True)
    assert members[lb3.member_id]["last_backup_at"] is None
    assert sorted(summary["flagged"]) == sorted([m.member_id for m in world.members])

    # A fresh backup clears lb1; a fresh policy is not stale until its first run was due.
    world.back_up(lb1)
    _set(world, lb3, cron="0 3 * * *")
    summary = world.state.backups.pool_summary(world.pool_id)
    assert summary["flagged"] == [lb2.member_id]
