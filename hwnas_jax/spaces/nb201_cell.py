"""The cells and ops of NAS-Bench-201's networks (:mod:`nb201_net` assembles them).

ReLU-Conv-BN, the two average pools, the stride-2 ResNet block between stages and the cell
(node j = sum over i < j of op_ij(node i)), in their exact form (static genome) and their
population form (genome traced; each edge selects or switches among its five ops); and the
jitted cell that lets a network trace each kind of cell once (:func:`unrolled_cell`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from hwnas_jax.spaces.nb201 import EDGES, OPS
from hwnas_jax.spaces.nb201_conv import Conv2d

CONV_OPS = {'nor_conv_1x1': 1, 'nor_conv_3x3': 3}  # Op name -> kernel size.


def batch_norm(train: bool, name: str) -> nn.BatchNorm:
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
        return batch_norm(train, 'bn')(x)


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
    return ReLUConvBN(features, CONV_OPS[op], 1, conv_impl, name=f'edge_{edge[0]}_{edge[1]}_{op}')


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
                    if op in CONV_OPS:
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


@functools.lru_cache(maxsize=64)  # Bounded: the exact strategy makes a kind per architecture.
def _cell_program(
    features: int,
    static_genome: tuple | None,
    conv_impl: str,
    dispatch: str,
    train: bool,
    update_stats: bool,
) -> Callable:
    """``(variables, x, genome) -> (cell(x), its new batch statistics)``, one jitted function
    per cell kind, shared by every network of the process.

    A stage's cells then trace once where each traced on its own (the same for their
    gradients: JAX caches a jitted function's derivatives too), and the program lowers each
    kind of cell once: at full size the proxy program traced 4.8x and lowered 3.5x faster. XLA
    inlines the call; the scores are bit-identical to the cells run as submodules
    (`benchmarks/README.md`, "Compile time and a resumed start").
    """
    cell = Cell(features, static_genome, conv_impl, dispatch)

    def run(variables, x, genome):
        args = (x,) if genome is None else (x, genome)
        if not update_stats:
            return cell.apply(variables, *args, train=train), None
        y, new = cell.apply(variables, *args, train=train, mutable=['batch_stats'])
        return y, new['batch_stats']

    return jax.jit(run)


def _observed(module: nn.Module) -> bool:
    """Whether the caller looks inside the cells (``nn.intercept_methods``,
    ``capture_intermediates``, collections other than batch statistics made mutable, as
    ``sow`` needs), which a jitted cell would hide: those calls run the cells as submodules."""
    from flax.linen import module as flax_module

    if getattr(flax_module, '_global_interceptor_stack', None):
        return True
    context = getattr(flax_module, '_context', None)
    if context is not None and any(getattr(context, 'capture_stack', ())):
        return True
    mutable = module.scope.mutable  # A collection filter: bool, name, names or DenyList.
    if isinstance(mutable, str):
        mutable = (mutable,)
    if not isinstance(mutable, (list, tuple, set, frozenset)):
        return bool(mutable)
    return any(name != 'batch_stats' for name in mutable)


def unrolled_cell(
    module: nn.Module,
    name: str,
    x: jax.Array,
    genome: jax.Array | None,
    *,
    features: int,
    static_genome: tuple | None,
    conv_impl: str,
    dispatch: str,
    train: bool,
) -> jax.Array:
    """Cell `name` of `module`'s network applied to `x`: a submodule when the variables are
    being created (or the caller looks inside the cells), else :func:`_cell_program` on the
    cell's variables."""
    variables = {} if module.is_initializing() else module.variables
    has = {col: tree[name] for col, tree in variables.items() if name in tree}
    if 'params' not in has or _observed(module):
        cell = Cell(features, static_genome, conv_impl, dispatch, name=name)
        return cell(x, genome, train=train)
    update = train and module.is_mutable_collection('batch_stats')
    program = _cell_program(features, static_genome, conv_impl, dispatch, train, update)
    y, stats = program(has, x, genome)
    if update:
        module.put_variable('batch_stats', name, stats)
    return y


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
