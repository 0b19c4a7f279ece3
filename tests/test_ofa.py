"""Tests of hwnas_jax.spaces.ofa: codec, analytic MACs/params, and exact vs population networks."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hwnas_jax.spaces import ofa, ofa_layers, ofa_net

LARGEST = (2,) * 45
SMALLEST = (0,) * 45
# Depths 2, 3, 4, 2, 3 with mixed kernel sizes and expand ratios.
MIXED = tuple(
    [0, 1, 2, 1, 2, 0, 1, 0, 1, 2, 2, 0, 0, 2, 1, 2, 2, 1, 0, 1]
    + [2, 0, 1, 1, 1, 2, 0, 2, 0, 1, 2, 1, 2, 2, 0, 0, 1, 0, 2, 2]
    + [0, 1, 2, 0, 1]
)


def _genome(k: int, e: int, d: int) -> tuple:
    return (k,) * 20 + (e,) * 20 + (d,) * 5


# -- codec ---------------------------------------------------------------------------------------


def test_space_constants():
    assert ofa.NAME == 'ofa'
    np.testing.assert_array_equal(ofa.CARDINALITIES, [3] * 45)
    assert ofa.CARDINALITIES.dtype == np.int64


@pytest.mark.parametrize(
    'mult, widths',
    [
        (1.0, (16, 16, 24, 40, 80, 112, 160, 960, 1280)),
        (1.2, (24, 24, 32, 48, 96, 136, 192, 1152, 1536)),
    ],
)
def test_widths(mult, widths):
    lay = ofa.layout(mult)
    got = (
        (lay.stem_ch, lay.first_ch)
        + tuple(s.out_ch for s in lay.stages)
        + (lay.final_ch, lay.mix_ch)
    )
    assert got == widths
    assert [s.stride for s in lay.stages] == [2, 2, 2, 1, 2]
    assert [s.se for s in lay.stages] == [False, True, False, True, True]
    cifar = ofa.layout(mult, cifar=True)
    assert cifar.stem_stride == 1 and [s.stride for s in cifar.stages] == [1, 2, 2, 1, 2]


def test_make_divisible_matches_ofa_rule():
    assert [ofa.make_divisible(v) for v in (3, 16 * 1.2, 40 * 1.2, 112 * 1.2, 27.9)] == [
        8,
        24,
        48,
        136,
        32,
    ]
    assert ofa_net.mid_channels(24, 3) == 72 and ofa_net.se_channels(72) == 24
    assert ofa_net.se_channels(120) == 32  # 30 -> 32


def test_validate_returns_int64_copy():
    g = list(MIXED)
    out = ofa.validate(g)
    assert out.dtype == np.int64 and out.shape == (45,)
    out[0] = 2
    assert g[0] == 0


@pytest.mark.parametrize(
    'bad, match',
    [
        ([0] * 44, '45 genes'),
        (np.zeros((1, 45), int), '45 genes'),
        (np.zeros(45) + 0.5, 'integers'),
        (np.zeros(45, bool), 'integers'),
        ([0] * 44 + [3], r'genes \[44\]'),
        ([-1] + [0] * 44, 'out of range'),
    ],
)
def test_validate_rejects(bad, match):
    with pytest.raises(ValueError, match=match):
        ofa.validate(bad)


def test_canonical_ignores_skipped_genes():
    g = np.asarray(MIXED)
    canon = ofa.canonical(g)
    assert isinstance(canon, tuple) and all(type(v) is int for v in canon)
    assert ofa.canonical(canon) == canon
    depths = [2, 3, 4, 2, 3]
    h = g.copy()
    for s, d in enumerate(depths):
        for b in range(d, 4):
            assert canon[4 * s + b] == 0 and canon[20 + 4 * s + b] == 0
            h[4 * s + b] = (h[4 * s + b] + 1) % 3
            h[20 + 4 * s + b] = (h[20 + 4 * s + b] + 2) % 3
    assert ofa.canonical(h) == canon
    h[0] = (h[0] + 1) % 3  # an active gene
    assert ofa.canonical(h) != canon
    assert ofa.canonical(LARGEST) == LARGEST


def test_config_round_trip():
    rng = np.random.default_rng(0)
    for g in ofa.random_genomes(rng, 20):
        cfg = ofa.to_config(g)
        assert len(cfg['ks']) == 20 and len(cfg['e']) == 20 and len(cfg['d']) == 5
        np.testing.assert_array_equal(ofa.from_config(cfg), g)
    cfg = ofa.to_config(LARGEST)
    assert cfg == {'ks': [7] * 20, 'e': [6] * 20, 'd': [4] * 5}
    # OFA tutorial / EvoXBench specs also carry the resolution and a width entry.
    np.testing.assert_array_equal(ofa.from_config({**cfg, 'r': [224], 'wid': None}), LARGEST)


@pytest.mark.parametrize(
    'change, match',
    [
        (lambda c: c.pop('d'), "lacks the key 'd'"),
        (lambda c: c.update(ks=[3] * 19), "'ks' needs 20"),
        (lambda c: c['ks'].__setitem__(3, 4), r'ks\[3\] = 4'),
        (lambda c: c['e'].__setitem__(0, 3.0), r'e\[0\] = 3.0'),
        (lambda c: c['d'].__setitem__(1, True), r'd\[1\] = True'),
        (lambda c: c.update(w=[1]), 'Unknown OFA config keys'),
    ],
)
def test_from_config_rejects(change, match):
    cfg = ofa.to_config(MIXED)
    change(cfg)
    with pytest.raises(ValueError, match=match):
        ofa.from_config(cfg)


def test_from_config_rejects_non_mapping():
    with pytest.raises(TypeError, match='mapping'):
        ofa.from_config([1, 2])


def test_random_genomes():
    a = ofa.random_genomes(np.random.default_rng(3), 500)
    b = ofa.random_genomes(np.random.default_rng(3), 500)
    assert a.shape == (500, 45) and a.dtype == np.int64
    np.testing.assert_array_equal(a, b)
    assert a.min() == 0 and a.max() == 2
    assert all(len(np.unique(col)) == 3 for col in a.T)
    assert ofa.random_genomes(np.random.default_rng(0), 0).shape == (0, 45)


def test_describe_is_json():
    d = ofa.describe(MIXED, resolution=160, num_classes=10, width_mult=1.0)
    json.dumps(d)
    assert d['genome'] == list(MIXED) and d['canonical'] == list(ofa.canonical(MIXED))
    assert d['config']['d'] == [2, 3, 4, 2, 3] and d['config']['r'] == [160]
    assert d['macs'] == ofa.macs(MIXED, 160, 10, 1.0)
    assert d['params'] == ofa.num_params(MIXED, 10, 1.0)
    assert not d['cifar_stem'] and ofa.describe(MIXED, resolution=32)['cifar_stem']


# -- analytic cost -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    'mult, res, largest, smallest',
    [
        (1.0, 224, 566.2, 121.3),
        (1.0, 192, 417.3, 89.8),
        (1.0, 160, 291.3, 63.2),
        (1.0, 128, 188.2, 41.5),
        (1.2, 224, 843.1, 193.1),
        (1.2, 160, 433.6, 100.3),
    ],
)
def test_macs_reference_numbers(mult, res, largest, smallest):
    """The reference values of the method anchors (OFA's counting convention)."""
    assert round(ofa.macs(LARGEST, res, width_mult=mult), 1) == largest
    assert round(ofa.macs(SMALLEST, res, width_mult=mult), 1) == smallest


@pytest.mark.parametrize('mult, largest, smallest', [(1.0, 7.66, 3.41), (1.2, 10.70, 4.60)])
def test_params_reference_numbers(mult, largest, smallest):
    assert round(ofa.num_params(LARGEST, width_mult=mult), 2) == largest
    assert round(ofa.num_params(SMALLEST, width_mult=mult), 2) == smallest


# OFA's specialised 1080Ti net (han-cai/files ofa/ofa_specialized/
# 1080ti_gpu64@12ms_top1@72.6_finetune@25, net.config and run.config: image_size 128), a
# ProxylessNAS-space net: README "#MACs" 165M. Rows: in, out, kernel, stride, expand.
_PROXYLESS_1080TI = [
    (40, 24, 3, 1, 1),
    (24, 32, 3, 2, 3),
    (32, 32, 3, 1, 3),
    (32, 56, 3, 2, 6),
    (56, 56, 5, 1, 4),
    (56, 56, 5, 1, 4),
    (56, 104, 5, 2, 6),
    (104, 104, 5, 1, 3),
    (104, 104, 7, 1, 3),
    (104, 128, 3, 1, 4),
    (128, 128, 7, 1, 3),
    (128, 128, 3, 1, 6),
    (128, 128, 3, 1, 4),
    (128, 248, 7, 2, 6),
    (248, 248, 5, 1, 4),
    (248, 248, 7, 1, 3),
    (248, 248, 5, 1, 3),
    (248, 416, 3, 1, 6),
]


def test_block_macs_reproduce_published_ofa_net():
    size = 64  # 128 after the stride-2 stem
    total = 3 * 40 * 9 * size**2
    for cin, cout, k, s, e in _PROXYLESS_1080TI:
        m, size = ofa.mbconv_macs(cin, None if e == 1 else cin * e, cout, k, s, size)
        total += m
    assert size == 4
    total += 416 * 1664 * size**2 + 1664 * 1000  # ProxylessNAS mixes features before pooling
    assert round(total / 1e6) == 165


def test_cifar_stem_macs():
    """At 32 with the CIFAR stem, every layer from stage 1's depthwise on sees the sizes of the
    ImageNet stem at 128; only the stem, the first block and stage 1's first expand differ."""
    for g, mult in ((MIXED, 1.0), (LARGEST, 1.2), (SMALLEST, 1.0)):
        lay = ofa.layout(mult)
        mid0 = ofa_net.mid_channels(lay.first_ch, ofa_net.EXPAND_CHOICES[g[20]])
        per_pixel = 27 * lay.stem_ch + 9 * lay.stem_ch + lay.stem_ch * lay.first_ch
        per_pixel += lay.first_ch * mid0
        diff = ofa.macs(g, 128, width_mult=mult) - ofa.macs(g, 32, width_mult=mult)
        assert diff == pytest.approx(per_pixel * (64**2 - 32**2) / 1e6, rel=1e-12)
        assert ofa.macs(g, 32, width_mult=mult) == ofa.macs(g, 32, width_mult=mult, cifar_stem=True)
        assert ofa.macs(g, 32, cifar_stem=False) < ofa.macs(g, 32)


def test_macs_monotone():
    rng = np.random.default_rng(1)
    for g in ofa.random_genomes(rng, 10):
        base = ofa.macs(g)
        depths = [2 + d for d in g[40:]]
        for i in range(40):
            s, b = divmod(i % 20, 4)
            if g[i] == 2:
                continue
            h = g.copy()
            h[i] += 1
            if b < depths[s]:
                assert ofa.macs(h) > base
                assert ofa.num_params(h) > ofa.num_params(g)
            else:
                assert ofa.macs(h) == base
        for s in range(5):
            if g[40 + s] < 2:
                h = g.copy()
                h[40 + s] += 1
                assert ofa.macs(h) > base


# -- networks ------------------------------------------------------------------------------------


def _count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize('mult', [1.0, 1.2])
def test_num_params_counts_flax_params_and_trees_match(mult):
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    key = jax.random.key(0)
    pop = ofa_net.PopulationNetwork(num_classes=10, width_mult=mult, resolution=32)
    pop_shapes = jax.eval_shape(
        lambda k, x: pop.init(k, x, jnp.zeros(45, jnp.int32), train=False), key, x
    )
    for g in (LARGEST, SMALLEST, MIXED):
        net = ofa_net.Network(g, num_classes=10, width_mult=mult, resolution=32)
        shapes = jax.eval_shape(lambda k, x, net=net: net.init(k, x, train=False), key, x)
        assert _count(shapes['params']) == round(ofa.num_params(g, 10, mult) * 1e6)
        sliced = jax.eval_shape(lambda v, g=g: ofa_net.exact_variables(v, g), pop_shapes)
        assert jax.tree.structure(sliced) == jax.tree.structure(shapes)
        for a, b in zip(jax.tree.leaves(sliced), jax.tree.leaves(shapes)):
            assert a.shape == b.shape
    assert _count(pop_shapes['params']) == round(ofa.num_params(LARGEST, 10, mult) * 1e6)


def test_output_shapes_and_feature_stages():
    g = MIXED
    x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
    net = ofa_net.Network(g, num_classes=7, width_mult=1.0, feature_stages=(1, 2, 3, 4, 5))
    (logits, feats), _ = jax.eval_shape(
        lambda k, x: net.init_with_output(k, x, train=False), jax.random.key(0), x
    )
    assert logits.shape == (2, 7)
    assert [f.shape for f in feats] == [
        (2, 56, 56, 24),
        (2, 28, 28, 40),
        (2, 14, 14, 80),
        (2, 14, 14, 112),
        (2, 7, 7, 160),
    ]
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    pop = ofa_net.PopulationNetwork(num_classes=7, resolution=32)  # width 1.2, CIFAR stem
    (logits, feats), _ = jax.eval_shape(
        lambda k, x: pop.init_with_output(k, x, jnp.asarray(g), train=False), jax.random.key(0), x
    )
    assert logits.shape == (2, 7)
    assert [f.shape for f in feats] == [(2, 32, 32, 32), (2, 8, 8, 96), (2, 4, 4, 192)]


def test_network_argument_errors():
    x = jnp.zeros((2, 32, 32, 3))
    with pytest.raises(ValueError, match='resolution 224'):
        ofa_net.PopulationNetwork().init(
            jax.random.key(0), x, jnp.zeros(45, jnp.int32), train=False
        )
    with pytest.raises(ValueError, match='feature_stages'):
        ofa_net.Network(MIXED, resolution=32, feature_stages=(0, 3)).init(
            jax.random.key(0), x, train=False
        )
    with pytest.raises(ValueError, match='45 genes'):
        ofa_net.PopulationNetwork(resolution=32).init(
            jax.random.key(0), x, jnp.zeros(44, jnp.int32), train=False
        )
    with pytest.raises(ValueError, match='out of range'):
        ofa_net.Network((3,) * 45, resolution=32).init(jax.random.key(0), x, train=False)


# -- exact network == population network --------------------------------------------------------


def _fill(shapes, rng: np.random.Generator, members: int):
    """Random variables for ``members`` stacked members: kernels ~ N(0, 1 / fan_in), random BN
    scales and biases, SE and classifier biases, so that no layer is trivially an identity."""

    def leaf(path, s):
        name, shape = path[-1].key, (members,) + s.shape
        if name == 'kernel':
            a = rng.normal(size=shape) / np.sqrt(np.prod(s.shape[:-1]))
        elif name in ('scale', 'var'):
            a = rng.uniform(0.7, 1.3, size=shape)
        else:
            a = rng.uniform(-0.3, 0.3, size=shape)
        return jnp.asarray(a, jnp.float32)

    return jax.tree_util.tree_map_with_path(leaf, shapes)


def _member(tree, m):
    return jax.tree.map(lambda a: a[m], tree)


def _assert_close(got, want, tol=1e-4):
    """Leafwise |got - want| <= tol * max(1, max |want|)."""
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert a.shape == b.shape
        scale = max(1.0, float(jnp.max(jnp.abs(b))))
        np.testing.assert_allclose(np.asarray(a) / scale, np.asarray(b) / scale, atol=tol)


@pytest.mark.slow
@pytest.mark.parametrize('se, stride', [(True, 1), (False, 2)])
def test_masked_block_equals_exact_block(se, stride):
    """Every kernel size and expand ratio once, in train mode: outputs, running statistics and
    gradients; masked-out weights get no gradient and keep their running statistics."""
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 16))
    blk = ofa_net.MaskedMBConv(16 if stride == 1 else 24, stride, se, 'h_swish')
    shapes = jax.eval_shape(lambda x: blk.init(jax.random.key(1), x, 2, 2, True, train=False), x)
    v = _member(_fill(shapes, np.random.default_rng(0), 1), 0)

    def loss(p, st, block, *args):
        y, new = block.apply(
            {'params': p, 'batch_stats': st}, x, *args, train=True, mutable=['batch_stats']
        )
        return jnp.mean(jnp.square(y)), (y, new['batch_stats'])

    masked = jax.jit(jax.value_and_grad(lambda p, st, *a: loss(p, st, blk, *a), has_aux=True))
    for kg, eg in ((0, 2), (1, 0), (2, 1)):
        k, e = ofa_net.KERNEL_CHOICES[kg], ofa_net.EXPAND_CHOICES[eg]
        mid = ofa_net.mid_channels(16, e)
        (_, (y, new)), grads = masked(v['params'], v['batch_stats'], kg, eg, True)
        exact = ofa_net.MBConv(blk.out_ch, k, stride, mid, se, 'h_swish')
        ev = {c: ofa_net._slice_block(t, k, mid) for c, t in v.items()}
        (_, (y2, new2)), grads2 = jax.jit(
            jax.value_and_grad(lambda p, st, block: loss(p, st, block), has_aux=True),
            static_argnums=2,
        )(ev['params'], ev['batch_stats'], exact)
        _assert_close(y, y2, 1e-5)
        _assert_close(ofa_net._slice_block(new, k, mid), new2, 1e-5)
        _assert_close(ofa_net._slice_block(grads, k, mid), grads2, 1e-5)
        # Zero the kept slices: what remains of the gradient, or of the change in running
        # statistics, would be a leak from an inactive channel or kernel tap.
        grads = jax.tree.map(np.array, grads)
        delta = jax.tree.map(lambda a, b: np.array(a - b), new, v['batch_stats'])
        for tree in (grads, delta):
            for sliced in jax.tree.leaves(ofa_net._slice_block(tree, k, mid)):
                sliced[...] = 0  # numpy basic slices are views into the full arrays
            assert all(not np.any(a) for a in jax.tree.leaves(tree))
    # A skipped block is the identity, learns nothing and keeps its running statistics.
    if stride == 1:
        (_, (y, new)), grads = masked(v['params'], v['batch_stats'], 1, 1, False)
        np.testing.assert_array_equal(y, x)
        _assert_close(new, v['batch_stats'], 0.0)
        assert all(not np.any(a) for a in jax.tree.leaves(grads))


