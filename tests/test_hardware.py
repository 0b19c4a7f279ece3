"""Tests of hwnas_jax.hardware: packaged HW-NAS-Bench table, cost(), missing values, errors."""

import dataclasses
import io
import json
import logging
import pathlib
import time
import types
import zipfile

import numpy as np
import pytest

from hwnas_jax import hardware as hw
from hwnas_jax.errors import UserError
from hwnas_jax.hardware import predict, tables
from hwnas_jax.spaces import nb201, nb201_costs

# HW-NAS-Bench README / example.ipynb output, NAS-Bench-201 index 0 on cifar10 (exact).
GOLDEN_CIFAR10_ARCH0 = {
    'edgegpu_latency': 5.807418537139893,
    'edgegpu_energy': 24.226614330768584,
    'raspi4_latency': 10.481976820010459,
    'edgetpu_latency': 0.9571811309997429,
    'pixel3_latency': 3.6058499999999998,
    'eyeriss_latency': 3.645620000000001,
    'eyeriss_energy': 0.6872827644999999,
    'eyeriss_arithmetic_intensity': 6.289297634665844,
    'fpga_latency': 2.57296,
    'fpga_energy': 18.01072,
}
DEVICE_PAIRS = [(m, d) for d in hw.DEVICES for m in hw.DEVICE_HAS[d]]


def split(column: str) -> tuple[str, str]:
    """'eyeriss_arithmetic_intensity' -> ('arithmetic_intensity', 'eyeriss')."""
    device, metric = column.split('_', 1)
    return metric, device


def golden_rows(shared_data: pathlib.Path) -> dict[tuple[str, int], dict[str, float]]:
    raw = json.loads(
        (shared_data / 'hw-nas-bench' / 'hwnasbench_readme_golden_arch0-2.json').read_text()
    )
    out = {}
    for key, row in raw.items():
        dataset, index = key.split('|')
        out[(dataset, int(index))] = {m: v for m, v in row.items() if m in tables.TABLE_METRICS}
    return out


def first_missing(column: str, *, want_missing: bool = True) -> int:
    col = hw.load_table().column('cifar10', column)
    return int(np.flatnonzero(np.isnan(col) == want_missing)[0])


# -- packaged table ---------------------------------------------------------------------------


def test_packaged_table_golden_arch0():
    genome = nb201.indices_to_genomes(0)
    for column, value in GOLDEN_CIFAR10_ARCH0.items():
        metric, device = split(column)
        assert hw.cost(genome, metric, device=device) == value, column


@pytest.mark.shared
def test_packaged_table_golden_readme_rows(shared_data):
    for (dataset, index), row in golden_rows(shared_data).items():
        if dataset != 'cifar10':
            continue
        genome = nb201.indices_to_genomes(index)
        for column, value in row.items():
            metric, device = split(column)
            assert hw.cost(genome, metric, device=device) == value, (index, column)


def test_packaged_table_contents():
    t = hw.load_table()
    assert t.datasets == ('cifar10',)
    assert t.metrics('cifar10') == tables.TABLE_METRICS
    assert t.digest == tables.PACKAGED_DATA_SHA256
    known = {m: int(np.sum(~np.isnan(t.column('cifar10', m)))) for m in tables.TABLE_METRICS}
    assert known['raspi4_latency'] == known['fpga_latency'] == tables.NUM_ARCHS
    assert known['edgegpu_latency'] == 12933
    assert known['edgetpu_latency'] == 12933 - 3825  # -1.0 sentinel stored as NaN.
    assert known['edgegpu_energy'] == 12555
    for m in tables.TABLE_METRICS:
        col = t.column('cifar10', m)
        assert col.dtype == np.float64 and not col.flags.writeable
        assert np.all(col[~np.isnan(col)] > 0)
    np.testing.assert_array_equal(t.genomes, nb201.indices_to_genomes(np.arange(15625)))
    meta = hw.describe()
    assert meta['units']['edgegpu_latency'] == 'ms' and meta['units']['fpga_energy'] == 'mJ'
    assert 'MIT' in meta['licence'] and len(meta['inputs'][0]['sha256']) == 64


