"""A score store shared across searches: SQLite (WAL) keyed by (fingerprint, canonical genome).

Proxy scores are deterministic given the proxy settings, the reference model, the training
batch, the proxy seed and the network sizes; a *fingerprint* string summarises those (build it
with :func:`fingerprint`), and any search with the same fingerprint may reuse a stored score
instead of training the candidate again. Several processes may read and write one store at once:
SQLite in WAL mode (readers never block the writer), a busy timeout, and a few retries with
back-off on ``database is locked``. Each :meth:`ScoreStore.put_many` is one transaction.

Keys are genomes as sequences of ints; pass *canonical* genomes (``space.canonical``) so that
functionally identical cells share one entry (the store does not canonicalise: it does not know
the space). A record is a JSON-able dict, e.g. ``{'score': float, 'loss': float, 'ckas':
[floats]}``, stored as JSON text. Non-finite floats round-trip exactly: each is stored as the
object ``{"__float__": "nan" | "inf" | "-inf"}`` (strict JSON), which reads back as the float
(so records may not use the key ``__float__`` themselves); numpy scalars and arrays are
stored as Python numbers and lists. By default the first record written for a key wins (a
later :meth:`~ScoreStore.put_many` of the same key is ignored), so every reader sees one stable
value; ``overwrite=True`` replaces instead.

Claims keep concurrent searches from training the same architecture twice: a process calls
:meth:`~ScoreStore.claim` on the keys it is about to train (one transaction: a key is granted
unless it is stored already or another owner's claim on it is younger than ``lease_s``),
trains those, and waits for the others to appear (:meth:`~ScoreStore.put_many` removes the
claims of what it writes; :meth:`~ScoreStore.release` gives back what a process did not
train, e.g. on Ctrl-C). A claim whose owner died without releasing it expires after its lease.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from hwnas_jax.errors import UserError

FORMAT = 'hwnas_jax.score_store'
FORMAT_VERSION = 1
BUSY_TIMEOUT_S = 30.0  # SQLite waits this long for a lock before raising.
RETRIES = 8  # Further attempts, with jittered back-off, after a lock error.
_CHUNK = 500  # Keys per SELECT (SQLite caps the number of bound variables).
_FLOAT_TAG = '__float__'
_FIX = 'delete it (it is only a cache of proxy scores) or choose another store path'

_SCHEMA = (
    'CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)',
    (
        'CREATE TABLE IF NOT EXISTS scores (fingerprint TEXT NOT NULL, genome TEXT NOT NULL, '
        'record TEXT NOT NULL, written REAL NOT NULL, PRIMARY KEY (fingerprint, genome)) '
        'WITHOUT ROWID'
    ),
    (
        'CREATE TABLE IF NOT EXISTS claims (fingerprint TEXT NOT NULL, genome TEXT NOT NULL, '
        'owner TEXT NOT NULL, claimed REAL NOT NULL, PRIMARY KEY (fingerprint, genome)) '
        'WITHOUT ROWID'
    ),
)

Key = tuple[int, ...]
# Connections inherited through fork: SQLite must not close them in the child (closing may
# release the parent's locks or checkpoint under it), so they are kept here, never used.
_INHERITED: list[sqlite3.Connection] = []


def fingerprint(settings: Mapping[str, Any]) -> str:
    """sha256 hex of the sorted, compact JSON of ``settings`` (numpy values as Python values).

    Put in it everything a score depends on: proxy settings (steps, beta, learning rate, ...),
    the reference's digest, the batch digest, the proxy seed and the network sizes.
    """
    text = json.dumps(_encode(settings), sort_keys=True, separators=(',', ':'), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _encode(obj: Any) -> Any:
    """JSON-able copy of ``obj``: non-finite floats tagged, numpy to Python, tuples to lists."""
    if isinstance(obj, (np.generic, np.ndarray)):
        obj = obj.tolist()
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return {_FLOAT_TAG: 'nan' if math.isnan(obj) else ('inf' if obj > 0 else '-inf')}
    if isinstance(obj, Mapping):
        if _FLOAT_TAG in obj:
            raise ValueError(f'the key {_FLOAT_TAG!r} is reserved (it tags non-finite floats)')
        return {str(k): _encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode(v) for v in obj]
    return obj


def _decode_hook(d: dict) -> Any:
    if len(d) == 1 and _FLOAT_TAG in d:
        return float(d[_FLOAT_TAG])
    return d


def dumps_record(record: Mapping[str, Any]) -> str:
    """The stored JSON text of a record (strict JSON; non-finite floats tagged)."""
    return json.dumps(_encode(record), sort_keys=True, separators=(',', ':'), allow_nan=False)


def loads_record(text: str) -> dict[str, Any]:
    """The record of stored JSON text (tagged non-finite floats back to floats)."""
    return json.loads(text, object_hook=_decode_hook)


def _key(genome: Iterable[int]) -> Key:
    try:
        key = tuple(int(v) for v in np.asarray(genome).reshape(-1))
        if not np.array_equal(np.asarray(genome).reshape(-1), key):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f'a store key is a genome, a sequence of ints; got {genome!r}') from None
    return key


def _key_text(key: Key) -> str:
    return ','.join(map(str, key))


def _is_locked(e: sqlite3.OperationalError) -> bool:
    msg = str(e).lower()
    return 'locked' in msg or 'busy' in msg


class ScoreStore:
    """Proxy scores by (fingerprint, canonical genome), shared by processes through one file.

    Args:
      path: the SQLite file, created with its parent folder if absent.
      timeout: seconds SQLite waits for a lock before a retry.

    Raises:
      UserError: the file is not an SQLite database, is damaged, is another program's database,
        or cannot be opened or created (one message naming the file).
    """

    def __init__(self, path: str | os.PathLike, *, timeout: float = BUSY_TIMEOUT_S):
        self.path = os.fspath(path)
        self.timeout = float(timeout)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._run(self._init_schema)

    def _connection(self) -> sqlite3.Connection:
        # A connection must not cross a fork: reopen in a child process.
        if self._conn is not None and self._pid != os.getpid():
            _INHERITED.append(self._conn)
            self._conn = None
        if self._conn is None:
            parent = os.path.dirname(os.path.abspath(self.path))
            try:
                os.makedirs(parent, exist_ok=True)
                conn = sqlite3.connect(
                    self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
                )
            except (OSError, sqlite3.Error) as e:
                raise UserError(f'{self.path}: cannot open the score store ({e}); {_FIX}') from None
            conn.execute(f'PRAGMA busy_timeout = {int(self.timeout * 1000)}')
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _run(self, fn, *args):
        """``fn(connection, *args)``, retried on lock errors; damage becomes a UserError."""
        with self._lock:
            for attempt in range(RETRIES + 1):
                conn = self._connection()
                try:
                    return fn(conn, *args)
                except sqlite3.OperationalError as e:
                    if conn.in_transaction:
                        conn.rollback()
                    if _is_locked(e) and attempt < RETRIES:
                        time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
                        continue
                    if _is_locked(e):
                        raise
                    raise UserError(f'{self.path}: score store unusable ({e}); {_FIX}') from None
                except sqlite3.DatabaseError as e:  # "file is not a database", corruption.
                    if conn.in_transaction:
                        conn.rollback()
                    raise UserError(
                        f'{self.path}: not an hwnas_jax score store or damaged ({e}); {_FIX}'
                    ) from None

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute('PRAGMA journal_mode = WAL').fetchone()[0]
        if str(mode).lower() != 'wal':
            raise UserError(
                f'{self.path}: SQLite could not use WAL mode here (got {mode!r}; '
                'network file systems may not support it); choose a local path'
            )
        conn.execute('PRAGMA synchronous = NORMAL')
        conn.execute('BEGIN IMMEDIATE')
        try:
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            if tables and 'meta' not in tables:
                raise UserError(
                    f'{self.path}: an SQLite database of another program (tables '
                    f'{sorted(tables)}), not an hwnas_jax score store; {_FIX}'
                )
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(
                'INSERT OR IGNORE INTO meta VALUES (?, ?)',
                ('format', f'{FORMAT} v{FORMAT_VERSION}'),
            )
            found = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()[0]
            if found != f'{FORMAT} v{FORMAT_VERSION}':
                raise UserError(
                    f'{self.path}: score store format {found!r}, expected '
                    f'{FORMAT!r} v{FORMAT_VERSION}; {_FIX}'
                )
            conn.execute('COMMIT')
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise

    def get_many(self, fp: str, keys: Iterable[Iterable[int]]) -> dict[Key, dict[str, Any]]:
        """Stored records of ``keys`` under fingerprint ``fp``: {key tuple: record}; absent
        keys are left out."""
        wanted = {_key_text(k): k for k in map(_key, keys)}

        def read(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            names = list(wanted)
            rows = []
            for i in range(0, len(names), _CHUNK):
                part = names[i : i + _CHUNK]
                rows += conn.execute(
                    'SELECT genome, record FROM scores WHERE fingerprint = ? AND genome IN '
                    f'({",".join("?" * len(part))})',
                    (fp, *part),
                ).fetchall()
            return rows

        rows = self._run(read) if wanted else []
        return {wanted[g]: loads_record(r) for g, r in rows}

    def put_many(
        self, fp: str, records: Mapping[Any, Mapping[str, Any]], *, overwrite: bool = False
    ) -> int:
        """Stores ``{key: record}`` under fingerprint ``fp`` in one transaction.

        Returns:
          The number of rows written (keys already present are skipped unless ``overwrite``).
        """
        if not isinstance(fp, str) or not fp:
            raise ValueError(f'fingerprint must be a non-empty string, got {fp!r}')
        now = time.time()
        rows = [(fp, _key_text(_key(k)), dumps_record(r), now) for k, r in records.items()]
        verb = 'INSERT OR REPLACE' if overwrite else 'INSERT OR IGNORE'

        def write(conn: sqlite3.Connection) -> int:
            conn.execute('BEGIN IMMEDIATE')
            before = conn.total_changes
            conn.executemany(f'{verb} INTO scores VALUES (?, ?, ?, ?)', rows)
            written = conn.total_changes - before
            conn.executemany(
                'DELETE FROM claims WHERE fingerprint = ? AND genome = ?', [r[:2] for r in rows]
            )
            conn.execute('COMMIT')
            return written

        return self._run(write) if rows else 0

    def claim(
        self, fp: str, keys: Iterable[Iterable[int]], owner: str, *, lease_s: float
    ) -> list[Key]:
        """Claims ``keys`` for ``owner`` to train; returns the granted ones, in ``keys``' order.

        A key is granted unless it is stored already or another owner claimed it less than
        ``lease_s`` seconds ago; granting renews the owner's earlier claims. One transaction,
        so two processes never both get a key.
        """
        keys = list(dict.fromkeys(map(_key, keys)))
        now = time.time()

        def grant(conn: sqlite3.Connection) -> list[Key]:
            conn.execute('BEGIN IMMEDIATE')
            granted = []
            for k in keys:
                g = _key_text(k)
                if conn.execute(
                    'SELECT 1 FROM scores WHERE fingerprint = ? AND genome = ?', (fp, g)
                ).fetchone():
                    continue
                held = conn.execute(
                    'SELECT owner, claimed FROM claims WHERE fingerprint = ? AND genome = ?',
                    (fp, g),
                ).fetchone()
                if held is None or held[0] == owner or held[1] < now - lease_s:
                    conn.execute(
                        'INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?)', (fp, g, owner, now)
                    )
                    granted.append(k)
            conn.execute('COMMIT')
            return granted

        return self._run(grant) if keys else []

    def release(self, fp: str, keys: Iterable[Iterable[int]], owner: str) -> int:
        """Drops ``owner``'s claims on ``keys``; returns how many it held."""
        rows = [(fp, _key_text(_key(k)), owner) for k in keys]

        def drop(conn: sqlite3.Connection) -> int:
            conn.execute('BEGIN IMMEDIATE')
            before = conn.total_changes
            conn.executemany(
                'DELETE FROM claims WHERE fingerprint = ? AND genome = ? AND owner = ?', rows
            )
            dropped = conn.total_changes - before
            conn.execute('COMMIT')
            return dropped

        return self._run(drop) if rows else 0

    def count(self, fp: str | None = None) -> int:
        """Number of stored records (under ``fp``, or in all)."""
        sql, args = (
            ('SELECT COUNT(*) FROM scores', ())
            if fp is None
            else ('SELECT COUNT(*) FROM scores WHERE fingerprint = ?', (fp,))
        )
        return int(self._run(lambda conn: conn.execute(sql, args).fetchone()[0]))

    def close(self) -> None:
        """Closes this process's connection (reopened on the next use)."""
        with self._lock:
            if self._conn is not None:
                if self._pid == os.getpid():
                    self._conn.close()
                else:
                    _INHERITED.append(self._conn)
            self._conn = None

    def __enter__(self) -> ScoreStore:  # noqa: PYI034 (Python 3.10 has no typing.Self)
        return self

    def __exit__(self, *exc) -> None:
        self.close()