def test_masked_block_init_uses_active_fan_out():
    """A member is initialised as its exact network would be (He, fan-out of active widths)."""
    x = jnp.zeros((1, 4, 4, 16))
    blk = ofa_net.MaskedMBConv(16, 1, True, 'relu')
    init = jax.jit(lambda kg, eg: blk.init(jax.random.key(3), x, kg, eg, True, train=False))
    big = init(2, 2)['params']
    small = init(0, 1)['params']  # k3, e4: the same draws, scaled
    mid, mid_max = ofa_net.mid_channels(16, 4), ofa_net.mid_channels(16, 6)
    red, red_max = ofa_net.se_channels(mid), ofa_net.se_channels(mid_max)
    for layer, ratio in (
        ('expand_conv', mid_max / mid),
        ('dw_conv', 49 * mid_max / (9 * mid)),
        ('se_reduce', red_max / red),
        ('se_expand', mid_max / mid),
        ('project_conv', 1.0),
    ):
        np.testing.assert_allclose(
            small[layer]['kernel'], big[layer]['kernel'] * np.sqrt(ratio), rtol=1e-5
        )
    std = float(jnp.std(small['dw_conv']['kernel']))
    assert std == pytest.approx(np.sqrt(2 / (9 * mid)), rel=0.1)


# Depths 4, 2, 3, 2, 4: the other depth per feature stage than MIXED.
MIXED2 = tuple(
    [2, 0, 1, 2, 1, 1, 2, 0, 0, 2, 1, 2, 1, 0, 2, 0, 0, 2, 1, 1]
    + [0, 2, 1, 2, 1, 0, 0, 2, 2, 0, 1, 1, 1, 2, 2, 0, 2, 1, 0, 0]
    + [2, 0, 1, 0, 2]
)
POP_GENOMES = (MIXED, MIXED2, SMALLEST)
MOMENTUM = 0.9  # flax BatchNorm momentum of both networks


