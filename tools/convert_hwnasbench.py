"""Converts HW-NAS-Bench (NAS-Bench-201 space) values into hwnas_jax's safe table format.

Two inputs, one output format (see ``hwnas_jax/hardware/tables.py``):

``--csv``: the merged CIFAR-10 CSV (one row per NB201 index: ``index, arch_str``, the 10 metrics,
empty = not available, plus ``<metric>_source`` columns). This builds the packaged table::

    python tools/convert_hwnasbench.py --csv hwnasbench_nb201_cifar10_merged.csv \
        --out hwnas_jax/assets/hwnasbench_nb201.npz

``--pickle``: the original ``HW-NAS-Bench-v1_0.pickle`` of GATECH-EIC/HW-NAS-Bench, laid out as
``HW_metrics["nasbench201"][dataname][metric][arch_index]`` plus
``HW_metrics["nasbench201"][dataname]["config"][arch_index]["arch_str"]``. This builds a user
table with cifar10, cifar100 and ImageNet16-120. Unpickling runs code from the file, so the tool
refuses unless told that the file is trusted::

    python tools/convert_hwnasbench.py --pickle HW-NAS-Bench-v1_0.pickle \
        --i-trust-this-pickle --out hwnasbench_full.npz

Both check the index order: each index's architecture string must decode to the genome that
``hwnas_jax.spaces.nb201.indices_to_genomes`` gives for it. ``edgetpu_latency == -1.0`` (an
upstream sentinel) and empty values become NaN ("not available").
"""

from __future__ import annotations

import argparse
import collections
import csv
import logging
import math
import os
import pathlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

try:
    import hwnas_jax  # noqa: F401
except ImportError:  # Run from a checkout without installing: use the repository root.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from hwnas_jax import fileio
from hwnas_jax.errors import UserError
from hwnas_jax.hardware import tables
from hwnas_jax.spaces import nb201

log = logging.getLogger('convert_hwnasbench')

SENTINEL = -1.0
UPSTREAM = 'GATECH-EIC/HW-NAS-Bench (formerly RICE-EIC/HW-NAS-Bench)'
LICENCE = 'MIT, Copyright (c) 2022 GaTech-EIC; see hwnas_jax/assets/NOTICE-hwnasbench.txt'
TRUST_FLAG = '--i-trust-this-pickle'


sha256_file = fileio.sha256_file


def arch_str_to_genome(arch_str: str) -> list[int]:
    """``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` -> 6 op indices, edges in NB201 order."""
    if not isinstance(arch_str, str):
        raise UserError(f'bad NB201 architecture string {arch_str!r}: not a string')
    genome = []
    for target, node in enumerate(arch_str.split('+'), start=1):
        tokens = [t for t in node.split('|') if t]
        if len(tokens) != target:
            raise UserError(f'bad NB201 architecture string {arch_str!r}')
        for source, token in enumerate(tokens):
            op, _, src = token.partition('~')
            if op not in nb201.OPS or src != str(source):
                raise UserError(f'bad NB201 architecture string {arch_str!r}')
            genome.append(list(nb201.OPS).index(op))
    if len(genome) != tables.NUM_EDGES:
        raise UserError(f'bad NB201 architecture string {arch_str!r}')
    return genome


def _to_column(values: np.ndarray, metric: str, where: str) -> tuple[np.ndarray, int]:
    """float64 column with NaN for not-available; returns it and the sentinel count.

    Upstream marks failed measurements with -1.0 (seen in edgetpu_latency only); it is treated
    as "not available" in every metric, since no cost is negative.
    """
    col = np.array(values, dtype=np.float64)
    sentinel = col == SENTINEL
    n_sentinel = int(sentinel.sum())
    col[sentinel] = np.nan
    bad = ~np.isnan(col) & ~(np.isfinite(col) & (col > 0))
    if bad.any():
        idx = np.flatnonzero(bad)[:10].tolist()
        raise UserError(f'{where} {metric}: non-positive or infinite values at indices {idx}')
    return col, n_sentinel


