"""Where events are stored: ``CBCM_EVENT_STORE`` turned into eventsourcing's environment."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from psycopg.conninfo import conninfo_to_dict

from services.settings import Settings


class EventStoreConfigError(ValueError):
    """``CBCM_EVENT_STORE`` cannot be understood."""


def persistence_env(settings: Settings) -> dict[str, str]:
    """The eventsourcing environment for the configured store.

    Accepted: unset (a SQLite file ``events.sqlite3`` under ``CBCM_DATA_DIR``),
    ``sqlite:///relative/or//absolute/path``, ``postgresql://user:pw@host:port/db`` (a
    ``schema`` query parameter selects a schema; ``host`` may be a socket directory).
    """
    env = _located(settings)
    env["CREATE_TABLE"] = "y" if settings.create_tables else "n"
    return env


def _located(settings: Settings) -> dict[str, str]:
    url = settings.event_store
    if not url:
        _make_dir(settings.data_dir)
        return _sqlite(settings.data_dir / "events.sqlite3")
    try:
        scheme = urlsplit(url).scheme
    except ValueError as e:
        raise EventStoreConfigError(f"CBCM_EVENT_STORE is not a URL: {e}") from None
    if scheme == "sqlite":
        path = url.removeprefix("sqlite://").removeprefix("/")
        if not path:
            raise EventStoreConfigError("CBCM_EVENT_STORE=sqlite:///PATH needs a file path")
        file = Path(path)
        _make_dir(file.parent)
        return _sqlite(file)
    if scheme in ("postgresql", "postgres"):
        return _postgres(url)
    raise EventStoreConfigError(
        f"CBCM_EVENT_STORE scheme {scheme or '(none)'!r} is not supported: "
        "use sqlite:///PATH or postgresql://USER@HOST:PORT/DBNAME"
    )


def _make_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EventStoreConfigError(f"cannot create {directory}: {e.strerror}") from None


def describe(env: dict[str, str]) -> str:
    """Where the events are, for messages (never the password)."""
    if env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite":
        return f"SQLite {env['SQLITE_DBNAME']}"
    schema = env.get("POSTGRES_SCHEMA", "public")
    return (
        f"PostgreSQL {env['POSTGRES_USER']}@{env['POSTGRES_HOST']}:{env['POSTGRES_PORT']}"
        f"/{env['POSTGRES_DBNAME']} schema {schema}"
    )


def _sqlite(file: Path) -> dict[str, str]:
    from services.audit.chain import SQLITE_RECORDER_TOPIC  # noqa: PLC0415 - import cycle

    return {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "APPLICATION_RECORDER_TOPIC": SQLITE_RECORDER_TOPIC,
        "SQLITE_DBNAME": str(file),
        "SQLITE_LOCK_TIMEOUT": "10",
    }


def _postgres(url: str) -> dict[str, str]:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as e:
        raise EventStoreConfigError(f"CBCM_EVENT_STORE is not a PostgreSQL URL: {e}") from None
    query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
    schema = query.pop("schema", None)
    cleaned = parts._replace(
        scheme="postgresql", query="&".join(f"{k}={v}" for k, v in query.items())
    ).geturl()
    try:
        info = conninfo_to_dict(cleaned)
    except Exception as e:  # psycopg raises ProgrammingError for malformed strings
        raise EventStoreConfigError(f"CBCM_EVENT_STORE is not a PostgreSQL URL: {e}") from None
    from services.audit.chain import POSTGRES_RECORDER_TOPIC  # noqa: PLC0415 - import cycle

    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "APPLICATION_RECORDER_TOPIC": POSTGRES_RECORDER_TOPIC,
        "POSTGRES_DBNAME": str(info.get("dbname") or "postgres"),
        "POSTGRES_HOST": str(info.get("host") or "127.0.0.1"),
        "POSTGRES_PORT": str(info.get("port") or "5432"),
        "POSTGRES_USER": str(info.get("user") or "postgres"),
        "POSTGRES_PASSWORD": str(info.get("password") or ""),
        "POSTGRES_CONNECT_TIMEOUT": "5",
    }
    if schema:
        env["POSTGRES_SCHEMA"] = schema
    return env
