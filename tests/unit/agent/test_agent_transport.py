from __future__ import annotations

import socket

import pytest
from agent_fakes import KEY, FakeControlPlane, Reply

from balctl import __version__
from balctl.errors import ConfigError, TransportError
from balctl.transport import ControlPlaneClient, describe_detail, parse_server_url


@pytest.mark.parametrize(
    "url",
    ["http://example.com", "http://10.0.0.1:8080", "http://192.168.1.5", "http://[2001:db8::1]"],
)
def test_plain_http_to_a_non_loopback_host_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="plain http"):
        ControlPlaneClient(url, KEY)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000", "http://127.0.0.3", "http://[::1]:9000", "http://LOCALHOST"]
)
def test_plain_http_to_loopback_is_accepted(url: str) -> None:
    ControlPlaneClient(url, KEY).close()


@pytest.mark.parametrize(
    "url",
    ["ftp://cp.example.com", "cp.example.com", "https://", "https://u:p@cp", "https://cp?x=1"],
)
def test_malformed_server_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_server_url(url)


def test_https_with_a_missing_ca_file_is_a_config_error(tmp_path: object) -> None:
    with pytest.raises(ConfigError, match="CA file"):
        ControlPlaneClient("https://cp.example.com", KEY, ca_file="/nonexistent/ca.pem")


def test_post_json_sends_bearer_json_and_user_agent(control_plane: FakeControlPlane) -> None:
    control_plane.replies.append(Reply(200, {"ok": True, "n": 1}))
    with ControlPlaneClient(control_plane.url + "/base/", KEY) as client:
        status, body = client.post_json("/api/agents/heartbeat", {"hostname": "edge-1"})
    assert (status, body) == (200, {"ok": True, "n": 1})
    seen = control_plane.requests[0]
    assert seen.path == "/base/api/agents/heartbeat"
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["user-agent"] == f"balctl/{__version__}"
    assert seen.json == {"hostname": "edge-1"}


def test_requests_share_one_keep_alive_connection(control_plane: FakeControlPlane) -> None:
    with ControlPlaneClient(control_plane.url, KEY) as client:
        for _ in range(3):
            assert client.post_json("/x", {})[0] == 200
    assert len({seen.client_port for seen in control_plane.requests}) == 1


def test_a_connection_closed_by_the_server_is_reopened_once(
    control_plane: FakeControlPlane,
) -> None:
    control_plane.replies.append(Reply(200, {"first": True}, drop_after=True))
    with ControlPlaneClient(control_plane.url, KEY) as client:
        assert client.post_json("/x", {})[1] == {"first": True}
        status, body = client.post_json("/x", {})
    assert status == 200
    assert len(control_plane.requests) == 2
    assert control_plane.requests[0].client_port != control_plane.requests[1].client_port


def test_a_non_json_answer_becomes_a_detail(control_plane: FakeControlPlane) -> None:
    control_plane.replies.append(Reply(502, raw=b"<html>\n Bad   gateway </html>"))
    with ControlPlaneClient(control_plane.url, KEY) as client:
        assert client.post_json("/x", {}) == (502, {"detail": "<html> Bad gateway </html>"})


def test_a_json_list_answer_becomes_a_detail(control_plane: FakeControlPlane) -> None:
    control_plane.replies.append(Reply(200, [1, 2]))
    with ControlPlaneClient(control_plane.url, KEY) as client:
        assert client.post_json("/x", {}) == (200, {"detail": "[1, 2]"})


def test_an_unreachable_server_is_a_transport_error() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nobody listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with ControlPlaneClient(f"http://127.0.0.1:{port}", KEY, timeout=2) as client:
        with pytest.raises(TransportError, match=f"127.0.0.1:{port}") as caught:
            client.post_json("/x", {})
    assert KEY not in str(caught.value)


def test_describe_detail_handles_strings_lists_and_absence() -> None:
    assert describe_detail({"detail": "unknown or revoked enrolment secret"}) == (
        "unknown or revoked enrolment secret"
    )
    assert describe_detail({"detail": [{"loc": ["body", "ip"], "msg": "bad ip"}]}) == (
        "body.ip: bad ip"
    )
    assert describe_detail({}) == "no reason given"
