"""Tests of the proxy study: rank statistics, sampling, the RMI program, the job end to end."""

import csv
import importlib
import json

import numpy as np
import pytest

from hwnas_jax import study
from hwnas_jax.errors import UserError
from hwnas_jax.spaces import nb201, nb201_net

# XLA:CPU's cheapest compile settings: these tests' time is mostly compilation.
FAST = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}


def test_rank_statistics_against_hand_computed_values():
    x, y = [1, 2, 3, 4, 5], [2, 1, 4, 3, 5]
    # d = ranks differ by (-1, 1, -1, 1, 0): rho = 1 - 6 * 4 / (5 * 24) = 0.8; 8 concordant
    # and 2 discordant pairs of 10: tau = 0.6.
    assert study.spearman(x, y) == pytest.approx(0.8)
    assert study.kendall_tau(x, y) == pytest.approx(0.6)
    # Ties: x = (1, 2, 2, 3), y = (1, 3, 2, 4): 5 concordant pairs, one tied in x:
    # tau_b = 5 / sqrt(5 * 6); average ranks (1, 2.5, 2.5, 4) against (1, 3, 2, 4):
    # rho = 4.5 / sqrt(4.5 * 5).
    x, y = [1, 2, 2, 3], [1, 3, 2, 4]
    assert study.kendall_tau(x, y) == pytest.approx(5 / np.sqrt(30))
    assert study.spearman(x, y) == pytest.approx(4.5 / np.sqrt(22.5))
    np.testing.assert_array_equal(study.rankdata([10, 20, 20, 5, 20]), [2, 4, 4, 1, 4])
    assert study.kendall_tau([3, 2, 1], [1, 2, 3]) == -1.0
    assert np.isnan(study.kendall_tau([1, 1, 1], [1, 2, 3]))
    assert np.isnan(study.spearman([1, 1, 1], [1, 2, 3]))


def test_rank_statistics_equal_scipy():
    stats = pytest.importorskip('scipy.stats')
    rng = np.random.default_rng(0)
    x = rng.integers(0, 8, 40).astype(float)  # Many ties.
    y = x + rng.integers(0, 5, 40)
    assert study.kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)
    assert study.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)


def test_top_k_hits_and_bootstrap():
    acc = [90, 80, 70, 60, 50]
    assert study.top_k_hits([5, 4, 3, 2, 1], acc, 2) == 1.0
    assert study.top_k_hits([1, 2, 3, 4, 5], acc, 2) == 0.0
    assert study.top_k_hits([5, 1, 4, 2, 3], acc, 2) == 0.5  # Rows 0 and 2 vs 0 and 1.
    assert study.top_k_hits([1, 1, 1, 1, 1], acc, 2) == 1.0  # Ties: the earlier rows first.
    rng = np.random.default_rng(1)
    x = rng.normal(size=60)
    y = x + rng.normal(size=60)
    lo, hi = study.bootstrap(study.kendall_tau, x, y, resamples=200, seed=3)
    assert lo < study.kendall_tau(x, y) < hi and 0 < lo
    assert (lo, hi) == study.bootstrap(study.kendall_tau, x, y, resamples=200, seed=3)


def test_split_half_and_orientation():
    rng = np.random.default_rng(2)
    acc = rng.normal(size=40)
    rows = [
        {
            'test_accuracy': a,
            'phi': a + 3 * rng.normal(),
            'good': a + 0.1 * rng.normal(),
            'loss': -a + 0.1 * rng.normal(),
        }
        for a in acc
    ]
    half = study.split_half(rows, ['good', 'loss'], resamples=100)
    assert half['chosen'] in ('good', 'loss') and half['n_a'] == 20 and half['n_b'] == 20
    assert half['tau_b'] > half['tau_b_phi'] and half['delta_ci'][0] > 0
    assert study.correlations(rows, 'loss', top_k=5, resamples=20)['kendall'] > 0.8
    assert study.split_half(rows[:7], ['good'], resamples=10) is None
    assert study.preset_for('phi_k25') == '--config.proxy.steps=25'
    assert study.preset_for('phi_bn_train') == '--config.reference.bn_mode=train'
    assert study.preset_for('cka_2') == '--config.proxy.score_layers=2'
    assert study.preset_for('phi_heldout') is None


