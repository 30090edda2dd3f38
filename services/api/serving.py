"""How ``cbcm api`` serves the app: the uvicorn configuration, in one place, so that tests
run the API exactly as ``cbcm api`` does."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI


def server_config(app: FastAPI, host: str, port: int) -> uvicorn.Config:
    """uvicorn's configuration for the API on ``host:port``."""
    # log_config=None: uvicorn's records go through our handler (JSON lines in JSON mode)
    return uvicorn.Config(app, host=host, port=port, log_level="warning", log_config=None)
