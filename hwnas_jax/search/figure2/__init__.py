"""The paper's Figures 2 and 3 on NAS-Bench-201: a grid of searches, devices x budgets x seeds.

Every point of the grid is one HW-EvRSNAS search (:func:`hwnas_jax.search.loop.run`) of the
config with ``hardware.metric/device/limit`` and ``seed`` set for that point, in its own
directory ``<root>/<device>-<budget>-s<seed>/`` (``root``: ``figure2.root``, by default the
workdir), so each search resumes on its own and a finished one is never run again.

* Devices (``figure2.devices``): the six HW-NAS-Bench devices (latency, ms) and ``flops``
  (NAS-Bench-201's MFLOPs, the paper's Figure 2 (g)-(h)). HW-NAS-Bench lacks edgegpu and edgetpu
  latencies for some cells: ``configs/figure2.py`` sets ``hardware.missing=infeasible``.
* Budgets (``figure2.budgets``): by default ``figure2.num_budgets`` per device, the 0.1 ... 0.9
  quantiles of the device's costs over the 15,625 cells (those it has a value for), rounded up
  to two significant digits (:func:`derived_budgets`), so every device's sweep spans its range.
* Seeds: ``figure2.seeds`` GA seeds ``seed``, ``seed + 1``, ... . The proxy's seed (batch draw
  and initial weights, ``proxy.seed``) stays the same for every search, by default ``seed``:
  the spread over seeds then measures the GA's variance given one proxy, not the proxy's own
  noise (which the proxy study measures), and the searches share their scores.
* Score store: on by default (``figure2.store``: ``<root>/scores.sqlite``, or a shared path):
  with one proxy seed every search of the grid reuses the architectures any other trained.

Sharding: ``figure2.shard=i/n`` runs searches i, i+n, i+2n, ... of the grid (seed-major order:
all devices and budgets of seed 0 first); give every shard the same ``figure2.root`` (and, on
one machine, its own ``--workdir``). Each search directory is locked while it runs, so
overlapping shards never run one search twice. After its searches every run merges: it reads
the ``best.json`` of every finished search of the grid and writes the outputs; running the job
with ``0/1`` once all shards are done (or with ``figure2.merge_only``) just merges.

Outputs in the root: ``figure2.csv`` (one row per finished search, :data:`COLUMNS`),
``figure3.csv`` (mean op counts of the found and of the top-10 feasible cells per budget) and,
with matplotlib, ``figure2.png`` (mean +- std test accuracy of the found cells against the
budget, per device, the best feasible cell as a dashed line), ``figure2h.png`` (latency on each
device of the cells found under FLOPs budgets) and ``figure3-<device>.png``
(:mod:`~hwnas_jax.search.figure2.outputs`); ``progress.csv``, one row per search of the grid,
finished or not: the generations done and the best so far with its accuracy and regret.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import time
from typing import Any

import numpy as np
from absl import logging

from hwnas_jax import fileio
from hwnas_jax.errors import UserError
from hwnas_jax.hardware import costs as hw_costs
from hwnas_jax.search.figure2.outputs import (
    OP_COLUMNS,
    all_costs,
    csv_text,
    op_table,
    plot,
    prefixed_logs,
    summary,
    unit,
    write_progress,
)
from hwnas_jax.search.loop import proxy_seed  # Shared by every search of the grid.

DEVICES = hw_costs.DEVICES + ('flops',)
LATENCY_COLUMNS = tuple(f'latency_{d}' for d in hw_costs.DEVICES)
COLUMNS = (
    'device',
    'metric',
    'budget',
    'unit',
    'seed',
    'proxy_seed',
    'search',
    'index',
    'arch_str',
    'genome',
    'cost',
    'feasible',
    'test_accuracy',
    'valid_accuracy',
    'rank_feasible',
    'best_feasible_index',
    'best_feasible_accuracy',
    'regret',
    'within_noise',
    'within_noise_accuracy_min',
    'within_noise_accuracy_max',
    'score',
    'fitness',
    'flops',
    'params',
    *LATENCY_COLUMNS,
    'search_seconds',
    'architectures',
    'trained',
)
SIDECAR = 'figure2.json'  # Per search: wall seconds and store growth while it ran here.


@dataclasses.dataclass(frozen=True)
class Search:
    """One point of the grid; ``position`` counts from 1 in the grid's order."""

    device: str
    budget: float
    seed: int
    position: int = 0

    @property
    def name(self) -> str:
        return f'{self.device}-{self.budget:g}-s{self.seed}'

    @property
    def metric(self) -> str:
        return 'flops' if self.device == 'flops' else 'latency'


