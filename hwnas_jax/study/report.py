"""The proxy study's outputs: study.md (correlations, noise, split half), study.csv, study.png."""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np

from hwnas_jax import fileio
from hwnas_jax.hardware.costs import DEVICE_METRICS
from hwnas_jax.study.stats import (
    BASELINES,
    LOWER_IS_BETTER,
    _finite_pairs,
    correlations,
    describe_variable,
    kendall_tau,
    selection_regret,
    spearman,
    split_half,
    variables_of,
)


def _fmt(v: float, ci=None) -> str:
    if v is None or not np.isfinite(v):
        return 'n/a'
    return (
        f'{v:.3f}'
        if ci is None or not np.all(np.isfinite(ci))
        else (f'{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]')
    )


def preset_for(name: str) -> str | None:
    """The config that makes a search rank by variable ``name``, where one exists."""
    head, _, k = name.rpartition('_k')
    if head == 'phi' and k.isdigit():
        return f'--config.proxy.steps={k}'
    if name.startswith('phi_bn_'):
        return f'--config.reference.bn_mode={name[7:]}'
    if name.startswith('cka_') and name[4:].isdigit():
        return f'--config.proxy.score_layers={name[4:]}'
    return None


def report_markdown(rows: list[dict[str, Any]], config, costs=None) -> str:
    """study.md: the correlation table, the noise lines, the split-half check and, given the
    rows' ``costs`` under ``config.hardware``, the regret of each variable's pick."""
    s = config.study
    seed = int(config.seed)
    names = variables_of(rows)
    k = min(int(s.top_k), len(rows))
    intro = (
        f'Target: NAS-Bench-201 CIFAR-10 test accuracy (200 epochs) of each genome; '
        f'{"connected " if s.connected_only else ""}canonical classes drawn uniformly '
        f'(seed {seed}); proxy: {config.proxy.steps} steps, batch {config.proxy.batch_size}, '
        f'reference BN {config.reference.bn_mode}. 95 % intervals: {s.bootstrap} bootstrap '
        'resamples of the architectures. Losses are negated (higher = better).'
    )
    lines = [
        f'# Proxy study: rank quality on NAS-Bench-201 CIFAR-10 ({len(rows)} architectures)',
        '',
        intro,
        '',
        f'| variable | what | n | Kendall tau | Spearman rho | top-{k} hit rate |',
        '|---|---|---|---|---|---|',
    ]
    for name in names:
        c = correlations(rows, name, top_k=k, resamples=int(s.bootstrap), seed=seed)
        lines.append(
            f'| {name} | {describe_variable(name)} | {c["n"]} | '
            f'{_fmt(c["kendall"], c["kendall_ci"])} | '
            f'{_fmt(c["spearman"], c["spearman_ci"])} | '
            f'{_fmt(c["top_k"], c["top_k_ci"])} |'
        )
    lines += ['', '## Noise', '']
    gt = correlations(rows, 'valid_accuracy', top_k=k, resamples=int(s.bootstrap), seed=seed)
    lines.append(
        f"- Ground truth: NAS-Bench-201's separately trained 'cifar10-valid' networks "
        f'(valid accuracy) against the test accuracy: Kendall '
        f'{_fmt(gt["kendall"], gt["kendall_ci"])}, Spearman '
        f'{_fmt(gt["spearman"], gt["spearman_ci"])} (n = {gt["n"]}): about the '
        'ceiling of any proxy.'
    )
    noisy = [r for r in rows if r.get('phi_seed2') is not None]
    if len(noisy) >= 3:
        x = [r['phi'] for r in noisy]
        y = [r['phi_seed2'] for r in noisy]
        lines.append(
            f'- Proxy seed: phi with proxy seed + 1 against phi (n = {len(noisy)}): '
            f'Kendall {_fmt(kendall_tau(x, y))}, Spearman {_fmt(spearman(x, y))}; mean '
            f'|difference| {np.mean(np.abs(np.subtract(x, y))):.4f}.'
        )
    lines.append('- The intervals above are the sampling noise of the architectures drawn.')
    candidates = [v for v in names if v != 'phi' and v not in BASELINES]
    half = split_half(rows, candidates, resamples=int(s.bootstrap), seed=seed)
    lines += [
        '',
        '## Is a variant better than phi? (chosen on one half, measured on the other)',
        '',
    ]
    if half is None:
        lines.append('Not enough architectures (8 or more) or no variant.')
    else:
        lo, hi = half['delta_ci']
        verdict = (
            'better than phi on the held-out half'
            if lo > 0
            else 'not shown better than phi on the held-out half (the interval includes 0)'
            if hi >= 0
            else 'worse than phi on the held-out half'
        )
        preset = preset_for(half['chosen'])
        lines.append(
            f'Best variant on half A (n = {half["n_a"]}): **{half["chosen"]}** (tau '
            f'{_fmt(half["tau_a"])}). On half B (n = {half["n_b"]}): tau '
            f'{_fmt(half["tau_b"])} vs phi {_fmt(half["tau_b_phi"])}; difference 95 % '
            f'interval [{lo:.3f}, {hi:.3f}]: {verdict}. '
            + (
                f'A search ranks by it with `{preset}`.'
                if preset
                else 'No search config ranks by it yet.'
            )
        )
    if costs is not None:
        chosen = half['chosen'] if half else None
        lines += _regret_section(rows, names, np.asarray(costs, np.float64), config, chosen)
    return '\n'.join(lines) + '\n'


REGRET_POOL, REGRET_POOLS, REGRET_QUANTILES = 30, 1000, (0.25, 0.5, 0.75)