def test_packaged_assets_present():
    path = pathlib.Path(tables.packaged_path())
    assert path.stat().st_size < 1_000_000
    notice = path.parent / 'NOTICE-hwnasbench.txt'
    text = notice.read_text()
    assert 'MIT License' in text and 'GaTech-EIC' in text and tables.PACKAGED_DATA_SHA256 in text


def test_load_is_fast_and_cached():
    tables.clear_cache()
    t0 = time.perf_counter()
    first = hw.load_table()
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = hw.load_table()
    warm = time.perf_counter() - t0
    assert first is again
    assert cold < 0.5, cold  # ~10 ms on a laptop core; generous for a loaded CI machine.
    assert warm < 1e-3, warm


def test_available_and_datasets():
    avail = hw.available()
    assert avail['latency'] == hw.DEVICES
    assert avail['energy'] == ('edgegpu', 'eyeriss', 'fpga')
    assert avail['arithmetic_intensity'] == ('eyeriss',)
    for m in hw.NETWORK_METRICS:
        assert avail[m] == ()
    assert set(avail) == set(hw.METRICS)
    assert set(hw.UNITS) == set(hw.METRICS)
    assert hw.datasets() == ('cifar10',)
    assert hw.coverage('latency', device='edgegpu') == (12933, 15625)


# -- cost(): shapes and vectorisation ---------------------------------------------------------


@pytest.mark.parametrize('metric,device', DEVICE_PAIRS + [(m, None) for m in hw.NETWORK_METRICS])
def test_vectorised_equals_scalar(metric, device):
    genomes = nb201.random_genomes(np.random.default_rng(0), 40)
    batch = hw.cost(genomes, metric, device=device, missing='infeasible')
    assert batch.shape == (40,) and batch.dtype == np.float64
    for g, value in zip(genomes, batch, strict=True):
        single = hw.cost(g, metric, device=device, missing='infeasible')
        assert single.shape == () and single == value
        as_list = hw.cost(list(map(int, g)), metric, device=device, missing='infeasible')
        assert as_list == value
    nested = hw.cost(genomes.reshape(4, 10, 6), metric, device=device, missing='infeasible')
    np.testing.assert_array_equal(nested, batch.reshape(4, 10))


def test_table_lookup_matches_index():
    idx = np.array([0, 1, 2, 77, 15624])
    got = hw.cost(nb201.indices_to_genomes(idx), 'latency', device='pixel3')
    np.testing.assert_array_equal(got, hw.load_table().column('cifar10', 'pixel3_latency')[idx])


def test_network_metrics():
    genomes = nb201.random_genomes(np.random.default_rng(1), 30)
    for dataset, classes, res in (
        ('cifar10', 10, 32),
        ('cifar100', 100, 32),
        ('ImageNet16-120', 120, 16),
    ):
        flops = nb201_costs.flops(genomes, num_classes=classes, resolution=res)
        params = nb201_costs.num_params(genomes, num_classes=classes)
        acts = nb201_costs.activation_elements(genomes, num_classes=classes, resolution=res)
        np.testing.assert_array_equal(hw.cost(genomes, 'flops', dataset=dataset), flops)
        np.testing.assert_allclose(hw.cost(genomes, 'params', dataset=dataset), params, rtol=1e-15)
        size = hw.cost(genomes, 'model_size', dataset=dataset)
        np.testing.assert_array_equal(size, 4 * np.rint(params * 1e6))
        assert np.all(size == np.round(size))
        np.testing.assert_allclose(
            hw.cost(genomes, 'compute_intensity', dataset=dataset),
            flops * 1e6 / (4 * (params * 1e6 + acts)),
            rtol=1e-12,
        )
    # Network metrics need no table column: also fine for datasets the packaged table lacks.
    assert hw.cost(genomes[0], 'flops', device='', dataset='cifar100') > 0


# -- missing values ---------------------------------------------------------------------------


def test_missing_error_names_architectures_and_policies():
    idx = first_missing('edgegpu_latency')
    genomes = nb201.indices_to_genomes(np.array([0, idx]))
    with pytest.raises(UserError) as e:
        hw.cost(genomes, 'latency', device='edgegpu')
    msg = str(e.value)
    assert f'[{idx}]' in msg and 'edgegpu' in msg
    assert "missing='infeasible'" in msg and "missing='predict'" in msg