@pytest.fixture(scope='module')
def population():
    """Three vmapped members of a w1.0 CIFAR population: train-mode outputs and new statistics,
    and eval-mode outputs with running statistics set to the batch statistics."""
    pop = ofa_net.PopulationNetwork(num_classes=10, width_mult=1.0, resolution=32)
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    genomes = jnp.asarray(POP_GENOMES, jnp.int32)
    shapes = jax.eval_shape(lambda x: pop.init(jax.random.key(1), x, genomes[0], train=False), x)
    v = _fill(shapes, np.random.default_rng(0), len(POP_GENOMES))
    traces = []

    def train_one(v, g):
        traces.append(1)  # runs at trace time only
        return pop.apply(v, x, g, train=True, mutable=['batch_stats'])

    train = jax.jit(jax.vmap(train_one))
    out, new = train(v, genomes)
    train(v, genomes[::-1])  # other genomes, same compiled program
    calib = jax.tree.map(
        lambda a, b: (a - MOMENTUM * b) / (1 - MOMENTUM), new['batch_stats'], v['batch_stats']
    )
    evaluate = jax.jit(jax.vmap(lambda v, g: pop.apply(v, x, g, train=False)))
    eval_v = {'params': v['params'], 'batch_stats': calib}
    return {
        'x': x,
        'v': v,
        'traces': len(traces),
        'train_out': out,
        'new_stats': new['batch_stats'],
        'eval_v': eval_v,
        'eval_out': evaluate(eval_v, genomes),
    }


