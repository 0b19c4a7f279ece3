"""Representation similarity: linear CKA, the RMI score and the RMI training loss.

The public, jittable metric of hwnas_jax. Everything here is a pure function of arrays, imports
only JAX, computes in float32 whatever the input dtype (float64 for float64 input, with
``jax_enable_x64``: rounding studies need it), and is unbatched: ``jax.vmap`` it at the
call site to score a population.

Bad input is never a silent wrong number: `linear_cka` returns NaN on NaN or infinite features
(unchecked, to keep the jitted path free of host round trips) and `checked_linear_cka` raises
instead; `rmi_loss` raises on concrete labels outside [0, classes) and returns NaN (value and
gradient) for traced ones.

References:
  Kornblith, Norouzi, Lee, Hinton. "Similarity of Neural Network Representations Revisited".
    ICML 2019 (linear CKA).
  Zheng, Chen, Zhang, Ji, Wu. "Neural Architecture Search with Representation Mutual
    Information". CVPR 2022 (RMI score and loss, RMI-NAS).
  Sinha et al. "Hardware Aware Evolutionary Neural Architecture Search using Representation
    Similarity Metric". WACV 2024 (Eqs. 2 and 3).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.experimental import checkify
from jax.typing import ArrayLike

# Added under the square roots of the self-similarities so that constant or all-zero features
# (a dead candidate) give CKA 0 with a finite gradient instead of 0/0. Features are rescaled to
# a maximum absolute value of 1 first, so any non-constant feature map has a self-similarity
# of at least 1 and this constant never changes a meaningful value.
EPS = 1e-12


def _centred_gram(x: jax.Array) -> jax.Array:
    """Centred linear Gram matrix H X X^T H of [n, d] features, scaled to a bounded range."""
    x = x - jnp.mean(x, axis=0, keepdims=True)
    # CKA is invariant to isotropic scaling, so dividing by a constant-under-differentiation
    # scale changes neither the value nor the gradient, and keeps the Gram products far from
    # float32 overflow for large activations.
    scale = jax.lax.stop_gradient(jnp.max(jnp.abs(x)))
    x = x / jnp.where(scale > 0, scale, 1.0)
    # Centring the features before the product equals H K H, and is more accurate in float32.
    return x @ x.T


def _flatten(name: str, x: ArrayLike) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim < 1:
        raise ValueError(f'{name} must have an example axis, got a scalar (shape {x.shape}).')
    if x.shape[0] < 2:
        raise ValueError(f'{name} needs at least 2 examples to centre over, got shape {x.shape}.')
    return x.reshape(x.shape[0], -1).astype(_compute_dtype(x))


def _compute_dtype(x: jax.Array) -> jnp.dtype:
    """float32, or float64 for float64 input: lower precisions are computed in float32."""
    return jnp.promote_types(x.dtype, jnp.float32)


def linear_cka(x: ArrayLike, y: ArrayLike) -> jax.Array:
    """Linear centred kernel alignment between two sets of features of the same examples.

    Each input is flattened per example and centred over examples; with K = X X^T and
    L = Y Y^T (the n x n Gram matrices) and H = I - 11^T / n,

        CKA(X, Y) = <HKH, HLH>_F / (||HKH||_F ||HLH||_F),

    which equals the feature-space form ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) on centred
    features. The Gram form costs O(n^2 d) and suits few examples with many features.
    Computed in float32 (float64 for float64 input). Constant or all-zero features give 0 (see
    `EPS`), with finite gradients.

    Non-finite input is not checked: a NaN or infinite entry in ``x`` or ``y`` makes the result
    NaN, silently (a check would cost a host round trip per call, or a checkify rewrite, on the
    jitted hot path). Use :func:`checked_linear_cka` to get an error instead.

    Args:
      x: [n, ...] features of n examples (any trailing shape, any float dtype).
      y: [n, ...] features of the same n examples (trailing shape may differ from x's).

    Returns:
      [] float32 similarity in [0, 1]; NaN if an input has a NaN or infinite entry.

    Raises:
      ValueError: if the example counts differ or there are fewer than 2 examples.

    References:
      Kornblith et al., ICML 2019, Eq. (5) and Section 3.
    """
    x = _flatten('x', x)
    y = _flatten('y', y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f'linear_cka needs the same number of examples in x and y, got x of shape '
            f'{x.shape} and y of shape {y.shape} (after flattening per example).'
        )
    gram_x = _centred_gram(x)
    gram_y = _centred_gram(y)
    hsic_xy = jnp.vdot(gram_x, gram_y)
    norm_x = jnp.sqrt(jnp.vdot(gram_x, gram_x) + EPS)
    norm_y = jnp.sqrt(jnp.vdot(gram_y, gram_y) + EPS)
    return hsic_xy / (norm_x * norm_y)


def _is_traced(x: ArrayLike) -> bool:
    return isinstance(x, jax.core.Tracer)


def _check_finite(fn: str, name: str, x: ArrayLike) -> None:
    """Raises (concrete input) or stages a checkify check (traced input) on non-finite entries."""
    if _is_traced(x):
        checkify.check(
            jnp.all(jnp.isfinite(x)),
            f'{fn}: {name} has NaN or infinite entries (features of shape {x.shape})',
        )
        return
    with jax.ensure_compile_time_eval():  # A constant inside jit: check it now, at trace time.
        x = jnp.asarray(x)
        bad = int(jnp.sum(~jnp.isfinite(x)))
    if bad:
        raise ValueError(
            f'{fn}: {name} has {bad} NaN or infinite entr{"y" if bad == 1 else "ies"} among '
            f'{x.size} (features of shape {x.shape}); CKA of such features is undefined. Look for '
            'a diverged model, an overflow in low precision, or a damaged input batch.'
        )


def _check_labels(labels: ArrayLike, num_classes: int) -> None:
    """Raises on concrete labels outside [0, num_classes); run at trace time inside jit."""
    with jax.ensure_compile_time_eval():
        labels = jnp.asarray(labels)
        bad = (labels < 0) | (labels >= num_classes)
        n_bad = int(jnp.sum(bad))
        if n_bad:
            raise ValueError(
                f'rmi_loss: labels must be class indices in [0, {num_classes}) for logits of '
                f'{num_classes} classes; got {n_bad} outside, e.g. '
                f"{labels[jnp.argmax(bad)].item()}: check the dataset's labels and the model's "
                'number of classes.'
            )


def checked_linear_cka(x: ArrayLike, y: ArrayLike) -> jax.Array:
    """`linear_cka` that raises on NaN or infinite features instead of returning NaN.

    Same value as :func:`linear_cka` (bit for bit) on finite input. Called on concrete arrays
    it raises a ``ValueError`` naming the argument and the count of bad entries. Under a JAX
    transform (``jit``, ``vmap``, ``grad``) the inputs are traced, so the test is staged as a
    ``jax.experimental.checkify`` check: wrap the transformed function with
    ``checkify.checkify`` and throw its error on the host::

        err, cka = checkify.checkify(jax.jit(rmi.checked_linear_cka))(x, y)
        err.throw()  # ValueError (JaxRuntimeError) if x or y had a NaN or inf.

    Staged without ``checkify.checkify``, JAX refuses to trace it (a ValueError saying the
    check was not functionalized), so the check is never dropped silently.

    Args:
      x: [n, ...] features of n examples.
      y: [n, ...] features of the same n examples.

    Returns:
      [] float32 similarity in [0, 1].

    Raises:
      ValueError: an input has a NaN or infinite entry (concrete input), or as `linear_cka`.
    """
    _check_finite('checked_linear_cka', 'x', x)
    _check_finite('checked_linear_cka', 'y', y)
    return linear_cka(x, y)


@jax.custom_jvp
def _nan_unless(ok: jax.Array, x: jax.Array) -> jax.Array:
    """``x`` where ``ok`` (broadcast), else NaN, in the value and in every derivative.

    Used on the log-probabilities of rows whose traced label is outside [0, classes), which
    the gather would otherwise wrap (-1: the last class) or fill: a finite wrong loss, or a
    finite gradient that ignores the row. Where ``ok`` it selects ``x`` and multiplies
    tangents by exactly 1, so valid labels give the same bits as before the check.
    """
    return jnp.where(ok, x, jnp.nan)


@_nan_unless.defjvp
def _nan_unless_jvp(primals, tangents):
    ok, x = primals
    _, x_dot = tangents
    return _nan_unless(ok, x), x_dot * jnp.where(ok, 1.0, jnp.nan).astype(x_dot.dtype)


def _check_layers(ref_features: Sequence[ArrayLike], features: Sequence[ArrayLike]) -> None:
    if len(ref_features) != len(features):
        raise ValueError(
            f'RMI matches layers one to one, got {len(ref_features)} reference layers of shapes '
            f'{[jnp.shape(f) for f in ref_features]} and {len(features)} candidate layers of '
            f'shapes {[jnp.shape(f) for f in features]}.'
        )
    if not features:
        raise ValueError('RMI needs at least one matched layer, got none.')


def layer_ckas(ref_features: Sequence[ArrayLike], features: Sequence[ArrayLike]) -> jax.Array:
    """Linear CKA of each matched layer pair.

    Args:
      ref_features: L arrays [n, ...]: the reference model's features.
      features: L arrays [n, ...]: the candidate's features, matched by position.

    Returns:
      [L] float32 CKA per layer.

    Raises:
      ValueError: if the layer counts or example counts differ.
    """
    _check_layers(ref_features, features)
    return jnp.stack([linear_cka(r, f) for r, f in zip(ref_features, features)])


def rmi_score(ref_features: Sequence[ArrayLike], features: Sequence[ArrayLike]) -> jax.Array:
    """The RMI score: the sum of linear CKA over matched layers (paper Eq. 2).

        phi(a*, a) = sum_l CKA(X_l*, X_l),   in [0, L].

    Args:
      ref_features: L arrays [n, ...]: the reference model's features.
      features: L arrays [n, ...]: the candidate's features, matched by position.

    Returns:
      [] float32 score; higher means more similar.

    Raises:
      ValueError: if the layer counts or example counts differ.

    References:
      Zheng et al., CVPR 2022; Sinha et al., WACV 2024, Eq. (2).
    """
    return jnp.sum(layer_ckas(ref_features, features))


def rmi_loss(
    ref_features: Sequence[ArrayLike],
    features: Sequence[ArrayLike],
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    beta: float = 0.8,
) -> jax.Array:
    """The single-batch training loss: RMI term plus cross-entropy (paper Eq. 3).

        loss = beta * sum_l (1 - CKA_l) + (1 - beta) * mean_i CE(logits_i, labels_i).

    Eq. (3) of the paper adds phi itself; as in RMI-NAS's code the RMI term is written as
    decreasing in similarity, so that minimising the loss maximises phi.

    Args:
      ref_features: L arrays [n, ...]: the reference model's features.
      features: L arrays [n, ...]: the candidate's features.
      logits: [n, classes] unnormalised class scores of the candidate.
      labels: [n] integer class labels in [0, classes).
      beta: weight of the RMI term, in [0, 1].

    Returns:
      [] float32 loss. Under ``jit`` / ``vmap`` (traced labels) a label outside
      [0, classes) makes the loss NaN (and its gradient NaN), never a finite wrong value.

    Raises:
      ValueError: on mismatched layer, example or label shapes, or, for concrete labels
        (called outside a transform, or labels closed over as constants), on a label outside
        [0, classes).

    References:
      Zheng et al., CVPR 2022 (RMI-NAS code: 0.8 * (3 - sum CKA) + 0.2 * CE).
    """
    logits = jnp.asarray(logits)
    logits = logits.astype(_compute_dtype(logits))
    given = labels
    labels = jnp.asarray(labels)
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f'rmi_loss needs logits [n, classes] and labels [n], got logits of shape '
            f'{logits.shape} and labels of shape {labels.shape}.'
        )
    num_classes = logits.shape[1]
    if not _is_traced(given):
        # Only the given object tells: inside jit even jnp.asarray(constant) is a tracer.
        _check_labels(given, num_classes)
    ckas = layer_ckas(ref_features, features)
    if jnp.shape(features[0])[0] != logits.shape[0]:
        raise ValueError(
            f'rmi_loss needs logits for the same examples as the features, got logits of shape '
            f'{logits.shape} and features of shape {jnp.shape(features[0])}.'
        )
    log_probs = jax.nn.log_softmax(logits)
    index = labels[:, None].astype(jnp.int32)
    # NaN in the rows of invalid labels: whether the gather wraps (-1) or fills (>= classes),
    # the loss is NaN, and the NaN derivative of the row reaches the logits.
    log_probs = _nan_unless((index >= 0) & (index < num_classes), log_probs)
    ce = -jnp.mean(jnp.take_along_axis(log_probs, index, axis=1))
    return beta * jnp.sum(1.0 - ckas) + (1.0 - beta) * ce