def _check_genomes(genomes: np.ndarray, known: np.ndarray, where: str) -> None:
    ref = np.asarray(nb201.indices_to_genomes(np.arange(tables.NUM_ARCHS)))
    wrong = np.flatnonzero(known & np.any(ref != genomes, axis=-1))
    if wrong.size:
        i = int(wrong[0])
        raise UserError(
            f"{where}: index order differs from NAS-Bench-201's at {wrong.size} indices, first "
            f'{i}: source {genomes[i].tolist()}, nb201 {ref[i].tolist()}'
        )


def _read_csv(csv_path: str) -> list[dict[str, str]]:
    """Rows of the merged CSV, checked for the columns the conversion reads."""
    try:
        with open(csv_path, newline='', encoding='utf-8') as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = reader.fieldnames or []
    except FileNotFoundError:
        raise UserError(f'{csv_path}: CSV not found; check --csv') from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(
            f'{csv_path}: cannot read the CSV ({e}); pass the merged HW-NAS-Bench '
            'CIFAR-10 CSV (hwnasbench_nb201_cifar10_merged.csv)'
        ) from None
    needed = [
        'index',
        'arch_str',
        *tables.TABLE_METRICS,
        *(f'{m}_source' for m in tables.TABLE_METRICS),
    ]
    missing = [c for c in needed if c not in header]
    if missing:
        raise UserError(
            f'{csv_path}: missing column(s) {missing}; the merged CSV has index, '
            'arch_str, the 10 HW-NAS-Bench metrics and a <metric>_source column each'
        )
    if len(rows) != tables.NUM_ARCHS:
        raise UserError(f'{csv_path}: {len(rows)} rows, expected {tables.NUM_ARCHS}')
    if any(None in r or None in r.values() for r in rows):
        bad = next(i for i, r in enumerate(rows) if None in r or None in r.values())
        raise UserError(
            f'{csv_path}: row {bad + 2} has a different number of fields than the '
            'header (a truncated or damaged file)'
        )
    if [r['index'].strip() for r in rows] != [str(i) for i in range(tables.NUM_ARCHS)]:
        raise UserError(f'{csv_path}: the index column is not 0..{tables.NUM_ARCHS - 1}')
    return rows


def _csv_column(rows: list[dict[str, str]], metric: str, csv_path: str) -> np.ndarray:
    out = np.full(len(rows), np.nan)
    for i, r in enumerate(rows):
        text = r[metric].strip()
        try:
            out[i] = float(text) if text else np.nan
        except ValueError:
            raise UserError(
                f'{csv_path}: row {i + 2}, column {metric}: {text!r} is not a number'
            ) from None
    return out


def convert_csv(csv_path: str, out: str) -> str:
    """Merged CIFAR-10 CSV -> table file. Returns the data sha256.

    Raises:
      UserError: the CSV is missing, unreadable, lacks columns or rows, or holds a value that
        is not a number or not positive, or an index order that is not NAS-Bench-201's.
    """
    rows = _read_csv(csv_path)
    genomes = np.array([arch_str_to_genome(r['arch_str']) for r in rows], dtype=np.int8)
    _check_genomes(genomes, np.ones(tables.NUM_ARCHS, bool), csv_path)
    columns, coverage, sources = {}, {}, {}
    for m in tables.TABLE_METRICS:
        col, n_sentinel = _to_column(_csv_column(rows, m, csv_path), m, csv_path)
        columns[('cifar10', m)] = col
        coverage[m] = {'known': int((~np.isnan(col)).sum()), 'sentinel': n_sentinel}
        sources[m] = dict(collections.Counter(r[f'{m}_source'] or 'none' for r in rows))
    meta = {
        'source': (
            'HW-NAS-Bench v1.0 (Li et al., ICLR 2021), ' + UPSTREAM + ', CIFAR-10 values only, '
            'rebuilt from three public re-distributions that agree to the last bit (or to '
            "<=1e-15 through CSV text); 'value_sources' counts, per metric, the source tags of "
            'the merged CSV (HELP, OneProxy, HWVIS = NinaHerrmann/HW-NAS-Visualization@3d69e63 '
            'intermediateresults/alldata.csv, README = upstream example.ipynb output)'
        ),
        'licence': LICENCE,
        'inputs': [_input_record(csv_path)],
        'converter': 'tools/convert_hwnasbench.py --csv',
        'sentinel': '-1.0 in the source (edgetpu_latency) is stored as NaN',
        'coverage': {'cifar10': coverage},
        'value_sources': {'cifar10': sources},
    }
    return tables.write_table(out, columns, genomes, meta)


