"""Tests of hwnas_jax.search.store: the SQLite score store shared by processes."""

import math
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from hwnas_jax.errors import UserError
from hwnas_jax.search import store as store_lib
from hwnas_jax.search.store import ScoreStore, fingerprint


def test_round_trip_with_non_finite_floats(tmp_path):
    s = ScoreStore(tmp_path / 'scores.sqlite')
    records = {
        (3, 3, 1, 3, 1, 3): {'score': 2.5, 'loss': 0.125, 'ckas': [0.9, 0.8, 0.8]},
        (0, 0, 0, 0, 0, 0): {
            'score': float('-inf'),
            'loss': float('nan'),
            'ckas': [float('nan'), float('inf'), 1e-300],
        },
        (1, 2, 3, 4, 0, 1): {
            'score': np.float32(0.1),
            'loss': np.float64(1 / 3),
            'ckas': np.array([0.5, 0.25], np.float32),
            'note': {'a': (1, 2)},
        },
    }
    assert s.put_many('fp', records) == 3
    got = s.get_many('fp', [list(k) for k in records] + [(4, 4, 4, 4, 4, 4)])
    assert set(got) == set(records)  # Absent keys are left out; keys come back as tuples.
    assert got[(3, 3, 1, 3, 1, 3)] == records[(3, 3, 1, 3, 1, 3)]
    dead = got[(0, 0, 0, 0, 0, 0)]
    assert dead['score'] == -math.inf and math.isnan(dead['loss'])
    assert math.isnan(dead['ckas'][0]) and dead['ckas'][1:] == [math.inf, 1e-300]
    third = got[(1, 2, 3, 4, 0, 1)]
    assert third['score'] == float(np.float32(0.1))  # Exact float32 value.
    assert third['loss'] == 1 / 3 and third['ckas'] == [0.5, 0.25]
    assert third['note'] == {'a': [1, 2]}
    with pytest.raises(ValueError, match='reserved'):
        s.put_many('fp', {(1,): {'x': {'__float__': 'nan'}}})
    # Stored text is strict JSON.
    with sqlite3.connect(tmp_path / 'scores.sqlite') as raw:
        text = raw.execute(
            'SELECT record FROM scores WHERE genome = ?', ('0,0,0,0,0,0',)
        ).fetchone()[0]
    assert 'NaN' not in text and 'Infinity' not in text and '"__float__":"-inf"' in text
    assert s.get_many('other fingerprint', list(records)) == {}
    assert s.get_many('fp', []) == {}


def test_first_write_wins_unless_overwrite(tmp_path):
    s = ScoreStore(tmp_path / 's.sqlite')
    assert s.put_many('fp', {(1,) * 6: {'score': 1.0}}) == 1
    assert s.put_many('fp', {(1,) * 6: {'score': 2.0}}) == 0
    assert s.get_many('fp', [(1,) * 6])[(1,) * 6]['score'] == 1.0
    assert s.put_many('fp', {(1,) * 6: {'score': 3.0}}, overwrite=True) == 1
    assert ScoreStore(tmp_path / 's.sqlite').get_many('fp', [(1,) * 6])[(1,) * 6]['score'] == 3.0
    assert s.count() == s.count('fp') == 1 and s.count('nope') == 0


def test_many_keys_and_wal(tmp_path):
    path = tmp_path / 'deep' / 'dir' / 's.sqlite'  # Parents are created.
    with ScoreStore(path) as s:
        keys = [tuple(int(v) for v in np.base_repr(i, 5).zfill(6)) for i in range(1500)]
        s.put_many('fp', {k: {'score': float(i)} for i, k in enumerate(keys)})
        got = s.get_many('fp', keys)  # More keys than one SELECT binds.
    assert [got[k]['score'] for k in keys] == list(map(float, range(1500)))
    with sqlite3.connect(path) as raw:
        assert raw.execute('PRAGMA journal_mode').fetchone()[0] == 'wal'


def test_bad_keys_and_fingerprints(tmp_path):
    s = ScoreStore(tmp_path / 's.sqlite')
    with pytest.raises(ValueError, match='sequence of ints'):
        s.put_many('fp', {(1.5, 2): {'score': 1.0}})
    with pytest.raises(ValueError, match='fingerprint'):
        s.put_many('', {(1,): {'score': 1.0}})


def test_fingerprint_is_order_independent_and_sensitive():
    a = fingerprint(
        {'proxy': {'steps': 100, 'beta': 0.8}, 'seed': 0, 'batch': 'ab12', 'sizes': (16, 5)}
    )
    b = fingerprint(
        {
            'sizes': [16, 5],
            'batch': 'ab12',
            'seed': np.int64(0),
            'proxy': {'beta': 0.8, 'steps': 100},
        }
    )
    assert a == b and len(a) == 64 and int(a, 16) >= 0
    assert a != fingerprint(
        {'proxy': {'steps': 101, 'beta': 0.8}, 'seed': 0, 'batch': 'ab12', 'sizes': (16, 5)}
    )


@pytest.mark.parametrize(
    'content', [b'this is not a database at all' * 100, b'SQLite format 3\x00' + b'\xff' * 4000]
)
def test_damaged_file_gives_one_user_error(tmp_path, content):
    path = tmp_path / 'scores.sqlite'
    path.write_bytes(content)
    with pytest.raises(
        UserError,
        match=r'scores\.sqlite.*(not an hwnas_jax score store|'
        r'unusable).*delete it',
    ):
        ScoreStore(path)


