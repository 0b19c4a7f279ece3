"""The benchmarks run (tiny sizes) and measure what they claim to.

* benchmarks/proxy_bench.py prints one parseable JSON line per (case, architecture);
* its PyTorch TinyNetwork computes the same function and training as the Flax network, given the
  same weights (where PyTorch is installed);
* the 'xla_cpu' convolution it times agrees with XLA's own, values and gradients;
* benchmarks/gpu_check.py runs its tiny mode on a CPU (so a typo cannot wait for a GPU);
* benchmarks/rounding.py's population and exact networks agree to rounding in float64.
"""

import functools
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hwnas_jax import proxy, rmi
from hwnas_jax.spaces import nb201, nb201_conv, nb201_net

REPO = pathlib.Path(__file__).resolve().parents[1]
HAS_TORCH = importlib.util.find_spec('torch') is not None
FAST = 'xla_backend_optimization_level=0,xla_llvm_disable_expensive_passes=true'
FIELDS = {
    'index',
    'genome',
    'case',
    'strategy',
    'conv_impl',
    'workers',
    'compile_s',
    'compiled_per',
    'first_call_s',
    'run_s',
    'member_step_s',
    'images_per_s',
    'mflops',
    'gflops_per_s',
    'threads',
    'backend',
    'load_avg_1m',
    'finite',
}


@functools.cache  # Once: the module defines absl flags.
def _bench_module():
    spec = importlib.util.spec_from_file_location(
        'proxy_bench', REPO / 'benchmarks' / 'proxy_bench.py'
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(args, timeout=600):
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    res = subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith('{')]


@pytest.mark.slow  # About a minute: two compilations of tiny networks.
def test_proxy_bench_tiny(tmp_path):
    out = tmp_path / 'bench.jsonl'
    args = [
        'benchmarks/proxy_bench.py',
        '--channels=4',
        '--cells=1',
        '--batch=8',
        '--steps=1',
        '--rounds=2',
        '--indices=1462,0',
        '--cases=loop:xla_cpu,exact:im2col,loop:xla_cpu:w2',
        f'--xla_options={FAST}',
        f'--out={out}',
    ] + (['--torch'] if HAS_TORCH else [])
    lines = _run(args)
    cases = ['loop:xla_cpu', 'exact:im2col', 'loop:xla_cpu:w2'] + (['torch'] if HAS_TORCH else [])
    assert [(c['index'], c['case']) for c in lines] == [(i, c) for i in (1462, 0) for c in cases]
    assert [json.loads(line) for line in out.read_text().splitlines()] == lines
    for case in lines:
        assert FIELDS <= set(case), FIELDS - set(case)
        assert case['finite'] and case['member_step_s'] > 0 and len(case['run_s_each']) == 2
        assert (case['channels'], case['cells'], case['batch'], case['steps']) == (4, 1, 8, 1)
        assert case['genome'] == list(nb201.from_index(case['index']))
        assert ('speedup_vs_torch' in case) == HAS_TORCH
    loop = [c for c in lines if c['case'] == 'loop:xla_cpu']
    # One compilation for the whole search, reported on every architecture's line.
    assert loop[0]['compile_s'] == loop[1]['compile_s'] and loop[0]['compiled_per'] == 'search'
    # Two calls at once of the same program (proxy.workers=2): two members per timed call.
    two = [c for c in lines if c['case'] == 'loop:xla_cpu:w2']
    assert [(c['workers'], c['population']) for c in two] == [(2, 2)] * 2
    assert two[0]['compile_s'] == loop[0]['compile_s']


def _conv_pair(x, kernel, stride, padding):
    return (
        nb201_conv._conv(x, kernel, stride, padding, 'xla_cpu'),
        nb201_conv._conv(x, kernel, stride, padding, 'xla'),
    )


