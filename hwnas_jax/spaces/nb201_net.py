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

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax import lax

from hwnas_jax.spaces.nb201 import EDGES, NUM_EDGES, OPS, validate
from hwnas_jax.spaces.nb201_conv import (  # noqa: F401 - CONV_IMPLS re-exported
    _KERNEL_INIT,
    CONV_IMPLS,
    Conv2d,
)
from hwnas_jax.spaces.nb201_stack import stack_cells, unrolled

DISPATCHES = ('select', 'switch')
_CONV_OPS = {'nor_conv_1x1': 1, 'nor_conv_3x3': 3}  # Op name -> kernel size.


def _uniform_bias_init(fan_in: int) -> nn.initializers.Initializer:
    bound = 1.0 / np.sqrt(fan_in)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _batch_norm(train: bool, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class ReLUConvBN(nn.Module):
    """ReLU, bias-free k x k conv (padding (k-1)/2), affine BatchNorm: NAS-Bench-201's conv op."""

    features: int
    kernel_size: int
    strides: int = 1
    conv_impl: str = 'xla'

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """[B, H, W, C_in] -> [B, H / strides, W / strides, features]."""
        x = Conv2d(
            self.features,
            self.kernel_size,
            self.strides,
            (self.kernel_size - 1) // 2,
            self.conv_impl,
            name='conv',
        )(nn.relu(x))
        return _batch_norm(train, 'bn')(x)


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
    """3x3 average pool, stride 1, padding 1, dividing by the number of non-padding inputs."""
    h, w = x.shape[1:3]
    total = lax.reduce_window(
        x,
        np.array(0, x.dtype),
        lax.add,
        (1, 3, 3, 1),
        (1, 1, 1, 1),
        ((0, 0), (1, 1), (1, 1), (0, 0)),
    )
    rows = np.minimum(np.arange(h) + 1, h - 1) - np.maximum(np.arange(h) - 1, 0) + 1
    cols = np.minimum(np.arange(w) + 1, w - 1) - np.maximum(np.arange(w) - 1, 0) + 1
    return total / jnp.asarray(np.outer(rows, cols)[None, :, :, None], x.dtype)


def _avg_pool_2x2(x: jax.Array) -> jax.Array:
    total = lax.reduce_window(x, np.array(0, x.dtype), lax.add, (1, 2, 2, 1), (1, 2, 2, 1), 'VALID')
    return total / 4


class ResNetBlock(nn.Module):
    """NAS-Bench-201's stride-2 ResNet block between stages (xautodl ``ResNetBasicblock``)."""

    features: int
    conv_impl: str = 'xla'

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """[B, H, W, C_in] -> [B, H / 2, W / 2, features]."""
        y = ReLUConvBN(self.features, 3, 2, self.conv_impl, name='conv_a')(x, train=train)
        y = ReLUConvBN(self.features, 3, 1, self.conv_impl, name='conv_b')(y, train=train)
        shortcut = Conv2d(self.features, 1, impl=self.conv_impl, name='shortcut')
        return shortcut(_avg_pool_2x2(x)) + y


def _conv_op(op: str, features: int, conv_impl: str, edge: tuple[int, int]) -> ReLUConvBN:
    return ReLUConvBN(features, _CONV_OPS[op], 1, conv_impl, name=f'edge_{edge[0]}_{edge[1]}_{op}')


class Cell(nn.Module):
    """A NAS-Bench-201 cell: node j = sum over i < j of op_ij(node i); returns node 3.

    Attributes:
      features: channels in and out.
      genome: the static genome (exact cell; only the chosen conv ops get parameters), or None
        for the population cell, whose genome is the traced ``__call__`` argument.
      conv_impl: see :class:`Conv2d`.
      dispatch: see :class:`PopulationNetwork`.
    """

    features: int
    genome: tuple[int, ...] | None = None
    conv_impl: str = 'xla'
    dispatch: str = 'select'

    @nn.compact
    def __call__(self, x: jax.Array, genome: jax.Array | None = None, *, train: bool) -> jax.Array:
        """x: [B, H, W, features]; genome: int32 [6] iff ``self.genome`` is None."""
        nodes = [x]
        for j in range(1, 4):
            total = None
            for e, (target, i) in enumerate(EDGES):
                if target != j:
                    continue
                h = nodes[i]
                if self.genome is not None:
                    op = OPS[self.genome[e]]
                    if op in _CONV_OPS:
                        y = _conv_op(op, self.features, self.conv_impl, (j, i))(h, train=train)
                    elif op == 'avg_pool_3x3':
                        y = _avg_pool_3x3(h)
                    elif op == 'skip_connect':
                        y = h
                    else:
                        y = jnp.zeros_like(h)
                else:
                    y = self._population_op(genome[e], h, (j, i), train)
                total = y if total is None else total + y
            nodes.append(total)
        return nodes[-1]

    def _population_op(
        self, op: jax.Array, h: jax.Array, edge: tuple[int, int], train: bool
    ) -> jax.Array:
        """The output of op index `op` (traced int32 scalar) on edge `edge` for input `h`."""

        def conv(name: str) -> Callable[[nn.Module, jax.Array], jax.Array]:
            return lambda mdl, x: _conv_op(name, self.features, self.conv_impl, edge)(
                x, train=train
            )

        branches = [
            lambda mdl, x: jnp.zeros_like(x),
            lambda mdl, x: x,
            conv('nor_conv_1x1'),
            conv('nor_conv_3x3'),
            lambda mdl, x: _avg_pool_3x3(x),
        ]
        if self.dispatch == 'switch' and not self.is_initializing():
            # Runs the chosen op only (a conditional; under vmap it becomes a select anyway).
            return nn.switch(op, branches, self, h)
        # Every op runs; select_n passes the chosen one through exactly and its gradient never
        # reaches the others, so their values (and BN batch statistics) cannot change the result.
        return lax.select_n(op, *[branch(self, h) for branch in branches])


class _CellStep(nn.Module):
    """One population cell as a scan step: (x, genome) -> (cell(x), None)."""

    features: int
    conv_impl: str
    dispatch: str
    train: bool

    @nn.compact
    def __call__(self, x: jax.Array, genome: jax.Array) -> tuple[jax.Array, None]:
        cell = Cell(self.features, None, self.conv_impl, self.dispatch, name='cell')
        return cell(x, genome, train=self.train), None


def _tiny_network(
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
    """The body shared by both forms; call from a compact method (submodules attach there)."""
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
    x = _batch_norm(train, 'stem_bn')(x)
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
            cell = Cell(width, static_genome, conv_impl, dispatch, name=f'cell{k}')
            x = cell(x, genome, train=train)
            k += 1
        if stage < 2:
            features.append(x)  # Outputs of cell N-1 and cell 2N.
    x = nn.relu(_batch_norm(train, 'lastact_bn')(x))
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
        f'edge_{j}_{i}_{op}'
        for e, (j, i) in enumerate(EDGES)
        for op in _CONV_OPS
        if OPS[g[e]] != op
    }
    flat = traverse_util.flatten_dict(unrolled(population_variables))
    kept = {path: leaf for path, leaf in flat.items() if unused.isdisjoint(path)}
    return traverse_util.unflatten_dict(kept)
