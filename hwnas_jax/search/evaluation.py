"""Evaluation only: how good the found architecture really is, from NAS-Bench-201's ground truth.

The search never reads these numbers (it sees only the RMI proxy and the hardware costs); this
module turns a found genome into a JSON-able record for ``best.json`` and ``metrics.jsonl``: its
200-epoch test and validation accuracy, its rank and percentile among all 15,625 architectures
and among those meeting every constraint, the best feasible architecture (exact, over the whole
space) and the regret.

Which accuracies: ``config.hardware.dataset`` (cifar10 | cifar100 | ImageNet16-120) chooses both
the HW-NAS-Bench cost table and the accuracy table, unless ``dataset=`` is passed. The protocols
(which NAS-Bench-201 column is "test" and "valid") are in :mod:`hwnas_jax.spaces.nb201_truth`.

Ranks and percentiles use the test accuracy and this tie convention (:data:`RANKING`): rank is
1 + the number of architectures in the set with a strictly higher accuracy (tied architectures
share the best rank, "1224" ranking), and percentile is 100 x the fraction of the set whose
accuracy is <= the found one's (the best architecture is at 100). The feasible set need not
contain the found architecture (an infeasible one is compared with it all the same). The best
feasible architecture maximises the test accuracy; ties go to the lowest index.

Ground truth applies only to the NAS-Bench-201 space searched on data NAS-Bench-201 trained on
(the packaged CIFAR-10 sample, or tfds cifar10 / cifar100); for another space or the user's own
data (``data.source='folder'``, other tfds sets) :func:`report` returns a record saying so.

The full-space costs are computed once per set of constraints (metric, device, dataset, table,
missing policy) and cached with the sorted accuracies, so a call per generation costs well under
a millisecond after the first.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from hwnas_jax import fileio
from hwnas_jax.spaces import nb201, nb201_truth

NOTE = (
    'Evaluation only: NAS-Bench-201 ground-truth accuracies (200 epochs), never read by the '
    'search, which sees only the proxy score and the hardware costs.'
)
RANKING = (
    'rank = 1 + number of architectures in the set with a strictly higher test '
    'accuracy (ties share the best rank); percentile = 100 * fraction of the set with '
    'test accuracy <= the found one; best feasible: highest test accuracy, ties to the '
    'lowest index'
)
NB201_DATA = {'cifar10', 'cifar100'}  # tfds names whose task NAS-Bench-201 trained on.
_MAX_CACHED = 8

_COSTS: dict[tuple, np.ndarray] = {}
_CONTEXTS: dict[tuple, dict[str, Any]] = {}
_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forgets the cached full-space costs (tests; tables replaced within one timestamp tick)."""
    with _LOCK:
        _COSTS.clear()
        _CONTEXTS.clear()


def search_data(config) -> str:
    """What the search trained its proxy on, e.g. 'cifar10 (embedded sample)'."""
    source = config.data.source
    if source == 'embedded':
        return 'cifar10 (embedded sample)'
    if source == 'tfds':
        return f'{config.data.name} (tfds)'
    return f'{config.data.root} ({source})'


def not_applicable(config, dataset: str | None = None) -> str | None:
    """Why NAS-Bench-201 ground truth does not apply to this search, or None when it does."""
    if config.space.name != nb201.NAME:
        return (
            f'NAS-Bench-201 ground truth exists only for the nb201 space; this search is on '
            f'{config.space.name!r}'
        )
    if dataset is not None:
        return None  # The caller vouches that the task is NAS-Bench-201's.
    source = config.data.source
    if source == 'folder':
        return (
            f'config.data.source=folder ({config.data.root}) is your own data, not '
            f'CIFAR-10/100 or ImageNet16-120 as NAS-Bench-201 trained on them; if the folder '
            'holds one of those, call report(..., dataset=...) to compare anyway'
        )
    if source == 'tfds' and config.data.name not in NB201_DATA:
        return (
            f'tfds dataset {config.data.name!r} is not one NAS-Bench-201 trained on '
            f'({sorted(NB201_DATA)} or ImageNet16-120)'
        )
    return None


def _cost_key(objective) -> tuple:
    hw = objective.config.hardware
    table = hw.table or None
    if table is not None:
        try:
            st = os.stat(table)
            table = (os.path.realpath(table), st.st_size, st.st_mtime_ns)
        except OSError:
            pass  # The cost module reports it.
    return (
        objective.space.name,
        tuple((c.metric, c.device) for c in objective.constraints),
        hw.dataset,
        hw.missing,
        table,
    )


def _full_costs(objective) -> np.ndarray:
    key = _cost_key(objective)
    with _LOCK:
        hit = _COSTS.get(key)
    if hit is not None:
        return hit
    costs = np.asarray(
        objective.costs(nb201.indices_to_genomes(np.arange(nb201.NUM_ARCHS))), np.float64
    )
    costs.setflags(write=False)
    with _LOCK:
        if len(_COSTS) >= _MAX_CACHED:
            _COSTS.pop(next(iter(_COSTS)))
        _COSTS[key] = costs
    return costs


