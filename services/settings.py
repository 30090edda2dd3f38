"""All configuration, from the environment (``CBCM_*``), in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Embedded defaults: everything under ``./.cbcm``, SQLite event store."""

    model_config = SettingsConfigDict(env_prefix="CBCM_", extra="ignore")

    data_dir: Path = Field(default=Path(".cbcm"), description="where embedded state lives")
    event_store: str | None = Field(
        default=None,
        description="'sqlite:///PATH' or 'postgresql://...'; default: a SQLite file in data_dir",
    )
    nats_url: str | None = Field(
        default=None, description="an existing NATS; when unset `cbcm serve` starts its own"
    )
    embedded_nats_port: int = Field(
        default=14222,
        ge=1,
        le=65535,
        description="port of the nats-server `cbcm serve` starts (away from the standard 4222)",
    )
    nats_replicas: int = Field(default=1, ge=1, le=5, description="replicas of CBCM_EVENTS")
    read_wait_seconds: float = Field(
        default=5.0, gt=0, le=60, description="how long a read with ?after= waits"
    )
    http_addr: str = "127.0.0.1:8080"
    log_format: Literal["json", "console"] = "console"
