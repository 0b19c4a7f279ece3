"""Training-free proxies in JAX: NASWOT and synflow, generic, and wired to NAS-Bench-201's networks.

Baselines of the proxy study (:mod:`hwnas_jax.study`); the search never uses them.

NASWOT (Mellor et al., ICML 2021): for a batch of n images through the untrained network, the
on/off pattern of every ReLU unit gives image i a binary code c_i (1 where the ReLU's input is
positive, over all N_A units). With d_H the Hamming distance,

    K_H[i, j] = N_A - d_H(c_i, c_j) = sum_m [c_m c_m^T + (1 - c_m)(1 - c_m)^T][i, j],
    score = log |det K_H|,

summed over the ReLU layers m as NASWOT's code does (a forward hook per ReLU). BatchNorm in
training mode (PyTorch's default there). Higher is better.

synflow (Tanaka et al., NeurIPS 2020), as the zero-cost proxy of Abdelfattah et al. (ICLR 2021,
who report Spearman 0.74 against NAS-Bench-201 CIFAR-10 accuracy): replace every parameter by its
absolute value, feed one all-ones input, R = the sum of the outputs, and

    score = sum over the weights theta of convolutions and linear layers of |theta * dR/dtheta|,

in float64 (their code calls ``net.double()``; the values overflow float32), BatchNorm removed
(their NAS-Bench-201 model is built with ``bn=False``). Here BatchNorm is made the identity
instead: evaluation mode with mean 0, variance 1 - eps, and |scale| = 1, |shift| = 0 at
initialisation. Higher is better.

NAS-Bench-201: :func:`nb201_naswot_kernel` and :func:`nb201_synflow` take the population network
(``dispatch='select'``: every op of every edge runs, so one compiled program serves every
genome) and keep only the genome's chosen ops: an unchosen op's ReLU codes get weight 0 in K_H,
and its weights get no gradient from R (``select_n`` passes the chosen op only).

References:
  Mellor, Turner, Storkey, Crowley. "Neural Architecture Search without Training". ICML 2021.
  Tanaka, Kunin, Yamins, Ganguli. "Pruning neural networks without any data by iteratively
    conserving synaptic flow". NeurIPS 2020.
  Abdelfattah, Mehrotra, Dudziak, Lane. "Zero-Cost Proxies for Lightweight NAS". ICLR 2021.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

BN_EPS = 1e-5  # NAS-Bench-201's BatchNorm epsilon (spaces/nb201_net.py).


def naswot_kernel(codes: Sequence[ArrayLike], weights: ArrayLike | None = None) -> jax.Array:
    """NASWOT's kernel K_H of a batch from the pre-activations of its ReLU layers.

        K_H = sum_m w_m [c_m c_m^T + (1 - c_m)(1 - c_m)^T],   c_m = 1[a_m > 0] per example.

    Args:
      codes: M arrays a_m [n, ...]: the inputs of the ReLU layers (their signs are the codes).
      weights: [M] weight of each layer (1 keeps it, 0 drops it); None: all 1.

    Returns:
      [n, n] float32 kernel; its entries are integers (exact below 2**24 units).

    Raises:
      ValueError: no layers, or layers with different example counts.
    """
    if not codes:
        raise ValueError('naswot_kernel needs at least one ReLU layer, got none')
    n = jnp.shape(codes[0])[0]
    if any(jnp.shape(a)[0] != n for a in codes):
        raise ValueError(
            f'every layer needs the same examples, got {[jnp.shape(a) for a in codes]}'
        )
    w = jnp.ones(len(codes)) if weights is None else jnp.asarray(weights, jnp.float32)
    if w.shape != (len(codes),):
        raise ValueError(f'weights must be [{len(codes)}], got {w.shape}')
    total = jnp.zeros((n, n), jnp.float32)
    for m, a in enumerate(codes):
        c = (jnp.reshape(a, (n, -1)) > 0).astype(jnp.float32)
        hi = jax.lax.Precision.HIGHEST
        k = jnp.matmul(c, c.T, precision=hi) + jnp.matmul(1 - c, (1 - c).T, precision=hi)
        total = total + w[m] * k
    return total


def naswot_score(kernel: ArrayLike) -> float:
    """log |det K_H| in float64 on the host (-inf for a singular kernel), as NASWOT's hooklogdet."""
    _, logdet = np.linalg.slogdet(np.asarray(kernel, np.float64))
    return float(logdet)


def is_weight(path: tuple) -> bool:
    """True for the weights of convolutions and linear layers: Flax leaves named 'kernel'."""
    last = path[-1]
    return getattr(last, 'key', getattr(last, 'name', None)) == 'kernel'


