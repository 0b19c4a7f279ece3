"""The exact strategy: one exact network per architecture, compiled per architecture.

The baseline (and the PyTorch way): each new architecture pays its own compilation. The
initial weights are the population strategies' (the population form initialised from the
member's seed, cut down to the exact network), so every strategy trains the same network.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from hwnas_jax import distributed
from hwnas_jax.errors import UserError
from hwnas_jax.proxy import program
from hwnas_jax.proxy.scorers import Scorer


class ExactScorer(Scorer):
    """One exact network per architecture, compiled per architecture (the baseline)."""

    strategy = 'exact'
    call_size = 1

    def __init__(self, space, batch, settings, *, seed=0, devices=None):
        if distributed.process_count() > 1:
            raise UserError(
                'proxy.strategy=exact runs in one process; with several processes use '
                '--config.proxy.strategy=loop (or vmap), or run a single process'
            )
        super().__init__(space, batch, settings, seed=seed, devices=devices)
        self._exact_cache: dict = {}
        self._init_fn = None
        self.trace_count = 0
        logging.info('Proxy: strategy exact (one compile per architecture) on %s', self.backend)

    def _calls(self, n: int) -> list[slice]:
        return [slice(i, i + 1) for i in range(n)]

    def _member(self, genome: np.ndarray):
        key = tuple(int(v) for v in genome)
        if key not in self._exact_cache:
            model = self.space.exact_network(key, backend=self.backend)
            member = program.make_member_fn(model, self.settings)

            def fn(variables, images, labels, ref):
                self.trace_count += 1
                return member(
                    variables['params'], variables['batch_stats'], None, images, labels, ref
                )

            t0 = time.perf_counter()
            variables = self._variables(genome)
            self.compile_seconds += time.perf_counter() - t0
            self._exact_cache[key] = self._compile(
                f'the exact network of {key}',
                repr((self.space.name, repr(model), self.settings, 'exact')),
                lambda *a: jax.jit(fn).lower(*a).compile(),
                (variables, self._images, self._labels, self._ref),
            )
        return self._exact_cache[key]

    def _variables(self, genome: np.ndarray):
        # The same initial weights as the population strategies: initialise the population
        # form from the member's seed and keep the exact network's part.
        if self._init_fn is None:
            self._init_fn = jax.jit(functools.partial(program.init_members, self._pop_model))
        seeds = jnp.asarray(program.member_seeds(genome[None]))
        v = self._init_fn(
            jnp.asarray(self.seed, jnp.uint32),
            seeds,
            jnp.asarray(genome[None], jnp.int32),
            self._images,
        )
        v = jax.tree.map(lambda a: a[0], v)
        return self.space.exact_variables(v, genome)

    def _score_call(self, genomes: np.ndarray) -> tuple[np.ndarray, ...]:
        g = genomes[0]
        compiled = self._member(g)
        variables = self._variables(g)
        return self._run(
            'training',
            lambda: tuple(
                np.asarray(o)[None]
                for o in compiled(variables, self._images, self._labels, self._ref)
            ),
        )