def _input_record(path: str) -> dict[str, Any]:
    return {
        'name': os.path.basename(path),
        'bytes': os.path.getsize(path),
        'sha256': sha256_file(path),
    }


def _indexed(container: Any, what: str) -> dict[int, Any]:
    """A list/array over all indices, or a dict {index: value} (absent indices: missing)."""
    if isinstance(container, Mapping):
        out = {int(k): v for k, v in container.items()}
    elif isinstance(container, (Sequence, np.ndarray)) and not isinstance(container, str):
        if len(container) != tables.NUM_ARCHS:
            raise UserError(f'{what}: {len(container)} entries, expected {tables.NUM_ARCHS}')
        out = dict(enumerate(container))
    else:
        raise UserError(f'{what}: expected a list or dict by arch index, got {type(container)}')
    if any(not 0 <= k < tables.NUM_ARCHS for k in out):
        raise UserError(f'{what}: arch indices outside 0..{tables.NUM_ARCHS - 1}')
    return out


def convert_pickle_object(
    hw_metrics: Mapping[str, Any], inputs: list[dict[str, Any]], out: str
) -> str:
    """The unpickled HW-NAS-Bench object -> table file. Returns the data sha256.

    Raises:
      UserError: the object is not laid out like HW-NAS-Bench-v1_0.pickle, or its values or
        index order are wrong (the message names the dataset and metric).
    """
    try:
        return _convert_pickle_object(hw_metrics, inputs, out)
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        raise UserError(
            'not laid out like HW-NAS-Bench-v1_0.pickle (HW_metrics["nasbench201"][dataset]'
            f'[metric][arch_index] and [dataset]["config"][arch_index]["arch_str"]): '
            f'{type(e).__name__}: {e}'
        ) from None


def _convert_pickle_object(
    hw_metrics: Mapping[str, Any], inputs: list[dict[str, Any]], out: str
) -> str:
    if not isinstance(hw_metrics, Mapping) or 'nasbench201' not in hw_metrics:
        raise UserError("not an HW-NAS-Bench pickle: no 'nasbench201' key")
    space = hw_metrics['nasbench201']
    columns, coverage = {}, {}
    genomes = np.zeros((tables.NUM_ARCHS, tables.NUM_EDGES), np.int8)
    seen = np.zeros(tables.NUM_ARCHS, bool)
    for d in tables.DATASETS:
        if d not in space:
            raise UserError(f'pickle lacks dataset {d!r}; it has {sorted(space)}')
        configs = _indexed(space[d].get('config', {}), f'{d}/config')
        for i, cfg in configs.items():
            g = arch_str_to_genome(cfg['arch_str'])
            if seen[i] and genomes[i].tolist() != g:
                raise UserError(f'{d}/config: arch {i} differs between datasets')
            genomes[i], seen[i] = g, True
        coverage[d] = {}
        for m in tables.TABLE_METRICS:
            if m not in space[d]:
                raise UserError(f'pickle lacks {d}/{m}; it has {sorted(space[d])}')
            entries = _indexed(space[d][m], f'{d}/{m}')
            missing_cfg = sorted(set(entries) - set(configs))[:10]
            if missing_cfg:
                raise UserError(f'{d}/{m}: arch indices {missing_cfg} have no config/arch_str')
            raw = np.full(tables.NUM_ARCHS, np.nan)
            for i, v in entries.items():
                try:
                    raw[i] = math.nan if v is None else float(v)
                except (TypeError, ValueError):
                    raise UserError(f'{d}/{m}: arch {i} has {v!r}, not a number') from None
            col, n_sentinel = _to_column(raw, m, f'pickle {d}')
            columns[(d, m)] = col
            coverage[d][m] = {'known': int((~np.isnan(col)).sum()), 'sentinel': n_sentinel}
    if not seen.any():
        raise UserError('pickle has no config/arch_str entries: cannot check the index order')
    _check_genomes(genomes, seen, 'pickle')
    genomes[~seen] = np.asarray(nb201.indices_to_genomes(np.flatnonzero(~seen)))
    _compare_with_packaged(columns)
    meta = {
        'source': 'HW-NAS-Bench v1.0 (Li et al., ICLR 2021), ' + UPSTREAM + ', original pickle',
        'licence': LICENCE,
        'inputs': inputs,
        'converter': 'tools/convert_hwnasbench.py --pickle',
        'sentinel': '-1.0 in the source (edgetpu_latency) is stored as NaN',
        'coverage': coverage,
        'index_order_checked': int(seen.sum()),
    }
    return tables.write_table(out, columns, genomes, meta)


