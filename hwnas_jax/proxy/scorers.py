"""Scorers: train and score populations of genomes on the one batch, one class per strategy.

  vmap   the population network (same parameter shapes for every genome; the genome is an
         array input) vmapped over the members of a call: best where batched convolutions are
         fast (GPU/TPU). One compiled program per search.
  loop   the same population network, members one after another inside one compiled `lax.map`,
         each running only its chosen ops: best on CPUs, still one compilation per search.
  exact  one exact network per architecture, compiled per architecture: the baseline (and the
         PyTorch way); each new architecture pays its own compilation.
  auto   what the space prefers on the backend (:meth:`Space.auto_strategy`): 'vmap' on
         GPU/TPU; on CPU 'loop' for NAS-Bench-201 and 'exact' for OFA.

All share :meth:`Scorer.score` and :meth:`Scorer.score_chunks`. Members are padded to a fixed
call size (`proxy.chunk_size`; by default one member per device on CPU, where batching members
gains nothing and a short call keeps progress lines and Ctrl-C prompt, and the population size
elsewhere) so that no generation recompiles; the member axis is sharded over all local devices
(`shard_map` over a 1-D mesh). Compiles and compiled calls run through
:mod:`hwnas_jax.background`: a heartbeat every 30 s, and Ctrl-C stops at once.

Workers (`proxy.workers`): 'vmap' and 'loop' may run several calls of the one compiled program
at once, from threads (XLA runs them side by side, without the GIL). On a CPU, where a member's
small convolutions keep two threads only partly busy, 'loop' runs one call per core by default:
1.4x the members per second on 2 cores, with bit-identical outputs (the same program on the
same inputs; `benchmarks/README.md`). One process only: with several, every process must issue
the same calls in the same order.

Several processes (:mod:`hwnas_jax.distributed`): 'vmap' and 'loop' shard the member axis over
every process's devices (the call size a multiple of the global device count). Every process
holds the same host genomes and batch, builds its part of the global input arrays from them,
and receives every member's outputs (an all-gather), so all processes see every score. 'exact'
runs in one process only.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from hwnas_jax import background, compile_log, distributed
from hwnas_jax.errors import UserError
from hwnas_jax.proxy import program

STRATEGIES = ('auto', 'vmap', 'loop', 'exact')
OUTPUTS = ('score', 'loss', 'ckas')


class Scorer:
    """Scores genomes [n, G] of one space on one batch (use canonical genomes)."""

    strategy: str
    workers = 1  # Calls run side by side (PopulationScorer: proxy.workers).

    def __init__(
        self, space, batch: dict, settings: program.Settings, *, seed: int = 0, devices=None
    ):
        self.space = space
        self.settings = settings
        self.seed = int(seed)
        self.devices = list(devices or distributed.devices())
        self.backend = self.devices[0].platform
        self.compile_seconds = 0.0
        # Progress: called with ('compiling' | 'training', seconds elapsed) every second.
        self.heartbeat: Callable[[str, float], None] | None = None
        self._images = self._put(batch['images'], np.float32)
        self._labels = self._put(batch['labels'], np.int32)
        self._ref = [self._put(f, np.float32) for f in batch['ref_features']]
        # The population network also gives every strategy its initial weights.
        self._pop_model = space.population_network(strategy=self.strategy, backend=self.backend)

    def _put(self, x, dtype) -> jax.Array:
        """A batch array on the devices (the default device here)."""
        return jnp.asarray(x, dtype)

    def _run(self, doing: str, fn):
        beat = None if self.heartbeat is None else functools.partial(self.heartbeat, doing)
        # Every second: the heartbeat itself prints when 30 s have passed since the last line.
        return background.call(fn, heartbeat=beat, every=1.0)

    def _compile(self, what: str, key: str, fn, args):
        """Builds a compiled program off the main thread, with a notice first.

        `fn` builds it: called with `args`, it returns the compiled callable.
        """
        logging.info('Compiling %s: %s', what, compile_log.expectation(key))
        t0 = time.perf_counter()
        compiled = self._run('compiling', lambda: fn(*args))
        seconds = time.perf_counter() - t0
        self.compile_seconds += seconds
        compile_log.record(key, seconds)
        logging.info('Compiled in %.1f s', seconds)
        return compiled

    def describe_networks(self) -> str:
        """The population network's constructor arguments, as text (for score fingerprints)."""
        return repr(self._pop_model)

    def score(self, genomes) -> dict:
        """Trains and scores `genomes` [n, G]; returns numpy arrays.

        Returns:
          dict with 'score' [n] (RMI score, sum of CKA), 'loss' [n] (final mixed loss) and
          'ckas' [n, L]; non-finite values are kept (the search maps them to -inf fitness).
        """
        outs = [out for _, out in self.score_chunks(genomes)]
        return {k: np.concatenate([o[k] for o in outs]) for k in OUTPUTS}

    def score_chunks(self, genomes) -> Iterator[tuple[slice, dict]]:
        """Scores `genomes` [n, G] call by call, yielding `(rows, result)` after each call
        (after each group of calls run together, with several workers: their rows as one).

        `result` holds 'score', 'loss' and 'ckas' of `genomes[rows]`, as in :meth:`score`; a
        caller saves each result as it comes, so an interrupted search loses at most one result.
        """
        genomes = np.asarray(genomes, np.int64)
        if genomes.ndim != 2 or len(genomes) == 0:
            raise UserError(f'score needs genomes of shape [n, genes], got {genomes.shape}')
        calls = self._calls(len(genomes))
        for i in range(0, len(calls), self.workers):
            group = calls[i : i + self.workers]
            out = self._score_group(genomes, group)
            yield slice(group[0].start, group[-1].stop), dict(zip(OUTPUTS, out))

    def _score_group(self, genomes: np.ndarray, group: list[slice]) -> tuple[np.ndarray, ...]:
        """The outputs of the calls `group` (consecutive rows of `genomes`), concatenated."""
        (rows,) = group
        return self._score_call(genomes[rows])

    def _calls(self, n: int) -> list[slice]:
        raise NotImplementedError

    def _score_call(self, genomes: np.ndarray) -> tuple[np.ndarray, ...]:
        raise NotImplementedError


