"""Tests of hwnas_jax.rmi against an independent NumPy float64 reference."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

from hwnas_jax import rmi


def np_cka_gram(x, y):
    """Kornblith et al.'s linear CKA via centred Gram matrices, in float64."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    y = np.asarray(y, np.float64).reshape(len(y), -1)
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    kx = h @ (x @ x.T) @ h
    ky = h @ (y @ y.T) @ h
    return np.sum(kx * ky) / (np.linalg.norm(kx) * np.linalg.norm(ky))


def np_cka_features(x, y):
    """The feature-space form ||Y^T X||^2 / (||X^T X|| ||Y^T Y||) on centred features."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    y = np.asarray(y, np.float64).reshape(len(y), -1)
    x = x - x.mean(0)
    y = y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_matches_numpy_float64_reference(rng):
    x = rng.normal(size=(16, 4, 3, 2))
    y = np.maximum(rng.normal(size=(16, 5)) + x.reshape(16, -1)[:, :5], 0)
    want = np_cka_gram(x, y)
    np.testing.assert_allclose(np_cka_features(x, y), want, rtol=1e-10)
    np.testing.assert_allclose(rmi.linear_cka(x, y), want, rtol=1e-5)


def test_gram_equals_feature_space_form_on_relu_features(rng):
    # Post-ReLU features have non-zero means: centring matters here.
    x = np.maximum(rng.normal(size=(32, 64)), 0)
    y = np.maximum(x @ rng.normal(size=(64, 20)), 0)
    np.testing.assert_allclose(rmi.linear_cka(x, y), np_cka_features(x, y), rtol=1e-5)


def test_self_similarity_is_one(rng):
    x = rng.normal(size=(10, 7)).astype(np.float32)
    np.testing.assert_allclose(rmi.linear_cka(x, x), 1.0, rtol=1e-6)


def test_symmetry(rng):
    x, y = rng.normal(size=(12, 9)), rng.normal(size=(12, 4))
    np.testing.assert_allclose(rmi.linear_cka(x, y), rmi.linear_cka(y, x), rtol=1e-6)


def test_invariant_to_orthogonal_transform_and_isotropic_scaling(rng):
    x, y = rng.normal(size=(20, 6)), rng.normal(size=(20, 6)) + 0.3
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    base = rmi.linear_cka(x, y)
    np.testing.assert_allclose(rmi.linear_cka(x @ q, y), base, rtol=1e-5)
    np.testing.assert_allclose(rmi.linear_cka(3.7 * x, 1e-3 * y), base, rtol=1e-5)
    np.testing.assert_allclose(rmi.linear_cka(1e6 * x, y), base, rtol=1e-5)
    # Not invariant to per-feature rescaling: a sanity check that the test can fail.
    d = np.diag(np.linspace(0.1, 10, 6))
    assert abs(float(rmi.linear_cka(x @ d, y)) - float(base)) > 1e-3


def test_any_float_dtype_computes_in_float32(rng):
    x, y = rng.normal(size=(8, 5)), rng.normal(size=(8, 3))
    out = rmi.linear_cka(jnp.asarray(x, jnp.bfloat16), jnp.asarray(y, jnp.float16))
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, np_cka_gram(x, y), atol=2e-2)


def test_float64_input_computes_in_float64(rng):
    # Rounding studies (benchmarks/rounding.py) compare a float32 run with a float64 one.
    x, y = rng.normal(size=(8, 5)), rng.normal(size=(8, 3))
    labels = np.arange(8) % 3
    with jax.enable_x64(True):
        out = rmi.linear_cka(jnp.asarray(x), jnp.asarray(y))
        loss = rmi.rmi_loss([x], [y], jnp.asarray(y), labels, beta=0.8)
    assert out.dtype == jnp.float64 and loss.dtype == jnp.float64
    np.testing.assert_allclose(out, np_cka_gram(x, y), rtol=1e-12)


@pytest.mark.parametrize('fill', [0.0, 2.5])
def test_constant_features_are_finite_with_finite_gradient(rng, fill):
    x = np.full((8, 3, 3), fill, np.float32)
    y = rng.normal(size=(8, 4)).astype(np.float32)
    value, grads = jax.value_and_grad(rmi.linear_cka, argnums=(0, 1))(x, y)
    assert value == 0.0
    assert all(np.isfinite(g).all() for g in grads)


def test_gradient_matches_finite_differences(rng):
    x = rng.normal(size=(6, 4))
    y = rng.normal(size=(6, 3))
    g = np.asarray(jax.grad(rmi.linear_cka)(x.astype(np.float32), y.astype(np.float32)))
    eps = 1e-6
    num = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        d = np.zeros_like(x)
        d[idx] = eps
        num[idx] = (np_cka_gram(x + d, y) - np_cka_gram(x - d, y)) / (2 * eps)
    np.testing.assert_allclose(g, num, atol=2e-4)


def test_vmap_equals_loop_and_jit(rng):
    xs = rng.normal(size=(5, 10, 6)).astype(np.float32)
    ys = rng.normal(size=(5, 10, 2, 2)).astype(np.float32)
    batched = jax.jit(jax.vmap(rmi.linear_cka))(xs, ys)
    looped = np.array([rmi.linear_cka(x, y) for x, y in zip(xs, ys)])
    np.testing.assert_allclose(batched, looped, rtol=1e-5)


def test_rmi_score_is_sum_of_layer_ckas(rng):
    ref = [rng.normal(size=(8, 4, 4, 2)), rng.normal(size=(8, 2, 2, 4)), rng.normal(size=(8, 8))]
    cand = [r + 0.5 * rng.normal(size=r.shape) for r in ref]
    want = sum(np_cka_gram(r, c) for r, c in zip(ref, cand))
    np.testing.assert_allclose(rmi.rmi_score(ref, cand), want, rtol=1e-5)
    np.testing.assert_allclose(rmi.rmi_score(ref, ref), 3.0, rtol=1e-6)


def test_rmi_loss_formula_and_gradients(rng):
    ref = [rng.normal(size=(8, 6)), rng.normal(size=(8, 3))]
    cand = [rng.normal(size=(8, 6)), rng.normal(size=(8, 5))]
    logits = rng.normal(size=(8, 4))
    labels = rng.integers(0, 4, size=8)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    ce = -logp[np.arange(8), labels].mean()
    ckas = [np_cka_gram(r, c) for r, c in zip(ref, cand)]
    want = 0.7 * sum(1 - c for c in ckas) + 0.3 * ce
    got = rmi.rmi_loss(ref, cand, logits, labels, beta=0.7)
    np.testing.assert_allclose(got, want, rtol=1e-5)

    def loss(c0, c1, lg):
        return rmi.rmi_loss(ref, [c0, c1], lg, labels)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(
        *(jnp.asarray(a, jnp.float32) for a in (cand[0], cand[1], logits))
    )
    assert all(np.isfinite(g).all() and np.abs(g).sum() > 0 for g in grads)


def test_mismatched_shapes_raise_with_shapes():
    with pytest.raises(ValueError, match=r'\(4, 3\).*\(5, 3\)'):
        rmi.linear_cka(np.ones((4, 3)), np.ones((5, 3)))
    with pytest.raises(ValueError, match='2 reference layers'):
        rmi.rmi_score([np.ones((4, 3))] * 2, [np.ones((4, 3))] * 3)
    with pytest.raises(ValueError, match='labels'):
        rmi.rmi_loss([np.ones((4, 3))], [np.ones((4, 3))], np.ones((4, 2)), np.ones((3,), int))
    with pytest.raises(ValueError, match='same examples'):
        rmi.rmi_loss([np.ones((4, 3))], [np.ones((4, 3))], np.ones((5, 2)), np.ones((5,), int))
    with pytest.raises(ValueError, match='at least 2 examples'):
        rmi.linear_cka(np.ones((1, 3)), np.ones((1, 3)))


# Non-finite features and bad labels: never a silent wrong number -----------------------------


@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize('where', ['x', 'y'])
def test_linear_cka_is_nan_on_non_finite_and_checked_variant_raises(rng, bad, where):
    x = rng.normal(size=(8, 3, 2)).astype(np.float32)
    y = rng.normal(size=(8, 5)).astype(np.float32)
    a = x if where == 'x' else y
    a[(3,) + (0,) * (a.ndim - 1)] = bad
    assert np.isnan(rmi.linear_cka(x, y))  # Documented: unchecked, NaN out.
    with pytest.raises(
        ValueError,
        match=rf'checked_linear_cka: {where} has 1 NaN or infinite '
        r'entry among \d+ \(features of shape',
    ):
        rmi.checked_linear_cka(x, y)


def test_checked_linear_cka_equals_linear_cka_on_finite_input(rng):
    x = rng.normal(size=(10, 4, 4)).astype(np.float32)
    y = np.maximum(rng.normal(size=(10, 6)), 0).astype(np.float32)
    chex.assert_trees_all_equal(rmi.checked_linear_cka(x, y), rmi.linear_cka(x, y))
    chex.assert_shape(rmi.checked_linear_cka(x, y), ())
    chex.assert_type(rmi.checked_linear_cka(x, y), jnp.float32)


def test_checked_linear_cka_under_jit_and_vmap_with_checkify(rng):
    xs = rng.normal(size=(3, 6, 4)).astype(np.float32)
    ys = rng.normal(size=(3, 6, 2)).astype(np.float32)
    jitted = checkify.checkify(jax.jit(jax.vmap(rmi.checked_linear_cka)))
    err, out = jitted(xs, ys)
    err.throw()  # Finite input: no error, the same values as the unchecked function.
    chex.assert_trees_all_equal(out, jax.jit(jax.vmap(rmi.linear_cka))(xs, ys))
    xs[1, 2, 3] = np.nan
    err, out = jitted(xs, ys)
    with pytest.raises(ValueError, match='x has NaN or infinite entries'):
        err.throw()
    # Staged without checkify, JAX refuses to trace the check rather than dropping it.
    with pytest.raises(ValueError, match='checkify'):
        jax.jit(rmi.checked_linear_cka)(xs[0], ys[0])


def _loss_inputs(rng, n=6, classes=4):
    ref = [rng.normal(size=(n, 5)).astype(np.float32)]
    cand = [rng.normal(size=(n, 3)).astype(np.float32)]
    logits = rng.normal(size=(n, classes)).astype(np.float32)
    return ref, cand, logits


@pytest.mark.parametrize('bad', [-1, 4, 100])
def test_rmi_loss_rejects_out_of_range_concrete_labels(rng, bad):
    ref, cand, logits = _loss_inputs(rng)
    labels = np.array([0, 1, 2, 3, bad, 0])
    with pytest.raises(
        ValueError,
        match=rf'labels must be class indices in \[0, 4\).*1 outside, '
        rf'e\.g\. {bad}',
    ):
        rmi.rmi_loss(ref, cand, logits, labels)
    # Labels closed over as constants inside jit are concrete: checked at trace time.
    with pytest.raises(ValueError, match='labels must be class indices'):
        jax.jit(lambda lg: rmi.rmi_loss(ref, cand, lg, labels))(logits)


@pytest.mark.parametrize('bad', [-1, 4])
def test_rmi_loss_traced_out_of_range_label_is_nan(rng, bad):
    ref, cand, logits = _loss_inputs(rng)
    good = np.array([0, 1, 2, 3, 1, 0])
    chex.clear_trace_counter()
    loss = chex.assert_max_traces(n=1)(lambda lg, lb: rmi.rmi_loss(ref, cand, lg, lb))
    loss = jax.jit(loss)
    valid = loss(logits, good)
    assert np.isfinite(valid)
    np.testing.assert_allclose(valid, rmi.rmi_loss(ref, cand, logits, good), rtol=1e-6)
    labels = good.copy()
    labels[4] = bad
    assert np.isnan(loss(logits, labels))  # Same shapes: no retrace (assert_max_traces).
    grads = jax.jit(jax.grad(lambda lg, lb: rmi.rmi_loss(ref, cand, lg, lb)))(logits, labels)
    assert np.isnan(grads).any()
    batched = jax.vmap(lambda lb: rmi.rmi_loss(ref, cand, logits, lb))(np.stack([good, labels]))
    chex.assert_shape(batched, (2,))
    assert np.isfinite(batched[0]) and np.isnan(batched[1])