def _compare_with_packaged(columns: Mapping[tuple[str, str], np.ndarray]) -> None:
    """Logs how the pickle's CIFAR-10 values compare with the packaged table (a sanity check)."""
    try:
        packaged = tables.load_table()
    except (OSError, ValueError) as e:
        log.warning('packaged table unavailable for comparison: %s', e)
        return
    for m in tables.TABLE_METRICS:
        a, b = columns[('cifar10', m)], packaged.column('cifar10', m)
        both = ~np.isnan(a) & ~np.isnan(b)
        differ = int(np.sum(both & (np.abs(a - b) > 1e-12 * np.abs(b))))
        level = logging.WARNING if differ else logging.INFO
        log.log(level, 'cifar10 %s: %d values in both tables, %d differ', m, both.sum(), differ)


def convert_pickle(pickle_path: str, out: str) -> str:
    """Unpickles the original file (trusted by the caller) and converts it."""
    import pickle  # pylint: disable=import-outside-toplevel

    try:
        inputs = [_input_record(pickle_path)]
        with open(pickle_path, 'rb') as f:
            hw_metrics = pickle.load(f)  # Behind --i-trust-this-pickle.
    except FileNotFoundError:
        raise UserError(f'{pickle_path}: pickle not found; check --pickle') from None
    except Exception as e:  # noqa: BLE001
        # Unpickling a truncated or foreign file fails in many ways (EOFError, UnpicklingError,
        # ImportError, AttributeError, ...): each means it is not the file we want.
        raise UserError(
            f'{pickle_path}: cannot unpickle it ({type(e).__name__}: {e}); it is damaged or not '
            'HW-NAS-Bench-v1_0.pickle: download it again from GATECH-EIC/HW-NAS-Bench'
        ) from None
    try:
        return convert_pickle_object(hw_metrics, inputs, out)
    except UserError as e:
        raise UserError(f'{pickle_path}: {e}') from None


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--csv', help='merged CIFAR-10 CSV (hwnasbench_nb201_cifar10_merged.csv)')
    source.add_argument('--pickle', help='original HW-NAS-Bench-v1_0.pickle (needs the flag below)')
    parser.add_argument('--out', required=True, help='output .npz')
    parser.add_argument(
        TRUST_FLAG,
        dest='trust',
        action='store_true',
        help='allow unpickling --pickle: this runs code from the file; only for a file you trust',
    )
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (UserError, OSError) as e:  # OSError: e.g. the --out folder does not exist.
        print(f'error: {e}', file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.csv:
        digest = convert_csv(args.csv, args.out)
    else:
        if not args.trust:
            print(
                f'REFUSED: {args.pickle} is a pickle; loading it executes code it contains.\n'
                f'Re-run with {TRUST_FLAG} only if you trust the file (e.g. the original\n'
                'HW-NAS-Bench-v1_0.pickle from GATECH-EIC/HW-NAS-Bench). Nothing was read.',
                file=sys.stderr,
            )
            return 2
        banner = '!' * 78
        print(
            f'{banner}\nUNPICKLING {args.pickle} because {TRUST_FLAG} was given.\n'
            f'This executes any code the file contains. Use only a file you trust.\n{banner}',
            file=sys.stderr,
        )
        digest = convert_pickle(args.pickle, args.out)
    size = os.path.getsize(args.out)
    log.info('wrote %s (%d bytes), data sha256 %s', args.out, size, digest)
    return 0


if __name__ == '__main__':
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
    sys.exit(main())
