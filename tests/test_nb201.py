"""Tests of the NAS-Bench-201 space: codecs, published costs, and the two Flax network forms."""

import csv
import functools
import json

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from hwnas_jax import spaces
from hwnas_jax.errors import UserError
from hwnas_jax.spaces import nb201, nb201_costs, nb201_net, nb201_stack

EXAMPLE = (
    '|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|'
    'skip_connect~2|'
)
EXAMPLE_GENOME = (3, 3, 4, 1, 3, 1)
ALL_CONV3 = (3,) * 6
# Genomes with `none` edges, dead nodes (no input path, or not reaching the output), pools.
GENOMES = [
    EXAMPLE_GENOME,
    (0, 2, 3, 0, 4, 1),
    (3, 3, 0, 3, 0, 0),
    (0, 0, 3, 0, 3, 3),
    (2, 0, 4, 0, 0, 1),
    (0, 0, 0, 0, 0, 0),
]
TINY = {'channels': 4, 'cells_per_stage': 1, 'num_classes': 10}


# -- codecs --------------------------------------------------------------------------------------


def test_constants():
    assert nb201.NAME == 'nb201' and nb201.NUM_ARCHS == 15625
    assert nb201.OPS == ('none', 'skip_connect', 'nor_conv_1x1', 'nor_conv_3x3', 'avg_pool_3x3')
    np.testing.assert_array_equal(nb201.CARDINALITIES, [5] * 6)
    assert (nb201.NUM_EDGES, nb201.NUM_OPS) == (6, 5)


def test_example_arch_string():
    assert nb201.from_arch_str(EXAMPLE) == EXAMPLE_GENOME
    assert nb201.to_arch_str(EXAMPLE_GENOME) == EXAMPLE
    assert nb201.from_index(1) == EXAMPLE_GENOME  # NAS-Bench-201 index 1.
    assert nb201.to_index(np.asarray(EXAMPLE_GENOME, np.int32)) == 1


def test_round_trips_over_the_whole_space():
    idx = np.arange(nb201.NUM_ARCHS)
    genomes = nb201.indices_to_genomes(idx)
    assert genomes.shape == (nb201.NUM_ARCHS, 6) and genomes.dtype == np.int64
    assert len(np.unique(genomes, axis=0)) == nb201.NUM_ARCHS
    np.testing.assert_array_equal(nb201.genomes_to_indices(genomes), idx)
    np.testing.assert_array_equal(
        nb201.genomes_to_indices(genomes.reshape(125, 125, 6)), idx.reshape(125, 125)
    )
    for i in range(0, nb201.NUM_ARCHS, 97):
        g = nb201.from_index(i)
        assert g == tuple(genomes[i]) and nb201.to_index(g) == i
    strings = [nb201.to_arch_str(g) for g in genomes]
    assert len(set(strings)) == nb201.NUM_ARCHS
    assert all(nb201.from_arch_str(s) == tuple(g) for s, g in zip(strings, genomes))


@pytest.mark.shared
def test_asset_agrees_with_the_hwnasbench_csv(shared_data):
    path = shared_data / 'hw-nas-bench' / 'hwnasbench_nb201_cifar10_merged.csv'
    with open(path, newline='') as f:
        rows = [(int(r['index']), r['arch_str']) for r in csv.DictReader(f)]
    assert [i for i, _ in rows] == list(range(nb201.NUM_ARCHS))
    genomes = nb201.indices_to_genomes(np.arange(nb201.NUM_ARCHS))
    assert [s for _, s in rows] == [nb201.to_arch_str(g) for g in genomes]


@pytest.mark.parametrize(
    'bad',
    [
        (1, 2, 3),
        (1, 2, 3, 4, 0, 1, 2),
        [[1, 2, 3, 4, 0, 1]],
        (1.0, 2, 3, 4, 0, 1),
        (0.5, 2, 3, 4, 0, 1),
        (True,) * 6,
        ('a', 1, 1, 1, 1, 1),
        (5, 0, 0, 0, 0, 0),
        (-1, 0, 0, 0, 0, 0),
        [1, [2], 3, 4, 0, 1],
        3,
        None,
    ],
)
def test_validate_rejects(bad):
    with pytest.raises(UserError, match='genome is 6 integers in \\[0, 4\\]'):
        nb201.validate(bad)