class PopulationScorer(Scorer):
    """One compiled program for every genome of the space ('vmap' and 'loop')."""

    def __init__(
        self,
        space,
        batch,
        settings,
        *,
        seed=0,
        devices=None,
        call_size: int = 1,
        workers: int = 1,
    ):
        devices = list(devices or distributed.devices())
        self.mesh = Mesh(np.asarray(devices), ('pop',))
        super().__init__(space, batch, settings, seed=seed, devices=devices)
        n_dev = len(self.devices)
        if call_size <= 0:
            raise UserError(f'proxy.chunk_size must be >= 0, got {call_size}')
        if workers <= 0:
            raise UserError(f'proxy.workers must be >= 0, got {workers}')
        if workers > 1 and distributed.process_count() > 1:
            raise UserError(
                'proxy.workers > 1 runs in one process; with several processes leave '
                '--config.proxy.workers at 0 (auto) or 1'
            )
        self.call_size = -(-int(call_size) // n_dev) * n_dev
        self.workers = int(workers)
        self._compiled = None
        self._key = None
        logging.info(
            'Proxy: strategy %s, %d member(s) per call%s on %d %s device(s)',
            self.strategy,
            self.call_size,
            f', {self.workers} calls at once' if self.workers > 1 else '',
            n_dev,
            self.backend,
        )

    def _program_key(self, args) -> tuple:
        shapes = tuple((a.shape, str(a.dtype)) for a in jax.tree.leaves(args))
        return (
            self.space.name,
            repr(self._pop_model),
            self.settings,
            self.strategy,
            tuple(d.id for d in self.devices),
            shapes,
        )

    def _calls(self, n: int) -> list[slice]:
        return [slice(i, min(i + self.call_size, n)) for i in range(0, n, self.call_size)]

    def _put(self, x, dtype) -> jax.Array:
        # Replicated over the mesh: a global array when the mesh spans processes.
        return self._global(np.asarray(x, dtype), P())

    def _global(self, x: np.ndarray, spec: P) -> jax.Array:
        """`x` (the same on every process) as an array laid out by `spec` over the mesh."""
        return jax.make_array_from_callback(
            x.shape, NamedSharding(self.mesh, spec), lambda index: x[index]
        )

    @staticmethod
    def _host(x: jax.Array) -> np.ndarray:
        """All of `x` as numpy, on every process (an all-gather where it spans processes)."""
        if x.is_fully_addressable:
            return np.asarray(x)
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    def _score_group(self, genomes: np.ndarray, group: list[slice]) -> tuple[np.ndarray, ...]:
        if len(group) == 1:
            return self._score_call(genomes[group[0]])
        args = [self._call_args(genomes[rows]) for rows in group]
        self._ensure_compiled(args[0])
        outs = self._run('training', functools.partial(self._execute_at_once, group, args))
        return tuple(np.concatenate(parts) for parts in zip(*outs, strict=True))

    def _execute_at_once(self, group: list[slice], args: list[tuple]) -> list[tuple]:
        """The compiled calls of `group`, side by side on `len(group)` threads."""

        def one(j):
            n = group[j].stop - group[j].start
            return tuple(self._host(o)[:n] for o in self._compiled(*args[j]))

        with concurrent.futures.ThreadPoolExecutor(len(group), 'hwnas-call') as pool:
            return list(pool.map(one, range(len(group))))

    def _call_args(self, genomes: np.ndarray) -> tuple:
        """The compiled program's inputs for one call of `genomes` (padded to the call size)."""
        n = len(genomes)
        pad = self.call_size - n
        padded = np.concatenate([genomes, np.repeat(genomes[:1], pad, axis=0)])
        valid = np.arange(self.call_size) < n
        pop = P('pop')
        return (
            self._global(np.asarray(self.seed, np.uint32), P()),
            self._global(program.member_seeds(padded), pop),
            self._global(padded.astype(np.int32), pop),
            self._global(valid, pop),
            self._images,
            self._labels,
            self._ref,
        )

    def _score_call(self, genomes: np.ndarray) -> tuple[np.ndarray, ...]:
        n = len(genomes)
        args = self._call_args(genomes)
        self._ensure_compiled(args)
        return self._run(
            'training', lambda: tuple(self._host(o)[:n] for o in self._compiled(*args))
        )

    def _ensure_compiled(self, args: tuple) -> None:
        if self._compiled is None:
            # Compiled programs are shared by scorers with the same model, settings, strategy,
            # devices and shapes: a second search in one process does not compile again.
            key = self._program_key(args)
            if key not in program.PROGRAMS:
                what = (
                    f'the {self.strategy} proxy program ({self.call_size} member(s) per '
                    f'call, {self.settings.steps} steps)'
                )
                program.PROGRAMS[key] = self._compile(what, repr(key), self._build, args)
                program.TRACES[key] += 1
            self._compiled, self._key = program.PROGRAMS[key], key

    def _build(self, *args):
        """Compiles :func:`program.population_programs` for `args`, the two side by side."""
        init_fn, train_fn = program.population_programs(
            self._pop_model, self.settings, self.strategy, self.mesh
        )
        base_seed, seeds, genomes, valid, images, labels, ref = args
        init_args = (base_seed, seeds, genomes, images)
        sharded = NamedSharding(self.mesh, P('pop'))
        weights = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharded),
            jax.eval_shape(init_fn, *init_args),
        )
        init_lowered = init_fn.lower(*init_args)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # XLA compiles without the GIL,
            init_compiled = pool.submit(init_lowered.compile)  # here while `train` is traced.
            train_lowered = train_fn.lower(*weights, genomes, valid, images, labels, ref)
            train_compiled = train_lowered.compile()
            init_compiled = init_compiled.result()

        def run(base_seed, seeds, genomes, valid, images, labels, ref):
            params, stats = init_compiled(base_seed, seeds, genomes, images)
            return train_compiled(params, stats, genomes, valid, images, labels, ref)

        return run

    @property
    def trace_count(self) -> int:
        """How often this scorer's program was traced and compiled (1 after the first call)."""
        return program.TRACES[self._key] if self._key is not None else 0


