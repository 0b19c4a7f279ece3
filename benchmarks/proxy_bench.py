"""Proxy training speed per architecture: JAX strategies against PyTorch, timed interleaved.

Run:
  python benchmarks/proxy_bench.py --indices 1462,6111,0 --torch          # ~15 min on 2 cores
  python benchmarks/proxy_bench.py --cases loop:xla_cpu,loop:im2col,exact:xla_cpu --threads 1
  python benchmarks/proxy_bench.py --channels 4 --cells 1 --batch 8 --steps 1 --rounds 1
Expect: one JSON line per (case, architecture) on stdout (and in --out): `member_step_s`, the
  seconds per SGD step of one member, the median over --rounds calls, `compile_s`, and, with
  --torch, `speedup_vs_torch` (> 1: JAX is faster). The fields are listed in
  benchmarks/README.md, with the figures measured so far.

What a call does, for every case alike: fresh weights, --steps SGD steps of the RMI loss
`0.8 * sum_l (1 - CKA_l) + 0.2 * CE` against fixed reference features (SGD, momentum 0.9,
weight decay 5e-4, BatchNorm in training mode), then one scoring forward pass. JAX runs the
library's own programs (`proxy.population_program` for 'loop' and 'vmap', `proxy.make_member_fn`
on the exact network for 'exact'); 'torch' runs the same training with an independent PyTorch
implementation of NAS-Bench-201's TinyNetwork written below, one candidate after another, as
the paper's code does. Every case is compiled (or built) and called once first; the timed calls
then go round the cases and architectures in turn (A, B, A, B, ...), so that the load of other
jobs on a shared machine falls on all cases alike.

Threads: JAX's CPU client and PyTorch both use `--threads` cores (default: every core this
process may run on); with fewer, the process is pinned to that many cores first.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import json
import os
import re
import sys
import time

from absl import app, flags, logging

# Runnable as a script from the repository root without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from hwnas_jax.spaces import nb201, nb201_costs  # noqa: E402  (numpy only: JAX starts in main)

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line's flags (defined when run as a script: importers reuse the code)."""
    flags.DEFINE_list(
        'indices',
        ['1462', '6111', '0'],
        'NAS-Bench-201 indices of the architectures (1462: every edge a 3x3 conv, '
        'the most FLOPs; 6111: 153 MFLOPs; 0: 16 MFLOPs).',
    )
    flags.DEFINE_list(
        'cases',
        ['loop:xla_cpu', 'loop:im2col'],
        'JAX cases, strategy:conv_impl[:scan][:wN] (strategies loop, vmap, exact; conv_impl '
        'xla, im2col, xla_cpu; loop/vmap unroll the cells of a stage, as the search does, or '
        "with ':scan' run them as one scan (proxy.scan_cells); ':wN': N calls of the program "
        'at once from N threads, as proxy.workers=N does; member_step_s is then per member of '
        'the N calls; before 2026-12-02 a case without a layout meant scan).',
    )
    flags.DEFINE_bool('torch', False, 'Also time PyTorch (the same training, TinyNetwork below).')
    flags.DEFINE_integer('channels', 16, 'C, the first stage width (16: NAS-Bench-201).')
    flags.DEFINE_integer('cells', 5, 'N, cells per stage (5: NAS-Bench-201).')
    flags.DEFINE_integer('batch', 32, 'Images in the one training batch (32x32x3).')
    flags.DEFINE_integer('steps', 5, 'SGD steps per member in each timed call.')
    flags.DEFINE_integer('rounds', 5, 'Timed calls per case and architecture (interleaved).')
    flags.DEFINE_integer(
        'population',
        1,
        "Members per call for 'loop' and 'vmap' (copies of the "
        'architecture); member_step_s is per member.',
    )
    flags.DEFINE_integer('threads', 0, 'Cores for JAX and PyTorch (0: all this process may use).')
    flags.DEFINE_list('xla_options', [], 'XLA compiler options for every JAX case, key=value.')
    flags.DEFINE_integer('seed', 0, 'Seed of the batch, the reference features and the weights.')
    flags.DEFINE_string('out', '', 'Also write the JSON lines to this file (overwritten).')


