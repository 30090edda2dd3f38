"""Statistics releases: numbered, immutable, one per closed period, protected together.

A release covers one closed period (a month, a quarter or a year, as the release policy says)
once its embargo has passed. Later facts about that period (a complaint recorded late, a
duplicate found late, a status that moved) make a *revision*: version 2, 3, ... of the same
release, protected together with every earlier version (``services.statistics.protection``),
so that neither the withheld values nor the difference between two versions can be read out.

Releases are kept in their own ledger, not in the statistics read model: a read model is
dropped and rebuilt at will, a release is a publication that must never change (ADR 12). The
ledger keeps, beside each published document, the unsuppressed counts it was made from: a
revision must be protected against them. The ledger is as confidential as the read model;
only the documents leave it.

Where the ledger is (``LedgerPlace``, ``ledger_place``): with the embedded SQLite read models,
``stats_releases.sqlite`` in the data directory; with read models on PostgreSQL
(``CBCM_READ_MODEL_STORE``), schema ``<prefix>_stats_releases`` of that database, which every
API instance and every statistics projector reaches from any host (ADR 27). On both, a
release is never updated nor deleted (triggers), ``(period, version)`` is unique, and a
publisher makes and publishes only while it holds the ledger's lock (``publishing``): a
``flock`` beside the file, a PostgreSQL advisory lock on the ledger's session. Two publishers
racing (two hosts, or a standby taking over) therefore make each version once and publish it
once, with the bytes the ledger keeps.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal, Protocol
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from projections import stats
from projections.base import ReadModelDb, Rows
from projections.stats.periods import (
    MONTH,
    NESTED,
    QUARTER,
    Meaning,
    PeriodTable,
    facts,
    months_of,
    period_of,
    tables_of,
)
from projections.stats.reports import Cell, Report, report_document
from projections.stats.reports import areas as stats_areas
from services.settings import Settings
from services.statistics.protection import (
    Difference,
    Equation,
    Inequality,
    LinkedProtection,
    State,
)

LEDGER_FILE: Final = "stats_releases.sqlite"
METHOD: Final = (
    "linked secondary cell suppression over every table of the release and every earlier "
    "version of it (HiGHS linear programs); zeros are shown"
)

PeriodKind = Literal["month", "quarter", "year"]


@dataclass(frozen=True)
class ReleasePolicy:
    """When and how statistics are released.

    ``period``: what one release covers. ``embargo``: how long after a period ends its
    release waits (late complaints come in meanwhile). ``window_months``: periods that ended
    longer ago than this are neither released nor revised, so a release never reaches back
    without bound. ``revise_every``: the least time between two versions of one release
    (late facts are gathered into one revision rather than each making its own, which would
    cost more withheld values). ``upper`` and ``lower``: the protection levels (default: the
    threshold).

    A revision is made when the cases a period counts, or how they were assessed, changed:
    a late complaint, a duplicate found late, a reassessment. A status that moved on (an
    investigation acknowledged, concluded) changes no more than ``status_by_quarter`` and makes
    no revision of its own: it is brought up to date by the next revision.
    """

    period: PeriodKind = "quarter"
    embargo: timedelta = timedelta(days=30)
    window_months: int = 24
    revise_every: timedelta = timedelta(days=30)
    upper: int | None = None
    lower: int | None = None

    def levels(self, threshold: int) -> tuple[int, int]:
        return (self.upper or threshold, self.lower or threshold)


def policy_from(settings: Settings) -> ReleasePolicy:
    """The release policy of ``CBCM_STATS_*``."""
    return ReleasePolicy(
        period=settings.stats_release_period,
        embargo=timedelta(days=settings.stats_embargo_days),
        window_months=settings.stats_window_months,
        revise_every=timedelta(days=settings.stats_revise_every_days),
        upper=settings.stats_upper_protection,
        lower=settings.stats_lower_protection,
    )


@dataclass(frozen=True)
class ReleaseVersion:
    """One published version of a release: its id, and the document as published."""

    id: str
    period: str
    version: int
    released_at: str
    document: dict[str, Any]


def release_id(period: str, version: int) -> str:
    """``2026-q1-v2``: lower case, so it is a NATS subject token as it is."""
    return f"{period.lower()}-v{version}"


def ledger_path(data_dir: Path) -> Path:
    return data_dir / LEDGER_FILE


LedgerPlace = Path | str
"""The ledger's SQLite file, or the ``postgresql://`` URL of the read-model database
(``schema=`` naming the read models' prefix, as ``CBCM_READ_MODEL_STORE``)."""

LEDGER_SCHEMA_SUFFIX: Final = "_stats_releases"
DEFAULT_PREFIX: Final = "cbcm"
CONNECT_TIMEOUT: Final = 5


def is_postgres_place(place: LedgerPlace) -> bool:
    return isinstance(place, str)


def ledger_place(settings: Settings) -> LedgerPlace:
    """Where this configuration keeps the release ledger: the read-model database when the
    read models are on PostgreSQL, else ``stats_releases.sqlite`` in the data directory."""
    url = settings.read_model_store
    if url is not None and url.startswith(("postgresql://", "postgres://")):
        return url
    return ledger_path(settings.data_dir)


def _split(url: str) -> tuple[str, str]:
    """The connection URL, and the ledger's schema: ``<prefix>_stats_releases``, the prefix
    of the read models' schemas (``schema=``, default ``cbcm``), so networks sharing a
    database keep their ledgers apart."""
    parts = urlsplit(url)
    query = [p for p in parts.query.split("&") if p]
    named = [p.split("=", 1)[1] for p in query if p.startswith("schema=")]
    rest = "&".join(p for p in query if not p.startswith("schema="))
    prefix = named[-1] if named else DEFAULT_PREFIX
    schema = f"{prefix}{LEDGER_SCHEMA_SUFFIX}"
    return parts._replace(scheme="postgresql", query=rest).geturl(), schema


def ledger_schema(url: str) -> str:
    """The ledger's schema in the read-model database of ``url``."""
    return _split(url)[1]


class LedgerDb(Protocol):
    """A connection to the ledger: ``sqlite3.Connection``, or ``PostgresLedgerDb``."""

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Rows: ...

    def commit(self) -> None: ...


class PostgresLedgerDb:
    """A psycopg connection to the ledger's schema speaking the ledger's SQL (``?``
    parameters), committing as ``sqlite3`` does: a statement opens a transaction, ``commit``
    ends it."""

    def __init__(self, conn: psycopg.Connection[Any], schema: str) -> None:
        self.conn = conn
        self.schema = schema

    def execute(self, text: str, parameters: Sequence[Any] = (), /) -> Rows:
        return self.conn.execute(text.replace("?", "%s"), list(parameters))

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()


def _lock_key(url: str, schema: str) -> int:
    """The advisory lock key of the ledger in ``url``'s database (the publishers' lock).
    Advisory locks are the database's own, so the key names the schema only: a key derived
    from the URL's spelling of the database (named, or left to ``PGDATABASE``) gave two
    publishers of one ledger two locks (attack review)."""
    digest = hashlib.sha256(f"cbcm-stats-releases:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# ----------------------------------------------------------------------------- the ledger

_LEDGER_SCHEMA: Final = (
    """
    CREATE TABLE IF NOT EXISTS stats_release (
        id TEXT PRIMARY KEY,
        period TEXT NOT NULL,
        version INTEGER NOT NULL,
        released_at TEXT NOT NULL,
        document TEXT NOT NULL,
        counts TEXT NOT NULL,
        UNIQUE (period, version)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS stats_release_published (id TEXT PRIMARY KEY)
    """,
    """
    CREATE TRIGGER IF NOT EXISTS stats_release_immutable BEFORE UPDATE ON stats_release
    BEGIN SELECT RAISE(ABORT, 'a statistics release is never changed'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS stats_release_kept BEFORE DELETE ON stats_release
    BEGIN SELECT RAISE(ABORT, 'a statistics release is never deleted'); END
    """,
)

_PG_LEDGER_SCHEMA: Final = (
    """
    CREATE TABLE stats_release (
        id text COLLATE "C" PRIMARY KEY,
        period text COLLATE "C" NOT NULL,
        version integer NOT NULL CHECK (version >= 1),
        released_at text COLLATE "C" NOT NULL,
        document text NOT NULL,
        counts text NOT NULL,
        UNIQUE (period, version)
    )
    """,
    """
    CREATE TABLE stats_release_published (
        id text COLLATE "C" PRIMARY KEY REFERENCES stats_release (id)
    )
    """,
    """
    CREATE FUNCTION stats_release_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'a statistics release is never changed nor deleted (%)', TG_OP
            USING ERRCODE = 'integrity_constraint_violation';
    END $$
    """,
    # a release's bytes never change; a publication is never forgotten (it would go out again)
    """
    CREATE TRIGGER stats_release_immutable BEFORE UPDATE OR DELETE ON stats_release
    FOR EACH ROW EXECUTE FUNCTION stats_release_refuse()
    """,
    """
    CREATE TRIGGER stats_release_not_emptied BEFORE TRUNCATE ON stats_release
    FOR EACH STATEMENT EXECUTE FUNCTION stats_release_refuse()
    """,
    """
    CREATE TRIGGER stats_release_published_kept BEFORE UPDATE OR DELETE
    ON stats_release_published FOR EACH ROW EXECUTE FUNCTION stats_release_refuse()
    """,
    """
    CREATE TRIGGER stats_release_published_not_emptied BEFORE TRUNCATE
    ON stats_release_published FOR EACH STATEMENT EXECUTE FUNCTION stats_release_refuse()
    """,
)


def _pg_connect(url: str, purpose: str, *, autocommit: bool) -> psycopg.Connection[Any]:
    return psycopg.connect(
        _split(url)[0],
        autocommit=autocommit,
        connect_timeout=CONNECT_TIMEOUT,
        application_name=f"cbcm stats releases {purpose}"[:63],
        keepalives=1,
        keepalives_idle=10,
        keepalives_interval=5,
        keepalives_count=2,
    )


def _pg_create(conn: psycopg.Connection[Any], url: str, schema: str) -> None:
    """The ledger's schema and tables, once (under the ledger's lock for the transaction, so
    two processes starting together do not both create them)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(url, schema) ^ 1,))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        row = conn.execute("SELECT to_regclass('stats_release') IS NOT NULL").fetchone()
        if row is None or not row[0]:
            for statement in _PG_LEDGER_SCHEMA:
                conn.execute(statement)


def has_ledger(place: LedgerPlace) -> bool:
    """Whether a ledger is there (none before the first release is made)."""
    if isinstance(place, Path):
        return place.exists()
    schema = ledger_schema(place)
    with _pg_connect(place, "look-up", autocommit=True) as conn:
        row = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL",
            (sql.Identifier(schema, "stats_release").as_string(conn),),
        ).fetchone()
    return bool(row and row[0])


@contextmanager
def open_ledger(place: LedgerPlace, *, readonly: bool = False) -> Iterator[LedgerDb]:
    """The release ledger at ``place`` (created unless ``readonly``). The connection may be
    used from one thread after another (the publisher's work runs in worker threads)."""
    if isinstance(place, str):
        with _open_postgres(place, readonly=readonly) as pg:
            yield pg
        return
    path = place
    if readonly:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10, check_same_thread=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=10, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        for statement in _LEDGER_SCHEMA:
            db.execute(statement)
        db.commit()
    try:
        yield db
    finally:
        db.close()


@contextmanager
def _open_postgres(url: str, *, readonly: bool) -> Iterator[PostgresLedgerDb]:
    schema = _split(url)[1]
    conn = _pg_connect(url, "read" if readonly else "write", autocommit=readonly)
    try:
        if readonly:
            conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        else:
            _pg_create(conn, url, schema)
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        if not readonly:
            conn.commit()
        yield PostgresLedgerDb(conn, schema)
    finally:
        conn.close()


@contextmanager
def publishing(place: LedgerPlace) -> Iterator[LedgerDb | None]:
    """The ledger opened for a publisher, holding the publishers' lock while it is open; or
    ``None`` at once when another publisher holds it (on this host or, with PostgreSQL, on
    any). Whoever holds it makes the releases due, publishes what is not published yet and
    marks it: no two publishers ever publish the same version at the same time, and what one
    made the other sees before it makes anything.

    SQLite: an exclusive ``flock`` on ``<ledger>.lock``. PostgreSQL: a session-level
    advisory lock on the ledger's own connection, released when the session ends however it
    ends (the process killed, the network lost)."""
    if isinstance(place, Path):
        place.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(place.with_name(f"{place.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            with open_ledger(place) as db:
                yield db
        finally:
            os.close(fd)  # the lock goes with it
        return
    with _open_postgres(place, readonly=False) as pg:
        key = _lock_key(place, pg.schema)
        row = pg.conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        pg.conn.commit()
        if not (row and row[0]):
            yield None
            return
        try:
            yield pg
        finally:
            if not pg.conn.closed and not pg.conn.broken:
                pg.conn.rollback()
                pg.conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
                pg.conn.commit()


def list_releases(db: LedgerDb) -> list[ReleaseVersion]:
    """Every release version, by period then version."""
    rows = db.execute(
        "SELECT id, period, version, released_at, document FROM stats_release "
        "ORDER BY period, version"
    ).fetchall()
    return [ReleaseVersion(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]


def get_release(db: LedgerDb, id_: str) -> ReleaseVersion | None:
    """One release version by id, or the latest version of a period (``2026-q1``)."""
    row = db.execute(
        "SELECT id, period, version, released_at, document FROM stats_release WHERE id = ?",
        (id_,),
    ).fetchone()
    if row is None:
        row = db.execute(
            "SELECT id, period, version, released_at, document FROM stats_release "
            "WHERE lower(period) = ? ORDER BY version DESC LIMIT 1",
            (id_,),
        ).fetchone()
    return (
        None if row is None else ReleaseVersion(row[0], row[1], row[2], row[3], json.loads(row[4]))
    )


def unpublished(db: LedgerDb) -> list[tuple[str, str, bytes]]:
    """(id, period, payload) of every version not yet published on NATS, oldest first.

    The payload is the stored document itself: a restart publishes the same bytes."""
    rows = db.execute(
        "SELECT id, period, document FROM stats_release WHERE id NOT IN "
        "(SELECT id FROM stats_release_published) ORDER BY released_at, period, version"
    ).fetchall()
    return [(r[0], r[1], r[2].encode()) for r in rows]


def mark_published(db: LedgerDb, id_: str) -> None:
    db.execute(
        "INSERT INTO stats_release_published (id) VALUES (?) ON CONFLICT (id) DO NOTHING", (id_,)
    )
    db.commit()


def adopt_file_ledger(db: LedgerDb, path: Path) -> int:
    """Take the releases of the ledger file at ``path`` into the empty ledger ``db`` (a
    network moving its read models to PostgreSQL): as they are, published marks included,
    so that no version is made again with other bytes. Nothing when ``db`` holds a release
    already or there is no file; how many were taken."""
    if not path.exists() or db.execute("SELECT count(*) FROM stats_release").fetchone()[0]:
        return 0
    with open_ledger(path, readonly=True) as old:
        rows = old.execute(
            "SELECT id, period, version, released_at, document, counts FROM stats_release "
            "ORDER BY period, version"
        ).fetchall()
        marks = [r[0] for r in old.execute("SELECT id FROM stats_release_published")]
    for row in rows:
        db.execute(
            "INSERT INTO stats_release (id, period, version, released_at, document, counts) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            tuple(row),
        )
    for id_ in marks:
        db.execute("INSERT INTO stats_release_published (id) VALUES (?)", (id_,))
    db.commit()
    return len(rows)


# ----------------------------------------------------------------------------- periods


def _next_month(month: str) -> str:
    year, number = map(int, month.split("-"))
    return f"{year + 1:04d}-01" if number == 12 else f"{year:04d}-{number + 1:02d}"


def period_end(period: str) -> datetime:
    """The first moment after ``period`` (UTC)."""
    last = months_of(period)[-1]
    year, number = map(int, _next_month(last).split("-"))
    return datetime(year, number, 1, tzinfo=UTC)


def due_periods(first_month: str | None, now: datetime, policy: ReleasePolicy) -> list[str]:
    """The closed periods whose embargo has passed and that ended within the window, from
    the period of ``first_month`` (the earliest receipt) on."""
    if first_month is None:
        return []
    window_start = now - timedelta(days=31 * policy.window_months)
    periods: list[str] = []
    month = first_month
    while True:
        period = period_of(month, policy.period)
        end = period_end(period)
        if end + policy.embargo > now:
            return periods
        if end >= window_start and (not periods or periods[-1] != period):
            periods.append(period)
        month = _next_month(month)


# ----------------------------------------------------------------------------- linking


@dataclass
class _Version:
    """One version of a period's tables inside a protection problem."""

    tables: list[PeriodTable]
    hidden: set[Meaning] | None  # None: the version being protected


def _domains(tables: Sequence[PeriodTable]) -> dict[str, set[str]]:
    domains: dict[str, set[str]] = {}
    for table in tables:
        domains.setdefault(table.row_attribute, set()).update(table.rows)
        domains.setdefault(table.column_attribute, set()).update(table.columns)
    return domains


def _inequalities(index: dict[Meaning, int]) -> list[Inequality]:
    """Every inequality the domain's rules give between the counts (``NESTED``)."""
    found: list[Inequality] = []
    for meaning, whole in index.items():
        for fact, attribute, values in NESTED:
            if fact not in meaning:
                continue
            rest = meaning - {fact}
            parts = [index.get(rest | {(attribute, v)}) for v in values]
            if all(p is not None for p in parts):
                found.append(Inequality(whole, tuple(p for p in parts if p is not None)))
    return found


def _equations(index: dict[Meaning, int], domains: dict[str, set[str]]) -> list[Equation]:
    """Every equation that follows from the meanings: a count equals the sum over all
    values of an attribute it does not fix; a quarter equals the sum of its months."""
    equations: list[Equation] = []
    for meaning, total in index.items():
        fixed = {attribute for attribute, _ in meaning}
        for attribute, values in domains.items():
            if attribute in fixed or not values:
                continue
            parts = [index.get(meaning | {(attribute, v)}) for v in sorted(values)]
            if all(p is not None for p in parts):
                equations.append(Equation(total, tuple(p for p in parts if p is not None)))
        quarters = [v for a, v in meaning if a == QUARTER]
        if quarters and MONTH not in fixed:
            rest = meaning - {(QUARTER, quarters[0])}
            parts = [index.get(rest | {(MONTH, m)}) for m in months_of(quarters[0])]
            if all(p is not None for p in parts):
                equations.append(Equation(total, tuple(p for p in parts if p is not None)))
    return equations


@dataclass(frozen=True)
class Protected:
    """The hidden meanings of the new version and what the protector did."""

    hidden: frozenset[Meaning]
    held_back: tuple[str, ...]
    solves: int


def protect_version(
    versions: Sequence[_Version], *, threshold: int, upper: int, lower: int
) -> Protected:
    """Protect the last of ``versions`` (the others are published) together with them."""
    values: list[int] = []
    states: list[State] = []
    equations: list[Equation] = []
    inequalities: list[Inequality] = []
    indexes: list[dict[Meaning, int]] = []
    for version in versions:
        index: dict[Meaning, int] = {}
        for table in version.tables:
            extended = table.extended()
            for i, row in enumerate(extended):
                for j, value in enumerate(row):
                    meaning = table.meaning(i, j)
                    if meaning in index:
                        if values[index[meaning]] != value:
                            raise ValueError(f"{table.name}: one count, two values")
                        continue
                    index[meaning] = len(values)
                    values.append(value)
                    if version.hidden is None:
                        states.append(State.NEW)
                    elif meaning in version.hidden:
                        states.append(State.HIDDEN_BEFORE)
                    else:
                        states.append(State.SHOWN_BEFORE)
        equations += _equations(index, _domains(version.tables))
        inequalities += _inequalities(index)
        indexes.append(index)
    new = indexes[-1]
    differences = [
        Difference(now=j, before=earlier[meaning])
        for earlier in indexes[:-1]
        for meaning, j in new.items()
        if meaning in earlier
    ]
    for e in equations:
        if values[e.total] != sum(values[p] for p in e.parts):
            raise ValueError(f"an equation does not hold: {e}")
    problem = LinkedProtection(
        values,
        states,
        equations,
        threshold=threshold,
        upper=upper,
        lower=lower,
        inequalities=inequalities,
    )
    result = problem.protect(differences)
    by_index = {j: meaning for meaning, j in new.items()}
    hidden = frozenset(by_index[j] for j in result.withheld)
    held_back: tuple[str, ...] = ()
    if result.everything_withheld:
        held_back = tuple(t.name for t in versions[-1].tables)
    return Protected(hidden, held_back, result.solves)


# ----------------------------------------------------------------------------- documents


def _report(table: PeriodTable, hidden: frozenset[Meaning], threshold: int) -> Report:
    extended = table.extended()

    def cell(i: int, j: int) -> Cell:
        withheld = table.meaning(i, j) in hidden
        return Cell(None if withheld else extended[i][j], withheld)

    n_rows, n_cols = len(table.rows), len(table.columns)
    return Report(
        name=table.name,
        description=table.description,
        rows_are=table.rows_are,
        columns_are=table.columns_are,
        rows=table.rows,
        columns=table.columns,
        cells=tuple(tuple(cell(i, j) for j in range(n_cols)) for i in range(n_rows)),
        row_totals=tuple(cell(i, n_cols) for i in range(n_rows)),
        column_totals=tuple(cell(n_rows, j) for j in range(n_cols)),
        total=cell(n_rows, n_cols),
        threshold=threshold,
    )


def _hidden_of(document: dict[str, Any], tables: Sequence[PeriodTable]) -> set[Meaning]:
    """The meanings a published document withheld."""
    hidden: set[Meaning] = set()
    for table in tables:
        report = document["reports"][table.name]
        grid = [[*report["cells"][i], report["row_totals"][i]] for i in range(len(table.rows))] + [
            [*report["column_totals"], report["total"]]
        ]
        for i, row in enumerate(grid):
            for j, cell in enumerate(row):
                if cell["suppressed"]:
                    hidden.add(table.meaning(i, j))
    return hidden


def _counts_record(tables: Sequence[PeriodTable]) -> str:
    return json.dumps(
        [
            {
                "name": t.name,
                "description": t.description,
                "rows_are": t.rows_are,
                "columns_are": t.columns_are,
                "row_attribute": t.row_attribute,
                "column_attribute": t.column_attribute,
                "base": sorted(t.base),
                "rows": list(t.rows),
                "columns": list(t.columns),
                "counts": [list(r) for r in t.counts],
            }
            for t in tables
        ],
        sort_keys=True,
    )


VOLATILE: Final = frozenset({"status_by_quarter", "sea_by_area_by_quarter"})
"""Reports whose change alone makes no revision: ``status_by_quarter`` moves on with no new
fact about the period's cases; ``sea_by_area_by_quarter`` changes its rows when the network
lists a new area (a registry entry, a prevention record). A revision made for a layout only
would re-draw the suppression of tables that did not change, and two versions side by side
would give withheld counts away (attack review of issue #22); the next real revision brings
them up to date."""


def _trigger(record: str) -> list[Any]:
    """What of a period's counts makes a revision when it changes (all but ``VOLATILE``)."""
    return [t for t in json.loads(record) if t["name"] not in VOLATILE]


def _tables_of_record(record: str) -> list[PeriodTable]:
    return [
        PeriodTable(
            name=t["name"],
            description=t["description"],
            rows_are=t["rows_are"],
            columns_are=t["columns_are"],
            row_attribute=t["row_attribute"],
            column_attribute=t["column_attribute"],
            base=frozenset((a, v) for a, v in t["base"]),
            rows=tuple(t["rows"]),
            columns=tuple(t["columns"]),
            counts=tuple(tuple(r) for r in t["counts"]),
        )
        for t in json.loads(record)
    ]


def make_document(
    tables: Sequence[PeriodTable],
    protected: Protected,
    *,
    period: str,
    version: int,
    released_at: datetime,
    threshold: int,
    upper: int,
    lower: int,
) -> dict[str, Any]:
    """The published document of a release version: today's ``{"reports": ...}`` shape with
    a ``release`` object beside it."""
    reports = {t.name: report_document(_report(t, protected.hidden, threshold)) for t in tables}
    return {
        "release": {
            "id": release_id(period, version),
            "period": period,
            "months": list(months_of(period)),
            "version": version,
            "supersedes": release_id(period, version - 1) if version > 1 else None,
            "released_at": released_at.astimezone(UTC).isoformat(),
            "suppression_threshold": threshold,
            "protection": {"upper": upper, "lower": lower, "method": METHOD},
            "held_back": [
                {
                    "report": name,
                    "reason": "no protection was found for it: every non-zero count withheld",
                }
                for name in protected.held_back
            ],
        },
        "reports": {name: reports[name] for name in sorted(reports)},
    }


# ----------------------------------------------------------------------------- releasing


def _overlaps(period: str, released: set[str]) -> bool:
    months = set(months_of(period))
    return any(months & set(months_of(other)) for other in released)


def release_due(
    read_model: ReadModelDb,
    ledger: LedgerDb,
    policy: ReleasePolicy,
    now: datetime,
) -> list[ReleaseVersion]:
    """Make every release (and revision) that is due at ``now``; return the new versions.

    Deterministic in the read model's facts: run again (after a restart, a rebuild) with
    the same facts it makes nothing new.
    """
    threshold = stats.threshold(read_model)
    upper, lower = policy.levels(threshold)
    first = read_model.execute(
        "SELECT min(m) FROM (SELECT min(received_month) AS m FROM stats_case "
        "UNION ALL SELECT min(received_month) FROM stats_feedback) AS firsts"
    ).fetchone()[0]
    made: list[ReleaseVersion] = []
    due = due_periods(first, now, policy)
    cases, feedback, agencies = facts(read_model) if due else ([], [], [])
    listed_areas = stats_areas(read_model) if due else []
    released = {row[0] for row in ledger.execute("SELECT DISTINCT period FROM stats_release")}
    for period in due:
        if period not in released and _overlaps(period, released):
            # The policy's period changed (a quarter after months, a year after quarters):
            # months already released under another period are not released again, so no
            # two releases of different periods overlap (ADR 12).
            continue
        earlier = ledger.execute(
            "SELECT version, document, counts, released_at FROM stats_release WHERE period = ? "
            "ORDER BY version",
            (period,),
        ).fetchall()
        months = months_of(period)
        tables = tables_of(
            period,
            [c for c in cases if c.month in months],
            [f for f in feedback if f.month in months],
            agencies,
            listed_areas=listed_areas,
        )
        counts = _counts_record(tables)
        if earlier and (
            _trigger(earlier[-1][2]) == _trigger(counts)
            or now - datetime.fromisoformat(earlier[-1][3]) < policy.revise_every
        ):
            continue
        versions = []
        for _version, document, record, _released_at in earlier:
            old_tables = _tables_of_record(record)
            versions.append(_Version(old_tables, _hidden_of(json.loads(document), old_tables)))
        versions.append(_Version(tables, None))
        protected = protect_version(versions, threshold=threshold, upper=upper, lower=lower)
        version = len(earlier) + 1
        document = make_document(
            tables,
            protected,
            period=period,
            version=version,
            released_at=now,
            threshold=threshold,
            upper=upper,
            lower=lower,
        )
        id_ = release_id(period, version)
        released_at = document["release"]["released_at"]
        ledger.execute(
            "INSERT INTO stats_release (id, period, version, released_at, document, counts) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (id_, period, version, released_at, json.dumps(document, sort_keys=True), counts),
        )
        ledger.commit()
        made.append(ReleaseVersion(id_, period, version, released_at, document))
    return made