def parse_devices(text: str) -> list[str]:
    devices = [d.strip() for d in str(text).split(',') if d.strip()]
    bad = [d for d in devices if d not in DEVICES]
    if not devices or bad or len(set(devices)) != len(devices):
        raise UserError(
            f'config.figure2.devices={text!r} is invalid: distinct names from '
            f'{", ".join(DEVICES)}, separated by commas'
        )
    return devices


def round_up(value: float, digits: int = 2) -> float:
    """``value`` rounded up to ``digits`` significant digits (3.274 -> 3.3, 47.1 -> 48)."""
    step = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
    return round(math.ceil(round(value / step, 9)) * step, 10)


def derived_budgets(config, device: str, n: int) -> list[float]:
    """``n`` budgets: quantiles 0.1 ... 0.9 of the device's finite costs, rounded up to two
    significant digits (up, so that a cost many cells share stays within the budget)."""
    c = all_costs(config, device)
    c = c[np.isfinite(c)]
    qs = [0.5] if n == 1 else np.linspace(0.1, 0.9, n)
    return sorted({round_up(float(v)) for v in np.quantile(c, qs)})


def _numbers(text: str, field: str) -> list[float]:
    try:
        values = sorted({float(v) for v in text.split(',') if v.strip()})
    except ValueError:
        values = []
    if not values or any(not np.isfinite(v) or v <= 0 for v in values):
        raise UserError(
            f'config.{field}={text!r} is invalid: positive numbers separated by '
            "commas, e.g. '3,5,8', or per device 'pixel3:3,5;flops:50,100'"
        )
    return values


def budgets(config) -> dict[str, list[float]]:
    """{device: budgets} from ``figure2.budgets`` (derived where it names none)."""
    f2 = config.figure2
    devices = parse_devices(f2.devices)
    text = str(f2.budgets).strip()
    given: dict[str, list[float]] = {}
    if ':' in text:
        for part in filter(str.strip, text.split(';')):
            device, _, values = part.partition(':')
            device = device.strip()
            if device not in devices:
                raise UserError(
                    f'config.figure2.budgets={text!r} is invalid: {device!r} is not '
                    f'in figure2.devices ({f2.devices})'
                )
            given[device] = _numbers(values, 'figure2.budgets')
    elif text:
        given = dict.fromkeys(devices, _numbers(text, 'figure2.budgets'))
    return {d: given.get(d) or derived_budgets(config, d, int(f2.num_budgets)) for d in devices}


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in str(text).split('/'))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise UserError(
            f"config.figure2.shard={text!r} is invalid: 'i/n' with 0 <= i < n, "
            "e.g. '0/1' (everything) or '2/4'"
        )
    return i, n


def grid(config) -> list[Search]:
    """Every search of the grid in its order: seed-major, then device, then budget."""
    parse_shard(config.figure2.shard)
    per_device = budgets(config)
    points = [
        (d, b, int(config.seed) + k)
        for k in range(int(config.figure2.seeds))
        for d, bs in per_device.items()
        for b in bs
    ]
    return [Search(d, b, s, i + 1) for i, (d, b, s) in enumerate(points)]