def test_edgetpu_sentinel_is_never_a_number():
    col = hw.load_table().column('cifar10', 'edgetpu_latency')
    assert not np.any(col == -1.0)
    genomes = nb201.indices_to_genomes(np.arange(15625))
    values = hw.cost(genomes, 'latency', device='edgetpu', missing='infeasible')
    assert np.all((values > 0) | np.isinf(values))
    assert np.sum(np.isinf(values)) == 15625 - 9108


def test_missing_infeasible_gives_inf():
    idx = first_missing('edgegpu_energy')
    known = first_missing('edgegpu_energy', want_missing=False)
    got = hw.cost(
        nb201.indices_to_genomes(np.array([idx, known])),
        'energy',
        device='edgegpu',
        missing='infeasible',
    )
    assert got[0] == np.inf and np.isfinite(got[1])


@pytest.mark.slow  # About 10 s: fits the pairwise predictor (5-fold held-out error).
def test_missing_predict_finite_and_known_values_untouched():
    idx = first_missing('edgetpu_latency')
    known = first_missing('edgetpu_latency', want_missing=False)
    genomes = nb201.indices_to_genomes(np.array([idx, known]))
    got = hw.cost(genomes, 'latency', device='edgetpu', missing='predict')
    col = hw.load_table().column('cifar10', 'edgetpu_latency')
    assert np.isfinite(got[0]) and got[0] > 0
    assert got[1] == col[known]
    assert np.nanmin(col) <= got[0] <= np.nanmax(col)


def _table_with_holdout(column: str, frac: float, seed: int) -> tuple[tables.CostTable, np.ndarray]:
    """The packaged table with `frac` of the known entries of `column` masked (a new digest)."""
    base = hw.load_table()
    col = base.column('cifar10', column).copy()
    known = np.flatnonzero(~np.isnan(col))
    held = np.random.default_rng(seed).choice(known, int(frac * known.size), replace=False)
    col[held] = np.nan
    columns = dict(base.columns)
    columns[('cifar10', column)] = col
    masked = dataclasses.replace(
        base, columns=types.MappingProxyType(columns), digest=f'test-holdout-{column}-{frac}-{seed}'
    )
    return masked, held


@pytest.mark.parametrize(
    'column,max_mae,max_rel',
    [
        ('edgegpu_latency', 0.3, 0.10),
        # About 10 s: this column has gaps enough that the pairwise model is fitted and scored.
        pytest.param('edgetpu_latency', 0.06, 0.06, marks=pytest.mark.slow),
        ('edgegpu_energy', 1.5, 0.12),
        ('eyeriss_latency', 1e-9, 1e-9),  # A simulator: exactly additive in the edge ops.
        ('fpga_energy', 1e-9, 1e-9),
    ],
)
def test_missing_predict_close_to_truth_on_held_out_entries(column, max_mae, max_rel):
    masked, held = _table_with_holdout(column, 0.1, seed=1)
    truth = hw.load_table().column('cifar10', column)[held]
    metric, device = split(column)
    genomes = nb201.indices_to_genomes(held)
    with pytest.raises(UserError, match="missing='predict'"):
        hw.cost(genomes, metric, device=device, table=masked)
    got = hw.cost(genomes, metric, device=device, table=masked, missing='predict')
    err = np.abs(got - truth)
    assert err.mean() < max_mae, err.mean()
    assert np.mean(err / truth) < max_rel, np.mean(err / truth)
    # The reported held-out error is of the same order as the error on these entries.
    model = hw.predictor(metric, device=device, table=masked)
    assert model.error.mae < 1.5 * max(max_mae, 1e-12)


def test_predictor_fitted_once_logged_once(caplog):
    from hwnas_jax.hardware import predict

    predict._CACHE.clear()  # Another test may have fitted this very table already.
    masked, _ = _table_with_holdout('edgegpu_latency', 0.05, seed=2)
    genomes = nb201.indices_to_genomes(np.arange(40))
    with caplog.at_level(logging.INFO):
        hw.cost(genomes, 'latency', device='edgegpu', table=masked, missing='predict')
        hw.cost(genomes, 'latency', device='edgegpu', table=masked, missing='predict')
        model = hw.predictor('latency', device='edgegpu', table=masked)
    lines = [r.getMessage() for r in caplog.records if 'held-out' in r.getMessage()]
    assert len(lines) == 1, lines
    assert model is hw.predictor('latency', device='edgegpu', table=masked)
    assert model.kind == 'pairwise'  # The pairwise terms clearly help on a measured device.
    assert set(model.candidates) == {'additive', 'pairwise'}
    assert model.candidates['pairwise'].mae < 0.9 * model.candidates['additive'].mae
    assert 0 < model.error.mae < 0.3 and 0 < model.error.mean_rel < 0.1
    assert model.error.folds == 5 and model.error.n == model.n_known
    assert 'held-out MAE' in model.summary() and 'ms' in model.summary()


