"""Supervised training of any Flax classifier from scratch, with resumable checkpoints.

The usual CIFAR recipe (He et al. 2016; akamaster's ResNet-20; NAS-Bench-201's training): SGD
with momentum, cosine learning-rate decay to 0, L2 weight decay on every parameter, random crop
+ flip (``data.augment``), BatchNorm with batch statistics. The model is any Flax module called
as ``module.apply(variables, x, train=...) -> (logits, features)`` with ``params`` and
``batch_stats`` collections: the reference models (``reference.train``) and the architectures a
search found (``train_arch.train``) share this loop.

``fit`` checkpoints atomically (a temp file, then ``os.replace``) and resumes from its workdir
with the same data order (shuffles and augmentation derive from the seed and the epoch), so an
interrupted run ends with the same weights as an uninterrupted one. It writes one JSON line per
epoch to ``metrics.jsonl``. Checkpoints record their sha256, checked on load
(``hwnas_jax.checkpoint``). Accuracy is measured on the 'test' split of ``config.data``.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import traverse_util

from hwnas_jax import checkpoint, data, fileio
from hwnas_jax.errors import UserError

CHECKPOINT_NAME = checkpoint.CHECKPOINT_NAME
METRICS_NAME = 'metrics.jsonl'

Variables = dict[str, Any]
# The checkpoint reader (format and checks in hwnas_jax.checkpoint).
read_checkpoint = checkpoint.read


def flat_shapes(module: nn.Module, image_size: int) -> dict[str, tuple[int, ...]]:
    """``{'params/...': shape, 'batch_stats/...': shape}`` of a module's variables (no compute)."""
    images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    init = functools.partial(module.init, train=False)
    shapes = jax.eval_shape(init, jax.random.key(0), images)
    return {k: v.shape for k, v in traverse_util.flatten_dict(shapes, sep='/').items()}


def to_variables(
    expected: Mapping[str, tuple[int, ...]], flat: Mapping[str, Any], what: str
) -> Variables:
    """Checks flat arrays against the expected names and shapes and nests them (float32).

    Raises:
      UserError: missing, unexpected or misshapen arrays (the message names ``what``).
    """
    missing, extra = sorted(set(expected) - set(flat)), sorted(set(flat) - set(expected))
    if missing or extra:
        raise UserError(
            f'{what} does not match the model: missing {missing[:3]}, unexpected {extra[:3]}'
        )
    for key, shape in expected.items():
        if np.shape(flat[key]) != shape:
            raise UserError(f'{what}: {key} has shape {np.shape(flat[key])}, expected {shape}')
    flat = {k: jnp.asarray(v, dtype=jnp.float32) for k, v in flat.items()}
    return traverse_util.unflatten_dict(flat, sep='/')


@functools.partial(jax.jit, static_argnums=0)
def _eval_step(module, variables, images, labels, mask):
    logits, _ = module.apply(variables, data.normalize(images), train=False)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = jnp.argmax(logits, axis=-1) == labels
    return jnp.sum(loss * mask), jnp.sum(correct * mask)


def evaluate(
    module: nn.Module,
    variables: Variables,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int = 500,
    image_size: int | None = None,
) -> dict[str, float]:
    """Mean cross-entropy and top-1 accuracy (%) with running BN statistics.

    Args:
      module: the classifier, ``(x, *, train) -> (logits, features)``.
      variables: its ``{'params', 'batch_stats'}``.
      images: [n, h, w, 3] uint8 images (normalised here).
      labels: [n] int labels.
      batch_size: images per compiled call; the last batch is padded, so it compiles once.
      image_size: resize each batch to this side first (``data.resize``); None: as stored.

    Returns:
      ``{'loss': float, 'accuracy': float (percent)}``.
    """
    loss = correct = 0.0
    for batch, batch_labels in data.iterate_batches(images, labels, batch_size):
        if image_size is not None:
            batch = data.resize(batch, image_size)
        mask = np.zeros(batch_size, np.float32)
        mask[: len(batch)] = 1.0
        pad = batch_size - len(batch)
        batch = np.pad(batch, ((0, pad), (0, 0), (0, 0), (0, 0)))
        batch_labels = np.pad(batch_labels, (0, pad))
        batch_loss, batch_correct = _eval_step(module, variables, batch, batch_labels, mask)
        loss, correct = loss + batch_loss, correct + batch_correct
    n = max(len(images), 1)
    return {'loss': float(loss) / n, 'accuracy': 100.0 * float(correct) / n}


