"""The proxy study (job 'proxy_study'): how well does the RMI proxy rank NAS-Bench-201 cells?

Architectures: ``study.num_archs`` canonical classes (:func:`nb201.canonical`) drawn uniformly
without replacement with ``config.seed`` (connected cells only by default: a cell with no path
from input to output is 'disconnected', and NAS-Bench-201 gives all of them 10 %); each class is
represented by one of its genomes drawn uniformly, whose NAS-Bench-201 accuracy is the target
(as a search reports the genome it found), while the proxy trains the class's canonical genome
(as the search does). Growing ``num_archs`` keeps the first rows.

Variables per architecture (columns of ``study.csv``; each ranks against NAS-Bench-201 CIFAR-10
test accuracy, oriented so that higher predicts better: loss columns are negated):
  phi               sum of the L layer CKAs after ``proxy.steps`` SGD steps: the paper's score,
                    equal to the search's (same batch, seed, initial weights and program).
  loss              the final mixed loss 0.8 sum(1 - CKA) + 0.2 CE (RMI-NAS ranks by it).
  cka_l             each layer's CKA alone.
  phi_k{k}, loss_k{k}  phi and the loss after k steps (``study.steps_k``), from the same run.
  phi_heldout[_k{k}]   the CKAs measured on ``study.heldout_size`` random test-split images
                    (with the reference's features on them) instead of the training batch.
  phi_bn_{mode}     phi after a second training against the reference with the other
                    ``reference.bn_mode`` ('train': batch statistics, as RMI-NAS; 'eval').
  flops, params     NAS-Bench-201's MFLOPs and M parameters of the genome (dead convs count);
  flops_canonical   the FLOPs of its canonical cell.
  naswot, synflow   training-free proxies (:mod:`hwnas_jax.zero_cost`).
``phi_seed2`` (the first ``study.noise_archs`` rows: phi with proxy seed + 1) and
``valid_accuracy`` (NAS-Bench-201's separately trained 'cifar10-valid' networks) measure noise.

Execution reuses the proxy's functions: :func:`proxy.make_member_fn` with ``trajectory=True`` on
the population network (one compiled program for every architecture, ``dispatch='switch'`` as
the 'loop' strategy), fed with a duck-typed model that also returns the held-out images'
features with their gradient stopped (so training is unchanged); the search's own scorer
(:func:`proxy.make_scorer`) for the second BN pass and the seed-noise pass.

Modules: :mod:`~hwnas_jax.study.stats` (rank statistics, numpy only),
:mod:`~hwnas_jax.study.passes` (the device side), :mod:`~hwnas_jax.study.report` (outputs).

Outputs in the workdir: ``study.jsonl`` (one line per architecture, appended and fsynced as it
is done: a rerun resumes), ``study_state.json`` (the settings; a rerun with others is refused),
``batch.npz``, ``study.csv``, ``study.md`` (rank correlations with bootstrap CIs, noise, a
split-half check of the best variant, and how far each variable's pick lands below the best
among random pools under three budgets of ``config.hardware``: :func:`stats.selection_regret`)
and, with matplotlib, ``study.png``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
from absl import logging

from hwnas_jax import config as config_lib
from hwnas_jax import fileio
from hwnas_jax.errors import UserError
from hwnas_jax.hardware import costs as hw_costs
from hwnas_jax.spaces import nb201, nb201_costs, nb201_truth
from hwnas_jax.study.passes import Passes, rmi_program, rmi_variables, steps_k
from hwnas_jax.study.report import plot, preset_for, read_csv, report_markdown, write_csv
from hwnas_jax.study.stats import (
    bootstrap,
    correlations,
    kendall_tau,
    rankdata,
    selection_regret,
    spearman,
    split_half,
    top_k_hits,
)

__all__ = [
    'Passes',
    'bootstrap',
    'canonical_classes',
    'check_config',
    'correlations',
    'costs_of',
    'kendall_tau',
    'plot',
    'preset_for',
    'rankdata',
    'read_csv',
    'report_markdown',
    'rmi_program',
    'rmi_variables',
    'run',
    'sample_archs',
    'selection_regret',
    'spearman',
    'split_half',
    'steps_k',
    'top_k_hits',
    'write_csv',
]

STATE_VERSION = 1
REPORT_ONLY = ('num_archs', 'top_k', 'bootstrap')  # study fields a resume may change.


# -- architectures --------------------------------------------------------------------------------


def canonical_classes(connected_only: bool = True) -> dict[int, np.ndarray]:
    """{canonical index: NAS-Bench-201 indices of its genomes}, by ascending canonical index."""
    genomes = nb201.indices_to_genomes(np.arange(nb201.NUM_ARCHS))
    canon = np.asarray([nb201.to_index(nb201.canonical(g)) for g in genomes])
    out = {}
    for c in np.unique(canon):
        if connected_only and not any(nb201.indices_to_genomes(int(c))):
            continue  # Every disconnected cell is the all-'none' class.
        out[int(c)] = np.flatnonzero(canon == c)
    return out


def sample_archs(seed: int, n: int, connected_only: bool = True) -> list[dict[str, Any]]:
    """``n`` architectures, uniform over canonical classes, each with a uniform member genome.

    The order depends only on ``seed`` (a larger ``n`` extends the list). Returns dicts with
    'index' (the member), 'genome', 'canonical' (list) and 'canonical_index'.
    """
    classes = canonical_classes(connected_only)
    if not 1 <= n <= len(classes):
        raise UserError(
            f'config.study.num_archs={n} is invalid: must be in [1, {len(classes)}] '
            f'(the {"connected " if connected_only else ""}canonical classes)'
        )
    keys = np.asarray(list(classes))
    order = np.random.default_rng([seed, 11]).permutation(len(keys))[:n]
    out = []
    for c in keys[order]:
        index = int(np.random.default_rng([seed, 12, int(c)]).choice(classes[int(c)]))
        out.append(
            {
                'index': index,
                'genome': list(nb201.from_index(index)),
                'canonical': list(nb201.from_index(int(c))),
                'canonical_index': int(c),
            }
        )
    return out


# -- state ----------------------------------------------------------------------------------------


def fingerprint(config) -> dict:
    """Settings the rows depend on (a resume must share them); report-only fields left out."""
    study = {k: v for k, v in config.study.to_dict().items() if k not in REPORT_ONLY}
    proxy = {k: v for k, v in config.proxy.to_dict().items() if k != 'store'}
    return json.loads(
        json.dumps(
            {
                'seed': config.seed,
                'space': config.space.to_dict(),
                'proxy': proxy,
                'data': config.data.to_dict(),
                'reference': config.reference.to_dict(),
                'study': study,
            }
        )
    )


def check_state(config, workdir: str) -> None:
    """Writes study_state.json, or refuses a work directory of a study with other settings."""
    path = os.path.join(workdir, 'study_state.json')
    want = fingerprint(config)
    if os.path.exists(path):
        got = fileio.load_json(
            path, what='the study state', fix='delete the work directory or use another --workdir'
        ).get('fingerprint', {})
        diff = config_lib.fingerprint_differences(want, got)
        if diff:
            raise UserError(
                f'{workdir} holds a proxy study with other settings '
                f'({", ".join(diff)}); rerun it with the same config, or use a new '
                '--workdir'
            )
        return
    fileio.atomic_write_json(path, {'version': STATE_VERSION, 'fingerprint': want}, indent=2)


def load_rows(path: str) -> list[dict[str, Any]]:
    """The rows of study.jsonl; a last line cut by a kill is dropped, damage elsewhere refused."""
    if not os.path.exists(path):
        return []
    with open(path, 'rb') as f:
        lines = [x for x in f.read().split(b'\n') if x.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except ValueError:
            if i == len(lines) - 1:
                fileio.atomic_write_text(path, b''.join(x + b'\n' for x in lines[:-1]).decode())
                break
            raise UserError(
                f'{path}: line {i + 1} is damaged; delete the file to score the architectures again'
            ) from None
    return rows


def append_row(path: str, row: dict[str, Any]) -> None:
    """Appends one row to study.jsonl; durable when this returns."""
    with open(path, 'a') as f:
        f.write(fileio.dumps(row) + '\n')
        f.flush()
        os.fsync(f.fileno())


def check_config(config) -> None:
    """The study's own checks for config validation: its space and ``study.steps_k``."""
    if config.space.name != nb201.NAME:
        raise UserError(
            f'config.space.name={config.space.name!r} is invalid: the proxy study '
            f"needs NAS-Bench-201's accuracies: {nb201.NAME!r}"
        )
    steps_k(config)


