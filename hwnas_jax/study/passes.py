"""The proxy study's passes on the device: the RMI training with its trajectory and held-out
CKA, the second BN pass and the seed-noise pass (the search's scorer), NASWOT and synflow.

JAX is imported inside the functions, so that the study's statistics import with numpy only.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import numpy as np
from absl import logging

from hwnas_jax.errors import UserError


def steps_k(config) -> list[int]:
    """``study.steps_k`` as sorted distinct ints in [0, proxy.steps]."""
    text = str(config.study.steps_k).strip()
    try:
        ks = sorted({int(v) for v in text.split(',') if v.strip()})
    except ValueError:
        ks = [-1]
    if any(k < 0 or k > int(config.proxy.steps) for k in ks):
        raise UserError(
            f'config.study.steps_k={text!r} is invalid: integers in [0, '
            f'proxy.steps={config.proxy.steps}] separated by commas, or empty'
        )
    return ks


class _WithHeldOut:
    """A model for :func:`proxy.make_member_fn` that also returns held-out features.

    ``apply(variables, (images, held), genome, ...)`` returns the logits and features of
    ``images`` followed by the features of ``held`` with their gradient stopped: the training
    (gradients) is that of ``images`` alone, and the CKAs of the extra layers against the
    held-out reference features come out of the same run.
    """

    def __init__(self, model):
        self.model = model

    def apply(self, variables, images, genome, *, train, mutable):
        import jax

        x, held = images
        (logits, feats), state = self.model.apply(
            variables, x, genome, train=train, mutable=mutable
        )
        (_, held_feats), _ = self.model.apply(variables, held, genome, train=train, mutable=mutable)
        return (logits, list(feats) + [jax.lax.stop_gradient(f) for f in held_feats]), state


def rmi_program(model, settings, *, heldout: bool):
    """One member's proxy training with its trajectory, as a jittable function of arrays.

    ``(base_seed, seeds [1], genome int32 [6], images, held, labels, ref, ref_held) ->
    (score, loss, ckas [L'], trajectory ckas [steps, L'], trajectory loss [steps])`` with
    L' = L (+ L held-out layers with ``heldout``; the loss then includes their constant
    terms, removed by :func:`rmi_variables`). Initial weights as the search's scorers'.
    """
    import jax

    from hwnas_jax import proxy

    member = proxy.make_member_fn(
        _WithHeldOut(model) if heldout else model, settings, trajectory=True
    )

    def fn(base_seed, seeds, genome, images, held, labels, ref, ref_held):
        v = proxy.init_members(model, base_seed, seeds, genome[None], images)
        v = jax.tree.map(lambda a: a[0], v)
        x, refs = ((images, held), list(ref) + list(ref_held)) if heldout else (images, ref)
        return member(v['params'], v['batch_stats'], genome, x, labels, refs)

    return fn


def rmi_variables(out, *, num_layers: int, beta: float, steps: int, ks, heldout: bool) -> dict:
    """The study's RMI variables from :func:`rmi_program`'s outputs (float64 on the host)."""
    _, loss, ckas, traj_ckas, traj_loss = (np.asarray(o, np.float64) for o in out)
    n = num_layers

    def at(c, total):  # phi, loss without the held-out terms, held-out phi.
        return c[:n].sum(), total - beta * np.sum(1.0 - c[n:]), c[n:].sum()

    phi, train_loss, held = at(ckas, loss)
    row = {'phi': phi, 'loss': train_loss}
    row.update({f'cka_{i + 1}': ckas[i] for i in range(n)})
    per_k = {k: at(ckas, loss) if k == steps else at(traj_ckas[k], traj_loss[k]) for k in ks}
    row.update({f'phi_k{k}': v[0] for k, v in per_k.items()})
    row.update({f'loss_k{k}': v[1] for k, v in per_k.items()})
    if heldout:
        row['phi_heldout'] = held
        row.update({f'phi_heldout_k{k}': v[2] for k, v in per_k.items()})
    return {k: float(v) for k, v in row.items()}


# XLA options for every compilation of the study (the tests set the cheapest); and the compiled
# programs, shared by every study of a process (keyed by network, settings and shapes).
COMPILER_OPTIONS: dict = {}
_COMPILED: dict = {}


def _shapes(args) -> tuple:
    import jax

    return tuple((a.shape, str(a.dtype)) for a in jax.tree.leaves(args))


class Passes:
    """The study's data, reference features and compiled programs; :meth:`score` runs them."""

    def __init__(self, config, workdir: str):
        import jax
        import jax.numpy as jnp

        from hwnas_jax import data, proxy, reference, spaces, zero_cost
        from hwnas_jax.search import batch as search_batch
        from hwnas_jax.search import loop

        self.config, s = config, config.study
        self.seed = loop.proxy_seed(config)
        self.settings = proxy.Settings.from_config(config.proxy)
        self.ks = steps_k(config)
        self.heldout = bool(s.rmi) and int(s.heldout_size) > 0
        self.compile_seconds = 0.0
        self._jnp, self._jax = jnp, jax
        space = spaces.make(config)
        backend = jax.default_backend()
        self._bn = self._noise = None
        if s.rmi:
            batch = search_batch.load_or_make_batch(
                config, os.path.join(workdir, 'batch.npz'), self.seed
            )
            self.num_layers = len(batch['ref_features'])
            module, variables = reference.load(config)
            held, ref_held = batch['images'][:2], []
            if self.heldout:
                images, _ = data.load_split(config.data, 'test')
                rng = np.random.default_rng([self.seed, 3])
                pick = rng.choice(len(images), int(s.heldout_size), replace=False)
                held = data.normalize(images[np.sort(pick)])
                feature_fn = reference.make_feature_fn(
                    module, variables, bn_mode=config.reference.bn_mode
                )
                ref_held = [np.asarray(f) for f in feature_fn(held)[1]]
            # The 'loop' strategy's network: each member runs only its chosen ops.
            self._model = space.population_network(strategy='loop', backend=backend)
            self._rmi_args = (
                jnp.asarray(batch['images'], jnp.float32),
                jnp.asarray(held, jnp.float32),
                jnp.asarray(batch['labels'], jnp.int32),
                [jnp.asarray(f, jnp.float32) for f in batch['ref_features']],
                [jnp.asarray(f, jnp.float32) for f in ref_held],
            )

            def scorer(b, seed):
                return proxy.make_scorer(
                    space,
                    b,
                    self.settings,
                    strategy=config.proxy.strategy,
                    chunk_size=1,
                    population=1,
                    seed=seed,
                )

            if s.bn_pass:
                self.other_bn = 'train' if config.reference.bn_mode == 'eval' else 'eval'
                fn = reference.make_feature_fn(module, variables, bn_mode=self.other_bn)
                feats = [np.asarray(f) for f in fn(jnp.asarray(batch['images']))[1]]
                self._bn = scorer(dict(batch, ref_features=feats), self.seed)
            if int(s.noise_archs) > 0:
                self._noise = scorer(batch, self.seed + 1)
        if s.zero_cost:
            rng = np.random.default_rng([self.seed, 4])
            images, _ = data.random_pool(config, rng, int(s.naswot_batch))
            self._naswot_images = jnp.asarray(data.normalize(images), jnp.float32)
            # Every op of every edge runs ('select'); the genome's choice weights them.
            zmodel = space.population_network(strategy='vmap', backend=backend)
            size = int(config.data.image_size)
            key = ('zero_cost', repr(zmodel), size, tuple(sorted(COMPILER_OPTIONS.items())))
            options = dict(COMPILER_OPTIONS) or None
            if key not in _COMPILED:
                _COMPILED[key] = (
                    jax.jit(
                        functools.partial(proxy.init_members, zmodel), compiler_options=options
                    ),
                    zero_cost.nb201_naswot_kernel(zmodel, compiler_options=options),
                    zero_cost.nb201_synflow(zmodel, (size, size, 3), compiler_options=options),
                    [False],
                )
            self._init, self._naswot, self._synflow, self._zc_compiled = _COMPILED[key]

    def _call(self, what: str, fn, *args):
        from hwnas_jax import background

        def beat(elapsed):
            logging.info('%s: still running after %.0f s', what, elapsed)

        return background.call(fn, *args, heartbeat=beat)

    def _rmi_compiled(self, args, what: str):
        """The compiled RMI program for ``args`` (compiled once per process and shapes)."""
        key = (
            'rmi',
            repr(self._model),
            self.settings,
            self.heldout,
            _shapes(args),
            tuple(sorted(COMPILER_OPTIONS.items())),
        )
        if key not in _COMPILED:
            fn = self._jax.jit(rmi_program(self._model, self.settings, heldout=self.heldout))
            t0 = time.perf_counter()
            logging.info(
                'Compiling the study program (%d steps, trajectory%s)',
                self.settings.steps,
                ', held-out CKA' if self.heldout else '',
            )
            _COMPILED[key] = self._call(
                f'{what} compiling',
                lambda: fn.lower(*args).compile(compiler_options=COMPILER_OPTIONS or None),
            )
            self.compile_seconds += time.perf_counter() - t0
            logging.info('Compiled in %.1f s', time.perf_counter() - t0)
        return _COMPILED[key]

    def score(self, genome: np.ndarray, *, noise: bool, what: str) -> dict[str, Any]:
        """Every proxy variable of one canonical genome [6], and the seconds each pass took."""
        from hwnas_jax import proxy, zero_cost

        jnp, s = self._jnp, self.config.study
        row: dict[str, Any] = {}
        compile0 = self.compile_seconds
        g = jnp.asarray(genome, jnp.int32)
        seeds = jnp.asarray(proxy.member_seeds(genome[None]))
        base = jnp.asarray(self.seed, jnp.uint32)
        if s.rmi:
            args = (base, seeds, g, *self._rmi_args)
            compiled = self._rmi_compiled(args, what)
            t0 = time.perf_counter()
            out = self._call(f'{what} training', compiled, *args)
            row.update(
                rmi_variables(
                    out,
                    num_layers=self.num_layers,
                    beta=self.settings.beta,
                    steps=self.settings.steps,
                    ks=self.ks,
                    heldout=self.heldout,
                )
            )
            row['seconds_rmi'] = time.perf_counter() - t0
            for name, scorer, wanted in (
                ('phi_bn_' + getattr(self, 'other_bn', ''), self._bn, True),
                ('phi_seed2', self._noise, noise),
            ):
                if scorer is None or not wanted:
                    continue
                t0, c0 = time.perf_counter(), scorer.compile_seconds
                row[name] = float(scorer.score(genome[None])['score'][0])
                self.compile_seconds += scorer.compile_seconds - c0
                row['seconds_' + name] = time.perf_counter() - t0 - (scorer.compile_seconds - c0)
        if s.zero_cost:
            t0 = time.perf_counter()
            v = self._init(base, seeds, g[None], self._naswot_images[:2])
            v = self._jax.tree.map(lambda a: a[0], v)
            kernel = self._call(f'{what} NASWOT', self._naswot, v, self._naswot_images, g)
            row['naswot'] = zero_cost.naswot_score(kernel)
            row['synflow'] = self._call(f'{what} synflow', self._synflow, v, genome)
            seconds = time.perf_counter() - t0
            if not self._zc_compiled[0]:  # Mostly compilation: counted as such.
                self._zc_compiled[0] = True
                self.compile_seconds += seconds
                seconds = 0.0
            row['seconds_zero_cost'] = seconds
        row['seconds_compile'] = self.compile_seconds - compile0
        return row

    @staticmethod
    def summary(row: dict[str, Any]) -> str:
        """The main values of a row, for the progress line."""
        parts = [
            f'{k} {row[k]:.4g}'
            for k in ('phi', 'loss', 'phi_heldout', 'naswot', 'synflow')
            if row.get(k) is not None
        ]
        parts += [f'{k} {v:.4g}' for k, v in row.items() if k.startswith('phi_bn_')]
        return ', '.join(parts)
