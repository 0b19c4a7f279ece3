"""How far float rounding moves the proxy's score: one ulp, two programs, two precisions.

Run:
  python benchmarks/rounding.py                                   # 3 cells, ~10 min on 2 cores
  python benchmarks/rounding.py --indices 12553 --float64         # + a float64 run, ~5 min more
  python benchmarks/rounding.py --channels 4 --cells 1 --steps 3 --float64   # seconds
Expect: one JSON line per architecture (stdout, and --out): `phi` at the steps in `at` for the
  exact network in float32; `ulp_shift` (the largest of two runs) how far phi moves when one
  initial weight (the stem's first) is nudged by one ulp up or down; `population` and `exact`:
  phi of the population network (what 'loop' and 'vmap' train) and of the exact network from
  the same initial weights, after 1 step and after --steps, in float32 and (--float64) float64.

What it shows (benchmarks/README.md has the figures): the 100 single-batch SGD steps of the
paper's proxy (learning rate 0.1, momentum 0.9) amplify rounding. Two programs that compute
the same function in a different floating-point order, as the population and exact networks
do, agree to the last bits in float64 after one step and still land apart after 100; a one-ulp
change of one initial weight does the same. Differences in phi of this size are noise, not
a bug. Everything runs on the search's own batch and reference (the packaged sample).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
AT = (1, 5, 10, 25, 50, 75)  # Steps at which phi is read from the trajectory (and the last).


def define_flags() -> None:
    """The command line's flags (defined when run as a script)."""
    flags.DEFINE_list('indices', ['12553', '1462', '6111'], 'NAS-Bench-201 indices.')
    flags.DEFINE_integer('channels', 16, 'Channels of the first stage (NAS-Bench-201: 16).')
    flags.DEFINE_integer('cells', 5, 'Cells per stage (NAS-Bench-201: 5).')
    flags.DEFINE_integer('steps', 100, 'SGD steps (the paper: 100).')
    flags.DEFINE_bool('float64', False, 'Also run both networks in float64 (slower).')
    flags.DEFINE_string('out', None, 'Also append the JSON lines to this file.')


def measure(index: int, channels: int, cells: int, steps: int, float64: bool) -> dict:
    """One architecture's record (see the module docstring)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from configs import nb201_latency
    from hwnas_jax.proxy import program
    from hwnas_jax.search import batch as batch_lib
    from hwnas_jax.spaces import nb201, nb201_net

    config = nb201_latency.get_config()
    with tempfile.TemporaryDirectory() as tmp:
        batch = batch_lib.load_or_make_batch(config, os.path.join(tmp, 'batch.npz'))
    genome = nb201.from_index(index)
    pop = nb201_net.PopulationNetwork(channels, cells, 10, conv_impl='xla_cpu', dispatch='switch')
    exact = nb201_net.Network(genome, channels, cells, 10, conv_impl='xla_cpu')
    g = jnp.asarray(genome, jnp.int32)
    images = np.asarray(batch['images'])
    variables = jax.jit(lambda: pop.init(jax.random.key(0), images[:2], g, train=False))()
    exact_vars = nb201_net.exact_variables(variables, genome)

    programs = {}

    def run(model, v, gen, n, dtype):
        cast = lambda t: jax.tree.map(lambda a: jnp.asarray(a, dtype), t)  # noqa: E731
        key = (gen is None, n)
        if key not in programs:
            member = program.make_member_fn(model, program.Settings(steps=n), trajectory=True)
            programs[key] = jax.jit(member)
        fn = programs[key]
        ref = [cast(r) for r in batch['ref_features']]
        args = (cast(v['params']), cast(v['batch_stats']), gen, cast(images))
        return fn(*args, jnp.asarray(batch['labels']), ref)

    at = [k for k in AT if k < steps]
    record = {'index': index, 'genome': list(genome), 'steps': steps, 'at': [*at, steps]}

    def phi_at(out):  # phi after each step of `at` (from the trajectory), then the final one.
        trajectory = np.asarray(out[3]).sum(-1)
        return np.array([trajectory[k] for k in at] + [float(out[0])])

    phi = phi_at(run(exact, exact_vars, None, steps, jnp.float32))
    record['phi'] = phi.round(6).tolist()
    shifts = []
    for direction in (np.inf, -np.inf):
        params = jax.tree.map(lambda a: a, exact_vars['params'])
        kernel = params['stem_conv']['kernel']
        params['stem_conv']['kernel'] = kernel.at[0, 0, 0, 0].set(
            jnp.nextafter(kernel[0, 0, 0, 0], direction)
        )
        nudged = phi_at(run(exact, {**exact_vars, 'params': params}, None, steps, jnp.float32))
        shifts.append(np.abs(nudged - phi))
    record['ulp_shift'] = np.max(shifts, axis=0).round(6).tolist()
    dtypes = [('float32', jnp.float32)]
    if float64:
        dtypes.append(('float64', jnp.float64))
    for name, dtype in dtypes:
        with jax.enable_x64(dtype == jnp.float64):
            for n in sorted({1, steps}):
                key = f'{name}_{n}_step' + ('s' if n > 1 else '')
                p = float(run(pop, variables, g, n, dtype)[0])
                e = float(run(exact, exact_vars, None, n, dtype)[0])
                record[key] = {'population': p, 'exact': e, 'difference': abs(p - e)}
    return record


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    for index in FLAGS.indices:
        record = measure(int(index), FLAGS.channels, FLAGS.cells, FLAGS.steps, FLAGS.float64)
        line = json.dumps(record)
        print(line, flush=True)
        if FLAGS.out:
            with open(FLAGS.out, 'a') as f:
                f.write(line + '\n')


if __name__ == '__main__':
    define_flags()
    app.run(main)