def test_selection_regret_replays_a_searchs_pick_under_a_budget():
    # Row 0 is the best but over budget; among rows 1-3 the best is row 1 (80 %).
    rows = [
        {'test_accuracy': a, 'phi': a, 'bad': -a, 'loss': r, 'none': None}
        for a, r in [(90.0, 0.0), (80.0, 1.0), (70.0, 2.0), (60.0, 3.0)]
    ]
    names = ['phi', 'bad', 'loss', 'none']
    out = study.selection_regret(rows, names, [10, 1, 1, 1], [5, 0.5], pool_size=4, pools=3)
    got = out[5.0]
    assert got['pools'] == 3 and got['feasible'] == 3
    assert got['phi']['regret'] == 0 and got['phi']['hit'] == 1
    assert got['loss']['regret'] == 0  # Lower loss is better.
    assert got['bad']['regret'] == 20 and got['bad']['hit'] == 0
    assert got['random']['regret'] == pytest.approx(10)
    assert got['phi']['delta_ci'] == (0, 0) and got['bad']['delta_ci'][1] > 0
    assert 60 - 1e-9 <= 80 - got['none']['regret'] <= 80  # No value: some feasible row.
    assert out[0.5]['pools'] == 0 and np.isnan(out[0.5]['phi']['regret'])
    with pytest.raises(ValueError, match='do not match'):
        study.selection_regret(rows, names, [1, 1], [5])


def test_study_md_says_how_far_each_pick_lands_under_a_budget():
    rng = np.random.default_rng(0)
    genomes = nb201.random_genomes(rng, 40)
    acc = rng.uniform(80, 94, 40)
    rows = [
        {'genome': g.tolist(), 'test_accuracy': a, 'valid_accuracy': a, 'phi': a, 'cka_2': -a}
        for g, a in zip(genomes, acc)
    ]
    config = smoke_config(bootstrap=20)
    md = study.report_markdown(rows, config, costs=study.costs_of(rows, config.hardware))
    section = md.split('## Picking under a budget', 1)[1]
    assert 'latency on pixel3 <=' in section and '| random feasible pick |' in section
    phi = next(line for line in section.splitlines() if line.startswith('| phi |'))
    assert phi.count('0.00 [0.00, 0.00] (1.00)') == 3, phi  # phi is the accuracy here.
    assert '## Picking under a budget' not in study.report_markdown(rows, config)


def test_sample_archs_uniform_over_connected_canonical_classes():
    archs = study.sample_archs(0, 50)
    classes = [a['canonical_index'] for a in archs]
    assert len(set(classes)) == 50
    for a in archs:
        assert tuple(a['canonical']) == nb201.canonical(a['genome'])
        assert a['canonical_index'] == nb201.to_index(a['canonical'])
        assert a['index'] == nb201.to_index(a['genome']) and any(a['canonical'])
    assert study.sample_archs(0, 80)[:50] == archs  # A larger study keeps the first rows.
    assert study.sample_archs(1, 50) != archs
    every = study.canonical_classes(connected_only=True)
    assert len(every) == 9444 and len(study.canonical_classes(False)) == 9445
    with pytest.raises(UserError, match='num_archs'):
        study.sample_archs(0, 9445)


def tiny_batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    ref = [
        rng.normal(size=(n, 16, 16, 4)),
        rng.normal(size=(n, 8, 8, 8)),
        rng.normal(size=(n, 4, 4, 16)),
    ]
    return {
        'images': rng.normal(size=(n, 16, 16, 3)).astype(np.float32),
        'labels': rng.integers(0, 10, n).astype(np.int32),
        'ref_features': [r.astype(np.float32) for r in ref],
    }


@pytest.mark.slow
def test_rmi_program_equals_the_search_engine():
    """Same phi and loss as the search's scorer; held-out = the training batch: the same phi."""
    import jax
    import jax.numpy as jnp

    from hwnas_jax import proxy, rmi, spaces

    config = smoke_config()
    config.space.channels, config.space.cells_per_stage = 4, 1
    kw = {'channels': 4, 'cells_per_stage': 1, 'num_classes': 10}
    settings = proxy.Settings(steps=3)
    batch = tiny_batch()
    genome = np.array([3, 0, 2, 1, 4, 3])
    scorer = proxy.make_scorer(spaces.make(config), batch, settings, strategy='loop', population=1)
    want = scorer.score(genome[None])
    model = nb201_net.PopulationNetwork(**kw, conv_impl='im2col', dispatch='switch')
    fn = jax.jit(study.rmi_program(model, settings, heldout=True), compiler_options=FAST)
    ref = [jnp.asarray(r) for r in batch['ref_features']]
    x = jnp.asarray(batch['images'])
    out = fn(
        jnp.asarray(0, jnp.uint32),
        jnp.asarray(proxy.member_seeds(genome[None])),
        jnp.asarray(genome, jnp.int32),
        x,
        x,
        jnp.asarray(batch['labels']),
        ref,
        ref,
    )
    got = study.rmi_variables(out, num_layers=3, beta=0.8, steps=3, ks=[0, 2, 3], heldout=True)
    assert got['phi'] == pytest.approx(want['score'][0], rel=1e-4)
    assert got['loss'] == pytest.approx(want['loss'][0], rel=1e-4)
    assert got['phi_heldout'] == pytest.approx(got['phi'], rel=1e-5)
    assert got['phi_k3'] == got['phi'] and got['loss_k3'] == got['loss']
    np.testing.assert_allclose([got[f'cka_{i}'] for i in (1, 2, 3)], want['ckas'][0], rtol=1e-4)
    # Row 0 of the trajectory: the freshly initialised network.
    v = proxy.init_members(
        model,
        0,
        jnp.asarray(proxy.member_seeds(genome[None])),
        jnp.asarray(genome[None], jnp.int32),
        x,
    )
    v = jax.tree.map(lambda a: a[0], v)
    (_, feats), _ = nb201_net.PopulationNetwork(**kw, conv_impl='im2col').apply(
        v, x, jnp.asarray(genome), train=True, mutable=['batch_stats']
    )
    assert got['phi_k0'] == pytest.approx(float(rmi.rmi_score(ref, feats)), rel=1e-4)
    assert got['phi_heldout_k0'] == pytest.approx(got['phi_k0'], rel=1e-5)
    assert got['loss_k0'] > got['loss_k2']  # Training lowers the loss.