STRATEGIES = ('loop', 'vmap', 'exact')


def make_batch(channels: int, batch: int, seed: int) -> dict:
    """A random batch and random reference features of the three tapped layers' shapes."""
    rng = np.random.default_rng([seed, 1])
    shapes = [(32, channels), (16, 2 * channels), (8, 4 * channels)]
    return {
        'images': rng.normal(size=(batch, 32, 32, 3)).astype(np.float32),
        'labels': rng.integers(0, 10, batch).astype(np.int32),
        'ref_features': [rng.normal(size=(batch, s, s, c)).astype(np.float32) for s, c in shapes],
    }


def parse_options(items) -> dict:
    """['key=value', ...] -> XLA compiler options (true/false and integers converted)."""
    options = {}
    for item in items:
        key, _, value = item.partition('=')
        low = value.lower()
        options[key] = (
            low == 'true'
            if low in ('true', 'false')
            else int(value)
            if value.lstrip('-').isdigit()
            else value
        )
    return options


# -- JAX ---------------------------------------------------------------------------------------


def jax_runner(
    strategy: str,
    conv_impl: str,
    genome,
    batch: dict,
    *,
    channels: int,
    cells: int,
    steps: int,
    population: int = 1,
    seed: int = 0,
    compiler_options=None,
    cache: dict | None = None,
    scan_cells: bool = False,
):
    """(compile_s, run): `run()` trains `population` fresh members of `genome` and blocks.

    'loop' and 'vmap' compile one program for every genome, once per search (`cache`, keyed by
    the case, shares it between architectures; compile_s is that one compilation); 'exact'
    compiles one program per genome.
    """
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh

    from hwnas_jax import proxy
    from hwnas_jax.spaces import nb201_net

    kw = dict(channels=channels, cells_per_stage=cells, num_classes=10, conv_impl=conv_impl)
    settings = proxy.Settings(steps=steps)
    options = dict(compiler_options or {})
    images = jnp.asarray(batch['images'])
    labels = jnp.asarray(batch['labels'])
    ref = [jnp.asarray(r) for r in batch['ref_features']]
    genome = np.asarray(genome, np.int64)
    pop_model = nb201_net.PopulationNetwork(
        **kw,
        dispatch='switch' if strategy == 'loop' else 'select',
        scan_cells=scan_cells and strategy != 'exact',
    )
    base = jnp.asarray(seed, jnp.uint32)
    compile_s = 0.0
    if strategy == 'exact':
        model = nb201_net.Network(genome=tuple(int(g) for g in genome), **kw)
        member = proxy.make_member_fn(model, settings)
        init = jax.jit(functools.partial(proxy.init_members, pop_model))
        seeds = jnp.asarray(proxy.member_seeds(genome[None]))

        def variables():  # The scorer's way: the population form's initial weights, cut down.
            v = init(base, seeds, jnp.asarray(genome[None], jnp.int32), images)
            return nb201_net.exact_variables(jax.tree.map(lambda a: a[0], v), genome)

        def fn(v, images, labels, ref):
            return member(v['params'], v['batch_stats'], None, images, labels, ref)

        t0 = time.perf_counter()
        compiled = (
            jax.jit(fn).lower(variables(), images, labels, ref).compile(compiler_options=options)
        )
        compile_s = time.perf_counter() - t0

        def run():
            return jax.block_until_ready(compiled(variables(), images, labels, ref))

        return compile_s, run

    genomes = np.repeat(genome[None], population, axis=0)
    args = (
        base,
        jnp.asarray(proxy.member_seeds(genomes)),
        jnp.asarray(genomes, jnp.int32),
        jnp.ones(population, bool),
        images,
        labels,
        ref,
    )
    key = (strategy, conv_impl, scan_cells, population, tuple(sorted(options.items())))
    if cache is None or key not in cache:
        mesh = Mesh(np.asarray(jax.local_devices()[:1]), ('pop',))
        fn = proxy.population_program(pop_model, settings, strategy, mesh)
        t0 = time.perf_counter()
        compiled = fn.lower(*args).compile(compiler_options=options)
        compile_s = time.perf_counter() - t0
        if cache is not None:
            cache[key] = compiled, compile_s
    else:
        compiled, compile_s = cache[key]

    def run():
        return jax.block_until_ready(compiled(*args))

    return compile_s, run