def test_predictor_additive_for_simulated_device():
    model = hw.predictor('latency', device='eyeriss')
    assert model.kind == 'additive' and model.error.mae < 1e-9


def test_fit_needs_enough_data():
    genomes = nb201.random_genomes(np.random.default_rng(0), 10)
    with pytest.raises(UserError, match='only 10 known values'):
        predict.fit(genomes, np.ones(10), metric='edgegpu_latency', dataset='cifar10')


def test_features_match_reference_loop():
    genomes = nb201.random_genomes(np.random.default_rng(3), 50)
    x = predict.features(genomes, 'pairwise')
    ref = np.zeros((50, 1 + 6 * 4 + 15 * 16))
    pairs = [(e, f) for e in range(6) for f in range(e + 1, 6)]
    for row, g in enumerate(genomes):
        ref[row, 0] = 1
        for e in range(6):
            if g[e]:
                ref[row, 1 + 4 * e + g[e] - 1] = 1
        for p, (e, f) in enumerate(pairs):
            if g[e] and g[f]:
                ref[row, 25 + 16 * p + 4 * (g[e] - 1) + g[f] - 1] = 1
    np.testing.assert_array_equal(x, ref)
    np.testing.assert_array_equal(predict.features(genomes, 'additive'), ref[:, :25])


def test_fit_matches_dense_least_squares():
    idx = np.random.default_rng(4).choice(15625, 2000, replace=False)
    genomes = nb201.indices_to_genomes(idx)
    y = hw.load_table().column('cifar10', 'pixel3_latency')[idx]
    model = predict.fit(genomes, y, kind='pairwise', metric='pixel3_latency')
    x = predict.features(genomes, 'pairwise')
    ref = np.linalg.lstsq(x, y, rcond=None)[0]
    np.testing.assert_allclose(model.weights, ref, rtol=1e-7, atol=1e-9)
    # Treatment coding spans the same space as the full one-hot over every op pair.
    full = np.concatenate(
        [np.eye(25)[genomes[:, e] * 5 + genomes[:, f]] for e in range(6) for f in range(e + 1, 6)],
        axis=1,
    )
    ref_full = full @ np.linalg.lstsq(full, y, rcond=None)[0]
    np.testing.assert_allclose(
        np.clip(x @ ref, y.min(), y.max()), np.clip(ref_full, y.min(), y.max()), atol=1e-8
    )


# -- errors list the options ------------------------------------------------------------------


@pytest.mark.parametrize(
    'kwargs,needles',
    [
        ({'metric': 'latency', 'device': 'gpu'}, ["'gpu'", *hw.DEVICES]),
        ({'metric': 'lat', 'device': 'edgegpu'}, ["'lat'", *hw.METRICS]),
        ({'metric': 'energy', 'device': 'raspi4'}, ['raspi4', 'edgegpu', 'eyeriss', 'fpga']),
        ({'metric': 'arithmetic_intensity', 'device': 'fpga'}, ['eyeriss']),
        ({'metric': 'latency'}, ['device', *hw.DEVICES]),
        ({'metric': 'flops', 'device': 'edgegpu'}, ['device=None']),
        (
            {'metric': 'latency', 'device': 'edgegpu', 'dataset': 'imagenet'},
            ['cifar10', 'cifar100', 'ImageNet16-120'],
        ),
        (
            {'metric': 'latency', 'device': 'edgegpu', 'missing': 'zero'},
            ['error', 'infeasible', 'predict'],
        ),
        (
            {'metric': 'latency', 'device': 'edgegpu', 'dataset': 'cifar100'},
            ['cifar10', '--pickle', '--i-trust-this-pickle', 'convert_hwnasbench.py'],
        ),
    ],
)
def test_errors_list_the_options(kwargs, needles):
    with pytest.raises(UserError) as e:
        hw.cost(nb201.indices_to_genomes(0), **kwargs)
    for needle in needles:
        assert needle in str(e.value), (needle, str(e.value))


