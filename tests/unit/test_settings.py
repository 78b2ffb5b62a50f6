from ipaddress import ip_network
from pathlib import Path

import pytest
from pydantic import ValidationError

from serverctl.config import Settings


def test_defaults_are_sqlite_under_var_on_loopback_8080(monkeypatch):
    for name in ("SERVERCTL_DATA_DIR", "SERVERCTL_DATABASE_URL", "SERVERCTL_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.data_dir == Path("./var")
    assert settings.effective_database_url.startswith("sqlite:///")
    assert settings.effective_database_url.endswith("/var/serverctl.db")


def test_trusted_proxies_are_a_comma_separated_list_in_the_environment(monkeypatch):
    monkeypatch.setenv("SERVERCTL_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1")
    assert Settings().trusted_proxies == [ip_network("10.0.0.0/8"), ip_network("192.0.2.1/32")]


def test_a_bad_trusted_proxy_is_refused(monkeypatch):
    monkeypatch.setenv("SERVERCTL_TRUSTED_PROXIES", "proxy.example.com")
    with pytest.raises(ValidationError):
        Settings()


def test_a_toml_file_named_in_the_environment_is_read(monkeypatch, tmp_path):
    config = tmp_path / "serverctl.toml"
    config.write_text('port = 9443\npublic_url = "https://cp.example.net"\n')
    monkeypatch.setenv("SERVERCTL_CONFIG_FILE", str(config))
    monkeypatch.setenv("SERVERCTL_HOST", "0.0.0.0")
    settings = Settings()
    assert (settings.port, settings.public_url, settings.host) == (
        9443,
        "https://cp.example.net",
        "0.0.0.0",
    )


def test_environment_wins_over_the_toml_file(monkeypatch, tmp_path):
    config = tmp_path / "serverctl.toml"
    config.write_text("port = 9443\n")
    monkeypatch.setenv("SERVERCTL_CONFIG_FILE", str(config))
    monkeypatch.setenv("SERVERCTL_PORT", "7000")
    assert Settings().port == 7000


def test_cookies_are_secure_when_serving_tls():
    assert Settings(tls_cert=Path("c.pem"), tls_key=Path("k.pem")).cookie_secure is True
    assert Settings().cookie_secure is False
    assert Settings(secure_cookies=True).cookie_secure is True
