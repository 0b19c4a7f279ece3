"""GPU check, the Python part of benchmarks/gpu_check.sh: proxy strategies, then the main job.

Run:
  python benchmarks/gpu_check.py --part=strategies --budget=240   # on the GPU, full size
  python benchmarks/gpu_check.py --part=main --budget=240 --workdir=/tmp/gpu_main
  python benchmarks/gpu_check.py --part=all --tiny                # CPU, ~2 min: checks the code
Expect: JSON lines on stdout and appended to --out: one per strategy case ('vmap', 'loop',
  'exact' at populations 1/8/20/40, C=16, N=5, batch 32, 100 SGD steps) with `member_step_s`,
  `compile_s`, `mfu` and `peak_gpu_bytes`; then one per generation of the main job
  (`python launch.py --config configs/nb201_latency.py --config.ga.generations=3`) and a summary
  line with the seconds per generation, its MFU and the job's peak GPU memory. A case that
  would start after the --budget seconds is written as skipped, so the part ends in time.

FLOPs and MFU. A training step of one member costs 3 forward passes (forward, input gradient,
weight gradient) of 2 FLOPs per multiply-add: `6 * MACs(genome) * batch`, with MACs the
NAS-Bench-201 count (`nb201_costs.flops`, M multiply-adds per image; 220 for the all-3x3 cell, 56 on
average). Only the chosen architecture's work counts ('vmap' executes every op of every edge:
its hardware FLOPs are higher than these useful ones). MFU = useful FLOP/s / peak, the peak the
dense TF32 tensor rate (JAX's default precision for float32 convolutions and matmuls on NVIDIA
GPUs uses TF32): H100 SXM and H200 494.7 TFLOP/s, H100 PCIe 378 TFLOP/s, A100 156 TFLOP/s
(`peak_tflops`; null on unknown devices). The float32 non-tensor rate of the H100 SXM and H200
is 66.9 TFLOP/s, for comparison.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app, flags

# Runnable as a script from the repository root without installing the package.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, 'benchmarks'))

import numpy as np  # noqa: E402

from hwnas_jax.spaces import nb201, nb201_costs  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum('part', 'all', ['strategies', 'main', 'all'], 'What to run.')
flags.DEFINE_bool(
    'tiny',
    False,
    'Tiny sizes (C=4, N=1, batch 8, 2 steps, populations 1 and 2; '
    'the main job is configs/smoke.py): a quick check of the code on a CPU.',
)
flags.DEFINE_integer(
    'budget',
    240,
    'Seconds for the part (each of the two with --part=all); '
    'cases that would start later are written as skipped.',
)
flags.DEFINE_list(
    'populations', ['20', '1', '8', '40'], 'vmap populations, in order of priority (the paper: 20).'
)
flags.DEFINE_integer('generations', 3, 'Generations of the main job.')
flags.DEFINE_string('workdir', '', 'Work directory of the main job (default: a temp dir).')
flags.DEFINE_string(
    'out', '', 'Append the JSON lines here too (default: $OUT/gpu_check.jsonl where OUT is set).'
)

# Dense TF32 tensor TFLOP/s by device kind (NVIDIA data sheets).
PEAK_TFLOPS = {'H200': 494.7, 'H100 PCIe': 378.0, 'H100 NVL': 417.5, 'H100': 494.7, 'A100': 156.0}


def peak_tflops(device_kind: str) -> float | None:
    for name, peak in PEAK_TFLOPS.items():  # Longest names first where they share a prefix.
        if name in device_kind:
            return peak
    return None


def train_flops(genomes, batch: int, steps: int, channels: int = 16, cells: int = 5) -> float:
    """Useful FLOPs of training `genomes` [P, 6]: 6 * MACs * batch per member-step."""
    macs = np.asarray(nb201_costs.flops(np.asarray(genomes), 10, channels, cells)) * 1e6
    return float(6 * macs.sum() * batch * steps)


class Writer:
    """Prints JSON lines and appends them to a file."""

    def __init__(self, path: str):
        self.path = path
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def __call__(self, **record) -> None:
        line = json.dumps(
            {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}
        )
        print(line, flush=True)
        if self.path:
            with open(self.path, 'a') as f:
                f.write(line + '\n')


def distinct_genomes(n: int, seed: int = 0) -> np.ndarray:
    """n distinct canonical genomes with at least one op, drawn with `seed`."""
    rng = np.random.default_rng(seed)
    pool = np.unique([nb201.canonical(g) for g in nb201.random_genomes(rng, 20 * n + 100)], axis=0)
    pool = pool[pool.any(axis=1)]
    return pool[rng.permutation(len(pool))[:n]]


def memory() -> dict:
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return {
        'peak_gpu_bytes': stats.get('peak_bytes_in_use'),
        'gpu_bytes_limit': stats.get('bytes_limit'),
    }


def run_strategies(write: Writer, budget: float) -> None:
    """vmap at each population, loop and exact per member: compile and one timed call each."""
    import jax
    import proxy_bench

    t_end = time.perf_counter() + budget
    size = (
        dict(channels=4, cells=1, steps=2) if FLAGS.tiny else dict(channels=16, cells=5, steps=100)
    )
    batch_size = 8 if FLAGS.tiny else 32
    batch = proxy_bench.make_batch(size['channels'], batch_size, 0)
    backend = jax.default_backend()
    kind = jax.devices()[0].device_kind
    peak = peak_tflops(kind)
    impl = 'xla_cpu' if backend == 'cpu' else 'xla'
    pops = [1, 2] if FLAGS.tiny else [int(p) for p in FLAGS.populations]
    # (strategy, population, scan_cells): the stage's cells unrolled (the default) or scanned.
    cases = [('vmap', pops[0], False), ('vmap', pops[0], True)]
    cases += [('loop', 1, False), ('exact', 1, False)] + [('vmap', p, False) for p in pops[1:]]
    cases += [('loop', p, False) for p in pops if p > 1]
    options = (
        {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}
        if FLAGS.tiny and backend == 'cpu'
        else {}
    )
    longest = 0.0  # The longest case so far: a case that may not end in time is skipped.
    for strategy, pop, scan in cases:
        left = t_end - time.perf_counter()
        record = dict(
            part='strategies',
            strategy=strategy,
            population=pop,
            scan_cells=scan,
            conv_impl=impl,
            batch=batch_size,
            backend=backend,
            device_kind=kind,
            **size,
        )
        if left < longest or left <= 0:
            write(**record, skipped=f'out of time ({left:.0f} s of the budget left)')
            continue
        genomes = distinct_genomes(pop)
        start = t0 = time.perf_counter()
        if strategy == 'exact':
            compile_s, run = proxy_bench.jax_runner(
                'exact', impl, genomes[0], batch, **size, compiler_options=options
            )
        else:
            compile_s, run = population_runner(
                strategy, impl, genomes, batch, size, options, scan_cells=scan
            )
        run()  # First call: transfers and warm-up.
        first_s = time.perf_counter() - t0 - compile_s
        t0 = time.perf_counter()
        out = run()
        run_s = time.perf_counter() - t0
        longest = max(longest, time.perf_counter() - start)
        flops = train_flops(genomes, batch_size, size['steps'], size['channels'], size['cells'])
        write(
            **record,
            compile_s=compile_s,
            first_call_s=first_s,
            run_s=run_s,
            member_step_s=run_s / (pop * size['steps']),
            train_tflop=flops / 1e12,
            tflops_per_s=flops / run_s / 1e12,
            peak_tflops=peak,
            mfu=None if peak is None else flops / run_s / (peak * 1e12),
            finite=bool(all(np.isfinite(np.asarray(o)).all() for o in jax.tree.leaves(out))),
            **memory(),
        )


def population_runner(strategy, impl, genomes, batch, size, options, scan_cells=False):
    """proxy_bench.jax_runner for a population of distinct genomes in one call."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh

    from hwnas_jax import proxy
    from hwnas_jax.spaces import nb201_net

    model = nb201_net.PopulationNetwork(
        channels=size['channels'],
        cells_per_stage=size['cells'],
        num_classes=10,
        conv_impl=impl,
        dispatch='switch' if strategy == 'loop' else 'select',
        scan_cells=scan_cells,
    )
    mesh = Mesh(np.asarray(jax.local_devices()), ('pop',))
    n = -(-len(genomes) // len(jax.local_devices())) * len(jax.local_devices())
    padded = np.concatenate([genomes, np.repeat(genomes[:1], n - len(genomes), axis=0)])
    args = (
        jnp.asarray(0, jnp.uint32),
        jnp.asarray(proxy.member_seeds(padded)),
        jnp.asarray(padded, jnp.int32),
        jnp.asarray(np.arange(n) < len(genomes)),
        jnp.asarray(batch['images']),
        jnp.asarray(batch['labels']),
        [jnp.asarray(r) for r in batch['ref_features']],
    )
    fn = proxy.population_program(model, proxy.Settings(steps=size['steps']), strategy, mesh)
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile(compiler_options=options)
    compile_s = time.perf_counter() - t0
    return compile_s, lambda: jax.block_until_ready(compiled(*args))


# Runs launch.py in a child process and saves the device memory statistics at its exit.
_MAIN_WRAPPER = """
import atexit, json, os, runpy, sys
def _save_memory():
    import jax
    stats = jax.devices()[0].memory_stats() or {}
    with open(os.environ["GPU_CHECK_MEMORY"], "w") as f:
        json.dump({k: v for k, v in stats.items() if isinstance(v, (int, float))}, f)
atexit.register(_save_memory)
sys.argv = ["launch.py"] + sys.argv[1:]
runpy.run_path("launch.py", run_name="__main__")
"""


def run_main(write: Writer, budget: float) -> None:
    """The main job for --generations generations; per-generation seconds, MFU, peak memory."""
    workdir = FLAGS.workdir or tempfile.mkdtemp(prefix='gpu_check_main_')
    config = 'configs/smoke.py' if FLAGS.tiny else 'configs/nb201_latency.py'
    mem_file = os.path.join(workdir, 'gpu_check_memory.json')
    os.makedirs(workdir, exist_ok=True)
    cmd = [
        sys.executable,
        '-c',
        _MAIN_WRAPPER,
        '--config',
        config,
        f'--config.ga.generations={FLAGS.generations}',
        '--workdir',
        workdir,
    ]
    env = dict(os.environ, GPU_CHECK_MEMORY=mem_file)
    t0 = time.perf_counter()
    try:
        res = subprocess.run(
            cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=budget, check=False
        )
        status, tail = res.returncode, res.stderr[-2000:]
    except subprocess.TimeoutExpired as e:
        status, tail = 'timeout', (e.stderr or b'')[-2000:]
        tail = tail.decode(errors='replace') if isinstance(tail, bytes) else tail
    wall = time.perf_counter() - t0
    import jax

    kind = jax.devices()[0].device_kind
    peak = peak_tflops(kind)
    summary = main_job_summary(workdir, peak)
    for rec in summary.pop('per_generation'):
        write(part='main', **rec)
    mem = {}
    if os.path.exists(mem_file):
        with open(mem_file) as f:
            mem = json.load(f)
    write(
        part='main',
        summary=True,
        config=config,
        workdir=workdir,
        status=status,
        wall_s=wall,
        device_kind=kind,
        peak_tflops=peak,
        peak_gpu_bytes=mem.get('peak_bytes_in_use'),
        gpu_bytes_limit=mem.get('bytes_limit'),
        **summary,
        **({} if status == 0 else {'stderr_tail': tail}),
    )


def main_job_summary(workdir: str, peak: float | None) -> dict:
    """Seconds and useful FLOPs per generation from the job's metrics.jsonl and scores.jsonl."""

    def lines(name):
        path = os.path.join(workdir, name)
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(x) for x in f if x.strip()]

    with open(os.path.join(workdir, 'config.json')) as f:
        config = json.load(f)
    size = dict(channels=config['space']['channels'], cells=config['space']['cells_per_stage'])
    batch, steps = config['proxy']['batch_size'], config['proxy']['steps']
    scores = lines('scores.jsonl')
    per_gen = []
    for m in lines('metrics.jsonl'):
        g = m['generation']
        new = [s['genome'] for s in scores if s['generation'] == g]
        flops = train_flops(new, batch, steps, **size) if new else 0.0
        per_gen.append(
            dict(
                generation=g,
                seconds=m['seconds'],
                compile_seconds=m['compile_seconds'],
                evaluations=m['evaluations'],
                train_tflop=flops / 1e12,
                tflops_per_s=flops / m['seconds'] / 1e12,
                mfu=None if peak is None else flops / m['seconds'] / (peak * 1e12),
            )
        )
    secs = [r['seconds'] for r in per_gen]
    flops = sum(r['train_tflop'] for r in per_gen) * 1e12
    return dict(
        generations=len(per_gen),
        per_generation=per_gen,
        seconds_per_generation=float(np.mean(secs)) if secs else None,
        compile_seconds=float(sum(r['compile_seconds'] for r in per_gen)),
        mfu=None if peak is None or not secs else flops / sum(secs) / (peak * 1e12),
    )


