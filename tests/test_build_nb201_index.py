"""Tests of tools/build_nb201_index.py, the converter that writes the NAS-Bench-201 index asset."""

import csv
import importlib.resources
import importlib.util
import pathlib

import numpy as np
import pytest

from hwnas_jax.spaces import nb201

TOOL = pathlib.Path(__file__).resolve().parents[1] / 'tools' / 'build_nb201_index.py'
PLACES = 5 ** np.arange(5, -1, -1)


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('build_nb201_index', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _all_arch_strings(order):
    """Arch strings of every genome, genome code `order[i]` at row i (independent encoder)."""
    out = []
    for code in order:
        digits = [(int(code) // int(p)) % 5 for p in PLACES]
        ops = [nb201.OPS[d] for d in digits]
        out.append(f'|{ops[0]}~0|+|{ops[1]}~0|{ops[2]}~1|+|{ops[3]}~0|{ops[4]}~1|{ops[5]}~2|')
    return out


def _write_csv(path, rows, header=('index', 'arch_str', 'other')):
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for i, s in rows:
            writer.writerow([i, s, 1.5][: len(header)])
    return path


def test_builds_a_permuted_index(tool, tmp_path):
    order = np.random.default_rng(0).permutation(nb201.NUM_ARCHS)
    rows = list(enumerate(_all_arch_strings(order)))
    rows = rows[::-1]  # Row order does not matter; the index column does.
    path = _write_csv(tmp_path / 'archs.csv', rows)
    out = tmp_path / 'sub' / 'index.npy'
    assert tool.main([str(path), '--out', str(out)]) == 0
    codes = np.load(out, allow_pickle=False)
    assert codes.dtype == np.dtype('<i2') and codes.shape == (nb201.NUM_ARCHS,)
    np.testing.assert_array_equal(codes, order)
    assert list(tmp_path.glob('sub/*.tmp')) == []


@pytest.mark.parametrize(
    'mutate, message',
    [
        (lambda rows: rows[:-1], 'expected 15625 rows'),
        (lambda rows: rows + [(5, rows[0][1])], 'appears twice'),
        (lambda rows: [(0, rows[1][1])] + rows[1:], 'same architecture'),
        (lambda rows: [('x', rows[0][1])] + rows[1:], 'not an integer'),
        (lambda rows: [(15625, rows[0][1])] + rows[1:], 'outside'),
        (lambda rows: [(0, '|none~0|')] + rows[1:], 'malformed NAS-Bench-201 arch string'),
    ],
)
def test_rejects_bad_tables(tool, mutate, message):
    rows = list(enumerate(_all_arch_strings(np.arange(nb201.NUM_ARCHS))))
    with pytest.raises(ValueError, match=message):
        tool.build_index(mutate(rows))


def test_rejects_missing_columns(tool, tmp_path):
    path = _write_csv(tmp_path / 'bad.csv', [(0, 'x')], header=('index', 'arch'))
    with pytest.raises(ValueError, match='missing column'):
        tool.read_rows(path)


def test_packaged_asset_matches_the_pinned_hash(tool):
    ref = importlib.resources.files('hwnas_jax') / 'assets' / 'nb201_index.npy'
    with ref.open('rb') as f:
        codes = np.load(f, allow_pickle=False)
    assert tool.content_sha256(codes) == nb201._INDEX_SHA256


@pytest.mark.shared
def test_rebuilding_from_the_shared_csv_reproduces_the_asset(tool, shared_data, tmp_path):
    path = shared_data / 'hw-nas-bench' / 'hwnasbench_nb201_cifar10_merged.csv'
    out = tmp_path / 'nb201_index.npy'
    tool.main([str(path), '--out', str(out)])
    ref = importlib.resources.files('hwnas_jax') / 'assets' / 'nb201_index.npy'
    with ref.open('rb') as f:
        np.testing.assert_array_equal(
            np.load(out, allow_pickle=False), np.load(f, allow_pickle=False)
        )


def test_damaged_inputs_give_one_error_line(tool, tmp_path, capsys):
    missing = tmp_path / 'nope.csv'
    assert tool.main([str(missing), '--out', str(tmp_path / 'o.npy')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and str(missing) in err[0], err
    rows = list(enumerate(_all_arch_strings(np.arange(nb201.NUM_ARCHS))))
    truncated = _write_csv(tmp_path / 'trunc.csv', rows)
    truncated.write_bytes(truncated.read_bytes()[:-30])  # The last row loses its arch_str.
    assert tool.main([str(truncated), '--out', str(tmp_path / 'o.npy')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and str(truncated) in err[0], err
    short = _write_csv(tmp_path / 'short.csv', rows[:10])
    assert tool.main([str(short), '--out', str(tmp_path / 'o.npy')]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f'error: {short}: expected 15625 rows, got 10'), err
    assert not (tmp_path / 'o.npy').exists()
