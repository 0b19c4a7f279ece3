"""Tests of hwnas_jax.search.evaluation: the ground-truth report for best.json / metrics.jsonl."""

import json
import time

import numpy as np
import pytest

from configs import base
from hwnas_jax import spaces
from hwnas_jax.errors import UserError
from hwnas_jax.search import evaluation
from hwnas_jax.search.objective import Objective
from hwnas_jax.spaces import nb201, nb201_truth

ALL = nb201.indices_to_genomes(np.arange(nb201.NUM_ARCHS))


def make_objective(**hardware):
    config = base.get_config()
    config.hardware.metric, config.hardware.limit = 'flops', 100.0
    for k, v in hardware.items():
        setattr(config.hardware, k, v)
    return Objective(config, spaces.make(config))


def reference(genome, costs, limits, dataset):
    """Independent float64 reference with Python loops: rank, percentile, best feasible."""
    test = nb201_truth.all_accuracies(dataset, 'test')
    acc = test[nb201.to_index(genome)]
    feasible = [
        i
        for i in range(test.size)
        if all(np.isfinite(costs[c, i]) and costs[c, i] <= limits[c] for c in range(len(limits)))
    ]

    def rank(ids):
        ids = list(ids)
        return (
            1 + sum(test[i] > acc for i in ids),
            100 * sum(test[i] <= acc for i in ids) / len(ids),
        )

    best = max(feasible, key=lambda i: (test[i], -i))
    return rank(range(test.size)), rank(feasible), best, test[best] - acc


def test_report_against_a_loop():
    objective = make_objective(extra='latency@raspi4<=20')
    genome = [3, 3, 1, 3, 1, 3]
    got = evaluation.report(genome, objective)
    costs = objective.costs(ALL)
    (rank_all, pct_all), (rank_f, pct_f), best, regret = reference(
        genome, costs, objective.limits, 'cifar10'
    )
    found = got['found']
    assert got['evaluation_only'] is True and got['applicable'] is True
    assert 'never read by the search' in got['note'] and 'ties share' in got['ranking']
    assert got['dataset'] == 'cifar10'
    assert got['protocols'] == {
        'test': 'cifar10_200ep_oritest',
        'valid': 'cifar10_valid_200ep_xvalid',
    }
    assert got['constraints'] == ['flops<=100', 'latency@raspi4<=20']
    assert found['index'] == nb201.to_index(genome) and found['genome'] == genome
    assert found['test_accuracy'] == nb201_truth.accuracy(genome, 'cifar10', 'test')
    assert found['valid_accuracy'] == nb201_truth.accuracy(genome, 'cifar10', 'valid')
    assert found['costs'] == pytest.approx(objective.costs([genome])[:, 0].tolist())
    assert found['feasible'] is False  # 4 convs: over 100 MFLOPs.
    assert (found['rank_all'], found['percentile_all']) == (rank_all, pytest.approx(pct_all))
    assert (found['rank_feasible'], found['percentile_feasible']) == (rank_f, pytest.approx(pct_f))
    assert got['best_feasible']['index'] == best
    assert got['best_feasible']['arch_str'] == nb201.to_arch_str(nb201.from_index(best))
    assert got['best_feasible']['costs'] == pytest.approx(costs[:, best].tolist())
    assert got['regret'] == pytest.approx(regret)
    assert got['best_overall']['index'] == 6111
    assert got['num_feasible'] == int(np.all(costs <= objective.limits[:, None], 0).sum())
    json.dumps(got, allow_nan=False)  # Strict JSON.


def test_best_architecture_ranks_first_with_zero_regret():
    objective = make_objective()
    best = evaluation.report([0] * 6, objective)['best_feasible']
    got = evaluation.report(best['genome'], objective)
    assert got['regret'] == 0.0
    assert got['found']['rank_feasible'] == 1 and got['found']['percentile_feasible'] == 100.0
    assert got['found']['feasible'] is True
    top = evaluation.report(nb201.from_index(6111), make_objective(limit=1e9))['found']
    assert top['rank_all'] == 1 and top['percentile_all'] == 100.0


def test_ties_share_the_best_rank():
    objective = make_objective(limit=1e9)
    a = evaluation.report([0] * 6, objective)['found']  # 10 %, tied with other dead cells.
    tied = int(np.sum(nb201_truth.all_accuracies('cifar10') == 10.0))
    assert tied > 1
    assert a['rank_all'] == 15625 - tied + 1
    assert a['percentile_all'] == pytest.approx(100 * tied / 15625)


def test_dataset_follows_the_hardware_table_or_the_argument():
    objective = make_objective(dataset='cifar100')
    got = evaluation.report([1] * 6, objective)
    assert got['dataset'] == 'cifar100' and got['best_overall']['index'] == 9930
    assert got['found']['test_accuracy'] == nb201_truth.accuracy([1] * 6, 'cifar100')
    got = evaluation.report([1] * 6, objective, dataset='ImageNet16-120')
    assert got['best_overall']['index'] == 857
    with pytest.raises(UserError, match='unknown NAS-Bench-201 dataset'):
        evaluation.report([1] * 6, objective, dataset='mnist')


def test_nothing_feasible():
    got = evaluation.report([1] * 6, make_objective(limit=1.0))
    assert got['num_feasible'] == 0 and got['best_feasible'] is None and got['regret'] is None
    assert got['found']['rank_feasible'] is None


def test_not_applicable_to_other_data_or_spaces():
    objective = make_objective()
    objective.config.data.source, objective.config.data.root = 'folder', '/data/flowers'
    got = evaluation.report([1] * 6, objective)
    assert got == {
        'evaluation_only': True,
        'note': evaluation.NOTE,
        'applicable': False,
        'reason': got['reason'],
    }
    assert 'folder' in got['reason'] and '/data/flowers' in got['reason']
    # The caller may vouch that the folder holds NAS-Bench-201's data.
    assert evaluation.report([1] * 6, objective, dataset='cifar10')['applicable'] is True
    objective.config.data.source, objective.config.data.name = 'tfds', 'svhn_cropped'
    assert 'svhn_cropped' in evaluation.report([1] * 6, objective)['reason']
    config = base.get_config()
    config.space.name = 'ofa'
    assert 'only for the nb201 space' in evaluation.not_applicable(config)


def test_cached_calls_are_cheap():
    evaluation.clear_cache()
    objective = make_objective(metric='latency', device='pixel3', limit=5.0)
    evaluation.report([2] * 6, objective)
    genomes = nb201.random_genomes(np.random.default_rng(0), 20)
    start = time.perf_counter()
    for g in genomes:
        evaluation.report(g, objective)
    per_call = (time.perf_counter() - start) / len(genomes)
    assert per_call < 0.02, per_call  # Well under the 100 ms budget (measured ~0.2 ms).
    # Another limit on the same costs reuses the cost matrix; results differ accordingly.
    looser = make_objective(metric='latency', device='pixel3', limit=50.0)
    assert (
        evaluation.report([2] * 6, looser)['num_feasible']
        > evaluation.report([2] * 6, objective)['num_feasible']
    )
