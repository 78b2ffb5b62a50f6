"""Parsing the runtime API's answers, on output captured from a real haproxy 2.6.12
(haproxy26/capture.py: app1 checked and DOWN, app2 drained, app3 in maint, app4 ready)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from balctl.errors import RuntimeApiError
from balctl.haproxy_stats import (
    admin_state,
    admin_states,
    info_summary,
    parse_info,
    parse_servers_state,
    parse_stat,
    stats_summary,
)

DATA = Path(__file__).resolve().parent / "haproxy26"


def _read(name: str) -> str:
    return (DATA / f"{name}.txt").read_text()


def test_show_info_summary() -> None:
    info = parse_info(_read("show_info"))
    assert info["Name"] == "HAProxy"
    assert info["Build info"] == "2.6.12-1+deb12u4"
    summary = info_summary(info)
    assert summary == {
        "version": "2.6.12-1+deb12u4",
        "pid": int(info["Pid"]),
        "uptime_s": int(info["Uptime_sec"]),
        "curr_conns": int(info["CurrConns"]),
        "conn_rate": int(info["ConnRate"]),
        "sess_rate": int(info["SessRate"]),
    }
    assert all(isinstance(value, int) for key, value in summary.items() if key != "version")


def test_show_info_rejects_an_error_answer() -> None:
    with pytest.raises(RuntimeApiError):
        parse_info("Unknown command, but maybe one of the following ones is a better match:\n")


def test_show_stat_rows_are_keyed_by_the_header() -> None:
    rows = parse_stat(_read("show_stat"))
    assert [(r["pxname"], r["svname"]) for r in rows] == [
        ("fe_web", "FRONTEND"),
        ("be_app", "app1"),
        ("be_app", "app2"),
        ("be_app", "app3"),
        ("be_app", "app4"),
        ("be_app", "BACKEND"),
        ("li_tcp", "FRONTEND"),
        ("li_tcp", "tcp1"),
        ("li_tcp", "BACKEND"),
    ]
    by_name = {r["svname"]: r for r in rows if r["pxname"] == "be_app"}
    assert by_name["app1"]["status"] == "DOWN" and by_name["app1"]["check_status"] == "L4CON"
    assert by_name["app2"]["status"] == "DRAIN" and by_name["app2"]["weight"] == "20"
    assert by_name["app3"]["status"] == "MAINT"
    assert by_name["app4"]["status"] == "no check"
    assert rows[0]["stot"] == "3"  # three requests went through fe_web
    # Columns past 99 vary by version: found by name, and the odd "-" column is kept.
    assert "h1_bytes_out" in rows[0] and "-" in rows[0]


def test_show_stat_rejects_an_error_answer() -> None:
    with pytest.raises(RuntimeApiError):
        parse_stat("Permission denied\n\n")


def test_show_servers_state_admin_bits() -> None:
    rows = parse_servers_state(_read("show_servers_state"))
    assert [(r["be_name"], r["srv_name"], r["srv_admin_state"]) for r in rows] == [
        ("be_app", "app1", "0"),
        ("be_app", "app2", "8"),
        ("be_app", "app3", "1"),
        ("be_app", "app4", "0"),
        ("li_tcp", "tcp1", "0"),
    ]
    assert admin_states(rows) == {
        ("be_app", "app1"): "ready",
        ("be_app", "app2"): "drain",
        ("be_app", "app3"): "maint",
        ("be_app", "app4"): "ready",
        ("li_tcp", "tcp1"): "ready",
    }


@pytest.mark.parametrize(
    ("bits", "state"),
    [(0, "ready"), (0x01, "maint"), (0x02, "maint"), (0x04, "maint"), (0x20, "maint"),
     (0x08, "drain"), (0x10, "drain"), (0x09, "maint"), (0x40, "ready")],
)  # fmt: skip
def test_admin_state_bits(bits: int, state: str) -> None:
    assert admin_state(bits) == state


def test_show_servers_state_of_an_unknown_backend_is_an_error() -> None:
    with pytest.raises(RuntimeApiError, match="Can't find backend."):
        parse_servers_state(_read("show_servers_state_unknown"))


def test_stats_summary_shape() -> None:
    rows = parse_stat(_read("show_stat"))
    admin = admin_states(parse_servers_state(_read("show_servers_state")))
    summary = stats_summary(rows, admin, at=1_700_000_000)
    assert summary["at"] == 1_700_000_000
    assert "truncated" not in summary
    assert summary["frontends"][0] == {
        "name": "fe_web",
        "status": "OPEN",
        "scur": 0,
        "rate": int(rows[0]["rate"]),
        "stot": 3,
        "bin": int(rows[0]["bin"]),
        "bout": int(rows[0]["bout"]),
    }
    assert [f["name"] for f in summary["frontends"]] == ["fe_web", "li_tcp"]
    app = summary["backends"][0]
    assert app["name"] == "be_app" and app["status"] == "UP"
    assert app["servers"] == [
        {"name": "app1", "status": "DOWN", "weight": 1, "scur": 0, "rate": 0,
         "check_status": "L4CON", "admin": "ready"},
        {"name": "app2", "status": "DRAIN", "weight": 20, "scur": 0, "rate": 0,
         "check_status": "", "admin": "drain"},
        {"name": "app3", "status": "MAINT", "weight": 1, "scur": 0, "rate": 0,
         "check_status": "", "admin": "maint"},
        {"name": "app4", "status": "no check", "weight": 1, "scur": 0, "rate": 0,
         "check_status": "", "admin": "ready"},
    ]  # fmt: skip
    assert [s["name"] for s in summary["backends"][1]["servers"]] == ["tcp1"]


def test_stats_summary_falls_back_to_the_status_for_admin_states() -> None:
    summary = stats_summary(parse_stat(_read("show_stat")))
    admins = [s["admin"] for s in summary["backends"][0]["servers"]]
    assert admins == ["ready", "drain", "maint", "ready"]


def _big_stat(backends: int, servers: int) -> list[dict[str, str]]:
    rows = []
    for b in range(backends):
        for s in range(servers):
            rows.append({"pxname": f"be{b}", "svname": f"srv{s}", "type": "2", "status": "UP"})
        rows.append({"pxname": f"be{b}", "svname": "BACKEND", "type": "1", "status": "UP"})
    return rows


def test_stats_summary_caps_counts() -> None:
    summary = stats_summary(_big_stat(3, 250), max_bytes=10**9)
    assert summary["truncated"] is True
    assert [len(b["servers"]) for b in summary["backends"]] == [200, 200, 200]
    summary = stats_summary(_big_stat(250, 1), max_bytes=10**9)
    assert len(summary["backends"]) == 200 and summary["truncated"] is True


def test_stats_summary_stays_under_the_size_limit() -> None:
    summary = stats_summary(_big_stat(200, 200), at=1_700_000_000)
    size = len(json.dumps(summary, separators=(",", ":")))
    assert 60 * 1024 < size <= 64 * 1024
    assert summary["truncated"] is True
    # Whole backends first: only the last one kept may have lost servers.
    assert all(len(b["servers"]) == 200 for b in summary["backends"][:-1])


def test_stats_summary_of_a_small_config_is_not_truncated() -> None:
    summary = stats_summary(_big_stat(2, 3))
    assert "truncated" not in summary
