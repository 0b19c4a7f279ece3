"""Rank statistics of the proxy study (numpy only): Kendall, Spearman, top-k, bootstrap CIs.

Variables are oriented so that higher predicts higher accuracy (:func:`oriented`: the losses are
negated); rows are the study's dicts (:mod:`hwnas_jax.study`), the target their
``test_accuracy``. :func:`split_half` chooses a variant on one random half of the rows and
measures it against phi on the other, so that a variant is never credited on the
architectures it was chosen on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BASELINES = ('flops', 'params', 'flops_canonical', 'naswot', 'synflow')
LOWER_IS_BETTER = ('loss',)  # Prefixes of variables ranked by their negation.


def rankdata(x) -> np.ndarray:
    """1-based ranks of ``x`` [n], ties given their average rank (float64 [n])."""
    _, inverse, counts = np.unique(
        np.asarray(x, np.float64), return_inverse=True, return_counts=True
    )
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse.reshape(-1)]


def spearman(x, y) -> float:
    """Spearman's rho: Pearson's correlation of the average ranks; NaN if either is constant."""
    rx, ry = rankdata(x) - (len(x) + 1) / 2.0, rankdata(y) - (len(y) + 1) / 2.0
    den = np.sqrt(np.sum(rx * rx) * np.sum(ry * ry))
    return float(np.sum(rx * ry) / den) if den > 0 else float('nan')


def kendall_tau(x, y) -> float:
    """Kendall's tau-b over all pairs (O(n^2) memory; for n up to a few thousand).

        tau_b = (n_c - n_d) / sqrt((n_0 - n_x)(n_0 - n_y)),   n_0 = n(n - 1) / 2,

    with n_x, n_y the pairs tied in x, in y. NaN if either is constant.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = len(x)
    dx, dy = np.sign(x[:, None] - x[None, :]), np.sign(y[:, None] - y[None, :])
    s = np.sum(dx * dy) / 2.0
    n0 = n * (n - 1) / 2.0
    nx, ny = (np.sum(dx == 0) - n) / 2.0, (np.sum(dy == 0) - n) / 2.0
    den = np.sqrt((n0 - nx) * (n0 - ny))
    return float(s / den) if den > 0 else float('nan')


def top_k_hits(x, y, k: int) -> float:
    """Fraction of the k best by ``y`` among the k best by ``x`` (ties: the earlier row first)."""
    k = min(int(k), len(x))
    best_x = np.argsort(-np.asarray(x, np.float64), kind='stable')[:k]
    best_y = np.argsort(-np.asarray(y, np.float64), kind='stable')[:k]
    return len(set(best_x.tolist()) & set(best_y.tolist())) / k


