"""Process configuration, read from ``CLARION_*`` environment variables.

Every setting has a documented default (see docs/configuration.md) so ``clarion serve`` runs with
no configuration at all: SQLite under ``./var/``, an in-process worker, a generated secret key.
"""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLARION_", extra="ignore")

    data_dir: Path = Field(default=Path("./var"), description="Where the SQLite file and generated secret live.")
    database_url: str = Field(default="", description="SQLAlchemy URL; SQLite file under data_dir when empty.")
    redis_url: str | None = Field(default=None, description="Redis for shared rate limits and wake-ups.")
    redis_namespace: str = Field(default="clarion", description="Prefix of every Redis key Clarion writes.")
    base_url: str = Field(default="http://127.0.0.1:8080", description="Public URL for links and tracking.")
    secret_key: str = Field(default="", description="Signs tokens and encrypts secrets at rest.")
    webhook_allow_private: bool = Field(
        default=False, description="Allow webhook targets on private/loopback hosts and plain http."
    )

    # Outbound webhooks (clarion.webhooks); see docs/webhooks.md.
    webhook_secret_grace_seconds: int = Field(
        default=24 * 3600, description="After a secret rotation, how long deliveries are also signed with the old one."
    )
    webhook_timeout_seconds: float = Field(default=10.0, description="Per-delivery HTTP timeout.")
    webhook_retry_base_seconds: float = Field(default=5.0, description="Exponential backoff multiplier.")
    webhook_retry_cap_seconds: float = Field(default=6 * 3600, description="Longest wait between two attempts.")
    webhook_retry_window_seconds: int = Field(default=72 * 3600, description="How long a delivery is retried.")
    webhook_disable_after_seconds: int = Field(
        default=24 * 3600, description="An endpoint failing continuously this long becomes `disabled`."
    )
    webhook_batch_size: int = Field(default=500, description="Deliveries claimed per worker batch.")
    webhook_concurrency: int = Field(default=100, description="Concurrent requests per worker.")
    webhook_lease_seconds: int = Field(default=120, description="How long a claimed batch is owned by one worker.")
    webhook_log_retention_days: int = Field(
        default=30, description="Finished deliveries, their attempt logs and events are purged after this."
    )

    # Sending (clarion.delivery); see docs/sending.md.
    send_retry_base_seconds: float = Field(
        default=2.0, description="Exponential backoff multiplier for transient send failures."
    )
    send_retry_cap_seconds: float = Field(default=3600.0, description="Longest wait between two send attempts.")
    send_max_attempts: int = Field(default=8, description="Attempts before a transiently failing send is failed.")
    send_lease_seconds: int = Field(default=120, description="How long a claimed send batch is owned by one worker.")

    # Rate limits, in the `limits` library's notation ("N per period" or "N/period").
    rate_limit_client_ip: str = "8000/minute"
    rate_limit_general_ip: str = "1000/10 seconds"
    rate_limit_per_key: str = "3000/10 seconds"
    rate_limit_enabled: bool = True

    idempotency_ttl_seconds: int = 24 * 3600
    idempotency_lock_seconds: int = 60

    # A send pass that found only a few due messages waits this long before the next, so a
    # trickle of one-user triggers is sent in batches (0 sends each as soon as it is claimed).
    send_linger_ms: int = 20
    db_pool_size: int = 10
    # Connections opened beyond the pool when every pooled one is busy, closed again on return;
    # ``None``: twice the pool size. ``0`` makes a burst wait for a pooled connection instead.
    db_max_overflow: int | None = None
    db_echo: bool = False
    log_level: str = "info"

    @field_validator("redis_url", mode="before")
    @classmethod
    def _empty_redis_is_none(cls, value: object) -> object:
        return None if value in ("", None) else value

    @property
    def resolved_database_url(self) -> str:
        return normalise_database_url(self.database_url or f"sqlite:///{self.data_dir / 'clarion.db'}")

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    def resolved_secret_key(self) -> str:
        """The configured key, or one generated once and kept in ``data_dir/secret_key``."""
        if self.secret_key:
            return self.secret_key
        return _generated_secret(self.data_dir.resolve())


@lru_cache(maxsize=8)
def _generated_secret(data_dir: Path) -> str:
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    # Create it private (0600) and never overwrite one another process wrote first.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def normalise_database_url(url: str) -> str:
    """Map plain dialect URLs onto the async drivers Clarion runs on."""
    if url.startswith("sqlite:///") or url.startswith("sqlite://"):
        return "sqlite+aiosqlite" + url[len("sqlite") :]
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("postgresql+psycopg2://") or url.startswith("postgresql+psycopg://"):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    return url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