# -- PyTorch: NAS-Bench-201's TinyNetwork, written from the paper's description ----------------


@functools.cache
def _torch_classes():
    """The PyTorch modules (defined on first use: the benchmark runs without PyTorch)."""
    import torch
    from torch import nn

    class ReLUConvBN(nn.Sequential):
        """ReLU, bias-free k x k conv (padding (k-1)/2), affine BatchNorm."""

        def __init__(self, c_in, c_out, k, stride):
            super().__init__(
                nn.ReLU(),
                nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2, bias=False),
                nn.BatchNorm2d(c_out),
            )

    class Zero(nn.Module):
        def forward(self, x):
            return x.mul(0.0)

    def make_op(name, c):
        if name == 'none':
            return Zero()
        if name == 'skip_connect':
            return nn.Identity()
        if name == 'avg_pool_3x3':
            return nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        return ReLUConvBN(c, c, 1 if name == 'nor_conv_1x1' else 3, 1)

    class Cell(nn.Module):
        """Node j = sum over i < j of op_ij(node i); the output is node 3."""

        def __init__(self, genome, c):
            super().__init__()
            self.edges = nn.ModuleList(make_op(nb201.OPS[g], c) for g in genome)

        def forward(self, x):
            nodes = [x]
            for j in (1, 2, 3):
                nodes.append(
                    sum(
                        op(nodes[i])
                        for op, (target, i) in zip(self.edges, nb201.EDGES)
                        if target == j
                    )
                )
            return nodes[3]

    class ResNetBlock(nn.Module):
        """The stride-2 block between stages: conv_b(conv_a(x)) + conv1x1(avgpool2x2(x))."""

        def __init__(self, c_in, c_out):
            super().__init__()
            self.conv_a = ReLUConvBN(c_in, c_out, 3, 2)
            self.conv_b = ReLUConvBN(c_out, c_out, 3, 1)
            self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(c_in, c_out, 1, bias=False))

        def forward(self, x):
            return self.shortcut(x) + self.conv_b(self.conv_a(x))

    class TinyNetwork(nn.Module):
        """Stem, 3 stages of N cells (C, 2C, 4C) joined by ResNet blocks, BN-ReLU-pool-linear.

        Returns (logits, [cell N-1, cell 2N, the final BN-ReLU]): the RMI features.
        """

        def __init__(self, genome, channels, cells, num_classes=10):
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
            )
            layers, width = [], channels
            for stage in range(3):
                if stage:
                    layers.append(ResNetBlock(width, 2 * width))
                    width *= 2
                layers += [Cell(genome, width) for _ in range(cells)]
            self.cells = nn.ModuleList(layers)
            self.taps = (cells - 1, 2 * cells)
            self.lastact = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU())
            self.classifier = nn.Linear(width, num_classes)

        def forward(self, x):
            feats, h = [], self.stem(x)
            for i, cell in enumerate(self.cells):
                h = cell(h)
                if i in self.taps:
                    feats.append(h)
            h = self.lastact(h)
            feats.append(h)
            return self.classifier(h.mean((2, 3))), feats

    return torch, TinyNetwork


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def torch_loss_fn(batch: dict):
    """net -> (loss, ckas [3]): the JAX proxy's loss in PyTorch, on `batch` (NHWC numpy)."""
    torch, _ = _torch_classes()
    import torch.nn.functional as F

    def nchw(a):
        return torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, -1, 1)))

    images, labels = nchw(batch['images']), torch.from_numpy(batch['labels']).long()

    def gram(x):  # As hwnas_jax.rmi._centred_gram: centred, scaled by a constant, X X^T.
        x = x.flatten(1)
        x = x - x.mean(0, keepdim=True)
        scale = x.abs().max().detach()
        x = x / torch.where(scale > 0, scale, torch.ones_like(scale))
        return x @ x.T

    ref_grams = [gram(nchw(r)) for r in batch['ref_features']]

    def loss_fn(net):
        logits, feats = net(images)
        ckas = []
        for k, f in zip(ref_grams, feats):
            g = gram(f)
            ckas.append(
                (k * g).sum()
                / (torch.sqrt((k * k).sum() + 1e-12) * torch.sqrt((g * g).sum() + 1e-12))
            )
        ckas = torch.stack(ckas)
        return 0.8 * (1 - ckas).sum() + 0.2 * F.cross_entropy(logits, labels), ckas

    return loss_fn


