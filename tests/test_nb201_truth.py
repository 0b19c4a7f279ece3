"""Tests of hwnas_jax.spaces.nb201_truth: the packaged NB201 accuracies and best_feasible."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from hwnas_jax import fileio, spaces
from hwnas_jax.errors import UserError
from hwnas_jax.spaces import nb201, nb201_costs
from hwnas_jax.spaces import nb201_truth as truth

# Published NAS-Bench-201 optima and space means (shared/data/nb201-accuracy/README.md).
OPTIMA = {
    'cifar10': (94.37, 6111, 87.06),
    'cifar100': (73.51, 9930, 61.39),
    'ImageNet16-120': (47.31, 857, 33.57),
}


@pytest.mark.parametrize('dataset', truth.DATASETS)
def test_packaged_optima_and_means(dataset):
    best, index, mean = OPTIMA[dataset]
    acc = truth.all_accuracies(dataset, 'test')
    assert acc.shape == (15625,) and acc.dtype == np.float64
    assert int(np.argmax(acc)) == index
    assert round(float(acc.max()), 2) == best
    assert round(float(acc.mean()), 2) == mean
    assert truth.accuracy(nb201.from_index(index), dataset) == acc.max()


def test_protocol_columns():
    assert truth.protocol('cifar10', 'test') == 'cifar10_200ep_oritest'
    assert truth.protocol('cifar10', 'valid') == 'cifar10_valid_200ep_xvalid'
    assert truth.protocol('cifar100', 'valid') == 'cifar100_200ep_xvalid'
    assert truth.protocol('ImageNet16-120', 'test') == 'imagenet16_200ep_xtest'
    assert set(truth.PROTOCOLS.values()) | {'cifar10_valid_200ep_oritest'} == set(truth.COLUMNS)


def test_degenerate_architectures_are_chance():
    # All-'none' cell: no path from input to output.
    assert truth.accuracy([0] * 6, 'cifar10') == pytest.approx(10.0)
    assert truth.accuracy([0] * 6, 'cifar100') == pytest.approx(1.0)
    assert truth.accuracy([0] * 6, 'ImageNet16-120') == pytest.approx(100 / 120)


def test_accuracy_batches_and_indices():
    genomes = nb201.random_genomes(np.random.default_rng(0), 12).reshape(3, 4, 6)
    got = truth.accuracy(genomes, 'cifar100', 'valid')
    assert got.shape == (3, 4)
    idx = nb201.genomes_to_indices(genomes)
    np.testing.assert_array_equal(got, truth.column('cifar100_200ep_xvalid')[idx])
    assert np.ndim(truth.accuracy(genomes[0, 0])) == 0


@pytest.mark.parametrize(
    'dataset,split,match',
    [
        ('imagenet', 'test', "unknown NAS-Bench-201 dataset 'imagenet'.*ImageNet16-120"),
        ('cifar10', 'train', r"unknown NAS-Bench-201 split 'train'.*\['test', 'valid'\]"),
    ],
)
def test_unknown_names(dataset, split, match):
    with pytest.raises(UserError, match=match):
        truth.accuracy([1] * 6, dataset, split)
    with pytest.raises(UserError, match=match):
        truth.best_feasible((np.zeros((1, 15625)), [1.0]), dataset, split)


def test_packaged_file_is_safe_and_digested():
    path = fileio.asset_path(truth.PACKAGED_NAME)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays['metadata'].tobytes())
    assert meta['data_sha256'] == truth.PACKAGED_DATA_SHA256 == truth.data_digest(arrays)
    notice = fileio.asset_path('NOTICE-nb201-accuracy.txt').read_text()
    assert 'Copyright (c) since 2020 Xuanyi Dong' in notice and 'MIT License' in notice
    assert 'NASGraph-Public' in notice and 'nas-without-training' in notice
    assert truth.PACKAGED_DATA_SHA256 in notice


def _copy(tmp_path, **changes):
    """A copy of the packaged file with some arrays replaced (digest left as recorded).

    Each copy gets a new name: the loader caches by path, size and modification time.
    """
    with np.load(fileio.asset_path(truth.PACKAGED_NAME), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    out = tmp_path / f'acc{len(list(tmp_path.iterdir()))}.npz'
    np.savez(out, **arrays)
    return out


def test_damaged_files_raise_one_user_error(tmp_path):
    good = _copy(tmp_path)
    got = truth.load(good)['columns']['cifar10_200ep_oritest']
    np.testing.assert_array_equal(got, truth.column('cifar10_200ep_oritest'))
    col = truth.column('cifar10_200ep_oritest').copy()
    col[0] += 0.01
    with pytest.raises(UserError, match=r'acc\d+\.npz.*content sha256'):
        truth.load(_copy(tmp_path, cifar10_200ep_oritest=col))
    col[0] = 101.0
    with pytest.raises(UserError, match=r'acc\d+\.npz.*percentages'):
        truth.load(_copy(tmp_path, cifar10_200ep_oritest=col))
    with pytest.raises(UserError, match=r'acc\d+\.npz.*float64'):
        truth.load(_copy(tmp_path, cifar10_200ep_oritest=col.astype(np.float32)))
    junk = tmp_path / 'junk.npz'
    junk.write_bytes(b'not a zip file')
    with pytest.raises(UserError, match='junk.npz.*damaged'):
        truth.load(junk)
    with pytest.raises(UserError, match='missing.npz.*not found'):
        truth.load(tmp_path / 'missing.npz')


def test_modified_packaged_file_is_refused(tmp_path, monkeypatch):
    # A self-consistent file that is not the release's: its digest differs from the pinned one.
    columns = {c: truth.column(c).copy() for c in truth.COLUMNS}
    columns['cifar10_200ep_oritest'][0] = 50.0
    arrays = truth.encode(columns, nb201.indices_to_genomes(np.arange(15625)), {})
    np.savez(tmp_path / truth.PACKAGED_NAME, **arrays)
    assert truth.load(tmp_path / truth.PACKAGED_NAME)['columns']['cifar10_200ep_oritest'][0] == 50
    monkeypatch.setattr(fileio, 'asset_path', lambda name: tmp_path / name)
    with pytest.raises(UserError, match='packaged NAS-Bench-201 accuracies changed.*reinstall'):
        truth.load()


def test_wrong_index_order_is_refused():
    genomes = nb201.indices_to_genomes(np.arange(15625))
    columns = {c: truth.column(c) for c in truth.COLUMNS}
    with pytest.raises(UserError, match='index order.*first at index 0'):
        truth.encode(columns, genomes[::-1], {})


def _exhaustive_best(costs, limits, acc):
    """Independent reference: a Python loop over all architectures."""
    best, best_acc = None, -1.0
    for i in range(acc.size):
        ok = all(np.isfinite(costs[c, i]) and costs[c, i] <= limits[c] for c in range(len(limits)))
        if ok and acc[i] > best_acc:
            best, best_acc = i, acc[i]
    return best


def test_best_feasible_against_a_loop():
    rng = np.random.default_rng(0)
    costs = rng.uniform(0, 10, size=(2, 15625))
    costs[1, rng.integers(0, 15625, 500)] = np.inf
    limits = np.array([3.0, 6.0])
    acc = truth.all_accuracies('cifar100', 'valid')
    got = truth.best_feasible((costs, limits), 'cifar100', 'valid')
    want = _exhaustive_best(costs, limits, acc)
    assert got['index'] == want and got['accuracy'] == acc[want]
    assert got['genome'] == nb201.indices_to_genomes(want).tolist()
    assert nb201.from_arch_str(got['arch_str']) == tuple(got['genome'])
    assert got['costs'] == costs[:, want].tolist()
    feasible = (costs[0] <= 3) & (costs[1] <= 6)
    assert got['num_feasible'] == int(feasible.sum())
    assert truth.best_feasible((costs, [-1.0, 6.0])) is None


def test_best_feasible_unconstrained_and_ties():
    costs = np.zeros((1, 15625))
    assert truth.best_feasible((costs, [0.0]), 'ImageNet16-120')['index'] == 857
    # Degenerate cells tie at exactly 10 % on CIFAR-10: the lowest index wins.
    acc = truth.all_accuracies('cifar10')
    ten = np.flatnonzero(acc == 10.0)
    assert ten.size > 1
    only_ten = np.where(acc == 10.0, 0.0, 1.0)[None]
    assert truth.best_feasible((only_ten, [0.5]))['index'] == ten[0]
    with pytest.raises(ValueError, match=r'costs must be \[C, 15625\]'):
        truth.best_feasible((np.zeros((2, 10)), [1.0, 1.0]))


def test_best_feasible_with_the_objective():
    from configs import base
    from hwnas_jax.search.objective import Objective

    config = base.get_config()
    config.hardware.metric, config.hardware.limit = 'flops', 100.0
    objective = Objective(config, spaces.make(config))
    got = truth.best_feasible(objective, 'cifar10', 'test')
    flops = nb201_costs.flops(nb201.indices_to_genomes(np.arange(15625)))
    want = _exhaustive_best(flops[None], [100.0], truth.all_accuracies('cifar10'))
    assert got['index'] == want
    assert got['costs'][0] == pytest.approx(flops[want]) and got['costs'][0] <= 100


def test_numpy_only():
    code = (
        'import sys; from hwnas_jax.spaces import nb201_truth as t; t.accuracy([3] * 6); '
        "assert 'jax' not in sys.modules, sorted(m for m in sys.modules if 'jax' == m[:3])"
    )
    subprocess.run([sys.executable, '-c', code], check=True)


@pytest.mark.shared
def test_packaged_equals_the_shared_csv(shared_data):
    path = shared_data / 'nb201-accuracy' / 'nb201_accuracy_200ep.csv'
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    for c in truth.COLUMNS:
        np.testing.assert_array_equal(truth.column(c), [float(r[c]) for r in rows])
    licence = (shared_data / 'nb201-accuracy' / 'LICENSE-NAS-Bench-201-MIT.txt').read_text()
    assert licence.strip() in fileio.asset_path('NOTICE-nb201-accuracy.txt').read_text()