# -- the job --------------------------------------------------------------------------------------


def costs_of(rows, hw) -> np.ndarray:
    """The rows' cost under ``config.hardware`` (+inf where the table lacks a value)."""
    return hw_costs.cost(
        np.asarray([r['genome'] for r in rows], np.int64),
        hw.metric,
        device=hw.device if hw.metric in hw_costs.DEVICE_METRICS else None,
        dataset=hw.dataset,
        missing='infeasible',
        table=hw.table,
    )


def run(config, workdir: str) -> list[dict[str, Any]]:
    """Runs (or resumes) the proxy study of ``config`` in ``workdir``; returns its rows."""
    check_config(config)
    os.makedirs(workdir, exist_ok=True)
    s = config.study
    archs = sample_archs(int(config.seed), int(s.num_archs), bool(s.connected_only))
    check_state(config, workdir)
    path = os.path.join(workdir, 'study.jsonl')
    done = {r['row']: r for r in load_rows(path)}
    todo = [i for i in range(len(archs)) if i not in done]
    logging.info(
        'Proxy study: %d architectures (%d done, %d to score) in %s',
        len(archs),
        len(archs) - len(todo),
        len(todo),
        workdir,
    )
    test = nb201_truth.all_accuracies('cifar10', 'test')
    valid = nb201_truth.all_accuracies('cifar10', 'valid')
    passes = Passes(config, workdir) if todo else None
    t_start, per_arch = time.perf_counter(), []
    for n_done, i in enumerate(todo):
        a = archs[i]
        t0 = time.perf_counter()
        row = {
            'row': i,
            'index': a['index'],
            'arch_str': nb201.to_arch_str(a['genome']),
            'genome': a['genome'],
            'canonical': a['canonical'],
            'canonical_index': a['canonical_index'],
            'test_accuracy': float(test[a['index']]),
            'valid_accuracy': float(valid[a['index']]),
            'flops': float(nb201_costs.flops(a['genome'])),
            'params': float(nb201_costs.num_params(a['genome'])),
            'flops_canonical': float(nb201_costs.flops(a['canonical'])),
        }
        row.update(
            passes.score(
                np.asarray(a['canonical']),
                noise=i < int(s.noise_archs),
                what=f'arch {n_done + 1}/{len(todo)}',
            )
        )
        append_row(path, row)
        done[i] = row
        per_arch.append(time.perf_counter() - t0 - row.get('seconds_compile', 0.0))
        eta = np.mean(per_arch[-10:]) * (len(todo) - n_done - 1)
        logging.info(
            'arch %d/%d (row %d, index %d, %s): test acc %.2f %%; %s; %.1f s '
            '(+%.1f s compile), ETA %.1f min',
            n_done + 1,
            len(todo),
            i,
            a['index'],
            row['arch_str'],
            row['test_accuracy'],
            passes.summary(row),
            per_arch[-1],
            row.get('seconds_compile', 0.0),
            eta / 60,
        )
    rows = [done[i] for i in range(len(archs))]
    write_csv(os.path.join(workdir, 'study.csv'), rows)
    md = report_markdown(rows, config, costs=costs_of(rows, config.hardware))
    fileio.atomic_write_text(os.path.join(workdir, 'study.md'), md)
    drew = plot(os.path.join(workdir, 'study.png'), rows)
    logging.info('Proxy study done in %.1f min:\n%s', (time.perf_counter() - t_start) / 60, md)
    logging.info(
        'Wrote study.csv, study.md%s in %s',
        ', study.png' if drew else ' (no study.png: matplotlib is not installed)',
        workdir,
    )
    return rows
