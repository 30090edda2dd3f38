"""The HTTP API (FastAPI). Issue #3: read endpoints for the three read models."""