def test_validate_accepts_integer_arrays():
    for g in ([3, 3, 4, 1, 3, 1], np.asarray(EXAMPLE_GENOME, np.int8), jnp.asarray(EXAMPLE_GENOME)):
        out = nb201.validate(g)
        assert out.dtype == np.int64 and out.shape == (6,) and tuple(out) == EXAMPLE_GENOME
    with pytest.raises(UserError, match='values out of range'):
        nb201.genomes_to_indices(np.full((3, 6), 5))
    with pytest.raises(UserError, match='genome'):
        nb201_costs.flops(np.zeros((3, 5), np.int64))


@pytest.mark.parametrize(
    'bad',
    [
        '',
        EXAMPLE[:-1],
        EXAMPLE.replace('~1', '~0', 1),
        EXAMPLE.replace('skip_connect', 'skip'),
        '|nor_conv_3x3~0|+|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|',
        EXAMPLE + '+|none~0|',
        EXAMPLE.replace('~', '-'),
    ],
)
def test_malformed_arch_strings(bad):
    with pytest.raises(UserError, match='malformed NAS-Bench-201 arch string') as info:
        nb201.from_arch_str(bad)
    assert repr(bad)[:60] in str(info.value)
    assert '|op~0|+|op~0|op~1|+|op~0|op~1|op~2|' in str(info.value)


def test_arch_string_must_be_a_string():
    with pytest.raises(TypeError, match='must be a str'):
        nb201.from_arch_str(42)


@pytest.mark.parametrize('bad', [-1, 15625, 1.5, '3'])
def test_bad_indices(bad):
    with pytest.raises(UserError, match='indices must be'):
        nb201.from_index(bad)
    with pytest.raises(UserError, match='indices must be'):
        nb201.indices_to_genomes([0, bad])


def test_random_genomes():
    a = nb201.random_genomes(np.random.default_rng(3), 1000)
    assert a.shape == (1000, 6) and a.dtype == np.int64 and a.min() == 0 and a.max() == 4
    np.testing.assert_array_equal(a, nb201.random_genomes(np.random.default_rng(3), 1000))
    with pytest.raises(TypeError, match='Generator'):
        nb201.random_genomes(3, 2)


def test_describe_is_json():
    d = json.loads(json.dumps(nb201_costs.describe(np.asarray(EXAMPLE_GENOME))))
    assert d['genome'] == list(EXAMPLE_GENOME) and d['arch_str'] == EXAMPLE and d['index'] == 1
    assert d['canonical'] == list(EXAMPLE_GENOME) and d['space'] == 'nb201'
    assert d['flops'] == pytest.approx(nb201_costs.flops(EXAMPLE_GENOME))
    assert d['params'] == pytest.approx(nb201_costs.num_params(EXAMPLE_GENOME))


def test_space_registry():
    from hwnas_jax import config as config_lib
    from hwnas_jax.spaces import base

    space = spaces.make(config_lib.get_config())
    assert isinstance(space, base.Space) and space.name == 'nb201'
    assert spaces.NAMES == ('nb201', 'ofa')
    with pytest.raises(UserError, match='nb201, ofa'):
        spaces.space_class('darts')


# -- analytic costs ------------------------------------------------------------------------------


@pytest.mark.parametrize('index, params', [(0, 0.129306), (6111, 1.073466)])
def test_published_params(index, params):
    assert nb201_costs.num_params(nb201.from_index(index)) == pytest.approx(params, abs=1e-9)


def test_published_params_all_conv3x3():
    assert nb201_costs.num_params(ALL_CONV3) == pytest.approx(1.531546, abs=1e-9)


@pytest.mark.parametrize('index, mflops', [(9930, 184.73025), (1462, 220.11969), (2, 78.56193)])
def test_published_flops(index, mflops):
    assert nb201_costs.flops(nb201.from_index(index)) == pytest.approx(mflops, abs=1e-9)


def test_costs_are_vectorised():
    genomes = nb201.indices_to_genomes(np.arange(0, nb201.NUM_ARCHS, 7)).reshape(-1, 1, 6)
    for fn in (nb201_costs.num_params, nb201_costs.flops, nb201_costs.activation_elements):
        batch = fn(genomes, num_classes=100, channels=8, cells_per_stage=2)
        assert batch.shape == genomes.shape[:-1]
        single = [fn(g, num_classes=100, channels=8, cells_per_stage=2) for g in genomes[:50, 0]]
        assert isinstance(single[0], (int, float))
        np.testing.assert_array_equal(batch[:50, 0], single)
    with pytest.raises(UserError, match='multiple of 4'):
        nb201_costs.flops(ALL_CONV3, resolution=30)
    with pytest.raises(UserError, match='channels'):
        nb201_costs.num_params(ALL_CONV3, channels=0)


