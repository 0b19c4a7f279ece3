"""NASWOT and synflow against independent NumPy float64 references, and on NB201 networks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hwnas_jax import proxy, zero_cost
from hwnas_jax.spaces import nb201_net


class MLP(nn.Module):
    """Dense-ReLU-Dense-ReLU-Dense; returns the output and the two ReLUs' inputs."""

    @nn.compact
    def __call__(self, x):
        a1 = nn.Dense(7, name='d1')(x)
        a2 = nn.Dense(5, name='d2')(nn.relu(a1))
        return nn.Dense(3, name='d3')(nn.relu(a2)), [a1, a2]


class ConvNet(nn.Module):
    """Conv3x3-ReLU-Conv3x3-ReLU-mean-Dense (SAME padding)."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(4, (3, 3), padding='SAME', name='c1')(x))
        h = nn.relu(nn.Conv(3, (3, 3), padding='SAME', name='c2')(h))
        return nn.Dense(2, name='d')(jnp.mean(h, axis=(1, 2)))


def np_params(variables):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), variables['params'])


def np_mlp(p, x):
    a1 = x @ p['d1']['kernel'] + p['d1']['bias']
    a2 = np.maximum(a1, 0) @ p['d2']['kernel'] + p['d2']['bias']
    return np.maximum(a2, 0) @ p['d3']['kernel'] + p['d3']['bias'], [a1, a2]


def np_conv_same(x, k, b):
    n, h, w, _ = x.shape
    pad = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((n, h, w, k.shape[-1])) + b
    for dy in range(3):
        for dx in range(3):
            out += pad[:, dy : dy + h, dx : dx + w, :] @ k[dy, dx]
    return out


def np_convnet(p, x):
    h = np.maximum(np_conv_same(x, p['c1']['kernel'], p['c1']['bias']), 0)
    h = np.maximum(np_conv_same(h, p['c2']['kernel'], p['c2']['bias']), 0)
    return h.mean(axis=(1, 2)) @ p['d']['kernel'] + p['d']['bias']


def np_synflow(forward, p, shape, layers):
    """Independent reference: with |theta| and an all-ones input every ReLU passes everything, so
    R is linear in each layer's weights and sum_theta theta dR/dtheta = R - R(layer zeroed)."""
    p = jax.tree.map(np.abs, p)
    x = np.ones((1, *shape))
    total = forward(p, x).sum()
    score = 0.0
    for name in layers:
        q = jax.tree.map(np.copy, p)
        q[name]['kernel'] = np.zeros_like(q[name]['kernel'])
        score += total - forward(q, x).sum()
    return score


def np_naswot(pre_activations):
    codes = np.concatenate([(a.reshape(len(a), -1) > 0) for a in pre_activations], axis=1)
    n, units = codes.shape
    k = np.array([[units - np.sum(codes[i] != codes[j]) for j in range(n)] for i in range(n)])
    return k, np.linalg.slogdet(k.astype(np.float64))[1]


def test_naswot_kernel_equals_hamming_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4)).astype(np.float32)
    model = MLP()
    variables = model.init(jax.random.key(0), x)
    _, acts = model.apply(variables, x)
    want_k, want_score = np_naswot(np_mlp(np_params(variables), x.astype(np.float64))[1])
    got = zero_cost.naswot_kernel(acts)
    np.testing.assert_array_equal(np.asarray(got), want_k)
    assert zero_cost.naswot_score(got) == pytest.approx(want_score, rel=1e-12)
    # Weight 0 drops a layer; the kernel of one layer alone.
    one = zero_cost.naswot_kernel(acts, jnp.array([1.0, 0.0]))
    np.testing.assert_array_equal(np.asarray(one), np_naswot([np.asarray(acts[0])])[0])
    with pytest.raises(ValueError, match='at least one'):
        zero_cost.naswot_kernel([])
    with pytest.raises(ValueError, match='same examples'):
        zero_cost.naswot_kernel([acts[0], acts[1][:3]])


def test_naswot_score_of_identical_codes_is_minus_inf():
    assert zero_cost.naswot_score(np.ones((3, 3))) == -np.inf


@pytest.mark.parametrize('net', ['mlp', 'conv'])
def test_synflow_equals_numpy_reference(net):
    if net == 'mlp':
        model, shape, layers = MLP(), (4,), ('d1', 'd2', 'd3')
        forward = lambda p, x: np_mlp(p, x)[0]
        apply_fn = lambda p, x: model.apply({'params': p}, x)[0]
    else:
        model, shape, layers = ConvNet(), (5, 5, 2), ('c1', 'c2', 'd')
        forward = np_convnet
        apply_fn = lambda p, x: model.apply({'params': p}, x)
    variables = model.init(jax.random.key(1), jnp.zeros((1, *shape)))
    got = zero_cost.make_synflow(apply_fn, shape)(variables['params'])
    want = np_synflow(forward, np_params(variables), shape, layers)
    assert got == pytest.approx(want, rel=1e-10)
    assert jnp.zeros(1).dtype == jnp.float32  # x64 was enabled only inside the call.


KW = {'channels': 4, 'cells_per_stage': 1, 'num_classes': 10}


def nb201_variables(genome, images):
    model = nb201_net.PopulationNetwork(**KW, dispatch='select')
    seeds = jnp.asarray(proxy.member_seeds(np.asarray(genome)[None]))
    v = proxy.init_members(model, 0, seeds, jnp.asarray([genome], jnp.int32), images)
    return model, jax.tree.map(lambda a: a[0], v)


@pytest.mark.slow
def test_nb201_population_form_equals_exact_network():
    """Masking the unchosen ops of the select form gives the exact network's NASWOT and synflow."""
    genome = (3, 0, 2, 1, 4, 3)  # Every op: conv 3x3, none, conv 1x1, skip, pool.
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(6, 8, 8, 3)), jnp.float32)
    model, v = nb201_variables(genome, images)
    g = jnp.asarray(genome, jnp.int32)
    got_k = zero_cost.nb201_naswot_kernel(model)(v, images, g)
    exact = nb201_net.Network(genome=genome, **KW)
    ev = nb201_net.exact_variables(v, genome)
    codes = []

    def capture(next_fun, args, kwargs, context):
        if context.method_name == '__call__' and isinstance(context.module, nb201_net.ReLUConvBN):
            codes.append(args[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(capture):
        (_, feats), _ = exact.apply(ev, images, train=True, mutable=['batch_stats'])
    n_convs = sum(op in (2, 3) for op in genome)
    assert len(codes) == n_convs * KW['cells_per_stage'] * 3 + 4  # + 2 ResNet blocks x 2.
    want_k = zero_cost.naswot_kernel(codes + [feats[-1]])
    np.testing.assert_array_equal(np.asarray(got_k), np.asarray(want_k))

    got = zero_cost.nb201_synflow(model, (8, 8, 3))(v, g)

    def exact_fn(p, x, stats):
        return exact.apply({'params': p, 'batch_stats': stats}, x, train=False)[0]

    stats = jax.tree.map(lambda a: np.full(a.shape, 1 - zero_cost.BN_EPS), ev['batch_stats'])
    stats = jax.tree_util.tree_map_with_path(
        lambda path, a: a * 0 if path[-1].key == 'mean' else a, stats
    )
    want = zero_cost.make_synflow(exact_fn, (8, 8, 3))(ev['params'], stats)
    assert np.isfinite(got) and got > 0
    assert got == pytest.approx(want, rel=1e-9)