@pytest.mark.parametrize('k,stride,size', [(3, 1, 8), (3, 2, 8), (3, 2, 7), (1, 1, 6), (1, 2, 6)])
def test_xla_cpu_conv_matches_xla(k, stride, size):
    """Values, both gradients, inside a scan (where XLA:CPU differs) and under vmap."""
    rng = np.random.default_rng(k * 10 + stride)
    x = jnp.asarray(rng.normal(size=(3, size, size, 4)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(k, k, 4, 5)), jnp.float32)
    pad = (k - 1) // 2

    def loss(impl, x, kernel):
        return jnp.sum(jnp.sin(nb201_conv._conv(x, kernel, stride, pad, impl)))

    def in_scan(impl):
        def step(carry, _):
            return carry, jax.grad(functools.partial(loss, impl), (0, 1))(x, kernel)

        return jax.jit(lambda: jax.lax.scan(step, 0.0, None, length=2)[1])()

    for got, want in [(in_scan('xla_cpu'), in_scan('xla')), _conv_pair(x, kernel, stride, pad)]:
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
    kernels = jnp.stack([kernel, 2 * kernel])
    batched = [
        jax.vmap(jax.grad(functools.partial(loss, impl), 1), (None, 0))(x, kernels)
        for impl in ('xla_cpu', 'xla')
    ]
    np.testing.assert_allclose(batched[0], batched[1], rtol=1e-5, atol=1e-4)


def test_xla_cpu_network_matches_xla():
    """The whole population network: loss and every parameter's gradient."""
    kw = dict(channels=4, cells_per_stage=1, num_classes=10)
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
    genome = jnp.asarray([3, 2, 3, 1, 4, 3], jnp.int32)
    nets = {
        impl: nb201_net.PopulationNetwork(**kw, conv_impl=impl, dispatch='switch')
        for impl in ('xla', 'xla_cpu')
    }
    v = nets['xla'].init(jax.random.key(1), x, genome, train=False)

    def loss(impl, params):
        (logits, feats), _ = nets[impl].apply(
            {'params': params, 'batch_stats': v['batch_stats']},
            x,
            genome,
            train=True,
            mutable=['batch_stats'],
        )
        return jnp.sum(logits**2) + sum(jnp.sum(jnp.sin(f)) for f in feats)

    got, want = (
        jax.jit(jax.value_and_grad(functools.partial(loss, impl)))(v['params'])
        for impl in ('xla_cpu', 'xla')
    )
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def _torch_net_from_flax(genome, variables, channels, cells):
    """The benchmark's PyTorch TinyNetwork holding the Flax exact network's weights."""
    import torch

    bench = _bench_module()
    _, tiny_network = bench._torch_classes()
    net = tiny_network(tuple(genome), channels, cells).train()
    p = variables['params']

    def tensor(a):
        return torch.from_numpy(np.array(a, np.float32))  # A writable copy.

    def conv(module, kernel):
        module.weight.data = tensor(np.transpose(kernel, (3, 2, 0, 1)))

    def bn(module, tree):
        module.weight.data = tensor(tree['scale'])
        module.bias.data = tensor(tree['bias'])

    def relu_conv_bn(seq, tree):
        conv(seq[1], tree['conv']['kernel'])
        bn(seq[2], tree['bn'])

    conv(net.stem[0], p['stem_conv']['kernel'])
    bn(net.stem[1], p['stem_bn'])
    for k, layer in enumerate(net.cells):
        tree = p[f'cell{k}']
        if hasattr(layer, 'conv_a'):
            relu_conv_bn(layer.conv_a, tree['conv_a'])
            relu_conv_bn(layer.conv_b, tree['conv_b'])
            conv(layer.shortcut[1], tree['shortcut']['kernel'])
            continue
        for e, (j, i) in enumerate(nb201.EDGES):
            op = nb201.OPS[genome[e]]
            if op in ('nor_conv_1x1', 'nor_conv_3x3'):
                relu_conv_bn(layer.edges[e], tree[f'edge_{j}_{i}_{op}'])
    bn(net.lastact[0], p['lastact_bn'])
    net.classifier.weight.data = tensor(np.asarray(p['classifier']['kernel']).T)
    net.classifier.bias.data = tensor(p['classifier']['bias'])
    return net


