"""Figure 2 and 3 outputs of the grid: the CSV tables, the summary table and the plots."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging as std_logging
import os
from typing import Any

import numpy as np
from absl import logging

from hwnas_jax import fileio
from hwnas_jax.errors import UserError
from hwnas_jax.hardware import costs as hw_costs
from hwnas_jax.spaces import nb201

OP_COLUMNS = ('device', 'budget', 'cells', 'n', *nb201.OPS)
PROGRESS_COLUMNS = (
    'search',
    'status',
    'generation',
    'generations',
    'architectures',
    'seconds',
    'best_index',
    'best_cost',
    'best_score',
    'test_accuracy',
    'rank_feasible',
    'regret',
)


def unit(device: str) -> str:
    """The unit of a grid device's budgets: 'ms' (latency) or 'MFLOPs'."""
    return hw_costs.UNITS['flops' if device == 'flops' else 'latency']


def all_costs(config, device: str) -> np.ndarray:
    """[15625] cost of every cell on ``device`` (inf where HW-NAS-Bench has no value)."""
    hw = config.hardware
    metric = 'flops' if device == 'flops' else 'latency'
    return hw_costs.cost(
        nb201.indices_to_genomes(np.arange(nb201.NUM_ARCHS)),
        metric,
        device=None if device == 'flops' else device,
        dataset=hw.dataset,
        missing='infeasible',
        table=hw.table,
    )


def csv_text(rows: list[dict[str, Any]], columns) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator='\n')
    writer.writeheader()
    writer.writerows({k: '' if r.get(k) is None else r[k] for k in columns} for r in rows)
    return buf.getvalue()


def metrics(directory: str) -> list[dict[str, Any]]:
    """A search's metrics.jsonl, one record per generation done (empty before the first)."""
    path = os.path.join(directory, 'metrics.jsonl')
    if not os.path.exists(path):
        return []
    with open(path, 'rb') as f:  # Rewritten whole and atomically after every generation.
        return [json.loads(line) for line in f.read().splitlines() if line.strip()]


def progress_row(name: str, directory: str, finished: bool, generations: int) -> dict[str, Any]:
    """progress.csv's row: how far a search of the grid is, and how good its best is so far."""
    history = metrics(directory)
    status = 'finished' if finished else ('started' if history else 'not started')
    if not history:
        return {'search': name, 'status': status, 'generation': 0, 'generations': generations}
    m = history[-1]
    gt = m.get('evaluation') or {}
    genome = m.get('best_genome')
    return {
        'search': name,
        'status': status,
        'generation': m['generation'] + 1,  # Generations done (metrics count from 0).
        'generations': generations,
        'architectures': m.get('distinct_evaluated'),
        'seconds': round(sum(r['seconds'] + r['compile_seconds'] for r in history), 1),
        'best_index': nb201.to_index(genome) if genome else None,
        'best_cost': m.get('best_cost'),
        'best_score': m.get('best_score'),
        'test_accuracy': gt.get('test_accuracy'),
        'rank_feasible': gt.get('rank_feasible'),
        'regret': gt.get('regret'),
    }


def write_progress(root: str, names: list[str], missing: list[str], generations: int) -> list[str]:
    """Writes ``<root>/progress.csv`` (one row per search); returns 'name (done/total)' of each
    unfinished one."""
    generations = int(generations)
    progress = [
        progress_row(name, os.path.join(root, name), name not in missing, generations)
        for name in names
    ]
    fileio.atomic_write_text(
        os.path.join(root, 'progress.csv'), csv_text(progress, PROGRESS_COLUMNS)
    )
    return [
        f'{p["search"]} ({p["generation"]}/{generations})'
        for p in progress
        if p['status'] != 'finished'
    ]


def op_counts(genomes) -> np.ndarray:
    """[n, 5] number of edges carrying each op (:data:`nb201.OPS`) in each genome."""
    g = np.asarray(genomes, np.int64).reshape(-1, nb201.NUM_EDGES)
    return np.stack([(g == k).sum(-1) for k in range(nb201.NUM_OPS)], -1)


def op_table(config, rows: list[dict[str, Any]], top: int = 10) -> list[dict[str, Any]]:
    """figure3.csv: mean op counts of the found cells and of the top-``top`` feasible cells."""
    from hwnas_jax.spaces import nb201_truth

    try:
        acc = nb201_truth.all_accuracies(config.hardware.dataset, 'test')
    except UserError as e:
        logging.warning('figure3: no top-%d feasible cells (%s)', top, e)
        acc = None
    out = []
    for device in dict.fromkeys(r['device'] for r in rows):
        cost = all_costs(config, device) if acc is not None else None
        for b in sorted({r['budget'] for r in rows if r['device'] == device}):
            found = [
                [int(v) for v in r['genome'].split(',')]
                for r in rows
                if (r['device'], r['budget']) == (device, b)
            ]
            groups = [('found', op_counts(found))]
            if cost is not None:
                ok = np.flatnonzero(np.isfinite(cost) & (cost <= b))
                best = ok[np.lexsort((ok, -acc[ok]))][:top]  # Ties to the lowest index.
                groups.insert(0, (f'top{top}_feasible', op_counts(nb201.indices_to_genomes(best))))
            for cells, counts in groups:
                if len(counts):
                    out.append(
                        {
                            'device': device,
                            'budget': b,
                            'cells': cells,
                            'n': len(counts),
                            **dict(zip(nb201.OPS, counts.mean(0).tolist())),
                        }
                    )
    return out


