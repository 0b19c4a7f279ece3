"""NAS-Bench-201 ground truth: the 200-epoch accuracy of all 15,625 architectures (numpy only).

For evaluating a search, never for running one: the proxy never reads these values.

Accuracies are in percent, the mean over NAS-Bench-201's training seeds with its 200-epoch
schedule (``hp='200'``). :func:`accuracy` maps ``(dataset, split)`` to NAS-Bench-201's protocols
(:data:`PROTOCOLS`)::

    dataset         split  column                        NAS-Bench-201 protocol
    cifar10         test   cifar10_200ep_oritest         'cifar10': trained on train+valid,
                                                         original CIFAR-10 test set (what NAS
                                                         papers report; best 94.37 at 6111)
    cifar10         valid  cifar10_valid_200ep_xvalid    'cifar10-valid': trained on the train
                                                         half, its held-out valid half
    cifar100        test   cifar100_200ep_xtest          'cifar100', x-test half (best 73.51)
    cifar100        valid  cifar100_200ep_xvalid         'cifar100', x-valid half
    ImageNet16-120  test   imagenet16_200ep_xtest        'ImageNet16-120', x-test half (47.31)
    ImageNet16-120  valid  imagenet16_200ep_xvalid       'ImageNet16-120', x-valid half

CIFAR-10's two splits come from different training runs (NAS-Bench-201's 'cifar10' and
'cifar10-valid' protocols); the file also holds ``cifar10_valid_200ep_oritest`` (the
'cifar10-valid' networks on the original test set), readable with :func:`column`.

The packaged file ``assets/nb201_accuracy.npz`` (written by ``tools/convert_nb201_accuracy.py``)
holds only plain arrays: one float64 ``[15625]`` per column in the official index order,
``genomes`` (int8 ``[15625, 6]``, checked against :func:`nb201.indices_to_genomes`) and
``metadata`` (uint8, UTF-8 JSON with ``data_sha256``, a digest of all other arrays). The digest
is recomputed on load and pinned here (:data:`PACKAGED_DATA_SHA256`).

Data: NAS-Bench-201 (Dong & Yang, ICLR 2020), MIT; see ``assets/NOTICE-nb201-accuracy.txt``.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from hwnas_jax import fileio
from hwnas_jax.errors import UserError
from hwnas_jax.hardware.tables import data_digest  # The same content digest as the cost table.
from hwnas_jax.spaces import nb201

FORMAT = 'hwnas_jax.nb201_accuracy'
FORMAT_VERSION = 1
NUM_ARCHS = nb201.NUM_ARCHS
COLUMNS = (
    'cifar10_valid_200ep_xvalid',
    'cifar10_valid_200ep_oritest',
    'cifar10_200ep_oritest',
    'cifar100_200ep_xvalid',
    'cifar100_200ep_xtest',
    'imagenet16_200ep_xvalid',
    'imagenet16_200ep_xtest',
)
DATASETS = ('cifar10', 'cifar100', 'ImageNet16-120')
SPLITS = ('test', 'valid')
PROTOCOLS = {
    ('cifar10', 'test'): 'cifar10_200ep_oritest',
    ('cifar10', 'valid'): 'cifar10_valid_200ep_xvalid',
    ('cifar100', 'test'): 'cifar100_200ep_xtest',
    ('cifar100', 'valid'): 'cifar100_200ep_xvalid',
    ('ImageNet16-120', 'test'): 'imagenet16_200ep_xtest',
    ('ImageNet16-120', 'valid'): 'imagenet16_200ep_xvalid',
}
PACKAGED_NAME = 'nb201_accuracy.npz'
# data_sha256 of the packaged file; regenerate with tools/convert_nb201_accuracy.py and update.
PACKAGED_DATA_SHA256 = '4108c686d7da5bbe3e500147d0a7380160b1b75d59c729f11eaab3293a0ad33e'
TIE_RULE = 'ties go to the lowest NAS-Bench-201 index'

_FIX_PACKAGED = (
    'reinstall hwnas_jax (pip install --force-reinstall --no-deps hwnas_jax, or git '
    'checkout the file)'
)
_FIX_USER = 're-create it with tools/convert_nb201_accuracy.py'


def encode(
    columns: Mapping[str, np.ndarray], genomes: np.ndarray, metadata: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """The arrays of an accuracy file (validated), with format fields and digest in the metadata.

    Args:
      columns: ``{name: [15625] accuracies in percent}`` for every name in :data:`COLUMNS`.
      genomes: ``[15625, 6]`` ints, the genome of every NAS-Bench-201 index.
      metadata: JSON-able provenance; format, columns, units, protocols and digest are added.

    Raises:
      UserError: wrong columns, shapes or values, or an index order other than NAS-Bench-201's.
    """
    arrays = {'genomes': np.asarray(genomes).astype(np.int8)}
    for name, col in columns.items():
        arrays[name] = np.asarray(col, dtype='<f8')
    meta = dict(metadata)
    meta.update(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        num_archs=NUM_ARCHS,
        columns=list(COLUMNS),
        units='percent',
        protocols={f'{d}/{s}': c for (d, s), c in PROTOCOLS.items()},
        index_order="NAS-Bench-201 architecture index; 'genomes' holds its op per edge",
        data_sha256=data_digest(arrays),
    )
    arrays['metadata'] = np.frombuffer(json.dumps(meta, indent=1).encode(), dtype=np.uint8)
    _validate(arrays, meta, '<new accuracy file>', _FIX_USER)
    return arrays


def _validate(
    arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], where: str, fix: str
) -> None:
    def bad(msg: str) -> UserError:
        return UserError(f'{where}: invalid NAS-Bench-201 accuracy file: {msg}; {fix}')

    if meta.get('format') != FORMAT or meta.get('format_version') != FORMAT_VERSION:
        raise bad(
            f'format {meta.get("format")!r} v{meta.get("format_version")!r}, expected '
            f'{FORMAT!r} v{FORMAT_VERSION}'
        )
    expected = set(COLUMNS) | {'genomes', 'metadata'}
    if set(arrays) != expected:
        raise bad(f'arrays {sorted(set(arrays) ^ expected)} missing or unexpected')
    g = arrays['genomes']
    if g.dtype != np.int8 or g.shape != (NUM_ARCHS, nb201.NUM_EDGES):
        raise bad(f'genomes is {g.dtype} {g.shape}, expected int8 ({NUM_ARCHS}, 6)')
    for name in COLUMNS:
        a = arrays[name]
        if a.dtype != np.dtype('<f8') or a.shape != (NUM_ARCHS,):
            raise bad(f'{name} is {a.dtype} {a.shape}, expected float64 ({NUM_ARCHS},)')
        if not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 100:
            raise bad(f'{name} has values that are not finite percentages in [0, 100]')
    digest = data_digest(arrays)
    if digest != meta.get('data_sha256'):
        raise bad(
            f'content sha256 {digest} differs from the recorded '
            f'{meta.get("data_sha256")} (modified or damaged)'
        )
    ref = nb201.indices_to_genomes(np.arange(NUM_ARCHS))
    if not np.array_equal(ref, g):
        first = int(np.argmax(np.any(ref != g, axis=-1)))
        raise bad(
            f"index order differs from NAS-Bench-201's (first at index {first}: file "
            f'{g[first].tolist()}, nb201 {ref[first].tolist()})'
        )


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, pinned: str | None, _stamp: tuple) -> dict[str, Any]:
    fix = _FIX_PACKAGED if pinned else _FIX_USER
    arrays = fileio.load_npz(
        path, what='the NAS-Bench-201 accuracy table', fix=fix, keys=('metadata', 'genomes')
    )
    try:
        meta = json.loads(arrays['metadata'].tobytes().decode())
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(
            f'{path}: invalid NAS-Bench-201 accuracy file: unreadable metadata ({e}); {fix}'
        ) from None
    if not isinstance(meta, dict):
        raise UserError(
            f'{path}: invalid NAS-Bench-201 accuracy file: metadata is not a JSON object; {fix}'
        )
    _validate(arrays, meta, path, fix)
    if pinned is not None and meta['data_sha256'] != pinned:
        raise UserError(
            f'{path}: packaged NAS-Bench-201 accuracies changed (content sha256 '
            f'{meta["data_sha256"][:12]}..., expected {pinned[:12]}...); {fix}'
        )
    for a in arrays.values():
        a.setflags(write=False)
    return {'columns': {c: arrays[c] for c in COLUMNS}, 'metadata': meta, 'source': path}


def load(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The validated accuracy table (cached while the file is unchanged).

    Args:
      path: None for the packaged table (its digest must equal :data:`PACKAGED_DATA_SHA256`),
        or a file written by ``tools/convert_nb201_accuracy.py``.

    Returns:
      ``{'columns': {name: read-only float64 [15625]}, 'metadata': dict, 'source': str}``.

    Raises:
      UserError: the file is missing, damaged, of another format, fails the shape, range,
        index-order or digest checks (one message naming the file and the fix).
    """
    packaged = path is None
    p = str(fileio.asset_path(PACKAGED_NAME)) if packaged else os.path.realpath(os.fspath(path))
    try:
        st = os.stat(p)
        stamp = (st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = ()  # load_npz reports the missing file.
    return _load_cached(p, PACKAGED_DATA_SHA256 if packaged else None, stamp)


def protocol(dataset: str = 'cifar10', split: str = 'test') -> str:
    """The column name of ``(dataset, split)`` (see the module docstring).

    Raises:
      UserError: unknown dataset or split; the message lists the choices.
    """
    if dataset not in DATASETS:
        raise UserError(
            f'unknown NAS-Bench-201 dataset {dataset!r}; choose one of {list(DATASETS)}'
        )
    if split not in SPLITS:
        raise UserError(f'unknown NAS-Bench-201 split {split!r}; choose one of {list(SPLITS)}')
    return PROTOCOLS[(dataset, split)]


def column(name: str, path: str | os.PathLike | None = None) -> np.ndarray:
    """One column by its file name (:data:`COLUMNS`): read-only float64 [15625], by index."""
    if name not in COLUMNS:
        raise UserError(
            f'unknown NAS-Bench-201 accuracy column {name!r}; choose one of {list(COLUMNS)}'
        )
    return load(path)['columns'][name]


def all_accuracies(dataset: str = 'cifar10', split: str = 'test') -> np.ndarray:
    """Accuracy (percent) of every architecture, by index: read-only float64 [15625]."""
    return column(protocol(dataset, split))


def accuracy(genomes: Any, dataset: str = 'cifar10', split: str = 'test') -> np.ndarray:
    """200-epoch NAS-Bench-201 accuracy in percent of genomes.

    Args:
      genomes: one genome [6] or a batch [..., 6] of op indices (:mod:`hwnas_jax.spaces.nb201`).
      dataset: 'cifar10', 'cifar100' or 'ImageNet16-120'.
      split: 'test' or 'valid' (protocols in the module docstring).

    Returns:
      float64 [...] (0-d for one genome).

    Raises:
      UserError: unknown dataset or split. ValueError: malformed genomes.
    """
    acc = all_accuracies(dataset, split)
    return acc[nb201.genomes_to_indices(genomes)]


def feasibility(objective_or_costs_and_limits: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Costs of all 15,625 architectures and which of them meet every constraint.

    Args:
      objective_or_costs_and_limits: an object with ``.costs(genomes) -> [C, P]`` and
        ``.limits -> [C]`` (:class:`hwnas_jax.search.objective.Objective` on NAS-Bench-201),
        or a pair ``(costs [C, 15625] by index, limits [C])``.

    Returns:
      ``(costs float64 [C, 15625], limits float64 [C], feasible bool [15625])``: feasible means
      every cost is finite and <= its limit.
    """
    arg = objective_or_costs_and_limits
    if hasattr(arg, 'costs') and hasattr(arg, 'limits'):
        costs = arg.costs(nb201.indices_to_genomes(np.arange(NUM_ARCHS)))
        limits = arg.limits
    else:
        costs, limits = arg
    costs = np.asarray(costs, np.float64)
    limits = np.asarray(limits, np.float64).reshape(-1)
    if costs.ndim == 1:
        costs = costs[None]
    if costs.shape != (limits.size, NUM_ARCHS):
        raise ValueError(
            f'costs must be [C, {NUM_ARCHS}] (all architectures by index) with '
            f'C = len(limits) = {limits.size}; got {costs.shape}'
        )
    feasible = np.all(np.isfinite(costs) & (costs <= limits[:, None]), axis=0)
    return costs, limits, feasible


def best_feasible(
    objective_or_costs_and_limits: Any, dataset: str = 'cifar10', split: str = 'test'
) -> dict[str, Any] | None:
    """The most accurate architecture meeting every constraint, exact over all 15,625.

    Args:
      objective_or_costs_and_limits: as for :func:`feasibility`.
      dataset: 'cifar10', 'cifar100' or 'ImageNet16-120'.
      split: 'test' or 'valid': the accuracy that is maximised.

    Returns:
      None when no architecture is feasible; otherwise ``{'index', 'genome' (list), 'arch_str',
      'accuracy', 'costs' (list [C]), 'num_feasible'}``; ties go to the lowest index.
    """
    acc = all_accuracies(dataset, split)  # Checks the names before the costs are computed.
    costs, _, feasible = feasibility(objective_or_costs_and_limits)
    if not feasible.any():
        return None
    index = int(np.argmax(np.where(feasible, acc, -np.inf)))
    genome = nb201.indices_to_genomes(index)
    return {
        'index': index,
        'genome': genome.tolist(),
        'arch_str': nb201.to_arch_str(genome),
        'accuracy': float(acc[index]),
        'costs': costs[:, index].tolist(),
        'num_feasible': int(feasible.sum()),
    }