def store_path(config, root: str) -> str | None:
    """The score store of the grid (None: off)."""
    text = str(config.figure2.store).strip()
    if text == 'none':
        return None
    return text or config.proxy.store or os.path.join(root, 'scores.sqlite')


def search_config(config, s: Search, store: str | None):
    """The search config of grid point ``s``: job 'search' with its device, budget and seeds."""
    c = copy.deepcopy(config)
    c.job = 'search'
    c.proxy.seed = proxy_seed(config)
    c.seed = int(s.seed)
    c.proxy.store = store
    c.hardware.metric = s.metric
    c.hardware.device = '' if s.device == 'flops' else s.device
    c.hardware.limit = float(s.budget)
    return c


def finished(cfg, directory: str):
    """(best.json, state) of a finished search, else None; UserError for other settings."""
    from hwnas_jax.search import state as st

    best_path = os.path.join(directory, 'best.json')
    if not os.path.exists(best_path):
        return None
    state = st.load(directory, cfg)
    if state is None or state.generation < int(cfg.ga.generations):
        return None
    return fileio.load_json(
        best_path, what='a search result', fix='delete it: rerunning the grid writes it again'
    ), state


def run_search(config, root: str, s: Search, total: int, store: str | None) -> str:
    """Runs (or resumes) one search of the grid; 'done', 'ran' or 'busy' (running elsewhere)."""
    from hwnas_jax import workdir as wd
    from hwnas_jax.search import loop
    from hwnas_jax.search import store as score_store

    directory = os.path.join(root, s.name)
    cfg = search_config(config, s, store)
    if finished(cfg, directory):
        return 'done'
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(wd.lock(directory))
        except UserError as e:
            logging.warning('search %d/%d %s skipped: %s', s.position, total, s.name, e)
            return 'busy'
        fileio.atomic_write_json(os.path.join(directory, 'config.json'), cfg.to_dict(), indent=2)
        side_path = os.path.join(directory, SIDECAR)
        side = (
            fileio.load_json(side_path, what='figure2 search notes', fix='delete it')
            if (os.path.exists(side_path))
            else {'wall_seconds': 0.0, 'trained': 0}
        )

        def count() -> int:
            with score_store.ScoreStore(store) as ss:
                return ss.count()

        before, t0 = count() if store else 0, time.perf_counter()
        logging.info(
            'search %d/%d: %s (%s <= %g %s, GA seed %d)',
            s.position,
            total,
            s.name,
            s.metric if s.device == 'flops' else f'latency@{s.device}',
            s.budget,
            unit(s.device),
            s.seed,
        )
        with prefixed_logs(f'[search {s.position}/{total} {s.name}] '):
            best = loop.run(cfg, directory)
        side['wall_seconds'] += time.perf_counter() - t0
        side['trained'] += (count() - before) if store else best['evaluations']
        fileio.atomic_write_json(side_path, side, indent=2)
    return 'ran'


def row(config, s: Search, directory: str, best: dict, state) -> dict[str, Any]:
    """The figure2.csv row of a finished search."""
    gt = best.get('ground_truth') or {}
    found = gt.get('found') if gt.get('applicable') else None
    bf = (gt.get('best_feasible') or {}) if found else {}
    c = best.get('costs', {})
    near = best.get('within_noise') or {}  # Absent in a best.json of an older version.
    near_acc = near.get('test_accuracy') or {}
    key = 'flops' if s.device == 'flops' else f'latency@{s.device}'
    side_path = os.path.join(directory, SIDECAR)
    side = (
        fileio.load_json(side_path, what='figure2 search notes', fix='delete it')
        if (os.path.exists(side_path))
        else {}
    )
    return {
        'device': s.device,
        'metric': s.metric,
        'budget': s.budget,
        'unit': unit(s.device),
        'seed': s.seed,
        'proxy_seed': proxy_seed(config),
        'search': s.name,
        'index': best['index'],
        'arch_str': best['arch_str'],
        'genome': ','.join(map(str, best['genome'])),
        'cost': c.get(key),
        'feasible': c.get(key) is not None and c[key] <= s.budget,
        'test_accuracy': found and found['test_accuracy'],
        'valid_accuracy': found and found['valid_accuracy'],
        'rank_feasible': found and found['rank_feasible'],
        'best_feasible_index': bf.get('index'),
        'best_feasible_accuracy': bf.get('test_accuracy'),
        'regret': gt.get('regret') if found else None,
        # Scored feasible cells within the proxy's noise of the best: one of them is the answer.
        'within_noise': near.get('count'),
        'within_noise_accuracy_min': near_acc.get('min'),
        'within_noise_accuracy_max': near_acc.get('max'),
        'score': best['score'],
        'fitness': best['fitness'],
        'flops': c.get('flops'),
        'params': c.get('params'),
        **{f'latency_{d}': c.get(f'latency@{d}') for d in hw_costs.DEVICES},
        'search_seconds': sum(r['seconds'] + r['compile_seconds'] for r in state.history),
        'architectures': best['evaluations'],
        'trained': side.get('trained'),
    }


