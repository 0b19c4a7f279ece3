"""Converts the NAS-Bench-201 200-epoch accuracy CSV into hwnas_jax's safe npz format.

Input: ``nb201_accuracy_200ep.csv`` (one row per NAS-Bench-201 index, in index order: ``index,
arch_str`` and the seven accuracy columns of :data:`hwnas_jax.spaces.nb201_truth.COLUMNS`, in
percent). Output: the file :mod:`hwnas_jax.spaces.nb201_truth` reads (float64 columns by index,
the genome of every index, JSON metadata with the input's sha256 and a content digest)::

    python tools/convert_nb201_accuracy.py --csv nb201_accuracy_200ep.csv \
        --out hwnas_jax/assets/nb201_accuracy.npz

Checks: every index 0..15624 once and in order; each ``arch_str`` decodes to the genome
``nb201.indices_to_genomes`` gives for its index; every value a finite percentage. After
rewriting the packaged file, set ``nb201_truth.PACKAGED_DATA_SHA256`` to the printed digest.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import pathlib
import sys
from collections.abc import Sequence

import numpy as np

try:
    import hwnas_jax  # noqa: F401
except ImportError:  # Run from a checkout without installing: use the repository root.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from hwnas_jax import fileio
from hwnas_jax.errors import UserError
from hwnas_jax.spaces import nb201, nb201_truth

log = logging.getLogger('convert_nb201_accuracy')

SOURCES = (
    'NAS-Bench-201 (Dong & Yang, ICLR 2020; data and code MIT, Copyright (c) since 2020 Xuanyi '
    'Dong), 200-epoch schedule (hp=200), mean over training seeds. Assembled from the CSV dumps '
    'in Zhenhan-Huang/NASGraph-Public data/ (Apache-2.0; cifar10-valid, CIFAR-100 and '
    'ImageNet16-120 columns) and the test_top1 column of BayesWatch/nas-without-training '
    'results/arch_score_acc.pd (cifar10 train+valid column), cross-checked where they overlap.'
)
LICENCE = (
    'MIT, Copyright (c) since 2020 Xuanyi Dong; see hwnas_jax/assets/NOTICE-nb201-accuracy.txt'
)


def read_csv(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Columns and genomes of the accuracy CSV, checked.

    Returns:
      ``({column: float64 [15625]}, int64 genomes [15625, 6])``.

    Raises:
      UserError: missing columns, rows out of order or missing, an arch string that does not
        match its index, or a value that is not a finite percentage (the message names the file,
        the row and the column).
    """
    try:
        with open(path, newline='') as f:
            rows = list(csv.DictReader(f))
            header = rows[0].keys() if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f'{path}: cannot read the accuracy CSV ({e})') from None
    needed = ['index', 'arch_str', *nb201_truth.COLUMNS]
    missing = [c for c in needed if c not in header]
    if missing:
        raise UserError(f'{path}: the accuracy CSV lacks the columns {missing}')
    if len(rows) != nb201.NUM_ARCHS:
        raise UserError(
            f'{path}: {len(rows)} rows, expected one per architecture ({nb201.NUM_ARCHS})'
        )
    expected = nb201.indices_to_genomes(np.arange(nb201.NUM_ARCHS))
    columns = {c: np.empty(nb201.NUM_ARCHS, np.float64) for c in nb201_truth.COLUMNS}
    for i, row in enumerate(rows):
        line = i + 2  # Header is line 1.
        if row['index'] != str(i):
            raise UserError(
                f'{path}:{line}: index {row["index"]!r}, expected {i} (rows must be '
                'in NAS-Bench-201 index order)'
            )
        try:
            genome = nb201.from_arch_str(row['arch_str'])
        except (TypeError, ValueError) as e:
            raise UserError(f'{path}:{line}: {e}') from None
        if list(genome) != expected[i].tolist():
            raise UserError(
                f'{path}:{line}: arch_str {row["arch_str"]!r} is not index {i} in '
                "NAS-Bench-201's order"
            )
        for c in nb201_truth.COLUMNS:
            try:
                v = float(row[c])
            except (TypeError, ValueError):
                v = math.nan
            if not (math.isfinite(v) and 0 <= v <= 100):
                raise UserError(f'{path}:{line}: {c} = {row[c]!r} is not a percentage in [0, 100]')
            columns[c][i] = v
    return columns, expected


def convert(csv_path: str | os.PathLike, out: str | os.PathLike) -> str:
    """Writes the npz for ``csv_path`` to ``out`` atomically; returns its content digest."""
    columns, genomes = read_csv(csv_path)
    arrays = nb201_truth.encode(
        columns,
        genomes,
        {
            'source': SOURCES,
            'licence': LICENCE,
            'converted_by': 'tools/convert_nb201_accuracy.py',
            'input': {
                'name': os.path.basename(csv_path),
                'bytes': os.path.getsize(csv_path),
                'sha256': fileio.sha256_file(csv_path),
            },
        },
    )
    fileio.atomic_write_npz(out, compressed=True, **arrays)
    return nb201_truth.data_digest(arrays)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 with one error line on bad input)."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--csv', required=True, help='nb201_accuracy_200ep.csv')
    parser.add_argument('--out', required=True, help='output .npz')
    args = parser.parse_args(argv)
    try:
        digest = convert(args.csv, args.out)
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    log.info('wrote %s (%d bytes), data sha256 %s', args.out, os.path.getsize(args.out), digest)
    print(digest)
    return 0


if __name__ == '__main__':
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
    sys.exit(main())
