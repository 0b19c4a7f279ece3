"""The static layout of the OFA MobileNetV3 space: choices, widths, strides, genome decoding.

numpy only (no JAX, no Flax), so that the codec (:mod:`hwnas_jax.spaces.ofa`), the analytic
costs and the GA can use it without importing the networks (:mod:`hwnas_jax.spaces.ofa_net`).

Genome layout (gene = index into the choice tuple): genes 0-19 kernel sizes (3, 5, 7), genes
20-39 expand ratios (3, 4, 6), genes 40-44 stage depths (2, 3, 4); block ``4 * s + b`` is block
``b`` of stage ``s`` (0-based).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from hwnas_jax.errors import UserError

KERNEL_CHOICES = (3, 5, 7)
EXPAND_CHOICES = (3, 4, 6)
DEPTH_CHOICES = (2, 3, 4)
NUM_STAGES = 5
MAX_DEPTH = 4
NUM_BLOCKS = NUM_STAGES * MAX_DEPTH
NUM_GENES = 2 * NUM_BLOCKS + NUM_STAGES
# Stem, first block, the five stages, final expand, feature mix (before the width multiplier).
BASE_WIDTHS = (16, 16, 24, 40, 80, 112, 160, 960, 1280)
STAGE_STRIDES = (2, 2, 2, 1, 2)
STAGE_ACTS = ('relu', 'relu', 'h_swish', 'h_swish', 'h_swish')
STAGE_SE = (False, True, False, True, True)
BN_EPS = 1e-5
BN_MOMENTUM = 0.9  # flax convention; PyTorch momentum 0.1
CIFAR_MAX_RESOLUTION = 64


def make_divisible(v: float, divisor: int = 8) -> int:
    """OFA's channel rounding: the nearest multiple of ``divisor``, never below 90% of ``v``."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def mid_channels(in_ch: int, expand: int) -> int:
    """Active middle width of an MBConv block: ``make_divisible(round(in_ch * expand), 8)``."""
    return make_divisible(round(in_ch * expand))


def se_channels(mid_ch: int) -> int:
    """Reduced width of the squeeze-and-excite of a block with ``mid_ch`` middle channels."""
    return make_divisible(mid_ch // 4)


def use_cifar_stem(resolution: int, cifar_stem: bool | None = None) -> bool:
    """Whether the CIFAR stem applies: ``cifar_stem`` if given, else ``resolution <= 64``."""
    return resolution <= CIFAR_MAX_RESOLUTION if cifar_stem is None else bool(cifar_stem)


@dataclasses.dataclass(frozen=True)
class Stage:
    """Static description of one elastic stage (input width is that of its first block)."""

    in_ch: int
    out_ch: int
    stride: int
    act: str
    se: bool


@dataclasses.dataclass(frozen=True)
class Layout:
    """Static widths and strides of the network for a width multiplier and stem."""

    stem_ch: int
    stem_stride: int
    first_ch: int
    stages: tuple[Stage, ...]
    final_ch: int
    mix_ch: int


def layout(width_mult: float = 1.2, cifar: bool = False) -> Layout:
    """Widths ``make_divisible(w * width_mult, 8)`` and strides of the OFA MobileNetV3 space."""
    if width_mult <= 0:
        raise UserError(f'width_mult must be positive, got {width_mult}.')
    w = [make_divisible(b * width_mult) for b in BASE_WIDTHS]
    strides = (1,) + STAGE_STRIDES[1:] if cifar else STAGE_STRIDES
    stages = tuple(
        Stage(w[s + 1], w[s + 2], strides[s], STAGE_ACTS[s], STAGE_SE[s]) for s in range(NUM_STAGES)
    )
    return Layout(w[0], 1 if cifar else 2, w[1], stages, w[7], w[8])


def decode(genome: Sequence[int] | np.ndarray) -> tuple[list[int], list[int], list[int]]:
    """Kernel sizes [20], expand ratios [20] and depths [5] of a genome (checked)."""
    g = np.asarray(genome)
    if g.shape != (NUM_GENES,):
        raise UserError(f'An OFA genome has {NUM_GENES} genes, got shape {g.shape}.')
    if g.dtype == bool or not np.issubdtype(g.dtype, np.integer):
        raise UserError(f'OFA genes must be integers, got dtype {g.dtype}.')
    if np.any(g < 0) or np.any(g > 2):
        bad = [int(i) for i in np.flatnonzero((g < 0) | (g > 2))]
        raise UserError(
            f'OFA genes are choice indices in [0, 2]; genes {bad} are out of range '
            f'(values {[int(g[i]) for i in bad]}).'
        )
    ks = [KERNEL_CHOICES[i] for i in g[:NUM_BLOCKS]]
    es = [EXPAND_CHOICES[i] for i in g[NUM_BLOCKS : 2 * NUM_BLOCKS]]
    ds = [DEPTH_CHOICES[i] for i in g[2 * NUM_BLOCKS :]]
    return ks, es, ds