def _regret_section(rows, names, costs, config, chosen) -> list[str]:
    """study.md's "Picking under a budget": :func:`selection_regret` at three budgets, and
    the paired interval of the regret difference from phi for ``chosen`` and the baselines."""
    finite = costs[np.isfinite(costs)]
    if len(finite) < 8:
        return []
    hw = config.hardware
    what = f'{hw.metric} on {hw.device}' if hw.metric in DEVICE_METRICS else hw.metric
    budgets = [float(f'{b:.4g}') for b in np.quantile(finite, REGRET_QUANTILES)]
    res = selection_regret(
        rows,
        names,
        costs,
        budgets,
        pool_size=REGRET_POOL,
        pools=REGRET_POOLS,
        resamples=int(config.study.bootstrap) // 5,
        seed=int(config.seed),
    )
    head = ' | '.join(f'{what} <= {b:g}' for b in budgets)
    lines = [
        '',
        '## Picking under a budget',
        '',
        'A search keeps the best-scored architecture that meets its budget. Replayed on '
        f'{REGRET_POOLS} random pools of {min(REGRET_POOL, len(rows))} of these architectures, '
        f"at budgets on the 25/50/75 % quantiles of their {what}: mean regret (the pool's best "
        "feasible test accuracy minus the pick's, in points) [95 % interval, resampling the "
        "architectures], and in parentheses how often the pick is the pool's best. "
        'Architectures the cost table lacks count as infeasible.',
        '',
        f'| variable | {head} |',
        '|---|' + '---|' * len(budgets),
        '| (feasible per pool) | '
        + ' | '.join(f'{res[b]["feasible"]:.1f}' for b in budgets)
        + ' |',
        '| random feasible pick | '
        + ' | '.join(f'{res[b]["random"]["regret"]:.2f}' for b in budgets)
        + ' |',
    ]
    for name in names:
        cells = [
            f'{_fmt2(res[b][name]["regret"], res[b][name]["regret_ci"])} '
            f'({res[b][name]["hit"]:.2f})'
            for b in budgets
        ]
        lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    if 'phi' not in names:
        return lines
    lines += [
        '',
        "Regret minus phi's (95 % interval, paired; below 0: a better pick than phi's):",
        '',
    ]
    for name in [n for n in names if n == chosen or n in BASELINES]:
        gaps = ' / '.join(
            f'[{res[b][name]["delta_ci"][0]:.2f}, {res[b][name]["delta_ci"][1]:.2f}]'
            for b in budgets
        )
        why = ' (the variant chosen on half A above)' if name == chosen else ''
        lines.append(f'- {name}{why}: {gaps}')
    return lines


def _fmt2(v: float, ci) -> str:
    if not np.isfinite(v):
        return 'n/a'
    return f'{v:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]' if np.all(np.isfinite(ci)) else f'{v:.2f}'


def write_csv(path: str, rows: list[dict[str, Any]]) -> None:
    """study.csv: one row per architecture, every column (lists as 'a,b,c')."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator='\n')
    writer.writeheader()
    for r in rows:
        writer.writerow(
            {
                k: ','.join(map(str, v)) if isinstance(v, list) else ('' if v is None else v)
                for k, v in r.items()
            }
        )
    fileio.atomic_write_text(path, buf.getvalue())


_INT_COLUMNS, _LIST_COLUMNS, _TEXT_COLUMNS = (
    ('row', 'index', 'canonical_index'),
    ('genome', 'canonical'),
    ('arch_str',),
)


def read_csv(path: str) -> list[dict[str, Any]]:
    """The rows of a study.csv as the study made them (the inverse of :func:`write_csv`), to
    re-analyse a finished study without its work directory, e.g.
    ``report_markdown(read_csv(p), config, costs=...)``."""
    with open(path, newline='') as f:
        table = list(csv.DictReader(f))
    rows = []
    for r in table:
        row: dict[str, Any] = {}
        for k, v in r.items():
            if k in _TEXT_COLUMNS:
                row[k] = v
            elif v == '':
                row[k] = None
            elif k in _LIST_COLUMNS:
                row[k] = [int(x) for x in v.split(',')]
            else:
                row[k] = int(v) if k in _INT_COLUMNS else float(v)
        rows.append(row)
    return rows


def plot(path: str, rows: list[dict[str, Any]]) -> bool:
    """study.png: test accuracy against the main variables; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = [
        v
        for v in (
            'phi',
            'loss',
            'phi_heldout',
            'phi_bn_train',
            'phi_bn_eval',
            'naswot',
            'synflow',
            'flops',
            'params',
        )
        if v in rows[0]
    ]
    cols = min(3, len(names))
    fig, axes = plt.subplots(
        -(-len(names) // cols),
        cols,
        figsize=(4 * cols, 3.2 * (-(-len(names) // cols))),
        squeeze=False,
    )
    for ax, name in zip(axes.flat, names):
        x, y = _finite_pairs(rows, name)
        x = -x if name in LOWER_IS_BETTER else x
        if name == 'synflow':
            x, name = np.log10(np.maximum(x, 1e-300)), 'log10 synflow'
        ax.scatter(x, y, s=8, alpha=0.7)
        ax.set_xlabel(name)
        ax.set_ylabel('NB201 test accuracy (%)')
        ax.set_title(
            f'Kendall {kendall_tau(x, y) if name != "loss" else -kendall_tau(x, y):.3f}'
            if len(x) > 2
            else ''
        )
    for ax in list(axes.flat)[len(names) :]:
        ax.axis('off')
    fig.tight_layout()
    fileio.save_figure(path, fig)
    plt.close(fig)
    return True