def test_available_unknown_dataset():
    with pytest.raises(UserError, match='--i-trust-this-pickle'):
        hw.available('ImageNet16-120')


@pytest.mark.parametrize(
    'genomes',
    [
        np.zeros(5, np.int64),
        np.zeros((2, 7), np.int64),
        np.full(6, 5),
        np.full(6, -1),
        np.zeros(6, np.float32),
        np.int64(3),
    ],
)
def test_bad_genomes(genomes):
    with pytest.raises(UserError, match='genome'):
        hw.cost(genomes, 'latency', device='pixel3')


# -- tamper detection and the safe format -----------------------------------------------------


def _members(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k].copy() for k in z.files}


def _save(path, arrays) -> None:
    with open(path, 'wb') as f:
        np.savez_compressed(f, **arrays)


def test_tampered_value_detected(tmp_path):
    arrays = _members(tables.packaged_path())
    arrays['cifar10__pixel3_latency'][5] *= 0.5
    bad = tmp_path / 'tampered.npz'
    _save(bad, arrays)
    with pytest.raises(UserError, match=r'tampered\.npz: invalid .*sha256.*modified or damaged'):
        hw.load_table(bad)


def test_consistently_rewritten_packaged_table_detected(tmp_path, monkeypatch):
    arrays = _members(tables.packaged_path())
    arrays['cifar10__pixel3_latency'][5] *= 0.5
    meta = json.loads(arrays['metadata'].tobytes())
    meta['data_sha256'] = tables.data_digest(arrays)
    arrays['metadata'] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    path = tmp_path / 'rewritten.npz'
    _save(path, arrays)
    assert hw.load_table(path).digest == meta['data_sha256']  # Valid as a user table ...
    with monkeypatch.context() as m:  # ... but not as the packaged one.
        m.setattr(tables, 'packaged_path', lambda: str(path))
        with pytest.raises(
            UserError,
            match=r'rewritten\.npz: the packaged HW-NAS-Bench table '
            r'changed.*pinned.*reinstall hwnas_jax',
        ):
            hw.load_table()


@pytest.mark.parametrize('edit', ['units', 'order', 'extra', 'sentinel', 'format'])
def test_invalid_tables_rejected(tmp_path, edit):
    arrays = _members(tables.packaged_path())
    meta = json.loads(arrays['metadata'].tobytes())
    if edit == 'units':
        meta['units']['edgegpu_latency'] = 's'
    elif edit == 'order':
        arrays['genomes'] = arrays['genomes'][::-1].copy()
    elif edit == 'extra':
        arrays['cifar10__accuracy'] = np.zeros(15625)
    elif edit == 'sentinel':
        arrays['cifar10__edgetpu_latency'][np.isnan(arrays['cifar10__edgetpu_latency'])] = -1.0
    elif edit == 'format':
        meta['format_version'] = 99
    meta['data_sha256'] = tables.data_digest(arrays)
    arrays['metadata'] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    path = tmp_path / f'{edit}.npz'
    _save(path, arrays)
    with pytest.raises(
        UserError,
        match=rf'{edit}\.npz: invalid HW-NAS-Bench table.*'
        'convert_hwnasbench.py',
    ):
        hw.load_table(path)


def test_object_arrays_are_not_unpickled(tmp_path):
    path = tmp_path / 'pickled.npz'
    with zipfile.ZipFile(path, 'w') as z:
        buf = io.BytesIO()
        np.save(buf, np.array([{'a': 1}], dtype=object), allow_pickle=True)
        z.writestr('metadata.npy', buf.getvalue())
    with pytest.raises(UserError, match='pickled objects') as e:
        hw.load_table(path)
    assert 'allow_pickle' not in str(e.value)  # Never the advice to load it unsafely.


def test_library_never_unpickles():
    root = pathlib.Path(hw.__file__).parent
    for source in root.glob('*.py'):
        text = source.read_text()
        assert 'import pickle' not in text and 'allow_pickle=True' not in text, source
