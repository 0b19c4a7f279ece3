"""Scoring a population: single-batch RMI training of fresh networks, compiled once per search.

For each member: fresh weights (from a key derived from the seed and the member's canonical
genome alone, so a score never depends on where or when the architecture was met), N_train SGD
steps on the one batch with `rmi.rmi_loss` inside one `lax.scan`, BatchNorm in training mode,
then the RMI score of the trained network's forward pass on the batch.

Strategies (`config.proxy.strategy`), all from the same compiled-once function of arrays:
  vmap   the population form of the space (same parameter shapes for every genome; the genome is
         an array input) vmapped over members: best where batched convolutions are fast (GPU/TPU).
  loop   the same population form, members one after another inside one compiled `lax.map`,
         each running only its chosen ops (`dispatch='switch'`): best on CPUs, where XLA's
         convolutions with per-member weights are slow, and still one compilation per search.
  exact  one exact network per architecture, compiled per architecture: the baseline (and the
         PyTorch way); each new architecture pays its own compilation (9-14 s on a CPU).
  auto   'vmap' on GPU/TPU; on CPU 'loop' for NAS-Bench-201 and 'exact' for OFA. Measured on a
         CPU: 'loop' and 'exact' with im2col convolutions are even end to end, 10-13x faster
         than with XLA's convolution and ~100x faster than 'vmap' (benchmarks/README.md).
Members are padded to a fixed call size (`chunk_size`; by default one member per device on CPU,
where batching members gains nothing and a short call keeps progress lines and Ctrl-C prompt, and
the population size elsewhere) so that no generation recompiles; the member axis is sharded over
all local devices with `jax.sharding` (`shard_map` over a 1-D mesh). Compiles and compiled calls
run through :mod:`hwnas_jax.background`: a progress line every 30 s, and Ctrl-C stops at once.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import os
import time
import zlib
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, PartitionSpec as P

from hwnas_jax import background, fileio, rmi
from hwnas_jax.errors import UserError

STRATEGIES = ('auto', 'vmap', 'loop', 'exact')


@dataclasses.dataclass(frozen=True)
class Settings:
    """Single-batch training settings (defaults from RMI-NAS; N_train from HW-EvRSNAS)."""
    steps: int = 100
    beta: float = 0.8
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4

    @classmethod
    def from_config(cls, proxy_config) -> 'Settings':
        s = cls(steps=int(proxy_config.steps), beta=float(proxy_config.beta),
                learning_rate=float(proxy_config.learning_rate),
                momentum=float(proxy_config.momentum),
                weight_decay=float(proxy_config.weight_decay))
        if s.steps < 0 or not 0.0 <= s.beta <= 1.0 or s.learning_rate < 0:
            raise ValueError(f'invalid proxy settings {s}: need steps >= 0, 0 <= beta <= 1, '
                             'learning_rate >= 0')
        return s


def optimizer(s: Settings) -> optax.GradientTransformation:
    """PyTorch-style SGD: weight decay added to the gradient, then momentum, constant rate."""
    return optax.chain(optax.add_decayed_weights(s.weight_decay),
                       optax.sgd(s.learning_rate, momentum=s.momentum or None))


def model_kwargs(config, space) -> dict:
    """Constructor arguments of `space`'s networks from the config."""
    if space.NAME == 'nb201':
        return dict(channels=config.space.channels, cells_per_stage=config.space.cells_per_stage,
                    num_classes=config.data.num_classes)
    if space.NAME == 'ofa':
        stages = tuple(int(s) for s in str(config.space.feature_stages).split(','))
        return dict(num_classes=config.data.num_classes, width_mult=config.space.width_mult,
                    resolution=config.space.resolution, feature_stages=stages)
    raise ValueError(f'no proxy networks for space {space.NAME!r}')


def member_seeds(genomes: np.ndarray) -> np.ndarray:
    """[P] uint32 seed per genome: a hash of the genome (use canonical genomes)."""
    return np.asarray([zlib.crc32(np.asarray(g, np.int64).tobytes()) for g in genomes],
                      np.uint32)