def torch_optimizer(net):
    """PyTorch's SGD as the proxy's: lr 0.1, momentum 0.9, weight decay 5e-4."""
    torch, _ = _torch_classes()
    return torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)


def torch_step(net, opt, loss_fn) -> None:
    opt.zero_grad(set_to_none=True)
    loss_fn(net)[0].backward()
    opt.step()


def torch_runner(genome, batch: dict, *, channels: int, cells: int, steps: int, seed: int = 0):
    """(0.0, run): `run()` builds a fresh TinyNetwork of `genome` and trains it as JAX does."""
    torch, tiny_network = _torch_classes()
    loss_fn = torch_loss_fn(batch)
    genome = tuple(int(g) for g in genome)

    def run():
        torch.manual_seed(seed)
        net = tiny_network(genome, channels, cells).train()
        opt = torch_optimizer(net)
        for _ in range(steps):
            torch_step(net, opt, loss_fn)
        with torch.no_grad():
            return loss_fn(net)[1].numpy()

    return 0.0, run


# -- timing ------------------------------------------------------------------------------------


def interleaved(runs: dict, rounds: int) -> dict:
    """{name: [seconds per call]}: `rounds` rounds, each calling every run once, in turn."""
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    return times


def at_once(run, workers: int):
    """`run` as `workers` calls at once from as many threads (the scorers' proxy.workers)."""
    if workers == 1:
        return run

    def together():
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            return [f.result() for f in [pool.submit(run) for _ in range(workers)]]

    return together


def setup_threads(threads: int) -> int:
    """Pins the process to `threads` cores (0: keep all); returns the core count in use."""
    cores = sorted(os.sched_getaffinity(0))
    if 0 < threads < len(cores):
        os.sched_setaffinity(0, cores[:threads])
        cores = cores[:threads]
    return len(cores)