def bootstrap(stat, x, y, *, resamples: int, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of ``stat(x[i], y[i])`` over resampled architectures ``i``."""
    rng = np.random.default_rng([seed, 14])
    x, y = np.asarray(x), np.asarray(y)
    values = [stat(x[i], y[i]) for i in (rng.integers(0, len(x), len(x)) for _ in range(resamples))]
    lo, hi = np.nanpercentile(values, [2.5, 97.5]) if np.isfinite(values).any() else (np.nan,) * 2
    return float(lo), float(hi)


# -- variables ------------------------------------------------------------------------------------


def oriented(name: str, values) -> np.ndarray:
    """``values`` as float64, negated for lower-is-better variables (losses)."""
    v = np.asarray(values, np.float64)
    return -v if name.split('_')[0] in LOWER_IS_BETTER else v


def describe_variable(name: str) -> str:
    """One line on what a column of study.csv is."""
    fixed = {
        'phi': 'sum of layer CKAs after proxy.steps steps (the paper)',
        'loss': 'final mixed loss, negated (RMI-NAS)',
        'phi_heldout': 'phi on held-out test images',
        'flops': 'MFLOPs of the genome',
        'params': 'M parameters of the genome',
        'flops_canonical': 'MFLOPs of the canonical cell',
        'naswot': 'NASWOT log det K_H (Mellor et al. 2021)',
        'synflow': 'synflow (Tanaka et al. 2020; Abdelfattah et al. 2021)',
    }
    head, _, k = name.rpartition('_k')
    per_step = {
        'phi': 'phi after {} steps (same run)',
        'loss': 'mixed loss after {} steps, negated',
        'phi_heldout': 'phi on held-out images after {} steps',
    }
    if name in fixed:
        return fixed[name]
    if head in per_step and k.isdigit():
        return per_step[head].format(k)
    if name.startswith('cka_'):
        return f'CKA of layer {name[4:]} alone'
    if name.startswith('phi_bn_'):
        return f'phi, reference BatchNorm in {name[7:]} mode (second training)'
    return name


def variables_of(rows: list[dict[str, Any]]) -> list[str]:
    """The ranking variables present in ``rows``: phi first, then variants, then baselines."""
    skip = {
        'row',
        'index',
        'arch_str',
        'genome',
        'canonical',
        'canonical_index',
        'test_accuracy',
        'valid_accuracy',
        'phi_seed2',
    }
    names = [k for k in rows[0] if k not in skip and not k.startswith('seconds')]
    return sorted(names, key=lambda k: (k != 'phi', k in BASELINES, names.index(k)))


def _finite_pairs(rows, name: str, target: str = 'test_accuracy'):
    x = oriented(name, [np.nan if r.get(name) is None else r[name] for r in rows])
    y = np.asarray([r[target] for r in rows], np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def correlations(
    rows: list[dict[str, Any]],
    name: str,
    *,
    top_k: int,
    resamples: int,
    seed: int = 0,
    target: str = 'test_accuracy',
) -> dict[str, Any]:
    """Kendall tau, Spearman rho and top-k hit rate of one variable, with bootstrap CIs."""
    x, y = _finite_pairs(rows, name, target)
    out: dict[str, Any] = {'variable': name, 'n': len(x)}
    stats = {
        'kendall': kendall_tau,
        'spearman': spearman,
        'top_k': lambda a, b: top_k_hits(a, b, top_k),
    }
    for key, fn in stats.items():
        if len(x) < 3:
            out[key], out[key + '_ci'] = float('nan'), (float('nan'),) * 2
            continue
        out[key] = fn(x, y)
        out[key + '_ci'] = bootstrap(fn, x, y, resamples=resamples, seed=seed)
    return out


def split_half(
    rows: list[dict[str, Any]], candidates: list[str], *, resamples: int, seed: int = 0
) -> dict[str, Any] | None:
    """Chooses the best-tau variant on a random half, and compares it with phi on the other.

    Returns the chosen name, its tau on half A, both taus on half B, and the paired-bootstrap
    95 % interval of tau(variant) - tau(phi) on half B; None with fewer than 8 rows or no
    candidate.
    """
    if len(rows) < 8 or not candidates:
        return None
    perm = np.random.default_rng([seed, 13]).permutation(len(rows))
    half_a = [rows[i] for i in perm[: len(rows) // 2]]
    half_b = [rows[i] for i in perm[len(rows) // 2 :]]
    tau_a = {v: kendall_tau(*_finite_pairs(half_a, v)) for v in candidates}
    chosen = max(candidates, key=lambda v: -np.inf if np.isnan(tau_a[v]) else tau_a[v])
    keep = [
        r
        for r in half_b
        if all(np.isfinite(r.get(v) if r.get(v) is not None else np.nan) for v in (chosen, 'phi'))
    ]
    xv = oriented(chosen, [r[chosen] for r in keep])
    xp = np.asarray([r['phi'] for r in keep], np.float64)
    y = np.asarray([r['test_accuracy'] for r in keep], np.float64)
    both = np.stack([xv, xp], 1)
    delta = bootstrap(
        lambda b, t: kendall_tau(b[:, 0], t) - kendall_tau(b[:, 1], t),
        both,
        y,
        resamples=resamples,
        seed=seed + 1,
    )
    return {
        'chosen': chosen,
        'tau_a': tau_a[chosen],
        'n_a': len(half_a),
        'n_b': len(keep),
        'tau_b': kendall_tau(xv, y),
        'tau_b_phi': kendall_tau(xp, y),
        'delta_ci': delta,
    }


def _pool_regrets(acc, costs, values, draws, budget):
    """Per pool: regret of each variable's pick ([V, P], NaN without a feasible row), the
    random pick's ([P]) and whether each pick is the pool's best ([V, P])."""
    ok = costs[draws] <= budget  # [P, m]
    has = ok.any(1)
    a = np.where(ok, acc[draws], -np.inf)
    best = np.where(has, a.max(1), np.nan)
    mean = np.where(ok, acc[draws], 0.0).sum(1) / np.maximum(ok.sum(1), 1)
    random = np.where(has, best - mean, np.nan)
    picks = np.argmax(np.where(ok[None], values[:, draws], -np.inf), 2)  # [V, P]
    chosen = np.take_along_axis(acc[draws][None], picks[..., None], 2)[..., 0]
    regret = np.where(has, best - chosen, np.nan)
    return regret, random, regret == 0


def selection_regret(
    rows: list[dict[str, Any]],
    names: list[str],
    costs,
    budgets,
    *,
    pool_size: int = 30,
    pools: int = 1000,
    resamples: int = 200,
    seed: int = 0,
) -> dict[float, dict[str, Any]]:
    """How far below the best each variable's pick lands, among random pools under a budget.

    A search keeps the best-scored architecture that meets its budget among those it scored.
    This replays that choice on the study's rows: ``pools`` random pools of ``pool_size`` rows
    (without replacement); in each, the feasible rows (``costs <= budget``), the pick (highest
    oriented value; NaN never picked) and its regret, the pool's best feasible test accuracy
    minus the pick's. 'random' is the mean regret of a uniformly random feasible pick. The
    95 % intervals resample the architectures (``resamples`` times, then draw the pools from
    the resample), so they cover the luck of the architectures drawn, not only the pools'.

    Returns, per budget: ``{'pools': pools with a feasible row, 'feasible': mean feasible rows
    per such pool, name: {'regret', 'regret_ci', 'hit' (share of pools where the pick is the
    pool's best), 'delta_ci' (interval of regret minus phi's, when 'phi' is in names)}}``.
    """
    acc = np.asarray([r['test_accuracy'] for r in rows], np.float64)
    costs = np.asarray(costs, np.float64)
    if costs.shape != acc.shape:
        raise ValueError(f'costs {costs.shape} do not match the {len(acc)} rows')
    values = (
        np.stack([oriented(n, [np.nan if r.get(n) is None else r[n] for r in rows]) for n in names])
        if names
        else np.zeros((0, len(rows)))
    )
    # A feasible row with no value is picked only when no feasible row has one.
    values = np.where(np.isfinite(values), values, -np.finfo(np.float64).max)
    rng = np.random.default_rng([seed, 15])
    m, n = min(int(pool_size), len(rows)), len(rows)
    draws = np.argsort(rng.random((int(pools), n)), 1)[:, :m]
    boot = []  # Pools drawn from resampled architectures (a fifth as many per resample).
    for _ in range(int(resamples)):
        take = rng.integers(0, n, n)
        boot.append(take[np.argsort(rng.random((max(int(pools) // 5, 1), n)), 1)[:, :m]])
    out: dict[float, dict[str, Any]] = {}
    for budget in budgets:
        regret, random, hit = _pool_regrets(acc, costs, values, draws, budget)
        has = np.isfinite(random)
        res: dict[str, Any] = {
            'pools': int(has.sum()),
            'feasible': float(np.mean((costs[draws] <= budget).sum(1)[has])) if has.any() else 0.0,
            'random': {'regret': float(np.nanmean(random)) if has.any() else float('nan')},
        }
        means = []
        for d in boot:
            r, _, _ = _pool_regrets(acc, costs, values, d, budget)
            means.append(np.nanmean(r, 1) if np.isfinite(r).any() else np.full(len(names), np.nan))
        means = np.asarray(means).reshape(len(boot), len(names))
        phi = names.index('phi') if 'phi' in names else None
        for v, name in enumerate(names):
            entry = {
                'regret': float(np.nanmean(regret[v])) if has.any() else float('nan'),
                'hit': float(np.mean(hit[v][has])) if has.any() else float('nan'),
                'regret_ci': _interval(means[:, v]),
            }
            if phi is not None:
                entry['delta_ci'] = _interval(means[:, v] - means[:, phi])
            res[name] = entry
        out[float(budget)] = res
    return out


def _interval(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    if not np.isfinite(values).any():
        return (float('nan'),) * 2
    lo, hi = np.nanpercentile(values, [2.5, 97.5])
    return float(lo), float(hi)
