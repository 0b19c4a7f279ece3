"""Proxy engine speed: member-steps and images per second of each strategy, with compile apart.

Run:
  python benchmarks/proxy_bench.py      # C=16, N=5: exact, loop, torch; ~5 min on 2 CPU cores
  python benchmarks/proxy_bench.py --strategies exact:im2col,loop:im2col
  python benchmarks/proxy_bench.py --channels 4 --cells 1 --steps 1 --population 2 --notorch
Expect: one JSON line per case on stdout (see benchmarks/README.md for the fields and the
  figures measured so far); the baseline is the sequential exact-network loop ('exact', one
  compiled network per architecture), always run first in the same process so that every
  ratio compares runs under the same machine load.

Every case trains distinct NAS-Bench-201 architectures spread over the space's FLOPs (the same
ones for the same count; see `make_genomes`) on one random batch with the engine's real training function (`proxy.Engine.score`:
fresh weights, --steps SGD steps of the RMI loss, final scoring pass), once to compile and once
more to time; the timed call therefore also holds the initialisation and the final scoring
pass, about one extra forward pass per member. Where PyTorch and xautodl are installed, the
'torch' case trains the same architectures the way the paper's code does: one candidate after
another, xautodl's TinyNetwork, SGD, the same loss. `search_s` estimates a whole search from
the measured figures: --search_archs distinct architectures of --search_steps steps each, with
one compilation per search ('vmap', 'loop') or per architecture ('exact'; 'torch': building).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time

from absl import app, flags, logging

# Runnable as a script from the repository root without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np

from hwnas_jax import proxy
from hwnas_jax.spaces import nb201

FLAGS = flags.FLAGS
flags.DEFINE_integer('channels', 16, 'C, the first stage width (16: NAS-Bench-201).')
flags.DEFINE_integer('cells', 5, 'N, cells per stage (5: NAS-Bench-201).')
flags.DEFINE_integer('batch', 32, 'Images in the one training batch (32x32x3).')
flags.DEFINE_integer('steps', 3, 'SGD steps per member in each timed call.')
flags.DEFINE_list('population', ['2'], 'Members per compiled call of vmap and loop.')
flags.DEFINE_list('strategies', ['exact', 'loop'],
                  'Cases, strategy[:conv_impl] (conv_impl xla unless given), e.g. vmap,'
                  'vmap:im2col (each takes 10+ minutes at full size on a CPU); exact always '
                  'runs first as the baseline.')
flags.DEFINE_integer('archs', 2, 'Distinct architectures the exact baseline and torch train '
                     '(exact compiles each).')
flags.DEFINE_bool('torch', True, 'Also time the PyTorch + xautodl way (skipped if missing).')
flags.DEFINE_integer('search_archs', 500, 'Distinct architectures of the estimated search.')
flags.DEFINE_integer('search_steps', 100, 'Steps per architecture of the estimated search.')
flags.DEFINE_integer('seed', 0, 'Seed of the architectures and the batch.')
flags.DEFINE_string('out', '', 'Also write the JSON lines to this file (overwritten).')


def make_genomes(n: int, seed: int) -> np.ndarray:
    """n distinct canonical genomes spread over the space's FLOPs: int64 [n, 6].

    The (i + 1/2) / n quantiles by FLOPs of 2000 random canonical genomes whose cell output is
    not identically zero, so that the per-architecture costs ('exact', 'loop', 'torch') are
    representative whatever n is (the first genomes drawn may well have no conv at all).
    """
    rng = np.random.default_rng(seed)
    pool = np.unique([nb201.canonical(g) for g in nb201.random_genomes(rng, 2000)], axis=0)
    pool = pool[pool.any(axis=1)]
    pool = pool[np.argsort(nb201.flops(pool), kind='stable')]
    return pool[((np.arange(n) + 0.5) * len(pool) / n).astype(int)]


def make_batch(channels: int, batch: int, seed: int) -> dict:
    """A random batch and random reference features of the three tapped layers' shapes."""
    rng = np.random.default_rng([seed, 1])
    shapes = [(32, channels), (16, 2 * channels), (8, 4 * channels)]
    return {'images': rng.normal(size=(batch, 32, 32, 3)).astype(np.float32),
            'labels': rng.integers(0, 10, batch).astype(np.int32),
            'ref_features': [rng.normal(size=(batch, s, s, c)).astype(np.float32)
                             for s, c in shapes]}


