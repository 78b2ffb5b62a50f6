"""The one settings object of the control plane.

Read once by the CLI from `SERVERCTL_*` environment variables (and an optional TOML file named by
`SERVERCTL_CONFIG_FILE`), then passed in to everything that needs it: no module reads the
environment on its own.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SERVERCTL_", extra="ignore")

    data_dir: Path = Field(default=Path("./var"), description="SQLite database, keys, backups.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite under the data directory."
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    public_url: str | None = Field(
        default=None,
        description="URL agents and browsers use to reach this control plane; "
        "default: taken from each request.",
    )
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # NoDecode: a comma-separated list in the environment, not JSON.
    trusted_proxies: Annotated[list[IPNetwork], NoDecode] = Field(
        default_factory=list,
        description="Peers whose CF-Connecting-IP / X-Real-IP / X-Forwarded-For are believed.",
    )
    session_max_age_s: int = Field(default=12 * 3600, ge=60)
    # Login brute-force throttling (domain/login_throttle.py): per source address, never a
    # lock on the account, so nobody can lock the admin out from elsewhere.
    login_max_failures: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Failed logins to one account from one address within the window before "
        "that address is refused for that account (429).",
    )
    login_max_failures_per_source: int = Field(
        default=20,
        ge=1,
        le=100_000,
        description="Failed logins from one address (an IPv6 /64), any accounts, within the "
        "window before all its logins are refused (429).",
    )
    login_window_s: float = Field(
        default=300.0, ge=1, le=86_400, description="The sliding window failures count in."
    )
    secure_cookies: bool | None = Field(
        default=None, description="Mark cookies Secure; default: when serving TLS."
    )
    heartbeat_interval_s: float = Field(default=1.0, ge=0.2, le=60)
    last_seen_flush_s: float = Field(default=5.0, ge=0.5, le=60)
    job_pending_ttl_s: int = Field(
        default=3600, ge=60, description="A job nobody claims in this time is timed out."
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Fernet key that encrypts provider credentials at rest; default: "
        "<data_dir>/secret.key, created 0600 on first start.",
    )
    dns_timeout_s: float = Field(
        default=10.0, ge=1, le=120, description="Timeout of one DNS provider call."
    )
    failover_tick_s: float = Field(
        default=1.0, ge=0.1, le=10, description="How often the failover evaluator runs."
    )
    tls_renew_check_s: float = Field(
        default=3600.0,
        ge=0.2,
        le=86_400,
        description="How often certificates within 30 days of expiry are looked for and "
        "renewed (one member per pool per round).",
    )
    config_file: Path | None = None

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = env_settings().get("config_file")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'serverctl.db').resolve()}"

    @property
    def uses_tls(self) -> bool:
        return self.tls_cert is not None and self.tls_key is not None

    @property
    def cookie_secure(self) -> bool:
        return self.uses_tls if self.secure_cookies is None else self.secure_cookies