@functools.partial(jax.jit, static_argnums=(0, 2))
def _init(module: nn.Module, key: jax.Array, image_size: int) -> Variables:
    return module.init(key, jnp.zeros((1, image_size, image_size, 3), jnp.float32), train=False)


@flax.struct.dataclass
class TrainState:
    """Everything a training step changes (a pytree)."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


class Hyper(NamedTuple):
    """Static optimiser settings (hashable, so the jitted step is cached across runs)."""

    learning_rate: float
    momentum: float
    weight_decay: float
    total_steps: int

    def schedule(self) -> optax.Schedule:
        """Cosine decay from the peak learning rate to 0 over ``total_steps``."""
        return optax.cosine_decay_schedule(self.learning_rate, self.total_steps)

    def optimizer(self) -> optax.GradientTransformation:
        """SGD with momentum and coupled L2 weight decay on every parameter (as PyTorch's)."""
        return optax.chain(
            optax.add_decayed_weights(self.weight_decay),
            optax.sgd(self.schedule(), momentum=self.momentum),
        )


@functools.partial(jax.jit, static_argnums=(0, 1))
def train_step(
    module: nn.Module, hyper: Hyper, state: TrainState, images: jax.Array, labels: jax.Array
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One SGD step on a batch, with batch statistics in BatchNorm.

    Args:
      module: the network (static).
      hyper: optimiser settings (static).
      state: the current training state.
      images: [b, h, w, 3] uint8 images (augmented; normalised here).
      labels: [b] int labels.

    Returns:
      The new state and ``{'loss_sum', 'correct', 'count'}`` over the batch.
    """

    def loss_fn(params):
        variables = {'params': params, 'batch_stats': state.batch_stats}
        (logits, _), updates = module.apply(
            variables, data.normalize(images), train=True, mutable=['batch_stats']
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, (logits, updates.get('batch_stats', {}))

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = hyper.optimizer().update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        'loss_sum': loss * labels.shape[0],
        'correct': jnp.sum(jnp.argmax(logits, axis=-1) == labels),
        'count': labels.shape[0],
    }
    return TrainState(state.step + 1, params, batch_stats, opt_state), metrics


def _save_checkpoint(path: pathlib.Path, state: TrainState, meta: dict[str, Any]) -> None:
    """Writes the state and ``meta`` atomically, with its digest (``checkpoint.write``)."""
    payload = dict(meta)
    payload.update(
        step=int(state.step),
        params=jax.device_get(state.params),
        batch_stats=jax.device_get(state.batch_stats),
        opt_state=flax.serialization.to_state_dict(jax.device_get(state.opt_state)),
    )
    checkpoint.write(path, payload)


def _restore_checkpoint(path: pathlib.Path, state: TrainState, meta: dict[str, Any]):
    saved = read_checkpoint(path)
    for key, value in meta.items():
        if _jsonable(saved.get(key)) != value:
            raise UserError(
                f'{path} was written by a different run ({key}: {saved.get(key)} != {value}); '
                'resume with the same config or use a new workdir'
            )
    expected = traverse_util.flatten_dict(
        {'params': state.params, 'batch_stats': state.batch_stats}, sep='/'
    )
    flat = traverse_util.flatten_dict(
        {'params': saved['params'], 'batch_stats': saved['batch_stats']}, sep='/'
    )
    variables = to_variables({k: v.shape for k, v in expected.items()}, flat, str(path))
    opt_state = flax.serialization.from_state_dict(state.opt_state, saved['opt_state'])
    return TrainState(
        step=jnp.asarray(saved['step'], jnp.int32),
        params=variables['params'],
        batch_stats=variables.get('batch_stats', {}),
        opt_state=jax.tree.map(jnp.asarray, opt_state),
    )


def _record_step(line: str) -> float:
    """The step of a metrics line; +inf for a partial line (a run killed while appending)."""
    try:
        return float(json.loads(line)['step'])
    except (ValueError, KeyError, TypeError):
        return float('inf')


def _truncate_metrics(path: pathlib.Path, step: int) -> None:
    """Drops records written after the checkpoint being resumed, and partial lines (atomic)."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if _record_step(line) <= step]
    if len(kept) != len(lines):
        fileio.atomic_write_text(path, ''.join(line + '\n' for line in kept))


def _jsonable(value: Any) -> Any:
    """The value as JSON would give it back (tuples become lists), to compare descriptions."""
    return json.loads(json.dumps(value))


def _step(module, hyper, state, images, labels, *, wait: bool):
    """``train_step`` (awaited if ``wait``); XLA's out-of-memory error becomes batch advice."""
    try:
        out = train_step(module, hyper, state, images, labels)
        return jax.block_until_ready(out) if wait else out
    except jax.errors.JaxRuntimeError as e:
        if 'RESOURCE_EXHAUSTED' not in str(e):
            raise
        raise UserError(
            f'out of memory for a training step on a batch of {len(images)} images of '
            f'{images.shape[1]} px ({str(e).splitlines()[0][:200]}); lower '
            '--config.train.batch_size (and the learning rate with it)'
        ) from None


def eval_split(config: Any) -> tuple[np.ndarray, np.ndarray, str]:
    """The test split accuracy is reported on, at its stored size, and its name ('test').

    With ``config.train.eval_size`` > 0, only that many images, evenly spaced over the split
    (which may be sorted by class), for quick smoke runs.
    """
    images, labels = data.load_split(config.data, 'test', stored_size=True)
    size = int(config.train.get('eval_size', 0))
    if 0 < size < len(images):
        idx = np.linspace(0, len(images) - 1, size).round().astype(int)
        images, labels = images[idx], labels[idx]
    return images, labels, 'test'


def fit(
    module: nn.Module, config: Any, workdir: str | os.PathLike, *, model: Mapping[str, Any],
    name: str,
) -> dict[str, float]:  # fmt: skip
    """Trains ``module`` from scratch, resuming from ``workdir`` when it holds the same run.

    Uses ``config.seed``, ``config.data.*`` and ``config.train.*`` (epochs, batch_size,
    learning_rate, momentum, weight_decay, max_steps, eval_every, checkpoint_every, eval_size
    if present). Evaluation runs in batches of ``train.batch_size`` on the 'test' split. Writes
    ``workdir/metrics.jsonl`` (one record per epoch, and one where ``max_steps`` stops) and
    ``workdir/checkpoint.msgpack`` (every ``checkpoint_every`` epochs and at the end).

    Args:
      module: the classifier, ``(x [b, s, s, 3], *, train) -> (logits, features)``, with
        ``s = config.data.image_size``.
      config: the run's config.
      workdir: where the checkpoint and metrics go.
      model: JSON-able description of the module, saved in the checkpoint (from which the
        loaders rebuild the module) and checked on resume.
      name: the model's name in the logs.

    Returns:
      The last record: step, epoch, learning_rate, train_loss, train_accuracy, test_loss,
      test_accuracy (accuracies in percent, on the 'test' split).

    Raises:
      UserError (DataError included): missing data, a workdir from a different run or a
        damaged checkpoint, fewer training images than one batch, or a batch too large for
        the memory.
    """
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tc, size = config.train, config.data.image_size
    images, labels = data.load_split(config.data, 'train', stored_size=True)
    test_images, test_labels, test_split = eval_split(config)
    steps_per_epoch = len(images) // tc.batch_size
    if steps_per_epoch == 0:
        raise UserError(
            f'{len(images)} training images, fewer than one batch of {tc.batch_size}'
            ' (--config.train.batch_size)'
        )
    total_steps = tc.epochs * steps_per_epoch
    last_step = min(total_steps, tc.max_steps) if tc.max_steps > 0 else total_steps
    # What a resumed run must share with the checkpoint for the same result.
    meta = _jsonable({
        "model": dict(model),
        "seed": int(config.seed),
        "batch_size": int(tc.batch_size),
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
    })  # fmt: skip
    hyper = Hyper(float(tc.learning_rate), float(tc.momentum), float(tc.weight_decay), total_steps)
    schedule = hyper.schedule()
    variables = _init(module, jax.random.key(config.seed), size)
    params, batch_stats = variables['params'], variables.get('batch_stats', {})
    opt_state = hyper.optimizer().init(params)
    state = TrainState(jnp.zeros((), jnp.int32), params, batch_stats, opt_state)
    ckpt_path, metrics_path = workdir / CHECKPOINT_NAME, workdir / METRICS_NAME
    if ckpt_path.exists():
        state = _restore_checkpoint(ckpt_path, state, meta)
        logging.info('Resuming from %s at step %d.', ckpt_path, int(state.step))
    _truncate_metrics(metrics_path, int(state.step))
    resize_to = size if data.resizes(config.data) and images.shape[1] != size else None

    def test_metrics() -> dict[str, float]:
        variables = {'params': state.params, 'batch_stats': state.batch_stats}
        # Batches of the training size: forward passes then fit wherever training does.
        evaluation = evaluate(
            module,
            variables,
            test_images,
            test_labels,
            image_size=resize_to,
            batch_size=max(1, min(tc.batch_size, len(test_images))),
        )
        return {'test_loss': evaluation['loss'], 'test_accuracy': evaluation['accuracy']}

    step, record, compile_s = int(state.step), {}, None
    logging.info(
        "Training %s on %d images (%d px%s) for %d of %d steps (%d per epoch), from step %d.",
        name, len(images), size, f", resized from {images.shape[1]}" if resize_to else "",
        last_step, total_steps, steps_per_epoch, step,
    )  # fmt: skip
    while step < last_step:
        epoch, start = divmod(step, steps_per_epoch)
        rng = np.random.default_rng([config.seed, epoch])  # The same order after a resume.
        batches = data.iterate_batches(
            images, labels, tc.batch_size, rng, augment=True, drop_remainder=True, start=start
        )
        sums, tic, timed_from = None, time.perf_counter(), step
        for batch, batch_labels in batches:
            if resize_to:
                batch = data.resize(batch, resize_to)
            # The first step compiles and allocates: awaited, so that running out of memory
            # is reported there.
            state, metrics = _step(module, hyper, state, batch, batch_labels,
                                   wait=compile_s is None)  # fmt: skip
            sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
            step += 1
            if compile_s is None:
                compile_s, tic, timed_from = time.perf_counter() - tic, time.perf_counter(), step
                logging.info('First step (with compilation): %.1f s.', compile_s)
            if step >= last_step:
                break
        sums = jax.device_get(sums)
        seconds = time.perf_counter() - tic
        done_epochs, in_epoch = divmod(step, steps_per_epoch)
        finished = step >= last_step
        record = {
            'step': step,
            'epoch': step / steps_per_epoch,
            'learning_rate': float(schedule(step)),
            'train_loss': float(sums['loss_sum']) / float(sums['count']),
            'train_accuracy': 100.0 * float(sums['correct']) / float(sums['count']),
            'seconds': seconds,
        }
        if finished or (in_epoch == 0 and done_epochs % tc.eval_every == 0):
            record.update(test_metrics())
        per_step = seconds / max(step - timed_from, 1)
        logging.info(
            "epoch %.2f, step %d/%d: train loss %.4f, acc %.2f%%; %s acc %s; lr %.4g; "
            "%.1f s/epoch, ETA %.0f s",
            record["epoch"], step, last_step, record["train_loss"], record["train_accuracy"],
            test_split, f"{record['test_accuracy']:.2f}%" if "test_accuracy" in record else "-",
            record["learning_rate"], per_step * steps_per_epoch, per_step * (last_step - step),
        )  # fmt: skip
        with open(metrics_path, 'a') as f:
            f.write(json.dumps(record) + '\n')
        if finished or (in_epoch == 0 and done_epochs % tc.checkpoint_every == 0):
            _save_checkpoint(ckpt_path, state, meta)
    if not record:  # Nothing left to train: report the checkpoint's test metrics.
        record = {'step': step, 'epoch': step / steps_per_epoch, **test_metrics()}
    return record
