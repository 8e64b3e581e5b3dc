"""Settings read once from the environment; every process derives its config from here."""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.errors import ConfigurationError

MigrationMode = Literal["factory_preferred", "factory_only"]
SECRET_FILE = "secret.key"  # the development token secret, in the instance folder


class Settings(BaseSettings):
    """Everything configurable, with the defaults of the embedded (development) path."""

    model_config = SettingsConfigDict(env_prefix="RUNLANE_", extra="ignore", frozen=True)

    env: Literal["development", "production"] = "development"
    instance_path: Path = Path("instance")
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "RUNLANE_REDIS_URL")
    )
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "RUNLANE_DATABASE_URL")
    )
    secret_key: str | None = None
    signing_key: str | None = None
    # Key rotation: several HS256 secrets by `kid`; tokens are issued with the active one.
    jwt_keys: dict[str, str] = {}
    jwt_active_kid: str | None = None
    # RS256/ES256: public keys from a JWKS file or URL.
    jwt_jwks_file: Path | None = None
    jwt_jwks_url: str | None = None
    # A JWKS fetch gives up after this many seconds (verification waits on it), and a kid the
    # JWKS did not have, or a fetch that failed, is remembered as such this long: an IdP that
    # is down then costs one short wait, not one per token.
    jwt_jwks_timeout: float = 2.0
    jwt_jwks_negative_cache_seconds: float = 30.0
    admin_enabled: bool = False  # honour the `roles: ["admin"]` claim (every admin read is logged)
    submit_rate_per_minute: int = 120  # per user, across all web processes (Redis)
    socket_connects_per_minute: int = 60  # per user
    cors_origins: list[str] = []  # empty: CORS off
    jwt_issuer: str = "runlane"
    jwt_audience: str = "runlane"
    token_ttl_seconds: int = 24 * 3600
    channel_prefix: str = "runlane"
    max_content_length: int = 1024 * 1024
    socket_queue_size: int = 1024
    socket_ping_interval: float = 25.0
    socket_max_message_size: int = 64 * 1024
    # Caps the kernel's send buffer per socket (Linux autotunes it up to 4 MB otherwise), so a
    # stalled client costs bounded memory and overflows its queue instead.
    socket_send_buffer: int = 256 * 1024
    socket_auth_timeout: float = 5.0
    runs_page_max: int = 100
    # Execution lifecycle (docs/lifecycle.md); times in seconds.
    heartbeat_interval: float = 2.0  # a run's lease lasts this long and is renewed twice within it
    cancel_grace: float = 5.0  # after a cancel, how long an agent may ignore it before it is killed
    max_attempts: int = 3  # attempts per run when workers are lost
    max_running_per_user: int = 4
    max_queued_per_user: int = 100
    resend_after: float = 30.0  # re-send a waiting run whose message may be lost after this long
    max_queue_age: float = 3600.0  # a run not started after this long fails
    default_soft_time_limit: float = 300.0
    default_hard_time_limit: float = 360.0
    agent_time_limits: dict[str, tuple[float, float]] = {}  # agent -> (soft, hard)
    default_queue: str = "runlane"
    agent_queues: dict[str, str] = {}  # agent -> queue name
    event_retention_days: float = 7.0
    # Web and worker migrate a database that is behind instead of refusing to start.
    auto_migrate: bool = False
    # The per-run statements run on the driver's cursor (storage/prepared.py); false: through
    # SQLAlchemy Core, slower (docs/benchmarks.md), for a driver the bypass does not suit.
    direct_sql: bool = True
    migration_mode: MigrationMode = "factory_preferred"
    migration_routes: dict[str, MigrationMode] = {}
    v1_default_agent: str = "demo"
    v1_deprecated_at: datetime = datetime(2026, 11, 1, tzinfo=UTC)
    v1_sunset: datetime = datetime(2027, 6, 30, tzinfo=UTC)
    log_format: Literal["auto", "json", "text"] = "auto"  # auto: JSON in production, else text
    log_level: str = "INFO"
    worker_metrics_port: int | None = None  # a worker's own /metrics (fleet hosts); off by default

    def queues(self) -> list[str]:
        """Every queue a worker of this deployment should consume."""
        return sorted({self.default_queue, *self.agent_queues.values()})

    def migration_mode_for(self, route: str) -> MigrationMode:
        """The mode of one v1 route: its override, else the global mode."""
        return self.migration_routes.get(route, self.migration_mode)

    def resolved_database_url(self) -> str:
        """DATABASE_URL, or a SQLite file in the instance folder."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.instance_path / 'runlane.db').resolve()}"

    def require_redis_url(self) -> str:
        """REDIS_URL; only `runlane up` (and the test suite) start an embedded Redis."""
        if not self.redis_url:
            raise ConfigurationError(
                "REDIS_URL is not set: run `runlane up` (which starts an embedded Redis) "
                "or point REDIS_URL at a Redis server"
            )
        return self.redis_url

    def jwt_secret(self) -> str:
        """The HS256 token secret: configured, or (development only) the instance secret.

        Raises:
            ConfigurationError: production without a secret, or a secret shorter than 32 bytes.
        """
        if self.secret_key:
            if len(self.secret_key.encode()) < 32:
                raise ConfigurationError("RUNLANE_SECRET_KEY must be at least 32 bytes")
            return self.secret_key
        if self.env == "production":
            raise ConfigurationError("RUNLANE_SECRET_KEY must be set in production")
        return instance_secret(self.instance_path)

    def context_signing_key(self) -> bytes:
        """Key for the HMAC on task contexts; derived from the token secret unless set."""
        if self.signing_key:
            return self.signing_key.encode()
        return hmac.new(self.jwt_secret().encode(), b"runlane.context", hashlib.sha256).digest()


def instance_secret(instance_path: Path) -> str:
    """Read, or create once with mode 0600, the development secret of an instance folder."""
    path = instance_path / SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    instance_path.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process of this instance won the race
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value


def load(overrides: Mapping[str, Any] | None = None) -> Settings:
    """Settings from the environment, then `overrides` (by field name) on top."""
    base = Settings()
    if not overrides:
        return base
    return base.model_copy(update=dict(overrides))
