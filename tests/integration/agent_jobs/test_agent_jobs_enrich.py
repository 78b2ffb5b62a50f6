"""The heartbeat's haproxy enrichment, read from a real haproxy process."""

from __future__ import annotations

import json
import time

from agent_jobs_host import Host

from balctl.enrich import Enricher

SERVER_KEYS = {"name", "status", "weight", "scur", "rate", "check_status", "admin"}
TRAFFIC_KEYS = {"name", "status", "scur", "rate", "stot", "bin", "bout"}


def test_enrichment_has_the_documented_shapes(host: Host) -> None:
    host.write_config(host.config_text())
    pid = host.start()
    host.get()
    host.get()
    host.ask("set server be_app/app2 state drain")
    enricher = Enricher(host.paths, interval=60)

    before = time.time()
    block = enricher.extra()

    assert set(block) == {
        "admin_socket_configured",
        "admin_socket",
        "info",
        "stats",
        "topology",
        "backup_files",
    }
    assert block["admin_socket_configured"] is True
    assert block["admin_socket"] is True
    info = block["info"]
    assert set(info) == {"version", "pid", "uptime_s", "curr_conns", "conn_rate", "sess_rate"}
    assert info["pid"] == pid and info["version"].startswith("2.")
    assert all(isinstance(info[k], int) for k in info if k != "version")

    stats = block["stats"]
    assert set(stats) == {"at", "frontends", "backends"}
    assert before - 1 <= stats["at"] <= time.time() + 1
    [frontend] = stats["frontends"]
    assert set(frontend) == TRAFFIC_KEYS
    assert frontend["name"] == "fe_web" and frontend["status"] == "OPEN"
    assert frontend["stot"] >= 2 and frontend["bin"] > 0 and frontend["bout"] > 0
    [backend] = stats["backends"]
    assert set(backend) == TRAFFIC_KEYS | {"servers"}
    assert backend["name"] == "be_app" and backend["status"] == "UP"
    assert [s["name"] for s in backend["servers"]] == ["app1", "app2"]
    app1, app2 = backend["servers"]
    assert set(app1) == SERVER_KEYS
    assert app1 == {
        "name": "app1",
        "status": "no check",
        "weight": 20,
        "scur": 0,
        "rate": 0,
        "check_status": "",
        "admin": "ready",
    }
    assert app2["status"] == "DRAIN" and app2["admin"] == "drain"

    assert block["topology"] == {
        "listeners": [{"frontend": "fe_web", "bind": f"127.0.0.1:{host.web}"}],
        "backends": [{"name": "be_app", "servers": ["app1", "app2"]}],
    }
    assert len(json.dumps(block)) < 64 * 1024

    # Within the interval only the cheap key is sent.
    assert enricher.extra() == {"admin_socket_configured": True}


def test_topology_is_sent_again_only_after_a_change(host: Host) -> None:
    host.write_config(host.config_text())
    host.start()
    enricher = Enricher(host.paths, interval=0)
    assert "topology" in enricher.extra()
    assert "topology" not in enricher.extra()
    text = host.paths.haproxy_cfg.read_text()
    host.paths.haproxy_cfg.write_text(text + "\nbackend be_more\n    server m1 127.0.0.1:1\n")
    changed = enricher.extra()
    assert changed["topology"]["backends"][-1] == {"name": "be_more", "servers": ["m1"]}
    enricher.lost()  # the beat that carried it failed
    assert "topology" in enricher.extra()


def test_a_configured_socket_that_does_not_answer_is_reported_false(host: Host) -> None:
    host.write_config(host.config_text())
    host.start()
    host.kill_all()
    block = Enricher(host.paths, interval=0).extra()
    assert block["admin_socket"] is False
    assert block["admin_socket_configured"] is True
    assert "stats" not in block and "info" not in block


def test_without_a_configured_socket_admin_socket_is_absent(host: Host) -> None:
    host.write_config(host.config_text(admin_socket=False))
    host.start()
    block = Enricher(host.paths, interval=0).extra()
    assert block["admin_socket_configured"] is False
    assert "admin_socket" not in block and "stats" not in block
    assert "topology" in block