def record(case: dict, baseline: dict | None, out) -> dict:
    """Completes a case with rates, ratios and the search estimate; prints its JSON line."""
    steps = case['members'] * case['steps']
    case['member_step_s'] = case['run_s'] / steps
    genomes = np.asarray(case.pop('genomes'))
    case['mflops'] = float(np.mean(nb201.flops(genomes, 10, FLAGS.channels, FLAGS.cells)))
    case['member_steps_per_s'] = steps / case['run_s']
    case['images_per_s'] = steps * FLAGS.batch / case['run_s']
    per_arch = case.get('compile_s_per_arch', 0.0)
    once = case.get('compile_once_s', 0.0) if 'compile_s_per_arch' in case else case['compile_s']
    case['search_s'] = once + FLAGS.search_archs * (
        per_arch + FLAGS.search_steps * case['member_step_s'])
    base = baseline or case
    case['ratio_vs_baseline'] = case['member_steps_per_s'] / base['member_steps_per_s']
    case['search_ratio_vs_baseline'] = base['search_s'] / case['search_s']
    case.update(genomes=genomes.tolist(), channels=FLAGS.channels, cells=FLAGS.cells, batch=FLAGS.batch,
                search_archs=FLAGS.search_archs, search_steps=FLAGS.search_steps,
                load_avg_1m=round(os.getloadavg()[0], 2))
    line = json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in case.items()})
    print(line, flush=True)
    if out is not None:
        out.write(line + '\n')
        out.flush()
    return case


def jax_case(strategy: str, conv_impl: str, genomes: np.ndarray, batch: dict) -> dict:
    """Compiles and times one engine on `genomes` (all members in one call for vmap/loop)."""
    kwargs = {'channels': FLAGS.channels, 'cells_per_stage': FLAGS.cells, 'num_classes': 10}
    if strategy == 'exact':
        kwargs['conv_impl'] = conv_impl  # Engine's conv_impl reaches the population form only.
    n = len(genomes)
    engine = proxy.Engine(nb201, kwargs, batch, proxy.Settings(steps=FLAGS.steps),
                          strategy=strategy, chunk_size=n, population=n, seed=FLAGS.seed,
                          conv_impl=conv_impl)
    each = []
    t0 = time.perf_counter()
    for g in genomes if strategy == 'exact' else [genomes]:
        before = engine.compile_seconds
        engine.score(np.reshape(g, (-1, 6)))
        each.append(engine.compile_seconds - before)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = engine.score(genomes)['score']
    run = time.perf_counter() - t0
    device = jax.devices()[0]
    case = {'strategy': engine.strategy, 'conv_impl': conv_impl,
            'population': 1 if strategy == 'exact' else n, 'members': n, 'steps': FLAGS.steps,
            'compile_s': engine.compile_seconds, 'first_call_s': first, 'run_s': run,
            'backend': jax.default_backend(), 'device_kind': device.device_kind,
            'finite': bool(np.isfinite(scores).all()), 'genomes': genomes}
    if strategy == 'exact':
        # The first architecture also compiles the engine's initialiser (once per search).
        per_arch = float(np.mean(each[1:])) if n > 1 else each[0]
        case.update(compile_once_s=each[0] - per_arch if n > 1 else 0.0,
                    compile_s_per_arch=per_arch, compile_s_each=[round(c, 2) for c in each])
    return case


