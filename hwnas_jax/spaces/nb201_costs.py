"""Analytic costs of NAS-Bench-201 networks: parameters, FLOPs, activations; and `describe`.

Exact and vectorised over genomes [..., 6]; :func:`num_params` and :func:`flops` reproduce
NAS-Bench-201's published figures (C=16, N=5, 32x32 inputs by default). numpy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hwnas_jax.errors import UserError
from hwnas_jax.spaces.nb201 import (
    _CONV1,
    _CONV3,
    _POOL,
    NAME,
    GenomeLike,
    _as_genomes,
    canonical,
    to_arch_str,
    to_index,
    validate,
)

Number = float | np.ndarray


def _check_sizes(
    num_classes: int, channels: int, cells_per_stage: int, resolution: int = 32
) -> None:
    for name, v in (
        ('num_classes', num_classes),
        ('channels', channels),
        ('cells_per_stage', cells_per_stage),
        ('resolution', resolution),
    ):
        if int(v) != v or v < 1:
            raise UserError(f'{name} must be a positive integer, got {v!r}')
    if resolution % 4:
        raise UserError(
            f'resolution must be a multiple of 4 (two stride-2 stages), got {resolution}'
        )


def _op_counts(genomes: GenomeLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    g = _as_genomes(genomes)
    return ((g == _CONV1).sum(-1), (g == _CONV3).sum(-1), (g == _POOL).sum(-1), g.ndim == 1)


def _out(x: np.ndarray, single: bool, kind: type) -> Any:
    return kind(x) if single else x


def _stages(channels: int, resolution: int) -> list[tuple[int, int]]:
    """(channels, spatial size) of the three stages."""
    return [(channels * 2**s, resolution // 2**s) for s in range(3)]


def num_params(
    genome: GenomeLike, num_classes: int = 10, channels: int = 16, cells_per_stage: int = 5
) -> Number:
    """Trainable parameters of the exact network, in millions (NAS-Bench-201's unit).

    Counts conv kernels (no biases), BatchNorm scales and shifts (not the running statistics)
    and the classifier's weights and bias, as NAS-Bench-201 does (``count_parameters_in_MB``
    with 1e6). Every conv op counts, even one the cell output does not depend on.

    Args:
      genome: [6] or [..., 6] ints.
      num_classes: classifier outputs (10 for CIFAR-10, 100, 120 for ImageNet16-120).
      channels: C, the first stage's width.
      cells_per_stage: N.

    Returns:
      float for one genome, float64 [...] for a batch. E.g. 1.531546 for the all-
      ``nor_conv_3x3`` cell on CIFAR-10.
    """
    _check_sizes(num_classes, channels, cells_per_stage)
    n1, n3, _, single = _op_counts(genome)
    c = channels
    total = 27 * c + 2 * c  # Stem conv and BN.
    cells = 0
    for width, _ in _stages(c, 32):
        cells = cells + n3 * (9 * width * width + 2 * width) + n1 * (width * width + 2 * width)
    total = total + cells_per_stage * cells
    for c_in, c_out in ((c, 2 * c), (2 * c, 4 * c)):  # conv_a, conv_b (+BN), shortcut 1x1.
        total += 9 * c_in * c_out + 9 * c_out * c_out + 4 * c_out + c_in * c_out
    total += 2 * 4 * c + 4 * c * num_classes + num_classes  # lastact BN and classifier.
    return _out(np.asarray(total, np.int64) / 1e6, single, float)


def flops(
    genome: GenomeLike,
    num_classes: int = 10,
    channels: int = 16,
    cells_per_stage: int = 5,
    resolution: int = 32,
) -> Number:
    """FLOPs of one image through the exact network, in millions, NAS-Bench-201's convention.

    NAS-Bench-201 (xautodl ``get_model_infos``) sums, per image, ``k*k*C_in*C_out*H_out*W_out``
    over every Conv2d (multiply-accumulates; no conv has a bias) and ``in*out + out`` over the
    Linear layer. Pooling, BatchNorm, ReLU, additions and ``none`` ops count zero (xautodl hooks
    the pooling layers but leaves them out of the sum). Every conv op counts, even one the cell
    output does not depend on.

    Args:
      genome: [6] or [..., 6] ints.
      num_classes: classifier outputs.
      channels: C.
      cells_per_stage: N.
      resolution: input height = width (32 for CIFAR, 16 for ImageNet16-120); a multiple of 4.

    Returns:
      float for one genome, float64 [...] for a batch (e.g. 78.56193 for NAS-Bench-201 index 2).
    """
    _check_sizes(num_classes, channels, cells_per_stage, resolution)
    n1, n3, _, single = _op_counts(genome)
    c, r = channels, resolution
    total = 27 * c * r * r  # Stem.
    cells = 0
    for width, size in _stages(c, r):
        cells = cells + (9 * n3 + n1) * width * width * size * size
    total = total + cells_per_stage * cells
    for (c_in, _), (c_out, size) in zip(_stages(c, r)[:2], _stages(c, r)[1:]):
        total += (9 * c_in * c_out + 9 * c_out * c_out + c_in * c_out) * size * size
    total += 4 * c * num_classes + num_classes
    return _out(np.asarray(total, np.int64) / 1e6, single, float)


def activation_elements(
    genome: GenomeLike,
    num_classes: int = 10,
    channels: int = 16,
    cells_per_stage: int = 5,
    resolution: int = 32,
) -> Any:
    """Output elements of one image written by the exact network's conv, pooling and linear layers.

    The sum of ``C_out * H_out * W_out`` over every Conv2d (stem, ``nor_conv_*`` ops, the
    ResNet blocks' two 3x3 convs and 1x1 shortcut conv), every average pool (``avg_pool_3x3``
    ops, the ResNet blocks' 2x2 shortcut pool and the global pool, 4C elements) and the
    classifier (``num_classes``). BatchNorm, ReLU, additions, ``skip_connect`` and ``none``
    write nothing here. With :func:`flops` this gives a compute intensity (FLOPs per element
    written).

    Args:
      genome: [6] or [..., 6] ints.
      num_classes: classifier outputs.
      channels: C.
      cells_per_stage: N.
      resolution: input height = width; a multiple of 4.

    Returns:
      int for one genome, int64 [...] for a batch.
    """
    _check_sizes(num_classes, channels, cells_per_stage, resolution)
    n1, n3, n_pool, single = _op_counts(genome)
    c, r = channels, resolution
    total = c * r * r  # Stem conv.
    cells = 0
    for width, size in _stages(c, r):
        cells = cells + (n1 + n3 + n_pool) * width * size * size
    total = total + cells_per_stage * cells
    for (c_in, _), (c_out, size) in zip(_stages(c, r)[:2], _stages(c, r)[1:]):
        total += (3 * c_out + c_in) * size * size  # conv_a, conv_b, shortcut pool and conv.
    total += 4 * c + num_classes  # Global pool and classifier.
    return _out(np.asarray(total, np.int64), single, int)


def describe(genome: GenomeLike, num_classes: int = 10) -> dict[str, Any]:
    """JSON-able summary of one genome (default C=16, N=5 network on 32x32 inputs).

    Returns:
      dict with 'space', 'genome' (list), 'arch_str', 'index' (NAS-Bench-201), 'canonical'
      (list), 'canonical_index', 'flops' (MFLOPs, :func:`flops`) and 'params' (millions,
      :func:`num_params`).
    """
    g = validate(genome)
    canon = canonical(g)
    return {
        'space': NAME,
        'genome': [int(v) for v in g],
        'arch_str': to_arch_str(g),
        'index': to_index(g),
        'canonical': list(canon),
        'canonical_index': to_index(canon),
        'flops': flops(g, num_classes),
        'params': num_params(g, num_classes),
    }
