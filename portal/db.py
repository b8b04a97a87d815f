"""The portal's database: SQLite (stdlib) or PostgreSQL (psycopg 3), one small interface.

Writes happen in whole transactions only: a page of events, its block hashes and the cursor
move together (:meth:`Database.commit_page`), and so does undoing a reorganisation
(:meth:`Database.rewind`). A crash at any point leaves the database at the previous cursor
with exactly the rows below it. Each write first moves the cursor from the value the writer
last saw (compare-and-set): a second indexer on the same database finds it moved and stops
instead of writing rows twice.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from pilotchain.config import masked_url
from portal import schema, sums
from portal.config import POSTGRES_PREFIXES, SQLITE_PREFIX
from portal.errors import AnotherWriter, DatabaseError, WrongDatabase
from portal.events import EVENTS, TABLES, Row

# Unsigned amounts per table: SQLite keeps them as decimal text (see portal.schema).
AMOUNT_COLUMNS: dict[str, frozenset[str]] = {
    table: frozenset(f.column for spec in EVENTS if spec.table == table
                     for f in spec.fields if f.kind == "amount")
    for table in TABLES
}
COLUMNS: dict[str, tuple[str, ...]] = {
    table: ("block_number", "log_index", "tx_hash",
            *next(spec.columns for spec in EVENTS if spec.table == table))
    for table in TABLES
}


class DatabaseUnavailable(DatabaseError):
    """The database server cannot be reached right now; the indexer reconnects and retries."""


@dataclass(frozen=True)
class Cursor:
    """The last indexed block of one deployment."""

    chain_id: int
    contract: str
    block_number: int
    block_hash: str


@dataclass(frozen=True)
class Block:
    number: int
    hash: str
    parent_hash: str


class Statements:
    """Statements (written with ``?``) inside one transaction of :meth:`Database.writing`."""

    def __init__(self, db: Database, cur: Any) -> None:
        self._db = db
        self._cur = cur

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._cur.execute(self._db._sql(sql), tuple(params))
        return int(self._cur.rowcount)

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._cur.execute(self._db._sql(sql), tuple(params))
        return list(self._cur.fetchall())

    def lock(self, key: int) -> None:
        """Hold ``key``'s lock until the transaction ends, so that a count and the insert it
        allows are not interleaved with another writer's (PostgreSQL; SQLite's BEGIN
        IMMEDIATE already admits one writer at a time)."""
        if self._db.dialect == "postgresql":
            self._cur.execute("SELECT pg_advisory_xact_lock(%s)", (key,))


class Database:
    """One connection to the index; not shared between threads."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.shown = masked_url(url)
        if url.startswith(SQLITE_PREFIX):
            self.dialect: schema.Dialect = "sqlite"
            self._conn: Any = self._open_sqlite(Path(url[len(SQLITE_PREFIX):]))
        elif url.startswith(POSTGRES_PREFIXES):
            self.dialect = "postgresql"
            self._conn = self._open_postgres(url)
        else:
            raise DatabaseError(f"{self.shown} is neither sqlite:/// nor postgresql://.")

    def _open_sqlite(self, path: Path) -> sqlite3.Connection:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are opened explicitly, BEGIN IMMEDIATE, so a
            # second writer waits at the start rather than failing half-way.
            conn = sqlite3.connect(path, isolation_level=None, timeout=30)
            # WAL: readers (the portal's pages) never block the indexer, nor it them.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
        except (OSError, sqlite3.Error) as error:
            raise DatabaseError(f"Cannot open the SQLite database {path}: {error}.") from None
        return conn

    def _open_postgres(self, url: str) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as error:
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else "no answer"
            raise DatabaseUnavailable(
                f"Cannot connect to the PostgreSQL database {self.shown}: {reason}.") from None

    def close(self) -> None:
        try:
            self._conn.close()
        except (sqlite3.Error, psycopg.Error):
            pass

    # -- plumbing -------------------------------------------------------------------------

    def _sql(self, sql: str) -> str:
        """Statements are written with ``?``; psycopg wants ``%s``."""
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[Any]:
        """A DB-API cursor inside one transaction: committed at the end, rolled back on error.
        A read-only one on SQLite takes no write lock, so it never holds the indexer up."""
        with self._failures():
            if self.dialect == "sqlite":
                cur = self._conn.cursor()
                cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield cur
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
                cur.execute("COMMIT")
            else:
                with self._conn.transaction(), self._conn.cursor() as cur:
                    yield cur

    @contextmanager
    def _failures(self) -> Iterator[None]:
        """The engines' errors as the portal's, each a sentence naming the database."""
        try:
            yield
        except (sqlite3.IntegrityError, psycopg.IntegrityError) as error:
            raise DatabaseError(f"The index refused a row: {_first_line(error)}. Each event is "
                                "stored once; this is a bug worth reporting.") from None
        except psycopg.OperationalError as error:
            raise DatabaseUnavailable(
                f"The PostgreSQL database {self.shown} failed: {_first_line(error)}.") from None
        except (sqlite3.Error, psycopg.Error) as error:
            raise DatabaseError(
                f"The database {self.shown} failed: {_first_line(error)}.") from None

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._transaction(write=False) as cur:
            cur.execute(self._sql(sql), tuple(params))
            return list(cur.fetchall())

    # -- schema ---------------------------------------------------------------------------

    def migrate(self) -> int:
        """Create or upgrade the schema; return the version found before."""
        with self._transaction() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            cur.execute("SELECT version FROM schema_version")
            found = cur.fetchall()
            current = int(found[0][0]) if found else 0
            if current > schema.VERSION:
                raise WrongDatabase(
                    f"The database {self.shown} has schema version {current}, newer than this "
                    f"indexer's {schema.VERSION}: upgrade PilotChain or use another "
                    "PORTAL_DATABASE_URL.")
            for statement in schema.statements(self.dialect, current):
                cur.execute(statement)
            if 0 < current < schema.TRADE_SUMS_VERSION:
                cur.execute("SELECT block_number, energy, price FROM trades")
                self._insert_trade_sums(cur, cur.fetchall())
            if 0 < current < schema.PARTICIPANT_SUMS_VERSION:
                self._fill_participant_sums(cur)
            if not found:
                cur.execute(self._sql("INSERT INTO schema_version (version) VALUES (?)"),
                            (schema.VERSION,))
            elif current != schema.VERSION:
                cur.execute(self._sql("UPDATE schema_version SET version = ?"), (schema.VERSION,))
        return current

    # -- cursor ---------------------------------------------------------------------------

    def cursor(self) -> Cursor | None:
        found = self._query("SELECT chain_id, contract, block_number, block_hash FROM cursor")
        if not found:
            return None
        chain_id, contract, number, block_hash = found[0]
        return Cursor(int(chain_id), str(contract), int(number), str(block_hash))

    def start(self, chain_id: int, contract: str, before: Block) -> Cursor:
        """The cursor of this deployment: created at ``before`` (the block before the
        deployment) on first use; a database of another deployment is refused."""
        existing = self.cursor()
        if existing is None:
            with self._transaction() as cur:
                cur.execute(self._sql(
                    "INSERT INTO cursor (id, chain_id, contract, block_number, block_hash) "
                    "VALUES (1, ?, ?, ?, ?)"), (chain_id, contract, before.number, before.hash))
                self._insert_blocks(cur, [before])
            return Cursor(chain_id, contract, before.number, before.hash)
        if (existing.chain_id, existing.contract.lower()) != (chain_id, contract.lower()):
            raise WrongDatabase(
                f"The database {self.shown} indexes the contract {existing.contract} on chain "
                f"{existing.chain_id}, not {contract} on chain {chain_id}: point "
                "PORTAL_DATABASE_URL at a database of its own for this deployment.")
        return existing

    def recent_blocks(self) -> list[Block]:
        """The stored block hashes, newest first."""
        return [Block(int(n), str(h), str(p)) for n, h, p in
                self._query("SELECT number, hash, parent_hash FROM blocks ORDER BY number DESC")]

    # -- writes ---------------------------------------------------------------------------

    def commit_page(self, expected: Cursor, rows: Sequence[Row], blocks: Sequence[Block],
                    keep_blocks: int) -> Cursor:
        """Store ``rows`` and the hashes of ``blocks`` (ascending, the last one the new
        cursor) and move the cursor there, in one transaction; keep only the newest
        ``keep_blocks`` hashes."""
        last = blocks[-1]
        new = Cursor(expected.chain_id, expected.contract, last.number, last.hash)
        with self._transaction() as cur:
            self._move_cursor(cur, expected, new)
            cur.execute("SELECT COUNT(*) FROM periods")
            closed = int(cur.fetchall()[0][0])
            self._insert_blocks(cur, blocks)
            cur.execute(self._sql("DELETE FROM blocks WHERE number <= ?"),
                        (last.number - keep_blocks,))
            for table in TABLES:
                mine = [row for row in rows if row.table == table]
                if mine:
                    self._insert_rows(cur, table, mine)
            self._insert_trade_sums(cur, [
                (row.block_number, row.values["energy"], row.values["price"])
                for row in rows if row.table == "trades"])
            self._add_participant_sums(cur, rows, closed, (
                expected.block_number - keep_blocks + 1, last.number - keep_blocks + 1))
        return new

    def rewind(self, expected: Cursor, ancestor: Block) -> Cursor:
        """Undo every row and block hash above ``ancestor`` and put the cursor there."""
        new = Cursor(expected.chain_id, expected.contract, ancestor.number, ancestor.hash)
        with self._transaction() as cur:
            self._move_cursor(cur, expected, new)
            for table in (*TABLES, "trade_sums"):
                cur.execute(self._sql(f"DELETE FROM {table} WHERE block_number > ?"),
                            (ancestor.number,))
            self._rewind_participant_sums(cur, ancestor.number)
            cur.execute(self._sql("DELETE FROM blocks WHERE number > ?"), (ancestor.number,))
        return new

    def _move_cursor(self, cur: Any, expected: Cursor, new: Cursor) -> None:
        cur.execute(self._sql(
            "UPDATE cursor SET block_number = ?, block_hash = ? "
            "WHERE id = 1 AND block_number = ? AND block_hash = ?"),
            (new.block_number, new.block_hash, expected.block_number, expected.block_hash))
        if cur.rowcount != 1:
            raise AnotherWriter(
                f"The cursor of {self.shown} is no longer at block {expected.block_number}: "
                "another indexer writes to this database. Run one indexer per database.")

    def _insert_blocks(self, cur: Any, blocks: Sequence[Block]) -> None:
        cur.executemany(self._sql(
            "INSERT INTO blocks (number, hash, parent_hash) VALUES (?, ?, ?)"),
            [(b.number, b.hash, b.parent_hash) for b in blocks])

    def _insert_trade_sums(self, cur: Any, trades: Sequence[tuple[Any, Any, Any]]) -> None:
        """One trade_sums row per block of ``trades`` (block, energy, price)."""
        sums: dict[int, list[int]] = {}
        for block, energy, price in trades:
            found = sums.setdefault(int(block), [0, 0, 0])
            found[0] += 1
            found[1] += int(energy)
            found[2] += int(price)
        if not sums:
            return
        text = str if self.dialect == "sqlite" else int
        cur.executemany(self._sql(
            "INSERT INTO trade_sums (block_number, trades, energy, price) VALUES (?, ?, ?, ?)"),
            [(block, count, text(energy), text(price))
             for block, (count, energy, price) in sorted(sums.items())])

    # -- each participant's running bill per period (portal.sums) -------------------------

    _SUMS = ", ".join(schema.PARTICIPANT_SUMS)

    def _add_participant_sums(self, cur: Any, rows: Sequence[Row], closed: int,
                              final: tuple[int, int]) -> None:
        """The sums after each block of ``rows`` that changed a bill, on top of the open
        period's (``closed`` periods closed before the page), and the bills they make; then
        the rows that just went out of any reorganisation's reach (blocks in ``final``:
        after the first, up to the second) pruned to the newest of each participant and
        period."""
        events = sorted((row for row in rows if row.table in ("trades", "slots_balanced",
                                                              "periods")),
                        key=lambda row: (row.block_number, row.log_index))
        if any(row.table != "periods" for row in events):
            cur.execute(self._sql(f"SELECT participant, {self._SUMS} FROM participant_bills "
                                  "WHERE period = ?"), (closed + 1,))
            before = {(closed + 1, str(found[0])): [int(v) for v in found[1:]]
                      for found in cur.fetchall()}
            found = sums.block_sums(((row.table, row.block_number, row.values)
                                     for row in events), closed, before)
            self._insert_participant_sums(cur, found)
            self._set_bills(cur, sums.newest(found))
        self._prune_participant_sums(cur, *final)

    def _prune_participant_sums(self, cur: Any, after: int, final: int) -> None:
        """Of each participant and period with a row in blocks ``after`` < n <= ``final``
        (``final``: the oldest block a rewind may go back to, so rows up to it stay), delete
        the rows before its newest up to ``final``: no rewind can need them any more."""
        cur.execute(self._sql(
            "SELECT period, participant, MAX(block_number) FROM participant_sums "
            "WHERE block_number > ? AND block_number <= ? GROUP BY period, participant"),
            (after, final))
        stale = [(int(period), str(participant), int(newest))
                 for period, participant, newest in cur.fetchall()]
        if stale:
            cur.executemany(self._sql(
                "DELETE FROM participant_sums WHERE period = ? AND participant = ? "
                "AND block_number < ?"), stale)

    def _rewind_participant_sums(self, cur: Any, ancestor: int) -> None:
        """Delete the sums of the blocks above ``ancestor``; the bills they touched are the
        newest sums left again (none left: no bill)."""
        cur.execute(self._sql("SELECT DISTINCT period, participant FROM participant_sums "
                              "WHERE block_number > ?"), (ancestor,))
        touched = [(int(period), str(participant)) for period, participant in cur.fetchall()]
        cur.execute(self._sql("DELETE FROM participant_sums WHERE block_number > ?"),
                    (ancestor,))
        if not touched:
            return
        cur.executemany(self._sql("DELETE FROM participant_bills WHERE period = ? "
                                  "AND participant = ?"), touched)
        left: dict[tuple[int, str], list[int]] = {}
        for period, participant in touched:
            cur.execute(self._sql(
                f"SELECT {self._SUMS} FROM participant_sums WHERE period = ? "
                "AND participant = ? ORDER BY block_number DESC LIMIT 1"), (period, participant))
            found = cur.fetchall()
            if found:
                left[(period, participant)] = [int(v) for v in found[0]]
        self._set_bills(cur, left)

    def _fill_participant_sums(self, cur: Any) -> None:
        """An index made before schema version 7: the sums and bills from every trade,
        balanced slot and closed period it holds (anything already there made anew), pruned
        below its oldest kept block hash."""
        cur.execute("DELETE FROM participant_sums")
        cur.execute("DELETE FROM participant_bills")
        events: list[tuple[int, int, str, dict[str, Any]]] = []
        for table in ("trades", "slots_balanced", "periods"):
            columns = COLUMNS[table]
            cur.execute(f"SELECT {', '.join(columns)} FROM {table}")
            events += [(int(found[0]), int(found[1]), table,
                        dict(zip(columns[3:], found[3:], strict=True)))
                       for found in cur.fetchall()]
        events.sort(key=lambda event: (event[0], event[1]))
        found = sums.block_sums(((table, block, values) for block, _, table, values in events),
                                0, {})
        self._insert_participant_sums(cur, found)
        self._set_bills(cur, sums.newest(found))
        cur.execute("SELECT MIN(number) FROM blocks")
        oldest = cur.fetchall()[0][0]
        if oldest is not None:
            self._prune_participant_sums(cur, -1, int(oldest))

    def _insert_participant_sums(self, cur: Any,
                                 found: dict[tuple[int, str, int], list[int]]) -> None:
        if not found:
            return
        text = str if self.dialect == "sqlite" else int
        marks = ", ".join("?" for _ in schema.PARTICIPANT_SUMS)
        cur.executemany(self._sql(
            f"INSERT INTO participant_sums (period, participant, block_number, {self._SUMS}) "
            f"VALUES (?, ?, ?, {marks})"),
            [(period, participant, block, *(text(v) for v in values))
             for (period, participant, block), values in sorted(found.items())])

    def _set_bills(self, cur: Any, bills: dict[tuple[int, str], list[int]]) -> None:
        """Each (period, participant)'s bill set to its sums (inserted or replaced)."""
        if not bills:
            return
        text = str if self.dialect == "sqlite" else int
        marks = ", ".join("?" for _ in schema.PARTICIPANT_SUMS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in schema.PARTICIPANT_SUMS)
        cur.executemany(self._sql(
            f"INSERT INTO participant_bills (period, participant, {self._SUMS}) "
            f"VALUES (?, ?, {marks}) ON CONFLICT (period, participant) DO UPDATE SET "
            f"{updates}"),
            [(period, participant, *(text(v) for v in values))
             for (period, participant), values in sorted(bills.items())])

    def _insert_rows(self, cur: Any, table: str, rows: Sequence[Row]) -> None:
        columns = COLUMNS[table]
        amounts = AMOUNT_COLUMNS[table] if self.dialect == "sqlite" else frozenset()
        marks = ", ".join("?" for _ in columns)
        sql = self._sql(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})")
        cur.executemany(sql, [
            (row.block_number, row.log_index, row.tx_hash,
             *(str(row.values[c]) if c in amounts else row.values[c] for c in columns[3:]))
            for row in rows])

    # -- for the web portal's own queries (portal.queries, portal.web.store) -------------

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one read-only statement (written with ``?`` placeholders)."""
        return self._query(sql, params)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one writing statement in its own transaction; the number of rows it touched."""
        with self._transaction() as cur:
            cur.execute(self._sql(sql), tuple(params))
            return int(cur.rowcount)

    @contextmanager
    def writing(self) -> Iterator[Statements]:
        """Several statements in one write transaction, all or none (an exception rolls it
        back). On SQLite writers queue at its start; on PostgreSQL, :meth:`Statements.lock`
        serialises the writers of one kind."""
        with self._transaction() as cur:
            yield Statements(self, cur)

    def refresh_statistics(self) -> None:
        """After many new rows, let PostgreSQL plan with them: ANALYZE for the row counts, and
        VACUUM for the visibility map without which its covering indexes still read the table
        (a participant's page 10x slower right after a catch-up of 200,000 trades, until
        autovacuum gets there). SQLite's plans for the portal's queries need no statistics."""
        if self.dialect != "postgresql":
            return
        with self._failures():
            # VACUUM cannot run inside a transaction: the connection is in autocommit mode.
            self._conn.execute("VACUUM (ANALYZE) trades, trade_sums, participant_sums, "
                               "participant_bills")

    # -- reads ----------------------------------------------------------------------------

    def rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of an event table in chain order, amounts as ints."""
        if table not in COLUMNS:
            raise DatabaseError(f"There is no event table {table!r}.")
        columns = COLUMNS[table]
        found = self._query(f"SELECT {', '.join(columns)} FROM {table} "
                            "ORDER BY block_number, log_index")
        amounts = AMOUNT_COLUMNS[table]
        return [{c: _amount(v) if c in amounts else v for c, v in zip(columns, row, strict=True)}
                for row in found]

    def count(self, table: str) -> int:
        if table not in COLUMNS:
            raise DatabaseError(f"There is no event table {table!r}.")
        return int(self._query(f"SELECT COUNT(*) FROM {table}")[0][0])


def _amount(value: str | Decimal | int) -> int:
    return int(value)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__



def started_cursor(url: str) -> Cursor | None:
    """The cursor of the index at ``url``, or None while no indexer has started it (the
    readiness of ``pilotchain-portal-indexer``); DatabaseError if it cannot be opened."""
    db = Database(url)
    try:
        return db.cursor()
    except DatabaseError:
        return None  # not migrated yet
    finally:
        db.close()