def _count_jaxpr(jaxpr, counts):
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        out = int(np.prod(eqn.outvars[0].aval.shape))
        if name == 'conv_general_dilated':
            k_h, k_w, c_in, _ = eqn.invars[1].aval.shape
            counts['flops'] += out * k_h * k_w * c_in
            counts['elements'] += out
        elif name == 'dot_general':
            counts['flops'] += out * eqn.invars[0].aval.shape[-1]
            counts['elements'] += out
        elif name in ('reduce_window_sum', 'reduce_window', 'reduce_sum'):
            counts['elements'] += out
        elif name == 'add' and eqn.outvars[0].aval.ndim == 2:
            counts['flops'] += out  # The classifier's bias.
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    _count_jaxpr(sub.jaxpr, counts)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    _count_jaxpr(sub, counts)
    return counts


@pytest.mark.parametrize('genome', GENOMES[:4] + [ALL_CONV3, (4, 2, 1, 4, 2, 2)])
def test_costs_match_the_flax_network(genome):
    """num_params, flops and activation_elements against the exact network itself."""
    net = nb201_net.Network(genome, **TINY)
    x = jnp.zeros((1, 8, 8, 3))
    variables = jax.eval_shape(functools.partial(net.init, train=False), jax.random.key(0), x)
    n = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(variables['params']))
    assert n == round(nb201_costs.num_params(genome, **TINY) * 1e6)
    counts = _count_jaxpr(
        jax.make_jaxpr(functools.partial(net.apply, train=False))(variables, x).jaxpr,
        {'flops': 0, 'elements': 0},
    )
    assert counts['flops'] == round(nb201_costs.flops(genome, **TINY, resolution=8) * 1e6)
    assert counts['elements'] == nb201_costs.activation_elements(genome, **TINY, resolution=8)


# -- canonical -----------------------------------------------------------------------------------


def test_canonical_examples_and_classes():
    assert nb201.canonical(EXAMPLE_GENOME) == EXAMPLE_GENOME
    assert nb201.canonical((0, 3, 3, 0, 3, 1)) == (0, 3, 0, 0, 0, 1)  # Node 1 has no input.
    assert nb201.canonical((3, 3, 0, 3, 0, 0)) == (0, 0, 0, 3, 0, 0)  # Nodes 1, 2 unused.
    assert nb201.canonical((0, 0, 3, 0, 3, 3)) == (0,) * 6  # No path from input to output.
    assert nb201.canonical((2, 0, 4, 0, 0, 1)) == (2, 0, 4, 0, 0, 1)
    genomes = nb201.indices_to_genomes(np.arange(nb201.NUM_ARCHS))
    canon = [nb201.canonical(g) for g in genomes]
    assert all(nb201.canonical(c) == c for c in set(canon))
    # Derived with this rule (not a published figure): 9445 classes, 6180 genomes merged away.
    assert len(set(canon)) == 9445


# -- networks ------------------------------------------------------------------------------------


def _random_variables(model, *args, zero_shift=False, seed=0):
    """Variables of `model` with random values everywhere (fast: no RNG compile)."""
    shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), *args)
    rng = np.random.default_rng(seed)
    flat = {}
    for path, s in traverse_util.flatten_dict(shapes).items():
        if path[-1] == 'var':
            value = rng.uniform(0.5, 2.0, s.shape)
        elif zero_shift and (path[-1] == 'mean' or (path[-1] == 'bias' and 'bn' in path[-2])):
            value = np.zeros(s.shape)
        else:
            value = rng.normal(0.0, 0.5, s.shape)
        flat[path] = jnp.asarray(value, s.dtype)
    return traverse_util.unflatten_dict(flat)


# Most of these tests' time is XLA:CPU compilation; its cheapest settings halve it.
_FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}


def _compile(fn, *args):
    return jax.jit(fn).lower(*args).compile(compiler_options=_FAST_COMPILE)


def _population_apply(train, conv_impl='xla', dispatch='select'):
    model = nb201_net.PopulationNetwork(**TINY, conv_impl=conv_impl, dispatch=dispatch)
    return functools.partial(model.apply, train=train, mutable=['batch_stats'] if train else False)