def _stats(values) -> tuple[float, float, int]:
    v = np.asarray([np.nan if x is None else x for x in values], np.float64)
    v = v[np.isfinite(v)]
    return (float(v.mean()), float(v.std()), len(v)) if len(v) else (np.nan, np.nan, 0)


def summary(rows: list[dict[str, Any]]) -> str:
    """Mean +- std test accuracy per device and budget, the best feasible, the mean regret."""
    lines = [
        (
            f'{"device":>8} {"budget":>8} {"n":>3} {"accuracy":>15} {"best feasible":>13} '
            f'{"regret":>7}'
        )
    ]
    for d in dict.fromkeys(r['device'] for r in rows):
        for b in sorted({r['budget'] for r in rows if r['device'] == d}):
            sel = [r for r in rows if (r['device'], r['budget']) == (d, b)]
            mean, std, n = _stats(r['test_accuracy'] for r in sel)
            best = sel[0]['best_feasible_accuracy']
            regret = _stats(r['regret'] for r in sel)[0]
            lines.append(
                f'{d:>8} {b:>8g} {n:>3} {mean:>8.2f} ± {std:<4.2f} '
                f'{"n/a" if best is None else format(best, ".2f"):>13} {regret:>7.2f}'
            )
    return '\n'.join(lines)


def plot(root: str, rows: list[dict[str, Any]], ops: list[dict[str, Any]]) -> list[str]:
    """Figures 2, 2(h) and 3 as PNG files in ``root``; the names written (none without
    matplotlib)."""
    try:
        import matplotlib

        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []

    def save(fig, name):
        fig.tight_layout()
        fileio.save_figure(os.path.join(root, name), fig)
        plt.close(fig)
        written.append(name)

    devices = list(dict.fromkeys(r['device'] for r in rows))
    cols = min(4, len(devices))
    fig, axes = plt.subplots(
        -(-len(devices) // cols),
        cols,
        figsize=(4 * cols, 3.2 * (-(-len(devices) // cols))),
        squeeze=False,
    )
    for ax, d in zip(axes.flat, devices):
        bs = sorted({r['budget'] for r in rows if r['device'] == d})
        st = [
            _stats(r['test_accuracy'] for r in rows if (r['device'], r['budget']) == (d, b))
            for b in bs
        ]
        best = [
            next(r['best_feasible_accuracy'] for r in rows if (r['device'], r['budget']) == (d, b))
            for b in bs
        ]
        ax.errorbar(
            bs,
            [m for m, _, _ in st],
            yerr=[s for _, s, _ in st],
            fmt='o',
            capsize=3,
            label='HW-EvRSNAS (mean ± std)',
        )
        ax.plot(
            bs,
            [np.nan if v is None else v for v in best],
            'k--',
            marker='_',
            ms=12,
            label='best feasible',
        )
        ax.set_title(d)
        ax.set_xlabel(f'budget ({unit(d)})')
        ax.set_ylabel('NB201 CIFAR-10 test accuracy (%)')
    axes.flat[0].legend(fontsize=7)
    for ax in list(axes.flat)[len(devices) :]:
        ax.axis('off')
    save(fig, 'figure2.png')
    flops = [r for r in rows if r['device'] == 'flops']
    if flops:
        fig, ax = plt.subplots(figsize=(6, 4))
        bs = sorted({r['budget'] for r in flops})
        for d in hw_costs.DEVICES:
            st = [_stats(r[f'latency_{d}'] for r in flops if r['budget'] == b) for b in bs]
            ax.errorbar(
                bs,
                [m for m, _, _ in st],
                yerr=[s for _, s, _ in st],
                marker='o',
                capsize=3,
                label=d,
            )
        ax.set_xlabel('FLOPs budget (MFLOPs)')
        ax.set_ylabel('latency of the found cell (ms)')
        ax.set_yscale('log')
        ax.legend(fontsize=7)
        save(fig, 'figure2h.png')
    for d in devices:
        mine = [o for o in ops if o['device'] == d]
        kinds = list(dict.fromkeys(o['cells'] for o in mine))
        bs = sorted({o['budget'] for o in mine})
        fig, axes = plt.subplots(
            len(kinds),
            len(bs),
            figsize=(2.2 * len(bs), 2.4 * len(kinds)),
            squeeze=False,
            sharey=True,
        )
        for i, kind in enumerate(kinds):
            for j, b in enumerate(bs):
                o = next((o for o in mine if (o['cells'], o['budget']) == (kind, b)), None)
                ax = axes[i, j]
                if o is not None:
                    ax.bar(range(nb201.NUM_OPS), [o[op] for op in nb201.OPS])
                ax.set_xticks(
                    range(nb201.NUM_OPS), [op.replace('_', '\n', 1) for op in nb201.OPS], fontsize=5
                )
                ax.set_title(f'{kind}, {b:g} {unit(d)}', fontsize=7)
        axes[0, 0].set_ylabel('mean op count')
        save(fig, f'figure3-{d}.png')
    return written


class _Prefix(std_logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: std_logging.LogRecord) -> bool:
        record.msg = self.prefix + str(record.msg)
        return True


@contextlib.contextmanager
def prefixed_logs(prefix: str):
    """Prefixes every absl log line of the block (``prefix`` holds no '%')."""
    logger = logging.get_absl_logger()
    f = _Prefix(prefix)
    logger.addFilter(f)
    try:
        yield
    finally:
        logger.removeFilter(f)