def make_synflow(
    apply_fn: Callable[..., jax.Array],
    input_shape: Sequence[int],
    *,
    select: Callable[[tuple], bool] = is_weight,
    compiler_options: dict | None = None,
) -> Callable[..., float]:
    """A compiled synflow scorer: ``score(params, *args) -> float``.

        score = sum_{theta in select} |theta * dR/dtheta|,   R = sum(apply_fn(|params|, 1, *args)),

    computed in float64 (``jax.enable_x64`` around the trace and the call).

    Args:
      apply_fn: ``(params, x [1, *input_shape], *args) -> outputs`` of the network.
      input_shape: one example's shape, e.g. (32, 32, 3).
      select: which leaves count, by their tree path; default :func:`is_weight`.
      compiler_options: XLA options of the compilation (``jax.jit``'s).

    Returns:
      The scorer; ``args`` are passed through to ``apply_fn`` (e.g. a genome).
    """
    shape = tuple(int(s) for s in input_shape)

    def score(params, *args):
        p = jax.tree.map(lambda a: jnp.abs(jnp.asarray(a, jnp.float64)), params)
        x = jnp.ones((1, *shape), jnp.float64)
        grads = jax.grad(lambda q: jnp.sum(apply_fn(q, x, *args)))(p)
        leaves = jax.tree_util.tree_flatten_with_path(p)[0]
        terms = [
            jnp.sum(jnp.abs(a * g))
            for (path, a), g in zip(leaves, jax.tree.leaves(grads))
            if select(path)
        ]
        if not terms:
            raise ValueError('synflow: no parameter matches `select`')
        return jnp.sum(jnp.stack(terms))

    compiled = jax.jit(score, compiler_options=compiler_options)

    def call(params, *args) -> float:
        with jax.enable_x64(True):
            return float(compiled(params, *args))

    return call


# -- NAS-Bench-201 -------------------------------------------------------------------------------


def _op_weight(name: str, genome: jax.Array) -> jax.Array:
    """1 if the ReLUConvBN module `name` is used by `genome`, else 0 (traced)."""
    from hwnas_jax.spaces import nb201

    if not name.startswith('edge_'):
        return jnp.ones((), jnp.float32)  # ResNet blocks' conv_a / conv_b: always used.
    _, j, i, op = name.split('_', 3)
    e = nb201.EDGES.index((int(j), int(i)))
    return (genome[e] == nb201.OPS.index(op)).astype(jnp.float32)


def nb201_relu_inputs(
    model: nn.Module, variables: Any, images: jax.Array, genome: jax.Array
) -> tuple[list[jax.Array], jax.Array]:
    """The inputs of every ReLU of a NAS-Bench-201 population network, and which are used.

    Call inside a traced function. The ReLUs are those of every ReLUConvBN (cell conv ops and
    the ResNet blocks' two convs) and the final BN-ReLU (whose output has the same signs).

    Args:
      model: ``nb201_net.PopulationNetwork(dispatch='select')``.
      variables: one member's ``{'params', 'batch_stats'}``.
      images: [n, H, W, 3].
      genome: int32 [6].

    Returns:
      (M arrays [n, ...], [M] float32 weights: 1 for layers the genome uses, 0 otherwise).
    """
    from hwnas_jax.spaces import nb201_net

    codes, weights = [], []

    def capture(next_fun, args, kwargs, context):
        if context.method_name == '__call__' and isinstance(context.module, nb201_net.ReLUConvBN):
            codes.append(args[0])
            weights.append(_op_weight(context.module.name, genome))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(capture):
        (_, feats), _ = model.apply(variables, images, genome, train=True, mutable=['batch_stats'])
    codes.append(feats[-1])
    weights.append(jnp.ones((), jnp.float32))
    return codes, jnp.stack(weights)


def nb201_naswot_kernel(
    model: nn.Module, *, compiler_options: dict | None = None
) -> Callable[..., jax.Array]:
    """Jitted ``(variables, images [n, H, W, 3], genome int32 [6]) -> K_H [n, n]``."""

    def kernel(variables, images, genome):
        codes, weights = nb201_relu_inputs(model, variables, images, genome)
        return naswot_kernel(codes, weights)

    return jax.jit(kernel, compiler_options=compiler_options)


def _identity_batch_stats(batch_stats: Any) -> Any:
    """float64 statistics that make evaluation-mode BatchNorm the identity (|scale| = 1).

    Call with x64 enabled (inside the synflow trace).
    """

    def fix(path, a):
        value = 0.0 if getattr(path[-1], 'key', '') == 'mean' else 1.0 - BN_EPS
        return jnp.full(jnp.shape(a), value, jnp.float64)

    return jax.tree_util.tree_map_with_path(fix, batch_stats)


def nb201_synflow(
    model: nn.Module, image_shape: Sequence[int], *, compiler_options: dict | None = None
) -> Callable[..., float]:
    """``(variables, genome int32 [6]) -> synflow`` of a NAS-Bench-201 population network.

    Args:
      model: ``nb201_net.PopulationNetwork(dispatch='select')``.
      image_shape: (H, W, 3).
      compiler_options: XLA options of the compilation.
    """

    def apply_fn(params, x, stats, genome):
        variables = {'params': params, 'batch_stats': _identity_batch_stats(stats)}
        logits, _ = model.apply(variables, x, genome, train=False)
        return logits

    score = make_synflow(apply_fn, image_shape, compiler_options=compiler_options)

    def call(variables, genome) -> float:
        return score(variables['params'], variables['batch_stats'], np.asarray(genome, np.int32))

    return call