def test_foreign_database_and_unopenable_path(tmp_path):
    path = tmp_path / 'other.sqlite'
    with sqlite3.connect(path) as raw:
        raw.execute('CREATE TABLE users (name TEXT)')
    raw.close()
    with pytest.raises(UserError, match=r"other\.sqlite.*another program.*\['users'\]"):
        ScoreStore(path)
    (tmp_path / 'a_dir').mkdir()
    with pytest.raises(UserError, match='a_dir.*cannot open|a_dir.*unusable'):
        ScoreStore(tmp_path / 'a_dir')


def test_reopens_after_fork_without_closing_the_parents_connection(tmp_path, monkeypatch):
    s = ScoreStore(tmp_path / 's.sqlite')
    s.put_many('fp', {(1,): {'score': 1.0}})
    parent = s._conn
    monkeypatch.setattr(store_lib.os, 'getpid', lambda: -42)  # As in a forked child.
    assert s.get_many('fp', [(1,)]) == {(1,): {'score': 1.0}}
    assert s._conn is not parent and parent in store_lib._INHERITED
    parent.execute('SELECT 1')  # Still open.
    store_lib._INHERITED.remove(parent)
    parent.close()
    s.close()


WRITER = textwrap.dedent("""
    import os, sys, time
    from hwnas_jax.search.store import ScoreStore
    path, who, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    # Barrier: both processes create the store and write at the same time.
    open(f'{path}.ready{who}', 'w').close()
    deadline = time.time() + 60
    while not os.path.exists(f'{path}.ready{1 - who}') and time.time() < deadline:
        time.sleep(0.005)
    s = ScoreStore(path)
    for i in range(n):
        # Own keys, one transaction each, plus a key both writers race for.
        s.put_many('fp', {(who, i): {'score': float(i), 'who': who},
                          (9, i): {'score': -1.0, 'who': who}})
        if i % 10 == 0:
            s.get_many('fp', [(1 - who, j) for j in range(i)])
    s.close()
""")


def test_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / 'shared.sqlite')
    n = 200
    procs = [
        subprocess.Popen(
            [sys.executable, '-c', WRITER, path, str(who), str(n)], stderr=subprocess.PIPE
        )
        for who in (0, 1)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    s = ScoreStore(path)
    got = s.get_many('fp', [(w, i) for w in (0, 1, 9) for i in range(n)])
    assert len(got) == 3 * n and s.count('fp') == 3 * n
    for w in (0, 1):
        assert all(got[(w, i)] == {'score': float(i), 'who': w} for i in range(n))
    assert {got[(9, i)]['who'] for i in range(n)} <= {0, 1}


def test_retries_on_lock(tmp_path, monkeypatch):
    path = tmp_path / 's.sqlite'
    s = ScoreStore(path, timeout=0.01)
    monkeypatch.setattr(store_lib.time, 'sleep', lambda _: None)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute('BEGIN IMMEDIATE')  # Holds the write lock.
    with pytest.raises(sqlite3.OperationalError, match='locked'):
        s.put_many('fp', {(1,): {'score': 1.0}})
    calls = []

    def sleep(seconds):
        calls.append(seconds)
        if len(calls) == 2 and blocker.in_transaction:
            blocker.execute('COMMIT')  # The lock goes away: the next attempt succeeds.

    monkeypatch.setattr(store_lib.time, 'sleep', sleep)
    assert blocker.in_transaction  # Still holding the lock.
    assert s.put_many('fp', {(1,): {'score': 1.0}}) == 1
    assert len(calls) == 2
    blocker.close()


def test_claims_grant_each_key_once_until_written_released_or_expired(tmp_path):
    a = ScoreStore(tmp_path / 's.sqlite')
    b = ScoreStore(tmp_path / 's.sqlite')  # Another process's connection.
    a.put_many('fp', {(0, 0): {'score': 1.0}})
    assert a.claim('fp', [(0, 0), (1, 1), (2, 2)], 'A', lease_s=60) == [(1, 1), (2, 2)]
    assert b.claim('fp', [(2, 2), (3, 3)], 'B', lease_s=60) == [(3, 3)]
    assert a.claim('fp', [(2, 2)], 'A', lease_s=60) == [(2, 2)]  # Renewed, still A's.
    assert a.claim('fp', [(2, 2)], 'A', lease_s=60) == [(2, 2)]
    assert a.claim('other', [(2, 2)], 'B', lease_s=60) == [(2, 2)]  # Fingerprints apart.
    a.put_many('fp', {(1, 1): {'score': 2.0}})  # Written: its claim goes with it.
    assert b.claim('fp', [(1, 1)], 'B', lease_s=60) == []  # Stored: nobody trains it.
    assert a.release('fp', [(2, 2), (3, 3)], 'A') == 1  # Only its own.
    assert b.claim('fp', [(2, 2)], 'B', lease_s=60) == [(2, 2)]
    assert a.claim('fp', [(2, 2), (3, 3)], 'A', lease_s=60) == []
    assert a.claim('fp', [(2, 2), (3, 3)], 'A', lease_s=0) == [(2, 2), (3, 3)]  # Expired.
