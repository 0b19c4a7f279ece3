"""CPU speed levers of the proxy, each timed against its baseline in one process, interleaved.

Run:
  python benchmarks/levers.py --part=peak            # matmul FLOP/s: the CPU's usable peak
  python benchmarks/levers.py --part=conv            # one 3x3 conv layer: formulations, layout
  python benchmarks/levers.py --part=flags --index=1462 --steps=3 --rounds=3   # XLA:CPU options
  python benchmarks/levers.py --part=impls --index=1462   # xla vs im2col vs xla_cpu, network
Expect: JSON lines, each with `ratio` = baseline seconds / this lever's seconds (> 1: faster),
  medians over --rounds interleaved calls (A, B, A, B, ...). Measured figures and the commands
  are in benchmarks/README.md. --threads pins the process to that many cores (0: all).

Parts:
  peak   a [n, n] x [n, n] float32 matmul in JAX (and PyTorch where installed): the best of
         --rounds calls, as GFLOP/s (2 n^3 FLOPs); the peak the MFU figures are relative to.
  conv   a 3x3 convolution of [32, 32, 32, 16] (NAS-Bench-201's first stage), forward and both
         gradients inside a 4-step scan (as in training): 'xla_cpu' (the baseline), XLA's own
         autodiff, im2col by slices, im2col by `conv_general_dilated_patches`, 9 shifted
         matmuls, NCHW layout; and the matmul precision of im2col (XLA:CPU computes float32
         whatever the setting). PyTorch's conv2d where installed.
  flags  the exact network of --index with conv_impl 'xla_cpu', compiled with each XLA:CPU
         option set of FLAG_SETS (the baseline: none).
  impls  the exact network of --index with each conv_impl (the baseline: 'xla_cpu').
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import proxy_bench  # noqa: E402

from hwnas_jax.spaces import nb201  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum('part', 'peak', ['peak', 'conv', 'flags', 'impls'], 'Which levers.')
flags.DEFINE_integer('index', 1462, 'NAS-Bench-201 index of the network (flags, impls).')
flags.DEFINE_integer('steps', 3, 'SGD steps per timed call (flags, impls).')
flags.DEFINE_integer('rounds', 5, 'Interleaved timed calls per lever.')
flags.DEFINE_integer('threads', 0, 'Cores (0: all this process may use).')
flags.DEFINE_integer('size', 2048, 'n of the peak matmul.')
flags.DEFINE_list('flag_sets', [], 'Names of FLAG_SETS for --part=flags (default: all).')
flags.DEFINE_list(
    'impls',
    ['xla_cpu', 'im2col', 'xla'],
    'conv_impls of --part=impls (the '
    "first is the baseline; 'xla' takes ~30 s per step at full size).",
)

_LIB = 'LIBRARY_FUSION_TYPE_'
# XLA:CPU options of jaxlib 0.10 (DebugOptions), each set compiled apart.
FLAG_SETS = {
    'default': {},
    'xnnpack': {'xla_cpu_use_xnnpack': True},
    'onednn': {'xla_cpu_use_onednn': True, 'xla_cpu_experimental_onednn_custom_call': True},
    'ynn_off': {'xla_cpu_experimental_ynn_fusion_type': ''},
    # The list replaces the default (which has YNNPACK's dots and convolutions).
    'ynn_conv_only': {'xla_cpu_experimental_ynn_fusion_type': _LIB + 'INDIVIDUAL_CONVOLUTION'},
    'ynn_all': {
        'xla_cpu_experimental_ynn_fusion_type': ','.join(
            _LIB + t
            for t in ('INDIVIDUAL_CONVOLUTION', 'INDIVIDUAL_DOT', 'DOT', 'ELTWISE', 'REDUCE')
        )
    },
    'ynn_conv_dot_reduce': {
        'xla_cpu_experimental_ynn_fusion_type': ','.join(
            _LIB + t for t in ('INDIVIDUAL_CONVOLUTION', 'INDIVIDUAL_DOT', 'REDUCE')
        )
    },
    'vector_512': {'xla_cpu_prefer_vector_width': 512},
    'fast_math': {'xla_cpu_enable_fast_math': True},
    'no_multi_thread_eigen': {'xla_cpu_multi_thread_eigen': False},
}


def write(**record) -> None:
    print(
        json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in record.items()}),
        flush=True,
    )


def report(part: str, times: dict, baseline: str, **extra) -> None:
    base = float(np.median(times[baseline]))
    for name, t in times.items():
        write(
            part=part,
            lever=name,
            baseline=baseline,
            seconds=float(np.median(t)),
            seconds_each=[round(x, 4) for x in t],
            ratio=base / float(np.median(t)),
            load_avg_1m=round(os.getloadavg()[0], 2),
            **extra,
        )


def part_peak(threads: int) -> None:
    import jax
    import jax.numpy as jnp

    n = FLAGS.size
    rng = np.random.default_rng(0)
    a, b = (rng.random((n, n), dtype=np.float32) for _ in range(2))
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    matmul = jax.jit(jnp.matmul)
    runs = {'jax': lambda: matmul(ja, jb).block_until_ready()}
    if proxy_bench.torch_available():
        import torch

        torch.set_num_threads(threads)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        runs['torch'] = lambda: ta @ tb
    for run in runs.values():
        run()
    times = proxy_bench.interleaved(runs, FLAGS.rounds)
    for name, t in times.items():
        write(
            part='peak',
            lever=name,
            n=n,
            threads=threads,
            best_s=min(t),
            gflops_per_s=2 * n**3 / min(t) / 1e9,
            median_gflops_per_s=2 * n**3 / float(np.median(t)) / 1e9,
            load_avg_1m=round(os.getloadavg()[0], 2),
        )


def part_conv(threads: int) -> None:
    import functools

    import jax
    import jax.numpy as jnp
    from jax import lax

    from hwnas_jax.spaces import nb201_conv

    b, h, c, steps = 32, 32, 16, 4
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(b, h, h, c)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, c, c)) * 0.1, jnp.float32)

    def patches(x, w):
        p = lax.conv_general_dilated_patches(
            x, (3, 3), (1, 1), ((1, 1), (1, 1)), dimension_numbers=('NHWC', 'HWIO', 'NHWC')
        )
        return p @ jnp.transpose(w, (2, 0, 1, 3)).reshape(9 * c, c)  # Patches are (c, dy, dx).

    def taps(x, w):
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        return sum(xp[:, i : i + h, j : j + h, :] @ w[i, j] for i in range(3) for j in range(3))

    def nchw(x, w):
        y = lax.conv_general_dilated(
            jnp.transpose(x, (0, 3, 1, 2)),
            w,
            (1, 1),
            ((1, 1), (1, 1)),
            dimension_numbers=('NCHW', 'HWIO', 'NCHW'),
        )
        return jnp.transpose(y, (0, 2, 3, 1))

    def im2col_precision(precision):
        def f(x, w):
            with jax.default_matmul_precision(precision):
                return nb201_conv._conv(x, w, 1, 1, 'im2col')

        return f

    forms = {
        'xla_cpu': functools.partial(nb201_conv._conv, stride=1, padding=1, impl='xla_cpu'),
        'xla_autodiff': functools.partial(nb201_conv._conv, stride=1, padding=1, impl='xla'),
        'im2col_slices': functools.partial(nb201_conv._conv, stride=1, padding=1, impl='im2col'),
        'im2col_patches_op': patches,
        'shifted_matmuls': taps,
        'nchw_autodiff': nchw,
        'im2col_bf16_precision': im2col_precision('bfloat16'),
        'im2col_float32_precision': im2col_precision('float32'),
    }

    def training(conv):
        def fn(x, w):
            def step(w, _):
                g = jax.grad(lambda w: jnp.sum(jnp.sin(conv(jax.nn.relu(x), w))))(w)
                return w - 1e-3 * g, None

            return lax.scan(step, w, None, length=steps)[0]

        return jax.jit(fn).lower(x, w).compile()

    compiled = {name: training(f) for name, f in forms.items()}
    runs = {
        name: functools.partial(lambda c: c(x, w).block_until_ready(), c)
        for name, c in compiled.items()
    }
    if proxy_bench.torch_available():
        import torch

        torch.set_num_threads(threads)
        tx = torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(x), -1, 1)))
        tw = torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(w), (3, 2, 0, 1))))

        def torch_run():
            wt = tw.clone().requires_grad_(True)
            for _ in range(steps):
                wt.grad = None
                torch.nn.functional.conv2d(tx.relu(), wt, padding=1).sin().sum().backward()
                with torch.no_grad():
                    wt -= 1e-3 * wt.grad

        runs['torch'] = torch_run
    for run in runs.values():
        run()
    times = proxy_bench.interleaved(runs, FLAGS.rounds)
    report('conv', times, 'xla_cpu', shape=[b, h, h, c], steps=steps, threads=threads)


def part_network(threads: int, variants: dict, baseline: str) -> None:
    """variants: name -> (conv_impl, compiler options), exact network of --index."""
    genome = nb201.from_index(FLAGS.index)
    batch = proxy_bench.make_batch(16, 32, 0)
    runs, compile_s = {}, {}
    for name, (impl, options) in variants.items():
        compile_s[name], runs[name] = proxy_bench.jax_runner(
            'exact',
            impl,
            genome,
            batch,
            channels=16,
            cells=5,
            steps=FLAGS.steps,
            compiler_options=options,
        )
        runs[name]()
    times = proxy_bench.interleaved(runs, FLAGS.rounds)
    times = {k: [t / FLAGS.steps for t in v] for k, v in times.items()}  # Per step.
    report(
        FLAGS.part,
        times,
        baseline,
        index=FLAGS.index,
        steps=FLAGS.steps,
        threads=threads,
        compile_s={k: round(v, 1) for k, v in compile_s.items()},
        options={k: v[1] for k, v in variants.items()},
    )


def main(argv):
    del argv
    threads = proxy_bench.setup_threads(FLAGS.threads)
    if FLAGS.part == 'peak':
        part_peak(threads)
    elif FLAGS.part == 'conv':
        part_conv(threads)
    elif FLAGS.part == 'flags':
        names = ['default'] + [n for n in FLAGS.flag_sets or FLAG_SETS if n != 'default']
        part_network(threads, {k: ('xla_cpu', FLAG_SETS[k]) for k in names}, 'default')
    else:
        part_network(threads, {k: (k, {}) for k in FLAGS.impls}, FLAGS.impls[0])


if __name__ == '__main__':
    app.run(main)
