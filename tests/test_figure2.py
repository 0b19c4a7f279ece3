"""Tests of the Figure 2 grid: budgets, sharding and merging, and scores blind to accuracies."""

import csv
import importlib
import importlib.util
import json
import logging as std_logging

import numpy as np
import pytest
from absl import logging

from hwnas_jax import config as config_lib
from hwnas_jax.errors import UserError
from hwnas_jax.search import figure2


def grid_config(**fields):
    config = importlib.import_module('configs.figure2').get_config('smoke')
    config.figure2.devices = 'pixel3'
    config.figure2.seeds = 1
    config.figure2.update(fields)
    return config


def test_paper_grid_and_derived_budgets():
    config = importlib.import_module('configs.figure2').get_config()
    config_lib.validate(config)
    searches = figure2.grid(config)
    per_device = figure2.budgets(config)
    assert list(per_device) == [
        'edgegpu',
        'raspi4',
        'edgetpu',
        'pixel3',
        'eyeriss',
        'fpga',
        'flops',
    ]
    assert len(searches) == 10 * sum(len(b) for b in per_device.values())
    for device, bs in per_device.items():
        costs = figure2.all_costs(config, device)
        costs = costs[np.isfinite(costs)]
        assert len(bs) == 5 and bs == sorted(bs), (device, bs)
        share = [np.mean(costs <= b) for b in bs]  # Tight to loose across the device's range.
        assert 0.03 < share[0] < 0.3 and 0.7 < share[-1] <= 0.97, (device, share)
    # Seed-major: every device and budget of the first seed comes first.
    first = searches[: len(searches) // 10]
    assert {s.seed for s in first} == {0} and searches[-1].seed == 9
    assert [s.position for s in searches] == list(range(1, len(searches) + 1))
    assert searches[0].name == f'edgegpu-{per_device["edgegpu"][0]:g}-s0'
    cfg = figure2.search_config(config, searches[-1], '/tmp/s.sqlite')
    assert (cfg.job, cfg.seed, cfg.proxy.seed, cfg.proxy.store) == ('search', 9, 0, '/tmp/s.sqlite')
    assert (cfg.hardware.metric, cfg.hardware.device) == ('flops', '')
    assert config.job == 'figure2' and config.proxy.seed is None  # The grid config is untouched.


def test_budgets_shards_and_their_errors():
    config = grid_config(budgets='3,5')
    assert figure2.budgets(config) == {'pixel3': [3.0, 5.0]}
    config = grid_config(devices='pixel3,flops', budgets='flops:50,20')
    b = figure2.budgets(config)
    assert b['flops'] == [20.0, 50.0] and len(b['pixel3']) == 2  # Derived where not given.
    assert figure2.parse_shard('2/4') == (2, 4)
    assert [figure2.round_up(v) for v in (3.274, 47.10465, 0.608, 99.5, 100.0)] == [
        3.3,
        48.0,
        0.61,
        100.0,
        100.0,
    ]
    for field, value, match in (
        ('shard', '4/4', 'shard'),
        ('shard', 'all', 'shard'),
        ('budgets', '3;5', 'budgets'),
        ('budgets', 'raspi4:3', 'raspi4'),
        ('budgets', '-1', 'budgets'),
        ('devices', 'tx2', 'devices'),
        ('seeds', 0, 'seeds'),
    ):
        with pytest.raises(UserError, match=match):
            config_lib.validate(grid_config(**{field: value}))
    config = grid_config(devices='edgetpu')
    config.hardware.missing = 'error'
    with pytest.raises(UserError, match='hardware.missing'):
        config_lib.validate(config)


def test_progress_lines_name_the_search():
    seen = []

    class Keep(std_logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Keep()
    logger = logging.get_absl_logger()
    logger.addHandler(handler)
    level = logger.level  # Restored as it was: set_verbosity would leave WARNING behind.
    logger.setLevel(std_logging.INFO)
    try:
        with figure2.prefixed_logs('[search 3/8 pixel3-5-s0] '):
            logging.info('gen %d/%d', 1, 2)
        logging.info('after')
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert seen == ['[search 3/8 pixel3-5-s0] gen 1/2', 'after']


def read_csv(path, drop=('search_seconds', 'trained')):
    with open(path) as f:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(f)]


@pytest.fixture(scope='module')
def whole(tmp_path_factory):
    """The 1-device x 2-budget x 1-seed grid run in one process (shard 0/1)."""
    root = tmp_path_factory.mktemp('whole')
    rows = figure2.run(grid_config(), str(root))
    return root, rows


@pytest.mark.slow
def test_grid_outputs(whole):
    root, rows = whole
    assert figure2.budgets(grid_config()) == {'pixel3': [3.3, 20.0]}
    assert [r['search'] for r in rows] == ['pixel3-3.3-s0', 'pixel3-20-s0']
    table = read_csv(root / 'figure2.csv', drop=())
    assert tuple(table[0]) == figure2.COLUMNS and len(table) == 2
    for r in table:
        best = json.loads((root / r['search'] / 'best.json').read_text())
        assert int(r['index']) == best['index'] and r['arch_str'] == best['arch_str']
        assert float(r['test_accuracy']) == best['ground_truth']['found']['test_accuracy']
        assert float(r['regret']) == pytest.approx(
            float(r['best_feasible_accuracy']) - float(r['test_accuracy'])
        )
        assert float(r['cost']) == float(r['latency_pixel3'])
        near = best['within_noise']
        assert int(r['within_noise']) == near['count'] >= 1
        assert float(r['within_noise_accuracy_max']) == near['test_accuracy']['max']
        assert r['feasible'] == str(float(r['cost']) <= float(r['budget']))
        assert int(r['architectures']) == best['evaluations'] and float(r['search_seconds']) > 0
        assert r['proxy_seed'] == '0' and (root / r['search'] / 'config.json').exists()
    assert (root / 'scores.sqlite').exists()
    progress = read_csv(root / 'progress.csv', drop=())
    assert tuple(progress[0]) == figure2.outputs.PROGRESS_COLUMNS
    for p, r in zip(progress, table, strict=True):
        assert (p['search'], p['status'], p['generation']) == (r['search'], 'finished', '2')
        assert (p['best_index'], p['regret']) == (r['index'], r['regret'])
        assert float(p['seconds']) == pytest.approx(float(r['search_seconds']), abs=0.1)
    ops = read_csv(root / 'figure3.csv', drop=())
    assert {o['cells'] for o in ops} == {'top10_feasible', 'found'}
    for o in ops:
        assert sum(
            float(o[op])
            for op in ('none', 'skip_connect', 'nor_conv_1x1', 'nor_conv_3x3', 'avg_pool_3x3')
        ) == pytest.approx(6)
    if importlib.util.find_spec('matplotlib'):
        for name in ('figure2.png', 'figure3-pixel3.png'):
            assert (root / name).stat().st_size > 1000


@pytest.mark.slow
def test_shards_then_merge_equal_one_run(whole, tmp_path, monkeypatch):
    root, _ = whole
    for shard in ('0/2', '1/2'):
        rows = figure2.run(grid_config(shard=shard), str(tmp_path))
    assert len(rows) == 2  # The second shard's merge already sees both searches.
    from hwnas_jax.search import loop

    def no_search(*args):
        raise AssertionError('a finished search was run again')

    monkeypatch.setattr(loop, 'run', no_search)
    figure2.run(grid_config(), str(tmp_path))  # 0/1 after the shards: merges only.
    assert read_csv(tmp_path / 'figure2.csv') == read_csv(root / 'figure2.csv')
    assert (tmp_path / 'figure3.csv').read_text() == (root / 'figure3.csv').read_text()
    # Seed 1 not run; one of its searches has done its first generation (metrics as written).
    first = (root / 'pixel3-3.3-s0' / 'metrics.jsonl').read_text().splitlines()[0]
    (tmp_path / 'pixel3-3.3-s1').mkdir()
    (tmp_path / 'pixel3-3.3-s1' / 'metrics.jsonl').write_text(first + '\n')
    figure2.run(grid_config(merge_only=True, seeds=2), str(tmp_path))
    assert len(read_csv(tmp_path / 'figure2.csv')) == 2
    progress = {p['search']: p for p in read_csv(tmp_path / 'progress.csv', drop=())}
    assert [p['status'] for p in progress.values()] == ['finished'] * 2 + [
        'started',
        'not started',
    ]
    started = progress['pixel3-3.3-s1']
    assert started['generation'] == '1' and started['regret'] == str(
        json.loads(first)['evaluation']['regret']
    )
    assert (
        progress['pixel3-20-s1']['generation'] == '0' and progress['pixel3-20-s1']['regret'] == ''
    )


@pytest.mark.slow
def test_search_scores_do_not_depend_on_the_accuracy_table(whole, tmp_path, monkeypatch):
    """The accuracy table unreadable: the same scores, genomes and fitness; no accuracies."""
    from hwnas_jax.search import evaluation
    from hwnas_jax.spaces import nb201_truth

    root, _ = whole

    def unreadable(*args, **kwargs):
        raise UserError('accuracy table removed for this test')

    monkeypatch.setattr(nb201_truth, 'load', unreadable)
    evaluation.clear_cache()
    rows = figure2.run(grid_config(store='none'), str(tmp_path))
    evaluation.clear_cache()
    for r in rows:
        assert r['test_accuracy'] is None and r['regret'] is None
        got, want = tmp_path / r['search'], root / r['search']
        # The same records (the order within a generation differs where the store served some).
        assert sorted((got / 'scores.jsonl').read_text().splitlines()) == sorted(
            (want / 'scores.jsonl').read_text().splitlines()
        )
        a, b = (json.loads((d / 'best.json').read_text()) for d in (got, want))
        assert (a['genome'], a['score'], a['fitness']) == (b['genome'], b['score'], b['fitness'])
        assert not a['ground_truth']['applicable'] and b['ground_truth']['applicable']
        strip = ('seconds', 'compile_seconds', 'evaluation')
        for x, y in zip(
            *(
                (json.loads(line) for line in (d / 'metrics.jsonl').read_text().splitlines())
                for d in (got, want)
            )
        ):
            assert {k: v for k, v in x.items() if k not in strip} == {
                k: v for k, v in y.items() if k not in strip
            }
    assert 'top10' not in (tmp_path / 'figure3.csv').read_text()


def test_config_file():
    module = importlib.import_module('configs.figure2')
    assert '\nRun:' in module.__doc__ and '\nExpect:' in module.__doc__
    with pytest.raises(ValueError, match='unknown variant'):
        module.get_config('tiny')
    config_lib.validate(module.get_config('smoke'))
    # The README's measured slice: one device, three budgets, three GA seeds, full size.
    c = module.get_config('slice')
    config_lib.validate(c)
    grid = figure2.grid(c)
    assert len(grid) == 9 and {s.device for s in grid} == {'pixel3'}
    assert len({s.budget for s in grid}) == 3 and {s.seed for s in grid} == {0, 1, 2}
    assert c.space.channels == 16 and c.proxy.steps == 100 and c.ga.generations == 100
    # The same slice ranked by the layer2 preset: only the ranking differs, not the training.
    layer2 = module.get_config('slice_layer2')
    config_lib.validate(layer2)
    assert config_lib.fingerprint_differences(c.to_dict(), layer2.to_dict()) == [
        'proxy.score_layers'
    ]
