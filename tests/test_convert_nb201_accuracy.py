"""Tests of tools/convert_nb201_accuracy.py: accuracy CSV -> the npz nb201_truth reads."""

import csv
import functools
import importlib.util
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from hwnas_jax import fileio
from hwnas_jax.errors import UserError
from hwnas_jax.spaces import nb201, nb201_truth

REPO = pathlib.Path(__file__).resolve().parents[1]
TOOL = REPO / 'tools' / 'convert_nb201_accuracy.py'


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('convert_nb201_accuracy', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def _template() -> tuple[dict[str, np.ndarray], tuple[dict[str, str], ...]]:
    rng = np.random.default_rng(0)
    values = {c: rng.uniform(0, 100, nb201.NUM_ARCHS) for c in nb201_truth.COLUMNS}
    genomes = nb201.indices_to_genomes(np.arange(nb201.NUM_ARCHS))
    rows = tuple(
        {
            'index': str(i),
            'arch_str': nb201.to_arch_str(g),
            **{c: repr(float(values[c][i])) for c in nb201_truth.COLUMNS},
        }
        for i, g in enumerate(genomes)
    )
    return values, rows


def write_csv(path, edit=None):
    """A CSV in the shared file's layout with random accuracies; edit(rows) mutates the rows.

    Returns:
      The accuracies written, {column: float64 [15625]}.
    """
    values, template = _template()
    rows = [dict(r) for r in template]
    if edit is not None:
        edit(rows)
    with open(path, 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return values


def test_converts_exactly(tool, tmp_path):
    values = write_csv(tmp_path / 'acc.csv')
    digest = tool.convert(tmp_path / 'acc.csv', tmp_path / 'acc.npz')
    loaded = nb201_truth.load(tmp_path / 'acc.npz')
    for c in nb201_truth.COLUMNS:
        np.testing.assert_array_equal(loaded['columns'][c], values[c])  # float64, unchanged.
    meta = loaded['metadata']
    assert meta['data_sha256'] == digest and meta['input']['name'] == 'acc.csv'
    assert 'NAS-Bench-201' in meta['source'] and 'MIT' in meta['licence']
    with np.load(tmp_path / 'acc.npz', allow_pickle=False) as z:  # No pickled objects.
        assert sorted(z.files) == sorted([*nb201_truth.COLUMNS, 'genomes', 'metadata'])


def edit_row(i, **fields):
    def edit(rows):
        rows[i].update(fields)

    return edit


@pytest.mark.parametrize(
    'edit,match',
    [
        (edit_row(5, index='6'), r'acc\.csv:7: index .6., expected 5'),
        (
            edit_row(0, arch_str=nb201.to_arch_str(nb201.from_index(1))),
            r':2: arch_str .* not index 0',
        ),
        (edit_row(3, arch_str='|conv~0|'), r'acc\.csv:5: malformed'),
        (edit_row(9, cifar100_200ep_xtest='101'), r':11: cifar100_200ep_xtest = .101. is not'),
        (edit_row(9, imagenet16_200ep_xvalid='nan'), r':11: imagenet16_200ep_xvalid'),
        (edit_row(9, imagenet16_200ep_xvalid=''), r':11: imagenet16_200ep_xvalid'),
        (lambda rows: rows.pop(), r'15624 rows, expected one per architecture'),
        (
            lambda rows: [r.pop('cifar10_200ep_oritest') for r in rows],
            r"lacks the columns \['cifar10_200ep_oritest'\]",
        ),
    ],
)
def test_bad_csv_gives_one_user_error(tool, tmp_path, edit, match):
    write_csv(tmp_path / 'acc.csv', edit=edit)
    with pytest.raises(UserError, match=match):
        tool.convert(tmp_path / 'acc.csv', tmp_path / 'acc.npz')
    assert not (tmp_path / 'acc.npz').exists()


def test_command_line(tmp_path):
    write_csv(tmp_path / 'acc.csv')
    out = tmp_path / 'acc.npz'
    run = subprocess.run(
        [sys.executable, str(TOOL), '--csv', str(tmp_path / 'acc.csv'), '--out', str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.strip() == nb201_truth.load(out)['metadata']['data_sha256']
    run = subprocess.run(
        [sys.executable, str(TOOL), '--csv', str(tmp_path / 'none.csv'), '--out', str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 2
    assert run.stderr.startswith('error: ') and 'none.csv' in run.stderr
    assert 'Traceback' not in run.stderr


@pytest.mark.shared
def test_shared_csv_reproduces_the_packaged_file(tool, tmp_path, shared_data):
    csv_path = shared_data / 'nb201-accuracy' / 'nb201_accuracy_200ep.csv'
    digest = tool.convert(csv_path, tmp_path / 'acc.npz')
    assert digest == nb201_truth.PACKAGED_DATA_SHA256
    meta = nb201_truth.load()['metadata']
    assert meta['input']['sha256'] == fileio.sha256_file(csv_path)
    assert meta['input']['bytes'] == csv_path.stat().st_size