@pytest.mark.slow  # About 40 s per architecture (eager JAX training at C=4).
@pytest.mark.skipif(not HAS_TORCH, reason='PyTorch not installed')
@pytest.mark.parametrize('index', [1462, 6111, 0])
def test_torch_network_and_training_match_flax(index):
    """Same weights: the same features and loss, and after 3 SGD steps the same score."""
    import torch

    bench = _bench_module()
    genome = nb201.from_index(index)
    channels, cells, steps = 4, 1, 3
    batch = bench.make_batch(channels, 8, 0)
    model = nb201_net.Network(
        genome=genome, channels=channels, cells_per_stage=cells, conv_impl='xla_cpu'
    )
    pop = nb201_net.PopulationNetwork(channels=channels, cells_per_stage=cells)
    v = pop.init(jax.random.key(3), batch['images'][:2], jnp.asarray(genome), train=False)
    v = nb201_net.exact_variables(v, genome)
    (logits, feats), _ = model.apply(v, batch['images'], train=True, mutable=['batch_stats'])
    want_loss = rmi.rmi_loss(batch['ref_features'], feats, logits, batch['labels'])
    settings = proxy.Settings(steps=steps)
    want_score = proxy.make_member_fn(model, settings)(
        v['params'], v['batch_stats'], None, batch['images'], batch['labels'], batch['ref_features']
    )[0]

    torch.manual_seed(0)
    net = _torch_net_from_flax(genome, v, channels, cells)
    images = torch.from_numpy(np.ascontiguousarray(np.moveaxis(batch['images'], -1, 1)))
    t_logits, t_feats = net(images)
    np.testing.assert_allclose(t_logits.detach().numpy(), logits, rtol=1e-4, atol=1e-4)
    for t, f in zip(t_feats, feats):
        np.testing.assert_allclose(np.moveaxis(t.detach().numpy(), 1, -1), f, rtol=1e-4, atol=1e-4)
    # The benchmark's loss and training step (torch_runner's), from these weights.
    loss_fn = bench.torch_loss_fn(batch)
    np.testing.assert_allclose(loss_fn(net)[0].item(), float(want_loss), rtol=1e-4)
    opt = bench.torch_optimizer(net)
    for _ in range(steps):
        bench.torch_step(net, opt, loss_fn)
    with torch.no_grad():
        score = float(loss_fn(net)[1].sum())
    np.testing.assert_allclose(score, float(want_score), rtol=2e-3, atol=2e-3)


@pytest.mark.slow  # About two minutes: five tiny compilations and a 1-generation smoke search.
def test_gpu_check_tiny(tmp_path):
    out = tmp_path / 'gpu.jsonl'
    lines = _run(
        [
            'benchmarks/gpu_check.py',
            '--part=all',
            '--tiny',
            '--generations=1',
            '--budget=900',  # Every case runs, even on a loaded machine (about 2 min idle).
            f'--workdir={tmp_path / "main"}',
            f'--out={out}',
        ],
        timeout=1800,
    )
    assert [json.loads(line) for line in out.read_text().splitlines()] == lines
    assert lines[0]['part'] == 'devices' and lines[0]['backend'] == 'cpu'
    cases = [c for c in lines if c['part'] == 'strategies']
    assert {c['strategy'] for c in cases} == {'vmap', 'loop', 'exact'}
    for c in cases:
        assert c['finite'] and c['member_step_s'] > 0 and c['train_tflop'] > 0
        assert c['mfu'] is None  # No peak for a CPU.
    summary = [c for c in lines if c.get('summary')]
    assert len(summary) == 1 and summary[0]['status'] == 0, summary
    assert summary[0]['generations'] == 1 and summary[0]['seconds_per_generation'] > 0


@pytest.mark.slow  # About 40 s: tiny networks, float32 and float64.
def test_rounding_tiny(tmp_path):
    out = tmp_path / 'rounding.jsonl'
    args = ['benchmarks/rounding.py', '--channels=4', '--cells=1', '--steps=3', '--float64']
    (line,) = _run([*args, '--indices=12553', f'--out={out}'])
    assert json.loads(out.read_text()) == line
    assert line['genome'] == [3, 2, 1, 3, 3, 4] and line['at'] == [1, 3]
    assert len(line['phi']) == len(line['ulp_shift']) == 2 and 0 < line['phi'][-1] <= 3
    # The two networks compute the same function: in float64 they agree to rounding.
    for key in ('float64_1_step', 'float64_3_steps'):
        assert line[key]['difference'] < 1e-9, line[key]
    assert line['float32_1_step']['difference'] < 1e-4