@pytest.mark.slow
@pytest.mark.parametrize('m', range(len(POP_GENOMES)))
def test_population_equals_exact_network(population, m):
    assert population['traces'] == 1
    g = POP_GENOMES[m]
    net = ofa_net.Network(g, num_classes=10, width_mult=1.0, resolution=32)
    v = ofa_net.exact_variables(_member(population['v'], m), g)
    out, new = jax.jit(
        lambda v: net.apply(v, population['x'], train=True, mutable=['batch_stats'])
    )(v)
    _assert_close(_member(population['train_out'], m), out)
    pop_new = {
        'params': _member(population['v'], m)['params'],
        'batch_stats': _member(population['new_stats'], m),
    }
    _assert_close(ofa_net.exact_variables(pop_new, g)['batch_stats'], new['batch_stats'])
    # Skipped blocks keep their running statistics.
    depths = [ofa_net.DEPTH_CHOICES[d] for d in g[40:]]
    for i in range(20):
        if i % 4 >= depths[i // 4]:
            name = f'block{i + 1}'
            _assert_close(
                _member(population['new_stats'], m)[name],
                _member(population['v'], m)['batch_stats'][name],
                0.0,
            )
    eval_out = jax.jit(lambda v: net.apply(v, population['x'], train=False))(
        ofa_net.exact_variables(_member(population['eval_v'], m), g)
    )
    _assert_close(_member(population['eval_out'], m), eval_out)
    # With batch statistics as running statistics, eval mode reproduces train mode.
    _assert_close(eval_out, out, 1e-3)


@pytest.mark.parametrize('k', [3, 5, 7])
@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('size', [8, 7])
def test_depthwise_impls_agree(k, stride, size):
    """Shifted products and XLA's grouped conv agree in value and in gradients."""
    kx, kw, kg = jax.random.split(jax.random.PRNGKey(k * 10 + stride), 3)
    x = jax.random.normal(kx, (2, size, size, 6))
    w = jax.random.normal(kw, (k, k, 1, 6))
    ct = jax.random.normal(kg, ofa_layers.depthwise_conv(x, w, stride, impl='grouped').shape)

    def run(impl):
        def f(x, w):
            return jnp.sum(ofa_layers.depthwise_conv(x, w, stride, impl=impl) * ct)

        return jax.value_and_grad(f, argnums=(0, 1))(x, w)

    (v_s, (gx_s, gw_s)), (v_g, (gx_g, gw_g)) = run('shifted'), run('grouped')
    np.testing.assert_allclose(v_s, v_g, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gx_s, gx_g, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gw_s, gw_g, rtol=1e-4, atol=1e-4)
    h_out = (size + 2 * (k // 2) - k) // stride + 1
    assert ofa_layers.depthwise_conv(x, w, stride, impl='shifted').shape == (2, h_out, h_out, 6)
