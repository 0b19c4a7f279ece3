"""Builds hwnas_jax/assets/nb201_index.npy, NAS-Bench-201's index order, from a CSV.

One-off converter. The input is any CSV with the columns ``index`` and ``arch_str`` holding all
15625 NAS-Bench-201 architectures (e.g. the HW-NAS-Bench merged CSV, whose rows follow
NAS-Bench-201's index order). The output is a plain int16 array [15625] (``.npy``, no pickle):
entry i is the genome code of NAS-Bench-201 index i, the base-5 integer of the 6 op indices with
edge 0 (1<-0) the most significant digit (see :mod:`hwnas_jax.spaces.nb201`).

Checks: the indices are exactly 0..15624, every arch string parses, the codes form a
permutation of 0..15624, and each code converts back to its row's arch string.

Usage:
    python tools/build_nb201_index.py hwnasbench_nb201_cifar10_merged.csv \
        [--out hwnas_jax/assets/nb201_index.npy]

Prints the sha256 of the array's contents: ``hwnas_jax.spaces.nb201`` pins it.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import pathlib
import sys
import tempfile
from collections.abc import Iterable, Sequence

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hwnas_jax.errors import UserError  # noqa: E402
from hwnas_jax.spaces import nb201  # noqa: E402

DEFAULT_OUT = REPO / 'hwnas_jax' / 'assets' / 'nb201_index.npy'
_PLACES = nb201.NUM_OPS ** np.arange(nb201.NUM_EDGES - 1, -1, -1)


def read_rows(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(index, arch_str) text of each row of the CSV at `path`.

    Raises:
      UserError: the file is missing or unreadable, or lacks a column.
    """
    try:
        with open(path, newline='', encoding='utf-8') as f:
            reader = csv.DictReader(f)
            missing = {'index', 'arch_str'} - set(reader.fieldnames or ())
            if missing:
                raise UserError(
                    f'{path}: missing column(s) {sorted(missing)}; found {reader.fieldnames}'
                )
            rows = [(row['index'], row['arch_str']) for row in reader]
    except FileNotFoundError:
        raise UserError(f'{path}: CSV not found') from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f'{path}: cannot read the CSV ({e})') from None
    for i, (index, arch) in enumerate(rows, start=2):
        if index is None or arch is None:
            raise UserError(
                f'{path}: row {i} lacks the index or arch_str field (a truncated or damaged file)'
            )
    return rows


def build_index(rows: Iterable[tuple[str | int, str]]) -> np.ndarray:
    """int16 [15625]: the genome code of each NAS-Bench-201 index.

    Args:
      rows: (index, arch_str) pairs, in any order.

    Raises:
      UserError: an index is not an integer in 0..15624, missing or repeated; an arch string is
        malformed or repeated; or a code does not convert back to its arch string.
    """
    n = nb201.NUM_ARCHS
    codes = np.full(n, -1, np.int64)
    strings: list[str | None] = [None] * n
    count = 0
    for index_text, arch in rows:
        count += 1
        try:
            i = int(index_text)
        except ValueError:
            raise UserError(f'row {count}: index {index_text!r} is not an integer') from None
        if not 0 <= i < n:
            raise UserError(f'row {count}: index {i} is outside 0..{n - 1}')
        if strings[i] is not None:
            raise UserError(f'row {count}: index {i} appears twice')
        codes[i] = int(np.asarray(nb201.from_arch_str(arch)) @ _PLACES)
        strings[i] = arch
    if count != n:
        raise UserError(f'expected {n} rows, got {count}')
    if len(np.unique(codes)) != n:
        values, counts = np.unique(codes, return_counts=True)
        dup = int(values[counts > 1][0])
        first = [i for i in range(n) if codes[i] == dup][:2]
        raise UserError(f'the same architecture appears at indices {first}: {strings[first[0]]}')
    for i in range(n):
        genome = (codes[i] // _PLACES) % nb201.NUM_OPS
        if nb201.to_arch_str(genome) != strings[i]:
            raise UserError(
                f'index {i}: {strings[i]!r} does not round-trip (got {nb201.to_arch_str(genome)!r})'
            )
    return codes.astype('<i2')


def content_sha256(codes: np.ndarray) -> str:
    """sha256 of the int16 little-endian contents (what ``hwnas_jax.spaces.nb201`` pins)."""
    return hashlib.sha256(np.ascontiguousarray(codes, '<i2').tobytes()).hexdigest()


def write(codes: np.ndarray, out: str | os.PathLike) -> None:
    """Writes `codes` as a .npy file atomically (temporary file, fsync, then rename)."""
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            np.save(f, codes, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates the file private to its owner.
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('csv', help='CSV with columns index, arch_str for all 15625 archs')
    parser.add_argument('--out', default=str(DEFAULT_OUT), help='output .npy path')
    args = parser.parse_args(argv)
    try:
        rows = read_rows(args.csv)
        try:
            codes = build_index(rows)
        except UserError as e:
            raise UserError(f'{args.csv}: {e}') from None
        write(codes, args.out)
    except (UserError, OSError) as e:  # OSError: e.g. the --out folder cannot be created.
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(f'wrote {args.out}: int16 [{len(codes)}], content sha256 {content_sha256(codes)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