def _context(objective, dataset: str) -> dict[str, Any]:
    """Feasibility, sorted accuracies and the best feasible architecture, cached."""
    limits = np.asarray(objective.limits, np.float64)
    key = (_cost_key(objective), tuple(limits.tolist()), dataset)
    with _LOCK:
        hit = _CONTEXTS.get(key)
    if hit is not None:
        return hit
    costs, limits, feasible = nb201_truth.feasibility((_full_costs(objective), limits))
    test = nb201_truth.all_accuracies(dataset, 'test')
    ctx = {
        'costs': costs,
        'feasible': feasible,
        'test': test,
        'valid': nb201_truth.all_accuracies(dataset, 'valid'),
        'sorted_all': np.sort(test),
        'sorted_feasible': np.sort(test[feasible]),
        'best_feasible': nb201_truth.best_feasible((costs, limits), dataset, 'test'),
        'best_index': int(np.argmax(test)),
    }
    with _LOCK:
        if len(_CONTEXTS) >= _MAX_CACHED:
            _CONTEXTS.pop(next(iter(_CONTEXTS)))
        _CONTEXTS[key] = ctx
    return ctx


def _rank(sorted_acc: np.ndarray, acc: float) -> tuple[int | None, float | None]:
    n = sorted_acc.size
    if n == 0:
        return None, None
    at_most = int(np.searchsorted(sorted_acc, acc, side='right'))
    higher = n - at_most
    return 1 + higher, 100.0 * at_most / n


def _arch(ctx: dict[str, Any], index: int) -> dict[str, Any]:
    genome = nb201.indices_to_genomes(index)
    return {
        'index': index,
        'genome': genome.tolist(),
        'arch_str': nb201.to_arch_str(genome),
        'test_accuracy': float(ctx['test'][index]),
        'valid_accuracy': float(ctx['valid'][index]),
        'costs': ctx['costs'][:, index].tolist(),
    }


def report(genome: Any, objective, dataset: str | None = None) -> dict[str, Any]:
    """Ground-truth evaluation of one found genome (JSON-able; non-finite costs become null).

    Args:
      genome: [6] op indices of a NAS-Bench-201 genome.
      objective: the search's :class:`hwnas_jax.search.objective.Objective` (its constraints,
        limits and config).
      dataset: accuracy table 'cifar10' | 'cifar100' | 'ImageNet16-120'; None: the config's
        ``hardware.dataset``, when the search data is NAS-Bench-201's (see the module docstring).

    Returns:
      ``{'evaluation_only': True, 'note', 'applicable': bool, ...}``. Not applicable: ``'reason'``
      says why. Applicable: ``'dataset'``, ``'protocols'`` ({'test': column, 'valid': column}),
      ``'search_data'``, ``'constraints'`` (list of str), ``'num_archs'``, ``'num_feasible'``,
      ``'ranking'`` (:data:`RANKING`), ``'found'`` (index, genome, arch_str, test_accuracy,
      valid_accuracy, costs, feasible, rank_all, percentile_all, rank_feasible,
      percentile_feasible), ``'best_feasible'`` (index, genome, arch_str, test_accuracy,
      valid_accuracy, costs; None when nothing is feasible), ``'best_overall'`` (the same,
      unconstrained) and ``'regret'`` (best feasible minus found test accuracy, percentage
      points; None when nothing is feasible).

    Raises:
      UserError: unknown dataset. ValueError: malformed genome.
    """
    config = objective.config
    reason = not_applicable(config, dataset)
    if reason is not None:
        return {'evaluation_only': True, 'note': NOTE, 'applicable': False, 'reason': reason}
    dataset = config.hardware.dataset if dataset is None else dataset
    protocols = {s: nb201_truth.protocol(dataset, s) for s in nb201_truth.SPLITS}
    index = nb201.to_index(genome)
    ctx = _context(objective, dataset)
    found = _arch(ctx, index)
    acc = found['test_accuracy']
    rank_all, pct_all = _rank(ctx['sorted_all'], acc)
    rank_feasible, pct_feasible = _rank(ctx['sorted_feasible'], acc)
    found.update(
        feasible=bool(ctx['feasible'][index]),
        rank_all=rank_all,
        percentile_all=pct_all,
        rank_feasible=rank_feasible,
        percentile_feasible=pct_feasible,
    )
    best = ctx['best_feasible']
    best = None if best is None else _arch(ctx, best['index'])
    out = {
        'evaluation_only': True,
        'note': NOTE,
        'applicable': True,
        'dataset': dataset,
        'protocols': protocols,
        'search_data': search_data(config),
        'constraints': [
            f'{c.metric}{"@" + c.device if c.device else ""}<={c.limit:g}'
            for c in objective.constraints
        ],
        'num_archs': nb201.NUM_ARCHS,
        'num_feasible': int(ctx['sorted_feasible'].size),
        'ranking': RANKING,
        'found': found,
        'best_feasible': best,
        'best_overall': _arch(ctx, ctx['best_index']),
        'regret': None if best is None else best['test_accuracy'] - acc,
    }
    return fileio.json_safe(out)
