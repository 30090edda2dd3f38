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
    nats_url: str | None = None
    http_addr: str = "127.0.0.1:8080"
    log_format: Literal["json", "console"] = "console"
