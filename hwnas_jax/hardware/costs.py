"""The cost of NAS-Bench-201 architectures: one vectorised entry point, :func:`cost`.

Device metrics come from HW-NAS-Bench (Li et al., ICLR 2021) tables, per dataset:

* ``latency`` (ms per image, batch 1) on ``edgegpu``, ``raspi4``, ``edgetpu``, ``pixel3``,
  ``eyeriss``, ``fpga``;
* ``energy`` (mJ per image) on ``edgegpu``, ``eyeriss``, ``fpga``;
* ``arithmetic_intensity`` (dimensionless, as HW-NAS-Bench reports it) on ``eyeriss``.

Network metrics come from the search space (:mod:`hwnas_jax.spaces.nb201`), ``device=None``:

* ``flops``: MFLOPs per image, NAS-Bench-201 convention (multiply-accumulates of every conv
  and the linear layer; 32x32 inputs, 16x16 for ImageNet16-120);
* ``params``: millions of parameters (NAS-Bench-201 convention);
* ``model_size`` (RENA): bytes of the parameters stored as float32, ``4 * num_params``;
* ``compute_intensity`` (RENA: FLOPs per byte of data access), defined here as::

      FLOPs / (4 * (num_params + num_activations))

  with FLOPs as in ``flops`` (not in millions) and ``num_activations`` the output elements per
  image of every conv, average-pool and linear layer (``nb201_costs.activation_elements``; the input
  image, BatchNorm, ReLU and additions are not counted). It is FLOPs per byte of float32
  traffic when every weight is read once and every such activation is written once.

References: Li et al., "HW-NAS-Bench", ICLR 2021; Zhou et al., "Resource-Efficient Neural
Architect" (RENA), arXiv:1806.07912, 2018.

Values a table lacks (NaN: not measured, or edgetpu's ``-1.0`` failure sentinel) are never used
as numbers; ``missing`` says what to do with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from hwnas_jax.errors import UserError
from hwnas_jax.hardware import predict as _predict
from hwnas_jax.hardware import tables

DEVICES = ('edgegpu', 'raspi4', 'edgetpu', 'pixel3', 'eyeriss', 'fpga')
DEVICE_METRICS = ('latency', 'energy', 'arithmetic_intensity')
NETWORK_METRICS = ('flops', 'params', 'model_size', 'compute_intensity')
METRICS = DEVICE_METRICS + NETWORK_METRICS
# Which device metrics HW-NAS-Bench has for each device.
DEVICE_HAS = {
    'edgegpu': ('latency', 'energy'),
    'raspi4': ('latency',),
    'edgetpu': ('latency',),
    'pixel3': ('latency',),
    'eyeriss': ('latency', 'energy', 'arithmetic_intensity'),
    'fpga': ('latency', 'energy'),
}
UNITS = {
    'latency': 'ms',
    'energy': 'mJ',
    'arithmetic_intensity': '1',
    'flops': 'MFLOPs',
    'params': 'M',
    'model_size': 'bytes',
    'compute_intensity': 'FLOPs/byte',
}
DATASETS = tables.DATASETS
NUM_CLASSES = {'cifar10': 10, 'cifar100': 100, 'ImageNet16-120': 120}
RESOLUTION = {'cifar10': 32, 'cifar100': 32, 'ImageNet16-120': 16}  # input height = width
MISSING_POLICIES = ('error', 'infeasible', 'predict')
_BYTES_PER_PARAM = 4  # float32
_MAX_LISTED = 10


def _nb201() -> Any:
    from hwnas_jax.spaces import nb201  # pylint: disable=import-outside-toplevel

    return nb201


def _nb201_costs() -> Any:
    from hwnas_jax.spaces import nb201_costs  # pylint: disable=import-outside-toplevel

    return nb201_costs


def _check_choice(kind: str, value: Any, options: tuple[str, ...], hint: str = '') -> None:
    if value not in options:
        raise UserError(f'unknown {kind} {value!r}; expected one of {list(options)}{hint}')


def _resolve(metric: str, device: str | None, dataset: str, missing: str) -> str | None:
    """Validates the names; returns the HW-NAS-Bench column name (None for network metrics)."""
    _check_choice('missing policy', missing, MISSING_POLICIES)
    _check_choice('metric', metric, METRICS, f' (units {UNITS})')
    _check_choice('dataset', dataset, DATASETS)
    device = device or None
    if metric in NETWORK_METRICS:
        if device is not None:
            raise UserError(
                f'{metric!r} is a property of the network, not of a device: pass device=None '
                f'(got {device!r}); device metrics are {list(DEVICE_METRICS)}'
            )
        return None
    having = [d for d in DEVICES if metric in DEVICE_HAS[d]]
    if device is None:
        raise UserError(f'{metric!r} is measured on a device: pass device= one of {having}')
    _check_choice('device', device, DEVICES)
    if metric not in DEVICE_HAS[device]:
        raise UserError(
            f'HW-NAS-Bench has no {metric!r} on {device!r}: it has {list(DEVICE_HAS[device])} '
            f'there; {metric!r} exists on {having}'
        )
    return f'{device}_{metric}'


def _as_genomes(genomes: ArrayLike) -> np.ndarray:
    g = np.asarray(genomes)
    if g.ndim == 0 or g.shape[-1] != tables.NUM_EDGES:
        raise UserError(f'genomes must have shape [..., {tables.NUM_EDGES}], got {g.shape}')
    if g.dtype.kind not in 'iu':
        raise UserError(f'genomes must be integers (op index per edge), got {g.dtype}')
    if g.size and (g.min() < 0 or g.max() >= tables.NUM_OPS):
        raise UserError(f'genome entries must be op indices in 0..{tables.NUM_OPS - 1}')
    return g


def cost(
    genomes: ArrayLike,
    metric: str,
    *,
    device: str | None = None,
    dataset: str = 'cifar10',
    missing: str = 'error',
    table: tables.TableSource = None,
) -> np.ndarray:
    """Cost of NAS-Bench-201 genomes.

    Args:
      genomes: ``[..., 6]`` ints in 0..4 (op per edge: none, skip_connect, nor_conv_1x1,
        nor_conv_3x3, avg_pool_3x3); a single genome ``[6]`` gives a 0-d result.
      metric: one of :data:`METRICS`; units in :data:`UNITS`.
      device: for device metrics, one of :data:`DEVICES` having the metric (:data:`DEVICE_HAS`);
        None (or ``""``) for network metrics.
      dataset: ``cifar10``, ``cifar100`` or ``ImageNet16-120`` (table column; class count).
      missing: what a value the table lacks becomes: ``"error"`` raises a UserError naming the
        architectures; ``"infeasible"`` gives ``+inf``; ``"predict"`` gives the estimate of a
        least-squares model fitted on the known values of the same column (see :func:`predictor`
        for its held-out error, which is also logged when it is first fitted).
      table: None for the packaged CIFAR-10 table, the path of a table converted with
        ``tools/convert_hwnasbench.py`` (all datasets), or a loaded :class:`tables.CostTable`.

    Returns:
      float64 ``[...]``, the cost of every genome.

    Raises:
      UserError: unknown or unavailable metric, device, dataset or missing policy (the message
        lists what exists), malformed genomes, missing values under ``missing="error"``, or a
        table file that is missing, damaged or invalid (the message names it).
    """
    column_name = _resolve(metric, device, dataset, missing)
    g = _as_genomes(genomes)
    batch_shape = g.shape[:-1]
    flat = g.reshape(-1, tables.NUM_EDGES)
    if column_name is None:
        return _network_metric(flat, metric, dataset).reshape(batch_shape)
    loaded = tables.load_table(table)
    column = loaded.column(dataset, column_name)
    idx = np.asarray(_nb201().genomes_to_indices(flat), dtype=np.int64)
    out = column[idx].astype(np.float64)
    lacking = np.isnan(out)
    if lacking.any():
        if missing == 'error':
            raise UserError(_missing_message(metric, device, dataset, loaded, idx[lacking]))
        if missing == 'infeasible':
            out[lacking] = np.inf
        else:
            out[lacking] = _predict.predictor(loaded, dataset, column_name).predict(flat[lacking])
    return out.reshape(batch_shape)


def _missing_message(
    metric: str, device: str | None, dataset: str, table: tables.CostTable, idx: np.ndarray
) -> str:
    unique = np.unique(idx)
    genomes = table.genomes[unique[:_MAX_LISTED]].tolist()
    more = f' and {unique.size - _MAX_LISTED} more' if unique.size > _MAX_LISTED else ''
    return (
        f'HW-NAS-Bench ({table.source}) has no {device} {metric} on {dataset} for '
        f'{unique.size} architecture(s): NAS-Bench-201 indices {unique[:_MAX_LISTED].tolist()}'
        f"{more} (genomes {genomes}). Pass missing='infeasible' (cost +inf: the penalty "
        "rules them out) or missing='predict' (a least-squares estimate from the known entries; "
        'its held-out error is logged). A table converted from the original '
        'HW-NAS-Bench-v1_0.pickle may have more values (tools/convert_hwnasbench.py).'
    )


def _network_metric(genomes: np.ndarray, metric: str, dataset: str) -> np.ndarray:
    nb201_costs = _nb201_costs()
    size = {'num_classes': NUM_CLASSES[dataset]}
    if metric == 'flops':
        flops = nb201_costs.flops(genomes, resolution=RESOLUTION[dataset], **size)
        return np.asarray(flops, np.float64)
    params = np.rint(np.asarray(nb201_costs.num_params(genomes, **size)) * 1e6)  # exact count
    if metric == 'params':
        return params / 1e6
    if metric == 'model_size':
        return _BYTES_PER_PARAM * params
    size['resolution'] = RESOLUTION[dataset]
    flops = np.asarray(nb201_costs.flops(genomes, **size), np.float64) * 1e6
    acts = np.asarray(nb201_costs.activation_elements(genomes, **size), np.float64)
    return flops / (_BYTES_PER_PARAM * (params + acts))


def available(
    dataset: str = 'cifar10', table: tables.TableSource = None
) -> dict[str, tuple[str, ...]]:
    """What :func:`cost` can return on ``dataset``: ``{metric: devices}``.

    Network metrics map to ``()`` (they take ``device=None``); device metrics map to the devices
    whose column the table has for ``dataset`` (columns may still lack some architectures).

    Raises:
      UserError: unknown dataset, or a dataset the table lacks (the message says how to get it).
    """
    _check_choice('dataset', dataset, DATASETS)
    loaded = tables.load_table(table)
    loaded.require_dataset(dataset)
    present = set(loaded.metrics(dataset))
    out: dict[str, tuple[str, ...]] = {}
    for metric in DEVICE_METRICS:
        devices = tuple(d for d in DEVICES if f'{d}_{metric}' in present)
        if devices:
            out[metric] = devices
    out.update({m: () for m in NETWORK_METRICS})
    return out


def datasets(table: tables.TableSource = None) -> tuple[str, ...]:
    """Datasets the table has (the packaged one: ``("cifar10",)``)."""
    return tables.load_table(table).datasets


def coverage(
    metric: str, *, device: str, dataset: str = 'cifar10', table: tables.TableSource = None
) -> tuple[int, int]:
    """``(known, total)`` number of architectures with a value in one column."""
    column = tables.load_table(table).column(dataset, _resolve(metric, device, dataset, 'error'))
    return int(np.sum(~np.isnan(column))), column.size


def predictor(
    metric: str, *, device: str, dataset: str = 'cifar10', table: tables.TableSource = None
) -> _predict.OpPredictor:
    """The fitted model ``missing="predict"`` uses for one column (fitted once, cached).

    Its ``error`` attribute holds the 5-fold held-out error (MAE, RMSE, max, relative) over the
    known entries; ``summary()`` gives it as one line.
    """
    column_name = _resolve(metric, device, dataset, 'predict')
    return _predict.predictor(tables.load_table(table), dataset, column_name)


def describe(table: tables.TableSource = None) -> Mapping[str, Any]:
    """Provenance of a table: its metadata (source, licence, input sha256, units, coverage)."""
    return tables.load_table(table).metadata
