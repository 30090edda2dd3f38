"""Where events are stored: ``CBCM_EVENT_STORE`` turned into eventsourcing's environment."""

from __future__ import annotations

import base64
import os
import secrets
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
    env.update(
        _personal_data_env(settings, postgres=env["PERSISTENCE_MODULE"].endswith("postgres"))
    )
    return env


def _personal_data_env(settings: Settings, *, postgres: bool) -> dict[str, str]:
    """Where the key-encryption keys come from, and the whole-event cipher (ADR 6)."""
    env = {"CBCM_DATA_KEY_CACHE_SECONDS": str(settings.data_key_cache_seconds)}
    if settings.kms_hook:
        env["CBCM_KMS_HOOK"] = settings.kms_hook
    elif settings.kek_dir is not None:
        env["CBCM_KEK_DIR"] = str(settings.kek_dir)
    else:
        env["CBCM_KEK_DIR"] = str(settings.data_dir / "keys" / "kek")
        env["CBCM_KEK_CREATE"] = "y"
    cipher = settings.event_cipher == "on" or (settings.event_cipher == "auto" and postgres)
    if cipher:
        env["CIPHER_TOPIC"] = "eventsourcing.cryptography:AESCipher"
        env["CIPHER_KEY"] = _event_cipher_key(settings)
    return env


def _event_cipher_key(settings: Settings) -> str:
    path = settings.event_cipher_key_file
    if path is None:
        path = settings.data_dir / "keys" / "event-cipher.key"
        if not path.exists():
            _make_dir(path.parent)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process made it first
                pass
            else:
                with os.fdopen(fd, "w") as f:
                    f.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    try:
        key = path.read_text().strip()
        raw = base64.b64decode(key, validate=True)
    except (OSError, ValueError) as e:
        raise EventStoreConfigError(f"the event cipher key {path} is unreadable: {e}") from None
    if len(raw) not in (16, 24, 32):
        raise EventStoreConfigError(f"the event cipher key {path} is not an AES key")
    return key


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