def merge(config, root: str, searches: list[Search]) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of every finished search of the grid, and the names of the others."""
    store = store_path(config, root)
    rows, missing = [], []
    for s in searches:
        directory = os.path.join(root, s.name)
        done = finished(search_config(config, s, store), directory)
        if done is None:
            missing.append(s.name)
        else:
            rows.append(row(config, s, directory, *done))
    return rows, missing


def run(config, workdir: str) -> list[dict[str, Any]]:
    """Runs this shard's searches of the Figure 2 grid, then merges; returns figure2.csv's rows."""
    root = str(config.figure2.root).strip() or workdir
    os.makedirs(root, exist_ok=True)
    searches = grid(config)
    i, n = parse_shard(config.figure2.shard)
    store = store_path(config, root)
    mine = [] if config.figure2.merge_only else searches[i::n]
    for device, bs in budgets(config).items():
        logging.info(
            'Figure 2 budgets for %s (%s): %s',
            device,
            unit(device),
            ', '.join(f'{b:g}' for b in bs),
        )
    logging.info(
        'Figure 2 grid: %d searches in %s; this run (shard %d/%d%s) takes %d; proxy '
        'seed %d for every search; score store %s',
        len(searches),
        root,
        i,
        n,
        ', merge only' if config.figure2.merge_only else '',
        len(mine),
        proxy_seed(config),
        store or 'off',
    )
    outcome = {'done': 0, 'ran': 0, 'busy': 0}
    for s in mine:
        outcome[run_search(config, root, s, len(searches), store)] += 1
    logging.info(
        'This shard: %d run, %d already finished, %d running elsewhere',
        outcome['ran'],
        outcome['done'],
        outcome['busy'],
    )
    rows, missing = merge(config, root, searches)
    fileio.atomic_write_text(os.path.join(root, 'figure2.csv'), csv_text(rows, COLUMNS))
    ops = op_table(config, rows) if rows else []
    fileio.atomic_write_text(os.path.join(root, 'figure3.csv'), csv_text(ops, OP_COLUMNS))
    pictures = plot(root, rows, ops) if rows else []
    pending = write_progress(root, [s.name for s in searches], missing, config.ga.generations)
    if pending:
        logging.info(
            'Merged %d of %d searches; not finished (generations done): %s%s; progress.csv '
            'has the best of each so far',
            len(rows),
            len(searches),
            ', '.join(pending[:10]),
            f' and {len(pending) - 10} more' if len(pending) > 10 else '',
        )
    if rows:
        logging.info(
            'Figure 2 (NAS-Bench-201 CIFAR-10 test accuracy of the found cells):\n%s', summary(rows)
        )
    logging.info(
        'Wrote figure2.csv, figure3.csv%s in %s',
        ''.join(f', {p}' for p in pictures) or ' (no plots: matplotlib is not installed)',
        root,
    )
    return rows
