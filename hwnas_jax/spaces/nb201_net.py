"""Flax networks of the NAS-Bench-201 space: NAS-Bench-201's CIFAR ``TinyNetwork``, two forms.

* :class:`Network`: the exact network of one static genome; only the chosen ops have parameters
  (for training the winner and for export).
* :class:`PopulationNetwork`: one parameter tree for every genome, the genome a traced int32 [6]
  input, so that a population trains in one compiled, vmapped call. Each edge computes all of
  its ops and selects the chosen one; the others contribute nothing, whatever their values.

For the same weights both compute the same function: the exact network's variables are a
subset (same paths, same shapes) of the population network's, extracted by
:func:`exact_variables`.

Layout (NHWC; C = ``channels``, N = ``cells_per_stage``; modules named as in the tree)::

    stem_conv (3x3, C, no bias), stem_bn
    cell0 .. cell{N-1}               cells, C channels
    cell{N}                          ResNet block, stride 2, 2C channels
    cell{N+1} .. cell{2N}            cells, 2C channels
    cell{2N+1}                       ResNet block, stride 2, 4C channels
    cell{2N+2} .. cell{3N+1}         cells, 4C channels
    lastact_bn, ReLU, global average pool, classifier (Dense)

A cell's conv op on edge j <- i is the submodule ``edge_{j}_{i}_{op}`` (``conv``, ``bn``); a
ResNet block (xautodl ``ResNetBasicblock``) has ``conv_a`` (ReLU-Conv3x3/2-BN), ``conv_b``
(ReLU-Conv3x3-BN) and ``shortcut`` (AvgPool 2x2 then Conv1x1, no BN), and returns their sum.
Features returned for RMI: the outputs of cell N-1, cell 2N and the final BN-ReLU.

Initialisation follows PyTorch's defaults (as NAS-Bench-201 and RMI-NAS train): conv and linear
weights U(-1/sqrt(fan_in), 1/sqrt(fan_in)), linear bias likewise, BN scale 1 and shift 0.
BatchNorm: momentum 0.1 in PyTorch's sense (Flax 0.9), eps 1e-5, batch statistics when
``train=True`` (Flax keeps the biased batch variance in the running average, PyTorch the
unbiased one: a factor n/(n-1), n = batch x height x width).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from hwnas_jax.spaces.nb201 import EDGES, NUM_EDGES, OPS, validate
from hwnas_jax.spaces.nb201_cell import (  # noqa: F401 - Cell, ReLUConvBN re-exported
    CONV_OPS,
    Cell,
    ReLUConvBN,
    ResNetBlock,
    _CellStep,
    batch_norm,
    unrolled_cell,
)
from hwnas_jax.spaces.nb201_conv import (  # noqa: F401 - CONV_IMPLS re-exported
    _KERNEL_INIT,
    CONV_IMPLS,
    Conv2d,
)
from hwnas_jax.spaces.nb201_stack import stack_cells, unrolled

DISPATCHES = ('select', 'switch')


def _uniform_bias_init(fan_in: int) -> nn.initializers.Initializer:
    bound = 1.0 / np.sqrt(fan_in)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _tiny_network(
    module: nn.Module,
    x: jax.Array,
    genome: jax.Array | None,
    static_genome: tuple | None,
    channels: int,
    cells_per_stage: int,
    num_classes: int,
    conv_impl: str,
    train: bool,
    dispatch: str = 'select',
    scan_cells: bool = False,
) -> tuple[jax.Array, list[jax.Array]]:
    """The body shared by both forms; call from `module`'s compact method (submodules attach
    there)."""
    if conv_impl not in CONV_IMPLS:
        raise ValueError(f'conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}')
    if dispatch not in DISPATCHES:
        raise ValueError(f'dispatch must be one of {DISPATCHES}, got {dispatch!r}')
    if x.ndim != 4 or x.shape[1] % 4 or x.shape[2] % 4:
        raise ValueError(
            f'x must be [batch, height, width, channels] with height and width '
            f'multiples of 4, got shape {x.shape}'
        )
    x = Conv2d(channels, 3, 1, 1, conv_impl, name='stem_conv')(x)
    x = batch_norm(train, 'stem_bn')(x)
    features = []
    k = 0
    for stage in range(3):
        width = channels * 2**stage
        if stage:
            x = ResNetBlock(width, conv_impl, name=f'cell{k}')(x, train=train)
            k += 1
        if scan_cells:
            # One cell body per stage in the program (a `lax.scan` over the stacked weights of
            # the stage's cells) instead of N.
            step = nn.scan(
                _CellStep,
                variable_axes={'params': 0, 'batch_stats': 0},
                split_rngs={'params': True},
                in_axes=nn.broadcast,
                length=cells_per_stage,
            )
            x, _ = step(width, conv_impl, dispatch, train, name=f'stage{stage}_cells')(x, genome)
            k += cells_per_stage
        for _ in range(0 if scan_cells else cells_per_stage):
            x = unrolled_cell(
                module,
                f'cell{k}',
                x,
                genome,
                features=width,
                static_genome=static_genome,
                conv_impl=conv_impl,
                dispatch=dispatch,
                train=train,
            )
            k += 1
        if stage < 2:
            features.append(x)  # Outputs of cell N-1 and cell 2N.
    x = nn.relu(batch_norm(train, 'lastact_bn')(x))
    features.append(x)
    pooled = jnp.mean(x, axis=(1, 2))
    logits = nn.Dense(
        num_classes,
        kernel_init=_KERNEL_INIT,
        bias_init=_uniform_bias_init(pooled.shape[-1]),
        name='classifier',
    )(pooled)
    return logits, features


class Network(nn.Module):
    """NAS-Bench-201's CIFAR network (xautodl ``TinyNetwork``) for one static genome.

    Attributes:
      genome: 6 op indices (see :mod:`hwnas_jax.spaces.nb201`).
      channels: C, the first stage's width (16 in NAS-Bench-201).
      cells_per_stage: N (5 in NAS-Bench-201).
      num_classes: classifier outputs.
      conv_impl: 'xla', 'im2col' or 'xla_cpu' (see :class:`Conv2d`; 'xla_cpu' on CPUs).
    """

    genome: tuple[int, ...]
    channels: int = 16
    cells_per_stage: int = 5
    num_classes: int = 10
    conv_impl: str = 'xla'

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, list[jax.Array]]:
        """Logits and RMI features.

        Args:
          x: [B, H, W, 3] images (H, W multiples of 4; 32 for CIFAR).
          train: BatchNorm uses (and updates) batch statistics; apply with
            ``mutable=['batch_stats']``.

        Returns:
          (logits [B, num_classes], [cell N-1 [B, H, W, C], cell 2N [B, H/2, W/2, 2C],
          lastact [B, H/4, W/4, 4C]]).
        """
        genome = tuple(int(v) for v in validate(self.genome))
        return _tiny_network(
            self,
            x,
            None,
            genome,
            self.channels,
            self.cells_per_stage,
            self.num_classes,
            self.conv_impl,
            train,
        )


class PopulationNetwork(nn.Module):
    """NAS-Bench-201's CIFAR network for any genome, given as a traced array.

    All genomes share one parameter tree (every conv op of every edge), so that a population
    trains in one compiled call vmapped over parameters, keys and genomes.

    Attributes:
      channels: C.
      cells_per_stage: N.
      num_classes: classifier outputs.
      conv_impl: 'xla', 'im2col' or 'xla_cpu' (see :class:`Conv2d`; 'xla_cpu' on CPUs).
      dispatch: how an edge applies the chosen op. 'select' runs all five and selects (what
        vmap does anyway); 'switch' runs only the chosen one with a conditional (``lax.switch``),
        cheaper for members trained one at a time (``lax.map``), and unused ops' BatchNorm
        statistics are then left unchanged. Initialisation always runs every op.
      scan_cells: the cells of a stage run as one ``lax.scan`` over their stacked variables
        (``stage{s}_cells/cell``, leading axis N) instead of N unrolled cells: the same
        function; at full size the proxy program built 1.6x faster on a CPU, but each
        training step ran 14-38 % slower there (`benchmarks/README.md`). :meth:`init` draws
        the unrolled network's weights (the same for either setting) and stacks them
        (:func:`stack_cells`; :func:`unstack_cells` undoes it).
    """

    channels: int = 16
    cells_per_stage: int = 5
    num_classes: int = 10
    conv_impl: str = 'xla'
    dispatch: str = 'select'
    scan_cells: bool = False

    @nn.nowrap  # Not a module method: Flax must not wrap it (model.tabulate calls it unbound).
    def init(self, rngs, *args, **kwargs):
        """As :meth:`flax.linen.Module.init`; with ``scan_cells``, the unrolled draw, stacked."""
        if not self.scan_cells:
            return super().init(rngs, *args, **kwargs)
        unrolled = self.clone(scan_cells=False, parent=None).init(rngs, *args, **kwargs)
        return stack_cells(unrolled, self.cells_per_stage)

    @nn.compact
    def __call__(
        self, x: jax.Array, genome: jax.Array, *, train: bool
    ) -> tuple[jax.Array, list[jax.Array]]:
        """Logits and RMI features of the network of `genome`.

        Args:
          x: [B, H, W, 3] images.
          genome: int [6], op indices in [0, 4]; traced (not checked under jit: validate on
            the host).
          train: as in :class:`Network`.

        Returns:
          As :meth:`Network.__call__`.
        """
        genome = jnp.asarray(genome)
        if genome.shape != (NUM_EDGES,) or not jnp.issubdtype(genome.dtype, jnp.integer):
            raise ValueError(
                f'genome must be an integer array [{NUM_EDGES}], got {genome.dtype} {genome.shape}'
            )
        return _tiny_network(
            self,
            x,
            genome.astype(jnp.int32),
            None,
            self.channels,
            self.cells_per_stage,
            self.num_classes,
            self.conv_impl,
            train,
            self.dispatch,
            self.scan_cells,
        )


def exact_variables(population_variables: Mapping[str, Any], genome: Any) -> dict[str, Any]:
    """The variables of ``Network(genome)`` taken from a population network's variables.

    Drops the conv ops (parameters and batch statistics) that `genome` does not choose; all
    other leaves are shared unchanged, so ``Network(genome).apply(exact_variables(v, g), x,
    train=t)`` equals ``PopulationNetwork().apply(v, x, jnp.asarray(g), train=t)``.

    Args:
      population_variables: one member's variables (e.g. {'params', 'batch_stats'}), unrolled
        or scanned (``scan_cells``); for a vmapped population, slice a member first.
      genome: [6] ints.

    Returns:
      A new nested dict with the same collections.
    """
    g = validate(genome)
    unused = {
        f'edge_{j}_{i}_{op}' for e, (j, i) in enumerate(EDGES) for op in CONV_OPS if OPS[g[e]] != op
    }
    flat = traverse_util.flatten_dict(unrolled(population_variables))
    kept = {path: leaf for path, leaf in flat.items() if unused.isdisjoint(path)}
    return traverse_util.unflatten_dict(kept)
