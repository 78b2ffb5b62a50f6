"""Which of HAProxy's alert lines a failed check or start reports as the reason."""

from __future__ import annotations

from balctl.haproxy_ctl import first_alert

START_OUTPUT = "\n".join(
    [
        "[NOTICE]   (1) : haproxy version is 2.6.12-1+deb12u4",
        "[ALERT]    (1) : config : parsing [/etc/haproxy/haproxy.cfg:2] : "
        "'pidfile' already specified. Continuing.",
        "[ALERT]    (1) : Binding [/etc/haproxy/haproxy.cfg:3] for frontend GLOBAL: "
        "cannot bind UNIX socket (No such file or directory) [/run/haproxy/admin.sock]",
        "[ALERT]    (1) : [/usr/sbin/haproxy.main()] Some protocols failed to start their "
        "listeners! Exiting.",
    ]
)


def test_an_alert_haproxy_continues_after_is_not_the_reason() -> None:
    assert "cannot bind UNIX socket" in first_alert(START_OUTPUT)


def test_only_continuing_alerts_still_name_the_first_one() -> None:
    output = "[ALERT] (1) : parsing [x:2] : 'pidfile' already specified. Continuing.\n"
    assert first_alert(output).endswith("Continuing.")


def test_no_alert_gives_the_last_line() -> None:
    assert first_alert("one\n  two   words \n") == "two words"
