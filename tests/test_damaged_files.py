"""Damaged, foreign or tampered data files end in one UserError naming the file and the fix.

Covers the HW-NAS-Bench cost tables (a user table, ``config.hardware.table``, and the packaged
one) and the packaged NAS-Bench-201 index. Every case must give a `UserError` (which launch.py
prints as one ``error:`` line) whose message names the file and says what to do, with no
parser traceback attached and never numpy's advice to load the file with ``allow_pickle``.
Damaged copies live in ``tmp_path``; the packaged paths are redirected to them.
"""

import io
import json
import pathlib
import zipfile

import numpy as np
import pytest

from hwnas_jax import fileio
from hwnas_jax import hardware as hw
from hwnas_jax.errors import UserError
from hwnas_jax.hardware import tables
from hwnas_jax.spaces import nb201

REAL_TABLE = fileio.asset_path(tables.PACKAGED_NAME)


def _flip(raw: bytes, pos: int, bit: int = 0) -> bytes:
    b = bytearray(raw)
    b[pos] ^= 1 << bit
    return bytes(b)


def _pickled_npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([{'a': 1}], dtype=object), allow_pickle=True)  # Written, never read.
    return buf.getvalue()


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _packaged_members() -> dict[str, np.ndarray]:
    with np.load(REAL_TABLE, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _without_a_column() -> bytes:
    members = _packaged_members()
    del members['cifar10__pixel3_latency']
    return _npz(**members)


def _pickled_npz() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w') as z:
        z.writestr('metadata.npy', _pickled_npy())
        z.writestr('genomes.npy', _pickled_npy())
    return buf.getvalue()


_RANDOM = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()

# name -> (bytes of the packaged file) -> bytes of the damaged copy, and a phrase of the reason.
TABLE_DAMAGE = {
    'empty': (lambda raw: b'', 'damaged'),
    'truncated_half': (lambda raw: raw[: len(raw) // 2], 'damaged'),
    'truncated_tail': (lambda raw: raw[:-10], 'damaged'),
    'bit_flip_data': (lambda raw: _flip(raw, len(raw) // 2, 3), 'damaged'),
    'bit_flip_directory': (lambda raw: _flip(raw, len(raw) - 22), 'damaged'),  # EOCD signature
    'random_bytes': (lambda raw: _RANDOM, 'damaged'),
    'pickled_npz': (lambda raw: _pickled_npz(), 'pickled objects'),
    'npy_not_npz': (lambda raw: _npy(np.zeros(3)), 'a single .npy array, not an .npz table'),
    'foreign_npz': (lambda raw: _npz(weights=np.zeros(3)), "lacks the arrays ['metadata', "),
    'lacks_a_column': (lambda raw: _without_a_column(), 'differ from those the metadata lists'),
}


def _check(err: pytest.ExceptionInfo, path: pathlib.Path, *needles: str) -> str:
    msg = str(err.value)
    assert type(err.value) is UserError, type(err.value)
    assert str(path) in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    assert 'allow_pickle' not in msg and 'unsafe' not in msg, msg
    assert '\n' not in msg, msg  # One line for launch.py's `error:`.
    chained = err.value.__cause__ or (
        None if err.value.__suppress_context__ else err.value.__context__
    )
    assert chained is None, f'the traceback of {chained!r} would be shown'
    return msg


@pytest.fixture
def packaged_copy(tmp_path, monkeypatch):
    """Path the packaged table is read from during the test (write the damaged copy there)."""
    path = tmp_path / 'hwnasbench_nb201.npz'
    monkeypatch.setattr(tables, 'packaged_path', lambda: str(path))
    tables.clear_cache()
    yield path
    tables.clear_cache()


@pytest.mark.parametrize('damage', sorted(TABLE_DAMAGE))
def test_damaged_user_table(tmp_path, damage):
    make, reason = TABLE_DAMAGE[damage]
    path = tmp_path / f'{damage}.npz'
    path.write_bytes(make(REAL_TABLE.read_bytes()))
    with pytest.raises(UserError) as e:
        hw.load_table(path)
    _check(e, path, reason, 'config.hardware.table', 'tools/convert_hwnasbench.py')
    # The same through the cost entry point that config.hardware.table feeds.
    with pytest.raises(UserError) as e:
        hw.cost(nb201.indices_to_genomes(0), 'latency', device='pixel3', table=str(path))
    _check(e, path, reason)


@pytest.mark.parametrize('damage', sorted(TABLE_DAMAGE))
def test_damaged_packaged_table(packaged_copy, damage):
    make, reason = TABLE_DAMAGE[damage]
    packaged_copy.write_bytes(make(REAL_TABLE.read_bytes()))
    with pytest.raises(UserError) as e:
        hw.load_table()
    _check(e, packaged_copy, reason, 'packaged', 'reinstall hwnas_jax')


def test_missing_tables(tmp_path, packaged_copy):
    path = tmp_path / 'typo.npz'
    with pytest.raises(UserError) as e:
        hw.load_table(path)
    _check(e, path, 'not found', 'config.hardware.table')
    with pytest.raises(UserError) as e:
        hw.load_table()
    _check(e, packaged_copy, 'not found', 'reinstall hwnas_jax')
    with pytest.raises(UserError) as e:  # A folder where the file should be.
        hw.load_table(tmp_path)
    _check(e, tmp_path, 'cannot read')


def test_packaged_table_changed_consistently(packaged_copy):
    """Edited data with a recomputed digest is a valid user table but not the packaged one."""
    members = _packaged_members()
    members['cifar10__pixel3_latency'] = members['cifar10__pixel3_latency'] * 0.5
    meta = json.loads(members['metadata'].tobytes())
    meta['data_sha256'] = tables.data_digest(members)
    members['metadata'] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    packaged_copy.write_bytes(_npz(**members))
    assert hw.load_table(str(packaged_copy)).digest == meta['data_sha256']
    with pytest.raises(UserError) as e:
        hw.load_table()
    _check(
        e,
        packaged_copy,
        'packaged HW-NAS-Bench table changed',
        tables.PACKAGED_DATA_SHA256,
        'reinstall hwnas_jax',
    )


def test_packaged_table_still_loads_after_the_tests():
    tables.clear_cache()
    assert hw.load_table().digest == tables.PACKAGED_DATA_SHA256


# -- the NAS-Bench-201 index asset --------------------------------------------------------------


@pytest.fixture
def index_copy(tmp_path, monkeypatch):
    """Path the packaged NB201 index is read from during the test."""
    path = tmp_path / 'nb201_index.npy'
    real = nb201._index_asset_path().read_bytes()
    monkeypatch.setattr(nb201, '_index_asset_path', lambda: path)
    nb201._index_tables.cache_clear()
    yield path, real
    nb201._index_tables.cache_clear()


INDEX_DAMAGE = {
    'empty': (lambda raw: b'', 'damaged'),
    'truncated': (lambda raw: raw[: len(raw) // 2], 'damaged'),
    'header_truncated': (lambda raw: raw[:40], 'damaged'),
    'bit_flip_data': (lambda raw: _flip(raw, len(raw) - 100, 2), 'changed (content sha256'),
    'bit_flip_header': (lambda raw: _flip(raw, 10, 1), 'damaged'),
    'random_bytes': (lambda raw: _RANDOM, 'damaged'),
    'pickled': (lambda raw: _pickled_npy(), 'damaged (not a plain array)'),
    'wrong_dtype': (lambda raw: _npy(np.arange(15625, dtype=np.int32)), 'expected int16 [15625]'),
    'npz': (lambda raw: _npz(codes=np.arange(3)), 'got an npz'),
    'permuted': (lambda raw: _npy(np.arange(15625, dtype='<i2')), 'changed (content sha256'),
}


@pytest.mark.parametrize('damage', sorted(INDEX_DAMAGE))
def test_damaged_nb201_index(index_copy, damage):
    path, real = index_copy
    make, reason = INDEX_DAMAGE[damage]
    path.write_bytes(make(real))
    with pytest.raises(UserError) as e:
        nb201.to_index((0, 1, 2, 3, 4, 0))
    _check(e, path, 'NAS-Bench-201 index', reason, 'reinstall hwnas_jax')


def test_missing_nb201_index(index_copy):
    path, _ = index_copy
    with pytest.raises(UserError) as e:
        nb201.indices_to_genomes(np.arange(3))
    _check(e, path, 'missing', 'reinstall hwnas_jax')


def test_nb201_index_still_loads_after_the_tests():
    nb201._index_tables.cache_clear()
    assert nb201.from_index(nb201.to_index((3, 3, 4, 1, 3, 1))) == (3, 3, 4, 1, 3, 1)