def make_member_fn(model, s: Settings, *, trajectory: bool = False) -> Callable:
    """(params, stats, genome, images, labels, ref_features) -> (score, loss, ckas) for one member.

    `model` is a population network `__call__(x, genome, *, train)` or, with genome None, an
    exact network `__call__(x, *, train)`. Pure and unbatched: vmap or map it at the call site.
    With `trajectory`, two more outputs record the training from the same run: the per-layer
    CKAs [steps, L] and the mixed loss [steps] at each step, before that step's update (so row
    k is the network after k updates); the search itself never asks for them.
    """
    tx = optimizer(s)

    def apply(params, stats, genome, images):
        args = (images,) if genome is None else (images, genome)
        (logits, feats), _ = model.apply({'params': params, 'batch_stats': stats}, *args,
                                         train=True, mutable=['batch_stats'])
        return logits, feats

    def train_member(params, stats, genome, images, labels, ref_features):
        def loss_fn(p):
            logits, feats = apply(p, stats, genome, images)
            return rmi.rmi_loss(ref_features, feats, logits, labels, beta=s.beta)

        def loss_and_ckas(p):
            logits, feats = apply(p, stats, genome, images)
            loss = rmi.rmi_loss(ref_features, feats, logits, labels, beta=s.beta)
            return loss, rmi.layer_ckas(ref_features, feats)

        def step(carry, _):
            p, opt_state = carry
            if trajectory:
                (loss, ckas), grads = jax.value_and_grad(loss_and_ckas, has_aux=True)(p)
                out = (ckas, loss)
            else:
                grads, out = jax.grad(loss_fn)(p), None
            updates, opt_state = tx.update(grads, opt_state, p)
            return (optax.apply_updates(p, updates), opt_state), out

        (params, _), trace = jax.lax.scan(step, (params, tx.init(params)), None, length=s.steps)
        # Running statistics are never read in training mode: the score is the forward pass
        # after N_train updates, as RMI-NAS reads its loss at the observe step.
        logits, feats = apply(params, stats, genome, images)
        ckas = rmi.layer_ckas(ref_features, feats)
        loss = rmi.rmi_loss(ref_features, feats, logits, labels, beta=s.beta)
        if trajectory:
            return jnp.sum(ckas), loss, ckas, trace[0], trace[1]
        return jnp.sum(ckas), loss, ckas

    return train_member


# Compiled population programs, shared by all engines of a process; and how often each was
# traced (the no-retracing guarantee is tested through this).
_PROGRAMS: dict = {}
TRACES: collections.Counter = collections.Counter()


def init_members(model, base_seed, seeds, genomes, images):
    """Fresh variables per member: key = fold_in(key(base_seed), member seed), vmapped."""
    base = jax.random.key(base_seed)

    def one(seed, genome):
        return model.init(jax.random.fold_in(base, seed), images[:2], genome, train=False)

    return jax.vmap(one)(seeds, genomes)


def population_program(model, s: Settings, strategy: str, mesh: Mesh):
    """The jitted population scorer: (base_seed, seeds, genomes, valid, images, labels, ref).

    The member axis of seeds, genomes and valid is sharded over `mesh`; inside each shard the
    members are vmapped ('vmap') or mapped one by one ('loop').
    """
    member = make_member_fn(model, s)

    def local(base_seed, seeds, genomes, valid, images, labels, ref):
        variables = init_members(model, base_seed, seeds, genomes, images)
        params, stats = variables['params'], variables['batch_stats']
        if strategy == 'vmap':
            return jax.vmap(member, in_axes=(0, 0, 0, None, None, None))(
                params, stats, genomes, images, labels, ref)

        def body(args):
            p, st, g, ok = args
            nan = jnp.full((), jnp.nan, jnp.float32)
            skip = (nan, nan, jnp.full((len(ref),), jnp.nan, jnp.float32))
            # Padding members cost nothing here: the conditional skips their training.
            return jax.lax.cond(ok, lambda: member(p, st, g, images, labels, ref), lambda: skip)

        return jax.lax.map(body, (params, stats, genomes, valid))

    rep = P()
    fn = jax.shard_map(local, mesh=mesh,
                       in_specs=(rep, P('pop'), P('pop'), P('pop'), rep, rep, rep),
                       out_specs=P('pop'), check_vma=False)
    return jax.jit(fn)