class VmapScorer(PopulationScorer):
    """Members of a call vmapped through the population network."""

    strategy = 'vmap'


class LoopScorer(PopulationScorer):
    """Members of a call one after another, each running only its own ops."""

    strategy = 'loop'


SCORERS = {'vmap': VmapScorer, 'loop': LoopScorer}  # exact: proxy/exact.py


def make_scorer(
    space,
    batch: dict,
    settings: program.Settings,
    *,
    strategy: str = 'auto',
    chunk_size: int = 0,
    population: int = 20,
    seed: int = 0,
    devices=None,
    workers: int = 0,
) -> Scorer:
    """The scorer of `strategy` ('auto': the space's choice for the backend).

    `workers`: compiled calls at once ('vmap', 'loop'); 0: :func:`auto_workers`.
    """
    if strategy not in STRATEGIES:
        raise UserError(f'unknown proxy strategy {strategy!r}; choose one of {STRATEGIES}')
    devices = list(devices or distributed.devices())
    backend = devices[0].platform
    if strategy == 'auto':
        strategy = space.auto_strategy(backend)
    if strategy == 'exact':
        from hwnas_jax.proxy.exact import ExactScorer  # It subclasses Scorer: a lazy edge.

        if workers > 1:
            logging.warning('proxy.workers=%d: the exact strategy runs one call at a time', workers)
        return ExactScorer(space, batch, settings, seed=seed, devices=devices)
    # On CPU the members of one call run one after another anyway: one member per device per
    # call costs nothing and keeps every call short.
    size = int(chunk_size) or (
        len(devices) if backend == 'cpu' and strategy == 'loop' else int(population)
    )
    return SCORERS[strategy](
        space,
        batch,
        settings,
        seed=seed,
        devices=devices,
        call_size=size,
        workers=int(workers) or auto_workers(strategy, devices),
    )


def auto_workers(strategy: str, devices) -> int:
    """Calls at once by default: one per CPU core this process may use for 'loop' on one CPU
    device in one process (1.4x on 2 cores, benchmarks/README.md; 3 on 2 gain less); else 1."""
    if (
        strategy != 'loop'
        or devices[0].platform != 'cpu'
        or len(devices) != 1
        or distributed.process_count() > 1
    ):
        return 1
    try:
        cores = len(os.sched_getaffinity(0))  # What taskset or a container allows.
    except AttributeError:  # Not Linux.
        cores = os.cpu_count() or 1
    return max(1, cores)


def from_config(config, space, batch: dict, seed: int | None = None) -> Scorer:
    """The proxy scorer of a search (`seed`: the proxy's seed; default `config.seed`)."""
    p = config.proxy
    return make_scorer(
        space,
        batch,
        program.Settings.from_config(p),
        strategy=p.strategy,
        chunk_size=p.chunk_size,
        population=config.ga.population,
        seed=config.seed if seed is None else seed,
        workers=p.get('workers', 0),
    )