@functools.cache
def _population_fn(train, conv_impl='xla', dispatch='select'):
    """(variables, x, genome) -> outputs, compiled once for the shapes of `_inputs()`."""
    x, v = _inputs()
    return _compile(_population_apply(train, conv_impl, dispatch), v, x, jnp.zeros(6, jnp.int32))


@functools.cache
def _inputs():
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
    pop = nb201_net.PopulationNetwork(**TINY)
    return x, _random_variables(pop, x, jnp.zeros(6, jnp.int32))


def _max_diff(a, b):
    """Largest absolute difference of two pytrees, relative to max(1, the largest |b|)."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    return max(
        float(jnp.max(jnp.abs(p - q)) / jnp.maximum(1.0, jnp.max(jnp.abs(q))))
        for p, q in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


@pytest.mark.slow  # About 10 s on a loaded 2-core CPU: compiles two networks.
def test_exact_equals_population():
    x, v = _inputs()
    for genome in (GENOMES[0], GENOMES[1], GENOMES[3], GENOMES[5]):
        exact = nb201_net.Network(genome, **TINY)

        def both(ev, exact=exact):
            return (
                exact.apply(ev, x, train=True, mutable=['batch_stats']),
                exact.apply(ev, x, train=False),
            )

        # Compiled (not eager), as the population form is: in a degenerate cell (no path from
        # the input) train-mode BN of near-constant maps amplifies eager-vs-XLA rounding.
        ev = nb201_net.exact_variables(v, genome)
        (out_train, stats), out_eval = _compile(both, ev)(ev)
        g = jnp.asarray(genome, jnp.int32)
        pop_train, pop_stats = _population_fn(True)(v, x, g)
        assert _max_diff(out_train, pop_train) < 1e-5, genome
        assert _max_diff(out_eval, _population_fn(False)(v, x, g)) < 1e-5, genome
        # The chosen ops' running statistics move alike.
        assert _max_diff(stats, nb201_net.exact_variables(pop_stats, genome)) < 1e-5, genome


def test_conv_impls_agree():
    x, v = _inputs()
    for genome in GENOMES[:2]:
        g = jnp.asarray(genome, jnp.int32)
        assert (
            _max_diff(_population_fn(True)(v, x, g), _population_fn(True, 'im2col')(v, x, g)) < 1e-5
        )
    exact = nb201_net.Network(EXAMPLE_GENOME, **TINY, conv_impl='im2col')
    ev = nb201_net.exact_variables(v, EXAMPLE_GENOME)
    out = _compile(functools.partial(exact.apply, train=False), ev, x)(ev, x)
    assert _max_diff(out, _population_fn(False)(v, x, jnp.asarray(EXAMPLE_GENOME))) < 1e-5


def test_switch_dispatch_agrees_with_select():
    x, v = _inputs()
    for genome in GENOMES[:3]:
        g = jnp.asarray(genome, jnp.int32)
        (out_s, stats_s) = _population_fn(True, dispatch='switch')(v, x, g)
        (out, stats) = _population_fn(True)(v, x, g)
        assert _max_diff(out_s, out) < 1e-6
        assert (
            _max_diff(
                nb201_net.exact_variables(stats_s, genome), nb201_net.exact_variables(stats, genome)
            )
            < 1e-6
        )


@pytest.mark.parametrize('dispatch', nb201_net.DISPATCHES)
def test_scanned_cells_compute_the_unrolled_network(dispatch):
    # scan_cells changes the program, not the function: the same initial weights (stacked),
    # the same outputs, batch statistics and gradients.
    x, _ = _inputs()
    kw = dict(TINY, cells_per_stage=2, dispatch=dispatch)
    unrolled = nb201_net.PopulationNetwork(**kw)
    scanned = nb201_net.PopulationNetwork(**kw, scan_cells=True)
    g = jnp.asarray(GENOMES[1], jnp.int32)
    vu = unrolled.init(jax.random.key(3), x[:2], g, train=False)
    vs = scanned.init(jax.random.key(3), x[:2], g, train=False)
    assert 'stage1_cells' in vs['params'] and 'cell3' not in vs['params']
    chex.assert_trees_all_equal(nb201_stack.unstack_cells(vs, 2), flax.core.unfreeze(vu))
    chex.assert_trees_all_equal(nb201_stack.stack_cells(vu, 2), vs)

    def loss(params, stats, model):
        (logits, feats), new = model.apply(
            {'params': params, 'batch_stats': stats}, x, g, train=True, mutable=['batch_stats']
        )
        return jnp.sum(logits**2) + sum(jnp.mean(f**2) for f in feats), (logits, new)

    def run(model, v):
        fn = jax.value_and_grad(functools.partial(loss, model=model), has_aux=True)
        return _compile(fn, v['params'], v['batch_stats'])(v['params'], v['batch_stats'])

    (lu, (logits_u, stats_u)), grads_u = run(unrolled, vu)
    (ls, (logits_s, stats_s)), grads_s = run(scanned, vs)
    assert _max_diff(logits_s, logits_u) < 1e-5 and abs(float(ls - lu)) < 1e-5 * abs(float(lu))
    assert _max_diff(nb201_stack.unstack_cells(stats_s, 2), stats_u) < 1e-5
    assert _max_diff(nb201_stack.unstack_cells({'g': grads_s}, 2)['g'], grads_u) < 1e-4
    chex.assert_trees_all_equal(
        nb201_net.exact_variables(vs, GENOMES[1]), nb201_net.exact_variables(vu, GENOMES[1])
    )


@pytest.mark.slow  # 5-10 s: XLA:CPU compiles the backward pass slowly.
def test_gradients_reach_only_the_chosen_ops():
    # With the forward passes equal (above) for all weights, zero gradients on the unused ops
    # make the population's gradients those of the exact network.
    x, v = _inputs()
    genome = GENOMES[1]
    pop = nb201_net.PopulationNetwork(**TINY)

    def loss(params, genome):
        (logits, feats), _ = pop.apply(
            {'params': params, 'batch_stats': v['batch_stats']},
            x,
            genome,
            train=True,
            mutable=['batch_stats'],
        )
        return jnp.sum(logits**2) + sum(jnp.mean(f**2) for f in feats)

    args = (v['params'], jnp.asarray(genome, jnp.int32))
    grads = _compile(jax.grad(loss), *args)(*args)
    chosen = traverse_util.flatten_dict(nb201_net.exact_variables({'params': grads}, genome))
    assert chosen and all(np.all(np.isfinite(g)) for g in chosen.values())
    assert any(np.any(g) for g in chosen.values())
    for path, g in traverse_util.flatten_dict({'params': grads}).items():
        if path not in chosen:
            assert not np.any(g), path


# The CPU's implementation; with 'xla' (autodiff's conv gradients) the switch form's gradients
# can differ in the last bit between the two ways of running a cell.
CONV_IMPL = 'xla_cpu'


def _passthrough(next_fun, args, kwargs, context):
    return next_fun(*args, **kwargs)


@pytest.mark.slow  # 10-25 s each: compiles the gradients twice.
@pytest.mark.parametrize('form', ['select', 'switch', 'exact'])
def test_shared_cell_programs_compute_what_the_submodules_compute(form):
    # Cells run as one jitted function per kind of cell (traced once per stage); an
    # interceptor makes them run as plain submodules. Outputs, statistics and gradients agree
    # bit for bit.
    small = dict(TINY, cells_per_stage=2)
    genome = jnp.asarray(GENOMES[1], jnp.int32)
    if form == 'exact':
        model = nb201_net.Network(GENOMES[1], **small, conv_impl=CONV_IMPL)
        args = ()
    else:
        model = nb201_net.PopulationNetwork(**small, dispatch=form, conv_impl=CONV_IMPL)
        args = (genome,)
    x = _inputs()[0]
    v = _random_variables(nb201_net.PopulationNetwork(**small), x, genome, seed=1)
    if form == 'exact':
        v = nb201_net.exact_variables(v, GENOMES[1])

    def run(params):
        def loss(p):
            (logits, feats), new = model.apply(
                {'params': p, 'batch_stats': v['batch_stats']},
                x,
                *args,
                train=True,
                mutable=['batch_stats'],
            )
            return jnp.sum(logits**2) + sum(jnp.mean(f**2) for f in feats), (logits, new)

        return jax.grad(loss, has_aux=True)(params)

    def observed(params):
        with flax.linen.intercept_methods(_passthrough):
            return run(params)

    shared = _compile(run, v['params'])(v['params'])
    plain = _compile(observed, v['params'])(v['params'])
    chex.assert_trees_all_equal(shared, plain)
    # Six cells, three traces (one per stage), and as many for their gradients.
    eqns = jax.make_jaxpr(run)(v['params']).jaxpr.eqns
    calls = [e for e in eqns if e.primitive.name in ('pjit', 'jit') and e.params['name'] == 'run']
    assert len(calls) == 12
    assert len({id(e.params['jaxpr']) for e in calls}) == 6


def test_vmap_over_a_population_equals_a_loop():
    x, v = _inputs()
    genomes = jnp.asarray(GENOMES[:3], jnp.int32)
    members = [jax.tree.map(lambda a, k=k: a * (1.0 + 0.25 * k), v) for k in range(3)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *members)
    vmapped = jax.vmap(_population_apply(True), in_axes=(0, None, 0))
    batched = _compile(vmapped, stacked, x, genomes)(stacked, x, genomes)
    for k in range(3):
        assert (
            _max_diff(
                jax.tree.map(lambda a, k=k: a[k], batched),
                _population_fn(True)(members[k], x, genomes[k]),
            )
            # Values up to ~7: float32 rounding of differently batched convolutions (up to
            # 1.01e-5 seen on a loaded 2-core machine, where XLA splits the work differently).
            < 5e-5
        )


@pytest.mark.parametrize('genome', [GENOMES[1], GENOMES[2], GENOMES[3], (0, 3, 3, 0, 3, 1)])
def test_canonical_genome_computes_the_same_function(genome):
    # BN shifts and running means zero: the documented condition (a conv op on an all-zero
    # node outputs its BN shift). Kernels, scales and running variances are random.
    x, _ = _inputs()
    v = _random_variables(
        nb201_net.PopulationNetwork(**TINY), x, jnp.zeros(6, jnp.int32), zero_shift=True, seed=1
    )
    canon = jnp.asarray(nb201.canonical(genome), jnp.int32)
    assert tuple(canon.tolist()) != genome
    for train in (True, False):
        fn = _population_fn(train)
        out, canon_out = fn(v, x, jnp.asarray(genome)), fn(v, x, canon)
        if train:
            out, canon_out = out[0], canon_out[0]
        assert _max_diff(out, canon_out) < 1e-6


def test_shapes_and_params_of_the_full_size_network():
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    key = jax.random.key(0)
    exact = nb201_net.Network(ALL_CONV3)
    (logits, feats), ev = jax.eval_shape(
        functools.partial(exact.init_with_output, train=True), key, x
    )
    assert logits.shape == (2, 10)
    assert [f.shape for f in feats] == [(2, 32, 32, 16), (2, 16, 16, 32), (2, 8, 8, 64)]
    assert sum(int(np.prod(a.shape)) for a in jax.tree.leaves(ev['params'])) == 1531546
    pop = nb201_net.PopulationNetwork()
    (_, feats_p), pv = jax.eval_shape(
        functools.partial(pop.init_with_output, train=True), key, x, jnp.zeros(6, jnp.int32)
    )
    assert [f.shape for f in feats_p] == [f.shape for f in feats]
    for genome in (ALL_CONV3, GENOMES[1]):
        ev = jax.eval_shape(functools.partial(nb201_net.Network(genome).init, train=False), key, x)
        assert jax.tree.map(
            lambda a: a.shape, nb201_net.exact_variables(pv, genome)
        ) == jax.tree.map(lambda a: a.shape, ev)
    assert sorted(k for k in ev['params'] if k.startswith('cell')) == sorted(
        f'cell{k}' for k in range(17)
    )


def test_population_network_rejects_bad_genome_shape():
    x, v = _inputs()
    with pytest.raises(ValueError, match='genome must be an integer array'):
        nb201_net.PopulationNetwork(**TINY).apply(v, x, jnp.zeros(5, jnp.int32), train=False)
    with pytest.raises(ValueError, match='genome is 6 integers'):
        nb201_net.Network((0, 1, 2), **TINY).apply(v, x, train=False)


@pytest.mark.parametrize('scan_cells', [False, True])
def test_population_network_tabulates(scan_cells):
    # Flax's summary calls `init` on the unbound module under an interceptor.
    model = nb201_net.PopulationNetwork(**TINY, scan_cells=scan_cells)
    args = (jnp.zeros((2, 8, 8, 3)), jnp.zeros(6, jnp.int32))
    table = model.tabulate(jax.random.key(0), *args, train=False, depth=1)
    shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), *args)
    total = sum(leaf.size for leaf in jax.tree.leaves(shapes))  # Flax counts every collection.
    assert f'Total Parameters: {total:,}' in table
