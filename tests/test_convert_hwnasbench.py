"""Tests of tools/convert_hwnasbench.py: CSV -> packaged table, original-layout pickle -> table."""

import importlib.util
import json
import pathlib
import pickle
import subprocess
import sys

import numpy as np
import pytest

from hwnas_jax import hardware as hw
from hwnas_jax.hardware import tables
from hwnas_jax.spaces import nb201

REPO = pathlib.Path(__file__).resolve().parents[1]
TOOL = REPO / 'tools' / 'convert_hwnasbench.py'


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('convert_hwnasbench', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def golden(shared_data) -> dict[str, dict[int, dict[str, float]]]:
    """{dataset: {index: {metric: value}}} from the upstream notebook output."""
    raw = json.loads(
        (shared_data / 'hw-nas-bench' / 'hwnasbench_readme_golden_arch0-2.json').read_text()
    )
    out: dict[str, dict[int, dict[str, float]]] = {}
    for key, row in raw.items():
        dataset, index = key.split('|')
        out.setdefault(dataset, {})[int(index)] = {
            m: v for m, v in row.items() if m in tables.TABLE_METRICS
        }
    return out


def original_layout(values: dict[str, dict[int, dict[str, float]]], *, as_lists: bool) -> dict:
    """An object laid out like HW-NAS-Bench-v1_0.pickle (hw_nas_bench_api.py's accesses).

    ``values``: {dataset: {index: {metric: value}}}. With ``as_lists``, every per-metric
    container is a list over all 15625 indices (NaN where ``values`` has none); otherwise a
    dict holding only the given indices.
    """
    space = {}
    for dataset, rows in values.items():
        indices = sorted(rows)
        configs = {
            i: {
                'name': 'infer.tiny',
                'C': 16,
                'N': 5,
                'num_classes': 10,
                'arch_str': nb201.to_arch_str(nb201.indices_to_genomes(i)),
            }
            for i in (range(15625) if as_lists else indices)
        }
        entry = {'config': [configs[i] for i in range(15625)] if as_lists else configs}
        for m in tables.TABLE_METRICS:
            if as_lists:
                col = [float('nan')] * 15625
                for i in indices:
                    col[i] = rows[i][m]
                entry[m] = col
            else:
                entry[m] = {i: np.float64(rows[i][m]) for i in indices}
        space[dataset] = entry
    return {'nasbench201': space, 'fbnet': {'ignored': True}}


def write_pickle(path: pathlib.Path, obj) -> pathlib.Path:
    path.write_bytes(pickle.dumps(obj))
    return path


def test_arch_str_round_trip(tool):
    genomes = nb201.random_genomes(np.random.default_rng(0), 20)
    for g in genomes:
        assert tool.arch_str_to_genome(nb201.to_arch_str(g)) == list(g)
    for bad in [
        '|nor_conv_3x3~0|',
        '|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|',
        '|none~1|+|none~0|none~1|+|none~0|none~1|none~2|',
    ]:
        with pytest.raises(ValueError, match='architecture string'):
            tool.arch_str_to_genome(bad)


@pytest.mark.shared
def test_csv_reproduces_packaged_table(tool, shared_data, tmp_path):
    out = tmp_path / 'table.npz'
    csv_path = shared_data / 'hw-nas-bench' / 'hwnasbench_nb201_cifar10_merged.csv'
    assert tool.main(['--csv', str(csv_path), '--out', str(out)]) == 0
    made, packaged = hw.load_table(out), hw.load_table()
    assert made.digest == packaged.digest == tables.PACKAGED_DATA_SHA256
    assert made.metadata['inputs'] == packaged.metadata['inputs']
    assert made.metadata['inputs'][0]['sha256'] == tool.sha256_file(csv_path)
    for key, col in packaged.columns.items():
        np.testing.assert_array_equal(made.columns[key], col)


@pytest.mark.shared
@pytest.mark.parametrize('as_lists', [False, True])
def test_pickle_golden_all_datasets(tool, shared_data, tmp_path, as_lists):
    values = golden(shared_data)
    src = write_pickle(
        tmp_path / 'HW-NAS-Bench-v1_0.pickle', original_layout(values, as_lists=as_lists)
    )
    out = tmp_path / 'full.npz'
    assert tool.main(['--pickle', str(src), '--out', str(out), '--i-trust-this-pickle']) == 0
    assert hw.datasets(out) == ('cifar10', 'cifar100', 'ImageNet16-120')
    genomes = nb201.indices_to_genomes(np.arange(3))
    for dataset, rows in values.items():
        for column in tables.TABLE_METRICS:
            device, metric = column.split('_', 1)
            got = hw.cost(genomes, metric, device=device, dataset=dataset, table=out)
            np.testing.assert_array_equal(got, [rows[i][column] for i in range(3)])
        with pytest.raises(ValueError, match='infeasible'):  # Index 3 has no value here.
            hw.cost(
                nb201.indices_to_genomes(3), 'latency', device='fpga', dataset=dataset, table=out
            )
    meta = hw.describe(out)
    assert meta['inputs'][0]['sha256'] == tool.sha256_file(src)
    assert meta['inputs'][0]['name'] == 'HW-NAS-Bench-v1_0.pickle'


def synthetic_values(n: int, seed: int) -> dict[str, dict[int, dict[str, float]]]:
    rng = np.random.default_rng(seed)
    return {
        d: {i: {m: float(rng.uniform(0.5, 50)) for m in tables.TABLE_METRICS} for i in range(n)}
        for d in tables.DATASETS
    }


def test_pickle_sentinel_and_layouts(tool, tmp_path):
    values = synthetic_values(5, seed=0)
    values['cifar100'][2]['edgetpu_latency'] = -1.0
    src = write_pickle(tmp_path / 'small.pickle', original_layout(values, as_lists=False))
    out = tmp_path / 'small.npz'
    assert tool.main(['--pickle', str(src), '--out', str(out), '--i-trust-this-pickle']) == 0
    t = hw.load_table(out)
    col = t.column('cifar100', 'edgetpu_latency')
    assert np.isnan(col[2]) and col[1] == values['cifar100'][1]['edgetpu_latency']
    assert t.metadata['coverage']['cifar100']['edgetpu_latency'] == {'known': 4, 'sentinel': 1}
    g = nb201.indices_to_genomes(2)
    assert (
        hw.cost(g, 'latency', device='edgetpu', dataset='cifar100', table=out, missing='infeasible')
        == np.inf
    )
    assert (
        hw.cost(g, 'latency', device='edgetpu', dataset='ImageNet16-120', table=out)
        == values['ImageNet16-120'][2]['edgetpu_latency']
    )


def test_pickle_wrong_index_order_rejected(tool, tmp_path):
    obj = original_layout(synthetic_values(3, seed=1), as_lists=False)
    for dataset in tables.DATASETS:
        configs = obj['nasbench201'][dataset]['config']
        configs[0], configs[1] = configs[1], configs[0]
    with pytest.raises(ValueError, match='index order'):
        tool.convert_pickle_object(obj, [], str(tmp_path / 'x.npz'))


def test_pickle_missing_dataset_rejected(tool, tmp_path):
    obj = original_layout(synthetic_values(3, seed=2), as_lists=False)
    del obj['nasbench201']['ImageNet16-120']
    with pytest.raises(ValueError, match='ImageNet16-120'):
        tool.convert_pickle_object(obj, [], str(tmp_path / 'x.npz'))


class _Payload:
    """Unpickling this creates a marker file: proves whether a pickle was loaded."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_refuses_pickle_without_flag(tool, tmp_path, capsys):
    marker = tmp_path / 'unpickled'
    src = write_pickle(tmp_path / 'evil.pickle', _Payload(marker))
    out = tmp_path / 'out.npz'
    assert tool.main(['--pickle', str(src), '--out', str(out)]) == 2
    assert not marker.exists() and not out.exists()
    assert '--i-trust-this-pickle' in capsys.readouterr().err


def test_refuses_pickle_without_flag_cli(tmp_path):
    marker = tmp_path / 'unpickled'
    src = write_pickle(tmp_path / 'evil.pickle', _Payload(marker))
    proc = subprocess.run(
        [sys.executable, str(TOOL), '--pickle', str(src), '--out', str(tmp_path / 'o.npz')],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert 'REFUSED' in proc.stderr and not marker.exists()


def test_trusted_flag_prints_loud_warning(tool, tmp_path, capsys):
    src = write_pickle(
        tmp_path / 'p.pickle', original_layout(synthetic_values(2, seed=3), as_lists=False)
    )
    assert (
        tool.main(['--pickle', str(src), '--out', str(tmp_path / 'o.npz'), '--i-trust-this-pickle'])
        == 0
    )
    err = capsys.readouterr().err
    assert 'UNPICKLING' in err and 'trust' in err


# -- damaged or foreign inputs: one `error:` line, exit status 2 ---------------------------------


def _merged_csv(path: pathlib.Path, n: int = 15625, bad_value: str | None = None) -> pathlib.Path:
    """A CSV laid out like the merged CIFAR-10 CSV, with synthetic values."""
    header = [
        'index',
        'arch_str',
        *tables.TABLE_METRICS,
        *(f'{m}_source' for m in tables.TABLE_METRICS),
    ]
    archs = [nb201.to_arch_str(g) for g in nb201.indices_to_genomes(np.arange(n))]
    lines = [','.join(header)]
    for i, arch in enumerate(archs):
        values = ['1.5'] * len(tables.TABLE_METRICS)
        if bad_value is not None and i == 7:
            values[0] = bad_value
        lines.append(','.join([str(i), arch, *values, *(['HELP'] * len(tables.TABLE_METRICS))]))
    path.write_text('\n'.join(lines) + '\n')
    return path


def _damaged_input(kind: str, tmp_path: pathlib.Path) -> tuple[list[str], str]:
    """(extra command-line arguments, a phrase the error must hold) for one damaged input."""
    pickle_args = ['--i-trust-this-pickle', '--pickle']
    if kind == 'csv_missing':
        return ['--csv', str(tmp_path / 'nope.csv')], 'not found'
    if kind == 'csv_columns':
        (tmp_path / 'c.csv').write_text('index,arch\n0,x\n')
        return ['--csv', str(tmp_path / 'c.csv')], 'missing column'
    if kind == 'csv_truncated':
        path = _merged_csv(tmp_path / 't.csv')
        path.write_bytes(path.read_bytes()[:-40])
        return ['--csv', str(path)], 'different number of fields'
    if kind == 'csv_short':
        return ['--csv', str(_merged_csv(tmp_path / 's.csv', n=100))], '100 rows'
    if kind == 'csv_not_a_number':
        return ['--csv', str(_merged_csv(tmp_path / 'v.csv', bad_value='fast'))], "'fast'"
    if kind == 'csv_binary':
        (tmp_path / 'b.csv').write_bytes(bytes(range(256)) * 8)
        return ['--csv', str(tmp_path / 'b.csv')], 'cannot read the CSV'
    if kind == 'pickle_missing':
        return [*pickle_args, str(tmp_path / 'nope.pickle')], 'not found'
    if kind == 'pickle_truncated':
        obj = original_layout(synthetic_values(2, seed=4), as_lists=False)
        path = write_pickle(tmp_path / 'tr.pickle', obj)
        path.write_bytes(path.read_bytes()[:300])
        return [*pickle_args, str(path)], 'cannot unpickle'
    if kind == 'pickle_foreign':
        return [*pickle_args, str(write_pickle(tmp_path / 'l.pickle', [1, 2]))], 'nasbench201'
    if kind == 'pickle_layout':
        obj = original_layout(synthetic_values(2, seed=5), as_lists=False)
        del obj['nasbench201']['cifar10']['config'][1]['arch_str']
        return [*pickle_args, str(write_pickle(tmp_path / 'k.pickle', obj))], 'not laid out'
    if kind == 'pickle_value':
        obj = original_layout(synthetic_values(2, seed=6), as_lists=False)
        obj['nasbench201']['cifar100']['fpga_energy'][1] = 'n/a'
        return [*pickle_args, str(write_pickle(tmp_path / 'v.pickle', obj))], 'not a number'
    raise AssertionError(kind)


@pytest.mark.parametrize(
    'kind',
    [
        'csv_missing',
        'csv_columns',
        'csv_truncated',
        'csv_short',
        'csv_not_a_number',
        'csv_binary',
        'pickle_missing',
        'pickle_truncated',
        'pickle_foreign',
        'pickle_layout',
        'pickle_value',
    ],
)
def test_damaged_inputs_give_one_error_line(tool, tmp_path, capsys, kind):
    args, phrase = _damaged_input(kind, tmp_path)
    out = tmp_path / 'out.npz'
    assert tool.main([*args, '--out', str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith('error: '), err
    assert args[-1] in err[-1] and phrase in err[-1], err[-1]
    assert not any('Traceback' in line for line in err)
    assert not out.exists()


def test_unwritable_output_is_one_error_line(tool, tmp_path, capsys):
    path = _merged_csv(tmp_path / 'm.csv')
    assert tool.main(['--csv', str(path), '--out', str(tmp_path / 'no' / 'such' / 'o.npz')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and 'o.npz' in err[0], err
