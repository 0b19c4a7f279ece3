"""The device side of the proxy: single-batch RMI training of fresh networks, as pure functions.

For each member: fresh weights (from a key derived from the proxy seed and the member's canonical
genome alone, so a score never depends on where or when the architecture was met), N_train SGD
steps on the one batch with `rmi.rmi_loss` inside one `lax.scan`, BatchNorm in training mode,
then the RMI score of the trained network's forward pass on the batch. Everything here takes
arrays (genomes included), never genome objects; :func:`population_program` is the one place
where jit, vmap/map and sharding are applied.
"""

from __future__ import annotations

import collections
import dataclasses
import zlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from hwnas_jax import rmi
from hwnas_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Settings:
    """Single-batch training settings (defaults from RMI-NAS; N_train from HW-EvRSNAS)."""

    steps: int = 100
    beta: float = 0.8
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4

    @classmethod
    def from_config(cls, proxy_config) -> Settings:
        s = cls(
            steps=int(proxy_config.steps),
            beta=float(proxy_config.beta),
            learning_rate=float(proxy_config.learning_rate),
            momentum=float(proxy_config.momentum),
            weight_decay=float(proxy_config.weight_decay),
        )
        if s.steps < 0 or not 0.0 <= s.beta <= 1.0 or s.learning_rate < 0:
            raise UserError(
                f'invalid proxy settings {s}: need steps >= 0, 0 <= beta <= 1, learning_rate >= 0'
            )
        return s


def optimizer(s: Settings) -> optax.GradientTransformation:
    """PyTorch-style SGD: weight decay added to the gradient, then momentum, constant rate."""
    return optax.chain(
        optax.add_decayed_weights(s.weight_decay),
        optax.sgd(s.learning_rate, momentum=s.momentum or None),
    )


def member_seeds(genomes: np.ndarray) -> np.ndarray:
    """[P] uint32 seed per genome: a hash of the genome (use canonical genomes)."""
    return np.asarray([zlib.crc32(np.asarray(g, np.int64).tobytes()) for g in genomes], np.uint32)


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
        (logits, feats), _ = model.apply(
            {'params': params, 'batch_stats': stats}, *args, train=True, mutable=['batch_stats']
        )
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


# Compiled population programs, shared by all scorers of a process; and how often each was
# traced (the no-retracing guarantee is tested through this).
PROGRAMS: dict = {}
TRACES: collections.Counter = collections.Counter()


def init_members(model, base_seed, seeds, genomes, images):
    """Fresh variables per member: key = fold_in(key(base_seed), member seed), vmapped."""
    base = jax.random.key(base_seed)

    def one(seed, genome):
        return model.init(jax.random.fold_in(base, seed), images[:2], genome, train=False)

    return jax.vmap(one)(seeds, genomes)


def population_programs(model, s: Settings, strategy: str, mesh: Mesh):
    """Two jitted programs, compiled side by side: (init, train).

    ``init(base_seed, seeds, genomes, images) -> (params, stats)`` draws the members' fresh
    weights; ``train(params, stats, genomes, valid, images, labels, ref) -> (score, loss,
    ckas)`` trains and scores them. Their composition is :func:`population_program`. Two
    programs because XLA compiles one program on one core: on a 2-core CPU the random draws of
    the initialisation (about half of the compile) and the training compile at the same time.
    The member axis is sharded over `mesh` (its outputs, the weights, too).
    """
    member = make_member_fn(model, s)

    def init(base_seed, seeds, genomes, images):
        variables = init_members(model, base_seed, seeds, genomes, images)
        return variables['params'], variables['batch_stats']

    def train(params, stats, genomes, valid, images, labels, ref):
        if strategy == 'vmap':
            return jax.vmap(member, in_axes=(0, 0, 0, None, None, None))(
                params, stats, genomes, images, labels, ref
            )

        def body(args):
            p, st, g, ok = args
            nan = jnp.full((), jnp.nan, jnp.float32)
            skip = (nan, nan, jnp.full((len(ref),), jnp.nan, jnp.float32))
            # Padding members cost nothing here: the conditional skips their training.
            return jax.lax.cond(ok, lambda: member(p, st, g, images, labels, ref), lambda: skip)

        return jax.lax.map(body, (params, stats, genomes, valid))

    rep, pop = P(), P('pop')
    init_fn = jax.shard_map(
        init, mesh=mesh, in_specs=(rep, pop, pop, rep), out_specs=pop, check_vma=False
    )
    train_fn = jax.shard_map(
        train,
        mesh=mesh,
        in_specs=(pop, pop, pop, pop, rep, rep, rep),
        out_specs=pop,
        check_vma=False,
    )
    return jax.jit(init_fn), jax.jit(train_fn)


def population_program(model, s: Settings, strategy: str, mesh: Mesh):
    """The jitted population scorer: (base_seed, seeds, genomes, valid, images, labels, ref).

    The member axis of seeds, genomes and valid is sharded over `mesh`; inside each shard the
    members are vmapped ('vmap') or mapped one by one ('loop'). One program: the composition
    of :func:`population_programs` (which the search compiles as two, side by side).
    """
    init_fn, train_fn = population_programs(model, s, strategy, mesh)

    def run(base_seed, seeds, genomes, valid, images, labels, ref):
        params, stats = init_fn(base_seed, seeds, genomes, images)
        return train_fn(params, stats, genomes, valid, images, labels, ref)

    return jax.jit(run)