def main(argv):
    del argv
    threads = setup_threads(FLAGS.threads)  # Before JAX's CPU client starts.
    import jax

    from hwnas_jax.spaces import nb201_net

    cases = []
    for case in FLAGS.cases:
        strategy, impl, *rest = case.split(':') + ['xla_cpu'][case.count(':') :]
        workers = [int(r[1:]) for r in rest if re.fullmatch(r'w[1-9][0-9]*', r)]
        layouts = [r for r in rest if not re.fullmatch(r'w[1-9][0-9]*', r)]
        if (
            strategy not in STRATEGIES
            or impl not in nb201_net.CONV_IMPLS
            or len(workers) > 1
            or len(layouts) > 1
            or not set(layouts) <= {'scan', 'unrolled'}
        ):
            raise app.UsageError(
                f'bad case {case}; strategy:conv_impl[:scan][:wN], strategies '
                f'{STRATEGIES}, conv_impls {nb201_net.CONV_IMPLS}'
            )
        cases.append((strategy, impl, layouts == ['scan'], (workers or [1])[0]))
    use_torch = FLAGS.torch and torch_available()
    if FLAGS.torch and not use_torch:
        logging.warning('--torch: PyTorch is not installed; timing JAX only')
    if use_torch:
        import torch

        torch.set_num_threads(threads)
    options = parse_options(FLAGS.xla_options)
    indices = [int(i) for i in FLAGS.indices]
    batch = make_batch(FLAGS.channels, FLAGS.batch, FLAGS.seed)
    size = dict(channels=FLAGS.channels, cells=FLAGS.cells, steps=FLAGS.steps)
    logging.info('JAX %s on %s, %d threads', jax.__version__, jax.devices(), threads)

    runs, meta, cache = {}, {}, {}
    for index in indices:
        genome = nb201.from_index(index)
        for (strategy, impl, scan, workers), case in zip(cases, FLAGS.cases):
            compile_s, run = jax_runner(
                strategy,
                impl,
                genome,
                batch,
                **size,
                population=FLAGS.population,
                seed=FLAGS.seed,
                compiler_options=options,
                cache=cache,
                scan_cells=scan,
            )
            members = (1 if strategy == 'exact' else FLAGS.population) * workers
            name = (index, case)
            runs[name], meta[name] = (
                at_once(run, workers),
                dict(
                    strategy=strategy,
                    conv_impl=impl,
                    workers=workers,
                    members=members,
                    compile_s=compile_s,
                    compiled_per='architecture' if strategy == 'exact' else 'search',
                ),
            )
        if use_torch:
            name = (index, 'torch')
            runs[name] = torch_runner(genome, batch, **size, seed=FLAGS.seed)[1]
            meta[name] = dict(
                strategy='torch',
                conv_impl='torch',
                workers=1,
                members=1,
                compile_s=0.0,
                compiled_per='none',
            )
    first = {}
    for name, run in runs.items():  # Every case once before timing (warm-up).
        t0 = time.perf_counter()
        out = run()
        first[name] = time.perf_counter() - t0
        meta[name]['finite'] = bool(
            all(np.isfinite(np.asarray(o)).all() for o in jax.tree.leaves(out))
        )
    times = interleaved(runs, FLAGS.rounds)

    device = jax.devices()[0]
    with open(FLAGS.out, 'w') if FLAGS.out else contextlib.nullcontext() as out:
        for (index, case), m in meta.items():
            genome = nb201.from_index(index)
            macs = float(nb201_costs.flops(genome, 10, FLAGS.channels, FLAGS.cells))  # M mult-adds.
            run_s = float(np.median(times[index, case]))
            step_s = run_s / (m['members'] * FLAGS.steps)
            # A training step is about 3 forward passes (forward, input and weight gradients);
            # 2 FLOPs per multiply-add.
            train_gflop = 3 * 2 * macs * FLAGS.batch / 1e3
            line = dict(
                index=index,
                genome=list(genome),
                arch=nb201.to_arch_str(genome),
                case=case,
                **m,
                population=m['members'],
                steps=FLAGS.steps,
                rounds=FLAGS.rounds,
                first_call_s=first[index, case],
                run_s=run_s,
                run_s_each=[round(t, 3) for t in times[index, case]],
                member_step_s=step_s,
                images_per_s=FLAGS.batch / step_s,
                mflops=macs,
                train_gflop_per_step=train_gflop,
                gflops_per_s=train_gflop / step_s,
                threads=threads,
                channels=FLAGS.channels,
                cells=FLAGS.cells,
                batch=FLAGS.batch,
                backend='torch-cpu' if case == 'torch' else jax.default_backend(),
                device_kind=device.device_kind,
                xla_options=FLAGS.xla_options,
                load_avg_1m=round(os.getloadavg()[0], 2),
            )
            line['member_step_s_best'] = min(times[index, case]) / (m['members'] * FLAGS.steps)
            if use_torch:
                torch_t = np.asarray(times[index, 'torch']) / FLAGS.steps
                mine = np.asarray(times[index, case]) / (m['members'] * FLAGS.steps)
                line['speedup_vs_torch'] = float(np.median(torch_t)) / step_s
                # Less sensitive to load swings than the ratio of medians: the median of the
                # ratios of calls made one after the other, and the ratio of the best calls.
                line['speedup_vs_torch_paired'] = float(np.median(torch_t / mine))
                line['speedup_vs_torch_best'] = float(torch_t.min() / mine.min())
            text = json.dumps(
                {k: round(v, 4) if isinstance(v, float) else v for k, v in line.items()}
            )
            print(text, flush=True)
            if out is not None:
                out.write(text + '\n')


if __name__ == '__main__':
    define_flags()
    app.run(main)