def torch_case(genomes: np.ndarray, batch: dict) -> dict | None:
    """The paper's way: PyTorch, xautodl's TinyNetwork, one candidate after another."""
    try:
        import torch
        import torch.nn.functional as F
        from xautodl.config_utils import dict2config
        from xautodl.models import get_cell_based_tiny_net
    except ImportError as e:
        logging.warning('torch case skipped: %s', e)
        return None

    def nchw(a):
        return torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, -1, 1)))

    images, labels = nchw(batch['images']), torch.from_numpy(batch['labels']).long()
    refs = [nchw(r) for r in batch['ref_features']]
    n = FLAGS.cells

    def gram(x):  # Centred linear Gram matrix, as rmi._centred_gram.
        x = x.flatten(1)
        x = x - x.mean(0, keepdim=True)
        return x @ x.T

    ref_grams = [gram(r) for r in refs]

    def cka(k, x):
        l = gram(x)
        return (k * l).sum() / (k.norm() * l.norm() + 1e-12)

    def forward(net):
        feats, h = [], net.stem(images)
        for i, cell in enumerate(net.cells):
            h = cell(h)
            if i in (n - 1, 2 * n):
                feats.append(h)
        h = net.lastact(h)
        feats.append(h)
        logits = net.classifier(net.global_pooling(h).flatten(1))
        ckas = torch.stack([cka(k, f) for k, f in zip(ref_grams, feats)])
        return ckas, 0.8 * (1 - ckas).sum() + 0.2 * F.cross_entropy(logits, labels)

    torch.manual_seed(FLAGS.seed)
    build = run = 0.0
    for g in genomes:
        t0 = time.perf_counter()
        cfg = dict2config({'name': 'infer.tiny', 'C': FLAGS.channels, 'N': n,
                           'arch_str': nb201.to_arch_str(g), 'num_classes': 10}, None)
        net = get_cell_based_tiny_net(cfg).train()
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        t1 = time.perf_counter()
        for _ in range(FLAGS.steps):
            opt.zero_grad(set_to_none=True)
            forward(net)[1].backward()
            opt.step()
        with torch.no_grad():
            forward(net)
        build += t1 - t0
        run += time.perf_counter() - t1
    return {'strategy': 'torch', 'conv_impl': 'torch', 'population': 1, 'members': len(genomes),
            'steps': FLAGS.steps, 'compile_s': build, 'compile_s_per_arch': build / len(genomes),
            'run_s': run, 'backend': 'torch-cpu',
            'device_kind': f'{torch.get_num_threads()} threads', 'genomes': genomes}


def main(argv):
    del argv
    pops = sorted({int(p) for p in FLAGS.population})
    cases = [tuple((s.split(':') + ['xla'])[:2]) for s in FLAGS.strategies]
    for strategy, impl in cases:
        if strategy not in proxy.STRATEGIES or impl not in nb201.CONV_IMPLS:
            raise app.UsageError(f'bad case {strategy}:{impl}; strategies {proxy.STRATEGIES}, '
                                 f'conv_impls {nb201.CONV_IMPLS}')
    batch = make_batch(FLAGS.channels, FLAGS.batch, FLAGS.seed)
    logging.info('JAX %s on %s', jax.__version__, jax.devices())
    with open(FLAGS.out, 'w') if FLAGS.out else contextlib.nullcontext() as out:
        exact = make_genomes(FLAGS.archs, FLAGS.seed)
        baseline = record(jax_case('exact', 'xla', exact, batch), None, out)
        for strategy, impl in cases:
            if strategy == 'exact' and impl == 'xla':
                continue  # The baseline, already printed.
            n = FLAGS.archs if strategy == 'exact' else None
            for p in [n] if n else pops:
                record(jax_case(strategy, impl, make_genomes(p, FLAGS.seed), batch), baseline,
                       out)
        if FLAGS.torch:
            case = torch_case(exact, batch)
            if case is not None:
                record(case, baseline, out)


if __name__ == '__main__':
    app.run(main)