def main(argv):
    del argv
    out = FLAGS.out or (
        os.path.join(os.environ['OUT'], 'gpu_check.jsonl') if os.environ.get('OUT') else ''
    )
    write = Writer(out)
    if FLAGS.part == 'main':
        # No JAX in this process before the job: it would take the GPU's memory first (JAX
        # preallocates 75% of it at start). A child process asks for the backend.
        backend = subprocess.run(
            [sys.executable, '-c', 'import jax; print(jax.default_backend())'],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if backend != 'gpu' and not FLAGS.tiny:
            write(
                part='main',
                error=f'no GPU backend ({backend or "JAX failed"}): the main job '
                'is skipped (use --tiny on a CPU)',
            )
            return
        run_main(write, FLAGS.budget)
        return
    import jax

    write(
        part='devices',
        jax=jax.__version__,
        backend=jax.default_backend(),
        devices=[str(d) for d in jax.devices()],
        tiny=FLAGS.tiny,
    )
    if jax.default_backend() == 'cpu' and not FLAGS.tiny:
        write(
            part='devices', error='no GPU backend: full-size checks skipped (use --tiny on a CPU)'
        )
        return
    run_strategies(write, FLAGS.budget)
    if FLAGS.part == 'all':
        if jax.default_backend() != 'cpu':
            write(part='main', skipped='run --part=main in its own process on a GPU')
        else:
            run_main(write, FLAGS.budget)


if __name__ == '__main__':
    app.run(main)