class Engine:
    """Scores populations of genomes of one space on one batch; compiles once per search."""

    def __init__(self, space, kwargs: dict, batch: dict, settings: Settings, *,
                 strategy: str = 'auto', chunk_size: int = 0, population: int = 20,
                 seed: int = 0, conv_impl: str = 'auto', devices=None,
                 compiler_options: dict | None = None):
        if strategy not in STRATEGIES:
            raise UserError(f'unknown proxy strategy {strategy!r}; choose one of {STRATEGIES}')
        self.devices = list(devices or jax.local_devices())
        backend = self.devices[0].platform
        if strategy == 'auto':
            switchable = 'dispatch' in space.PopulationNetwork.__dataclass_fields__
            # On CPU: one compiled program running only each member's chosen ops where the space
            # supports it (NAS-Bench-201); otherwise exact networks (OFA's masked population
            # form is far slower to compile and run there).
            strategy = 'vmap' if backend != 'cpu' else 'loop' if switchable else 'exact'
        if conv_impl == 'auto':
            # Measured (benchmarks/README.md): on XLA:CPU, convolutions as patch matrix
            # products train NAS-Bench-201 nets 10-13x faster than XLA's own convolution.
            conv_impl = 'im2col' if backend == 'cpu' else 'xla'
        self.strategy = strategy
        self.space = space
        self.settings = settings
        self.seed = seed
        self.compile_seconds = 0.0
        self._compiled = None
        self._key = None
        self._exact_traces = 0
        # XLA options for every compilation (e.g. the tests' cheapest CPU settings).
        self.compiler_options = dict(compiler_options or {})
        self._images = jnp.asarray(batch['images'], jnp.float32)
        self._labels = jnp.asarray(batch['labels'], jnp.int32)
        self._ref = [jnp.asarray(f, jnp.float32) for f in batch['ref_features']]
        n_dev = len(self.devices)
        if chunk_size:
            size = int(chunk_size)
        else:
            # On CPU the members of one call run one after another anyway ('loop', 'exact'):
            # one member per device per call costs nothing and keeps every call short.
            size = n_dev if backend == 'cpu' and strategy != 'vmap' else int(population)
        if size <= 0:
            raise UserError(f'proxy.chunk_size must be >= 0, got {chunk_size}')
        # Progress: called with the seconds elapsed every 30 s of a long compile or call.
        self.heartbeat: Callable[[str, float], None] | None = None
        self.call_size = -(-size // n_dev) * n_dev
        self.mesh = Mesh(np.asarray(self.devices), ('pop',))
        pop_kwargs = dict(kwargs)
        if space.NAME == 'nb201':
            pop_kwargs['conv_impl'] = conv_impl
        if strategy == 'loop' and 'dispatch' in space.PopulationNetwork.__dataclass_fields__:
            pop_kwargs['dispatch'] = 'switch'
        self._pop_model = space.PopulationNetwork(**pop_kwargs)
        self._exact_kwargs = dict(kwargs, **({'conv_impl': conv_impl}
                                             if space.NAME == 'nb201' else {}))
        self._exact_cache: dict = {}
        self._init_fn = None
        logging.info('Proxy: strategy %s, %d members per call on %d %s device(s)', strategy,
                     self.call_size, n_dev, backend)

    # -- population strategies: one compiled function for the whole search -------------------

    def _program_key(self, args) -> tuple:
        shapes = tuple((a.shape, str(a.dtype)) for a in jax.tree.leaves(args))
        return (self.space.NAME, repr(self._pop_model), self.settings, self.strategy,
                tuple(d.id for d in self.devices), shapes,
                tuple(sorted(self.compiler_options.items())))

    def _score_chunk(self, genomes: np.ndarray) -> tuple[np.ndarray, ...]:
        n = len(genomes)
        pad = self.call_size - n
        padded = np.concatenate([genomes, np.repeat(genomes[:1], pad, axis=0)])
        valid = np.arange(self.call_size) < n
        args = (jnp.asarray(self.seed, jnp.uint32), jnp.asarray(member_seeds(padded)),
                jnp.asarray(padded, jnp.int32), jnp.asarray(valid), self._images, self._labels,
                self._ref)
        if self._compiled is None:
            # Compiled programs are shared by engines with the same model, settings, strategy,
            # devices and shapes: a second search in one process does not compile again.
            key = self._program_key(args)
            if key not in _PROGRAMS:
                fn = population_program(self._pop_model, self.settings, self.strategy,
                                        self.mesh)
                what = (f'the {self.strategy} proxy program ({self.call_size} member(s) per '
                        f'call, {self.settings.steps} steps)')
                _PROGRAMS[key] = self._compile(what, repr(key), fn, args)
                TRACES[key] += 1
            self._compiled, self._key = _PROGRAMS[key], key
        out = self._run('training', lambda: tuple(np.asarray(o)[:n]
                                                  for o in self._compiled(*args)))
        return out

    def _compile(self, what: str, key: str, fn, args):
        """Lowers and compiles `fn` for `args` off the main thread, with a notice first."""
        from hwnas_jax import compile_log

        logging.info('Compiling %s: %s', what, compile_log.expectation(key))
        t0 = time.perf_counter()
        compiled = self._run('compiling', lambda: fn.lower(*args).compile(
            compiler_options=self.compiler_options))
        seconds = time.perf_counter() - t0
        self.compile_seconds += seconds
        compile_log.record(key, seconds)
        logging.info('Compiled in %.1f s', seconds)
        return compiled

    def _run(self, doing: str, fn):
        beat = None
        if self.heartbeat is not None:
            beat = functools.partial(self.heartbeat, doing)
        return background.call(fn, heartbeat=beat)

    def describe_networks(self) -> str:
        """The population network's constructor arguments, as text (for score fingerprints)."""
        return repr(self._pop_model)

    @property
    def trace_count(self) -> int:
        """How often this engine's program was traced and compiled (1 after the first call)."""
        if self.strategy == 'exact':
            return self._exact_traces
        return TRACES[self._key] if self._key is not None else 0

    # -- exact strategy: one compiled function per architecture (the baseline) ----------------

    def _exact_member(self, genome: np.ndarray):
        key = tuple(int(v) for v in genome)
        if key not in self._exact_cache:
            model = self.space.Network(genome=key, **self._exact_kwargs)
            member = make_member_fn(model, self.settings)

            def fn(variables, images, labels, ref):
                self._exact_traces += 1
                return member(variables['params'], variables['batch_stats'], None, images,
                              labels, ref)

            t0 = time.perf_counter()
            variables = self._exact_variables(genome)
            self.compile_seconds += time.perf_counter() - t0
            self._exact_cache[key] = self._compile(
                f'the exact network of {key}', repr((self.space.NAME, self._exact_kwargs,
                                                     self.settings, 'exact')),
                jax.jit(fn), (variables, self._images, self._labels, self._ref))
        return self._exact_cache[key]

    def _exact_variables(self, genome: np.ndarray):
        # The same initial weights as the population strategies: initialise the population
        # form from the member's seed and keep the exact network's part.
        if self._init_fn is None:
            self._init_fn = jax.jit(functools.partial(init_members, self._pop_model))
        seeds = jnp.asarray(member_seeds(genome[None]))
        v = self._init_fn(jnp.asarray(self.seed, jnp.uint32), seeds,
                          jnp.asarray(genome[None], jnp.int32), self._images)
        v = jax.tree.map(lambda a: a[0], v)
        return self.space.exact_variables(v, tuple(int(x) for x in genome))

    # -- public -------------------------------------------------------------------------------

    def score(self, genomes) -> dict:
        """Trains and scores `genomes` [n, G] (use canonical genomes); returns numpy arrays.

        Returns:
          dict with 'score' [n] (RMI score, sum of CKA), 'loss' [n] (final mixed loss) and
          'ckas' [n, L]; non-finite values are kept (the search maps them to -inf fitness).
        """
        outs = [out for _, out in self.score_chunks(genomes)]
        return {k: np.concatenate([o[k] for o in outs]) for k in ('score', 'loss', 'ckas')}

    def score_chunks(self, genomes) -> Iterator[tuple[slice, dict]]:
        """Scores `genomes` [n, G] call by call, yielding `(rows, result)` after each call.

        `result` holds 'score', 'loss' and 'ckas' of `genomes[rows]`, as in :meth:`score`; a
        caller saves each result as it comes, so an interrupted search loses at most one call.
        """
        genomes = np.asarray(genomes, np.int64)
        if genomes.ndim != 2 or len(genomes) == 0:
            raise UserError(f'score needs genomes of shape [n, genes], got {genomes.shape}')
        for i in range(0, len(genomes), 1 if self.strategy == 'exact' else self.call_size):
            if self.strategy == 'exact':
                g = genomes[i]
                compiled = self._exact_member(g)
                variables = self._exact_variables(g)
                out = self._run('training', lambda c=compiled, v=variables: tuple(
                    np.asarray(o)[None] for o in c(v, self._images, self._labels, self._ref)))
                rows = slice(i, i + 1)
            else:
                rows = slice(i, min(i + self.call_size, len(genomes)))
                out = self._score_chunk(genomes[rows])
            yield rows, dict(zip(('score', 'loss', 'ckas'), out))


def select_batch(images: np.ndarray, labels: np.ndarray, ce: np.ndarray, size: int) -> np.ndarray:
    """Indices of the `size` examples with the lowest reference cross-entropy (RMI-NAS)."""
    if size > len(images):
        raise UserError(f'proxy.batch_size={size} exceeds proxy.pool_size={len(images)}')
    return np.argsort(ce, kind='stable')[:size]


def batch_fingerprint(config, seed: int) -> str:
    """The settings that make the search batch: a batch file made with others is stale."""
    return json.dumps({'seed': int(seed), 'data': config.data.to_dict(),
                       'reference': config.reference.to_dict(),
                       'batch_size': config.proxy.batch_size,
                       'pool_size': config.proxy.pool_size}, sort_keys=True)


def batch_digest(images: np.ndarray, labels: np.ndarray) -> str:
    """sha256 of the batch's images and labels (recorded in the search state)."""
    h = hashlib.sha256()
    for a in (images, labels):
        a = np.ascontiguousarray(a)
        h.update(f'{a.dtype.str}{a.shape}'.encode())
        h.update(a.tobytes())
    return h.hexdigest()


def load_or_make_batch(config, path: str, seed: int | None = None) -> dict:
    """The search's one training batch and the reference's features on it.

    Made once per search (drawn with the seed and saved to `path` with the fingerprint of the
    settings that made it, so a resumed search trains on exactly the same images and a file
    left by a run with other settings is rebuilt, never reused): `proxy.pool_size` random
    augmented training images, of which the `proxy.batch_size` with the lowest reference
    cross-entropy are kept. The result's 'digest' identifies the batch.
    """
    from hwnas_jax import data, reference

    module, variables = reference.load(config)
    feature_fn = reference.make_feature_fn(module, variables, bn_mode=config.reference.bn_mode)
    seed = config.seed if seed is None else seed
    fingerprint = batch_fingerprint(config, seed)
    images = None
    if os.path.exists(path):
        saved = fileio.load_npz(path, what='the search batch', keys=('images', 'labels'),
                                fix='delete it: the search rebuilds it from the seed')
        if str(saved.get('fingerprint', '')) == fingerprint:
            images, labels = saved['images'], saved['labels']
        else:
            logging.warning('%s was made with other settings (an earlier run in this work '
                            'directory); making the batch again', path)
    if images is None:
        rng = np.random.default_rng([seed, 1])
        pool_images, pool_labels = data.random_pool(config, rng, config.proxy.pool_size)
        # In chunks: the pool can be large images through a large reference.
        logits = np.concatenate([np.asarray(feature_fn(data.normalize(pool_images[i:i + 64]))[0])
                                 for i in range(0, len(pool_images), 64)])
        logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32))
        ce = -np.asarray(jnp.take_along_axis(logp, jnp.asarray(pool_labels)[:, None], 1))[:, 0]
        idx = select_batch(pool_images, pool_labels, ce, config.proxy.batch_size)
        images, labels = pool_images[idx], pool_labels[idx]
        fileio.atomic_write_npz(path, images=images, labels=labels,
                                fingerprint=np.asarray(fingerprint))
    x = data.normalize(images)
    _, feats = feature_fn(x)
    return {'images': x, 'labels': labels.astype(np.int32),
            'ref_features': [np.asarray(f) for f in feats],
            'digest': batch_digest(images, labels)}


def make_engine(config, space, batch: dict, seed: int | None = None) -> Engine:
    """The proxy engine of a search (`seed`: the proxy's seed; default `config.seed`)."""
    p = config.proxy
    return Engine(space, model_kwargs(config, space), batch, Settings.from_config(p),
                  strategy=p.strategy, chunk_size=p.chunk_size, population=config.ga.population,
                  seed=config.seed if seed is None else seed, conv_impl=p.conv_impl)