def smoke_config(**study_fields):
    config = importlib.import_module('configs.proxy_study').get_config('smoke')
    config.study.update(study_fields)
    return config


@pytest.mark.slow
def test_study_end_to_end_resumes_and_refuses_other_settings(tmp_path, monkeypatch):
    from hwnas_jax import config as config_lib
    from hwnas_jax.study import passes

    monkeypatch.setattr(passes, 'COMPILER_OPTIONS', FAST)
    calls = []
    real = study.Passes.score

    def counting(self, genome, **kw):
        calls.append(tuple(genome))
        if len(calls) == 2:
            raise KeyboardInterrupt  # Killed while scoring the second architecture.
        return real(self, genome, **kw)

    monkeypatch.setattr(study.Passes, 'score', counting)
    config = smoke_config(num_archs=2, bootstrap=20)
    config_lib.validate(config)
    with pytest.raises(KeyboardInterrupt):
        study.run(config, str(tmp_path))
    assert len((tmp_path / 'study.jsonl').read_text().splitlines()) == 1
    rows = study.run(config, str(tmp_path))  # Resumes: scores only the second.
    assert len(calls) == 3 and calls[2] == calls[1]
    rows3 = study.run(smoke_config(num_archs=3, bootstrap=20), str(tmp_path))
    assert len(calls) == 4 and rows3[:2] == rows
    with open(tmp_path / 'study.csv') as f:
        table = list(csv.DictReader(f))
    assert [int(r['row']) for r in table] == [0, 1, 2]
    # Back as written; a column a row lacks (phi_seed2 after noise_archs) reads as None.
    known = [{k: v for k, v in r.items() if v is not None} for r in rows3]
    assert [
        {k: v for k, v in r.items() if v is not None}
        for r in study.read_csv(str(tmp_path / 'study.csv'))
    ] == known
    for name in (
        'phi',
        'loss',
        'cka_1',
        'phi_k0',
        'phi_k1',
        'loss_k1',
        'phi_heldout',
        'phi_bn_train',
        'naswot',
        'synflow',
        'flops',
        'params',
        'flops_canonical',
        'test_accuracy',
        'valid_accuracy',
    ):
        assert np.isfinite(float(table[0][name])), name
    assert table[0]['phi_seed2'] and not table[1]['phi_seed2']  # noise_archs = 1.
    assert rows3[0]['phi_k1'] != rows3[0]['phi_k0']
    md = (tmp_path / 'study.md').read_text()
    assert '| phi | sum of layer CKAs' in md and 'Kendall' in md and '## Noise' in md
    state = json.loads((tmp_path / 'study_state.json').read_text())
    assert state['fingerprint']['study']['steps_k'] == '0,1'
    with pytest.raises(UserError, match=r'other settings \(proxy.steps, study.steps_k\)'):
        study.run(_other(smoke_config(steps_k='0')), str(tmp_path))


def _other(config):
    config.proxy.steps = 3
    return config


def test_config_validation():
    from hwnas_jax import config as config_lib

    module = importlib.import_module('configs.proxy_study')
    assert '\nRun:' in module.__doc__ and '\nExpect:' in module.__doc__
    for variant in ('paper', 'baselines', 'smoke'):
        config_lib.validate(module.get_config(variant))
    for field, value, match in (
        ('steps_k', '0,200', 'steps_k'),
        ('heldout_size', 1, 'heldout'),
        ('num_archs', 0, 'num_archs'),
    ):
        config = module.get_config()
        config.study[field] = value
        with pytest.raises(UserError, match=match):
            config_lib.validate(config)
    config = module.get_config()
    config.proxy.steps = -1
    with pytest.raises(UserError, match='proxy.steps'):
        config_lib.validate(config)
