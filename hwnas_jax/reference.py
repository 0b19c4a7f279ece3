"""The reference model whose features RMI matches: import, load, run and train it.

Two sources (``config.reference.checkpoint``):
  unset: the packaged CIFAR-10 ResNet-20 of akamaster/pytorch_resnet_cifar10 (BSD-2-Clause,
    converted by ``tools/convert_reference.py``; 91.78 % on CIFAR-10, 81.0 % on the JPEG copy);
  a path: a checkpoint written by ``train`` (``job='train_reference'``), or its workdir.

``train`` is the usual CIFAR recipe (He et al. 2016; akamaster): SGD with momentum, cosine
learning-rate decay to 0, L2 weight decay on every parameter, random crop + flip. It checkpoints
atomically and resumes from ``workdir`` with the same data order (shuffles and augmentation are
derived from the seed and the epoch), so an interrupted run ends with the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
import os
import pathlib
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import traverse_util

from hwnas_jax import data
from hwnas_jax.models.resnet import ResNet

PRETRAINED_ASSET = "resnet20_cifar10.npz"
# content_digest of the packaged weights (see tools/convert_reference.py and its NOTICE).
PRETRAINED_DIGEST = "5c7e7a127d055d0699e96e4b4cf989b6a000bea1f316190fc84e32a9b1398cbc"
CHECKPOINT_NAME = "checkpoint.msgpack"
METRICS_NAME = "metrics.jsonl"
BN_MODES = {"eval": False, "train": True}  # bn_mode -> `train` flag of the module.

Variables = dict[str, Any]


def content_digest(flat: Mapping[str, np.ndarray]) -> str:
    """sha256 over the sorted names, dtypes, shapes and bytes of flat arrays."""
    h = hashlib.sha256()
    for key in sorted(flat):
        value = np.ascontiguousarray(flat[key])
        h.update(f"{key}|{value.dtype.str}|{value.shape}|".encode())
        h.update(value.tobytes())
    return h.hexdigest()


def _expected_shapes(module: ResNet, image_size: int = 32) -> dict[str, tuple[int, ...]]:
    images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    init = functools.partial(module.init, train=False)
    shapes = jax.eval_shape(init, jax.random.key(0), images)
    return {k: v.shape for k, v in traverse_util.flatten_dict(shapes, sep="/").items()}


def _to_variables(module: ResNet, flat: Mapping[str, Any], what: str) -> Variables:
    """Checks flat arrays against the module's variables and nests them."""
    expected = _expected_shapes(module)
    missing, extra = sorted(set(expected) - set(flat)), sorted(set(flat) - set(expected))
    if missing or extra:
        raise ValueError(
            f"{what} does not match {module}: missing {missing[:3]}, unexpected {extra[:3]}"
        )
    for key, shape in expected.items():
        if np.shape(flat[key]) != shape:
            raise ValueError(f"{what}: {key} has shape {np.shape(flat[key])}, expected {shape}")
    flat = {k: jnp.asarray(v, dtype=jnp.float32) for k, v in flat.items()}
    return traverse_util.unflatten_dict(flat, sep="/")


def load_pretrained(num_classes: int = 10) -> tuple[ResNet, Variables]:
    """Loads the packaged pretrained CIFAR-10 ResNet-20.

    Args:
      num_classes: classes of the task; must be 10 (the packaged model is CIFAR-10's).

    Returns:
      ``(ResNet(depth=20, num_classes=10), {'params': ..., 'batch_stats': ...})``.

    Raises:
      ValueError: another number of classes, or a missing or corrupt asset.
    """
    if num_classes != 10:
        raise ValueError(
            f"the packaged reference is a CIFAR-10 model (10 classes), not {num_classes}: train "
            "one with job='train_reference' and set --config.reference.checkpoint=<workdir>"
        )
    module = ResNet(depth=20, num_classes=10)
    asset = importlib.resources.files("hwnas_jax") / "assets" / PRETRAINED_ASSET
    try:
        with asset.open("rb") as f, np.load(f, allow_pickle=False) as npz:
            flat = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"packaged {PRETRAINED_ASSET} is missing or unreadable ({e})") from None
    if content_digest(flat) != PRETRAINED_DIGEST:
        raise ValueError(
            f"packaged {PRETRAINED_ASSET} is corrupt (digest mismatch); reinstall hwnas_jax or "
            "rebuild it with tools/convert_reference.py"
        )
    return module, _to_variables(module, flat, PRETRAINED_ASSET)


def _read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    path = pathlib.Path(path).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    try:
        state = flax.serialization.msgpack_restore(path.read_bytes())
    except OSError as e:
        raise ValueError(f"cannot read reference checkpoint {path}: {e}") from None
    except Exception as e:  # noqa: BLE001  (msgpack raises several types on corrupt input)
        raise ValueError(f"reference checkpoint {path} is corrupt: {e}") from None
    if not isinstance(state, dict) or not {"model", "params", "batch_stats"} <= set(state):
        raise ValueError(f"{path} is not a reference checkpoint written by reference.train")
    return state


def load_checkpoint(path: str | os.PathLike) -> tuple[ResNet, Variables]:
    """Loads a reference written by ``train``.

    Args:
      path: the checkpoint file, or the training workdir holding ``checkpoint.msgpack``.

    Returns:
      ``(ResNet(depth, num_classes), {'params': ..., 'batch_stats': ...})``.

    Raises:
      ValueError: missing, corrupt or mismatched checkpoint.
    """
    state = _read_checkpoint(path)
    model = state["model"]
    module = ResNet(depth=int(model["depth"]), num_classes=int(model["num_classes"]))
    flat = traverse_util.flatten_dict(
        {"params": state["params"], "batch_stats": state["batch_stats"]}, sep="/"
    )
    return module, _to_variables(module, flat, str(path))


def load(config: Any) -> tuple[ResNet, Variables]:
    """The reference ``config.reference`` names: a trained checkpoint, or the packaged model.

    Raises:
      ValueError: the reference's classes differ from ``config.data.num_classes``.
    """
    if not config.reference.checkpoint:
        return load_pretrained(config.data.num_classes)
    module, variables = load_checkpoint(config.reference.checkpoint)
    if module.num_classes != config.data.num_classes:
        raise ValueError(
            f"reference {config.reference.checkpoint} has {module.num_classes} classes, "
            f"data.num_classes is {config.data.num_classes}"
        )
    return module, variables


def make_feature_fn(
    module: ResNet, variables: Variables, *, bn_mode: str = "eval"
) -> Callable[[jax.Array], tuple[jax.Array, list[jax.Array]]]:
    """A jitted ``images -> (logits, features)`` of the reference.

    Args:
      module: the reference network.
      variables: its ``{'params', 'batch_stats'}``.
      bn_mode: 'eval' uses the running statistics; 'train' normalises with the batch's own
        statistics (as RMI-NAS's reference in train mode), without updating anything.

    Returns:
      A function of ``images [n, h, w, 3]`` float32, normalised with ``data.normalize``, to
      ``(logits [n, classes], [stage1, stage2, stage3])``.

    Raises:
      ValueError: unknown ``bn_mode``.
    """
    if bn_mode not in BN_MODES:
        raise ValueError(f"unknown bn_mode {bn_mode!r}; choose one of {sorted(BN_MODES)}")
    # Variables are an argument, not closed-over constants baked into the compiled program.
    return functools.partial(_features, module, BN_MODES[bn_mode], variables)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _features(
    module: ResNet, train: bool, variables: Variables, images: jax.Array
) -> tuple[jax.Array, list[jax.Array]]:
    if train:  # Batch statistics; the updated running averages are dropped.
        out, _ = module.apply(variables, images, train=True, mutable=["batch_stats"])
        return out
    return module.apply(variables, images, train=False)


@functools.partial(jax.jit, static_argnums=0)
def _eval_step(module, variables, images, labels, mask):
    logits, _ = module.apply(variables, data.normalize(images), train=False)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = jnp.argmax(logits, axis=-1) == labels
    return jnp.sum(loss * mask), jnp.sum(correct * mask)


def evaluate(
    module: ResNet,
    variables: Variables,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int = 500,
) -> dict[str, float]:
    """Mean cross-entropy and top-1 accuracy (%) with running BN statistics.

    Args:
      images: [n, h, w, 3] uint8 images (normalised here).
      labels: [n] int labels.
      batch_size: images per compiled call; the last batch is padded, so it compiles once.

    Returns:
      ``{'loss': float, 'accuracy': float (percent)}``.
    """
    loss = correct = 0.0
    for batch, batch_labels in data.iterate_batches(images, labels, batch_size):
        mask = np.zeros(batch_size, np.float32)
        mask[: len(batch)] = 1.0
        pad = batch_size - len(batch)
        batch = np.pad(batch, ((0, pad), (0, 0), (0, 0), (0, 0)))
        batch_labels = np.pad(batch_labels, (0, pad))
        batch_loss, batch_correct = _eval_step(module, variables, batch, batch_labels, mask)
        loss, correct = loss + batch_loss, correct + batch_correct
    n = max(len(images), 1)
    return {"loss": float(loss) / n, "accuracy": 100.0 * float(correct) / n}


@functools.partial(jax.jit, static_argnums=(0, 2))
def _init(module: ResNet, key: jax.Array, image_size: int) -> Variables:
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
    module: ResNet, hyper: Hyper, state: TrainState, images: jax.Array, labels: jax.Array
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
        variables = {"params": params, "batch_stats": state.batch_stats}
        (logits, _), updates = module.apply(
            variables, data.normalize(images), train=True, mutable=["batch_stats"]
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = hyper.optimizer().update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss_sum": loss * labels.shape[0],
        "correct": jnp.sum(jnp.argmax(logits, axis=-1) == labels),
        "count": labels.shape[0],
    }
    return TrainState(state.step + 1, params, batch_stats, opt_state), metrics


def _save_checkpoint(path: pathlib.Path, state: TrainState, meta: dict[str, Any]) -> None:
    """Writes the state atomically: a temp file in the same folder, then os.replace."""
    payload = dict(meta)
    payload.update(
        step=int(state.step),
        params=jax.device_get(state.params),
        batch_stats=jax.device_get(state.batch_stats),
        opt_state=flax.serialization.to_state_dict(jax.device_get(state.opt_state)),
    )
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(flax.serialization.msgpack_serialize(payload))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _restore_checkpoint(path: pathlib.Path, state: TrainState, meta: dict[str, Any]):
    saved = _read_checkpoint(path)
    for key, value in meta.items():
        if saved.get(key) != value:
            raise ValueError(
                f"{path} was written by a different run ({key}: {saved.get(key)} != {value}); "
                "resume with the same config or use a new workdir"
            )
    flat = traverse_util.flatten_dict(
        {"params": saved["params"], "batch_stats": saved["batch_stats"]}, sep="/"
    )
    variables = _to_variables(ResNet(**meta["model"]), flat, str(path))
    opt_state = flax.serialization.from_state_dict(state.opt_state, saved["opt_state"])
    return TrainState(
        step=jnp.asarray(saved["step"], jnp.int32),
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        opt_state=jax.tree.map(jnp.asarray, opt_state),
    )


def _truncate_metrics(path: pathlib.Path, step: int) -> None:
    """Drops records written after the checkpoint being resumed (atomic rewrite)."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line)["step"] <= step]
    if len(kept) != len(lines):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)


def _eval_split(config: Any) -> tuple[np.ndarray, np.ndarray, str]:
    if config.data.source == "embedded":
        logging.warning("The embedded sample has no test split: evaluating on its train split.")
        return (*data.load_split(config.data, "train"), "train")
    return (*data.load_split(config.data, "test"), "test")


def train(config: Any, workdir: str | os.PathLike) -> dict[str, float]:
    """Trains a reference ResNet from scratch, resuming from ``workdir`` when it holds a run.

    Uses ``config.seed``, ``config.data.*`` and ``config.train.*`` (epochs, batch_size,
    learning_rate, momentum, weight_decay, max_steps, eval_every, checkpoint_every), and
    ``config.reference.depth`` when present (default 20). Writes ``workdir/metrics.jsonl`` (one
    record per epoch, and one where ``max_steps`` stops) and ``workdir/checkpoint.msgpack``
    (every ``checkpoint_every`` epochs and at the end), which ``load_checkpoint`` reads.

    Returns:
      The last record: step, epoch, learning_rate, train_loss, train_accuracy, test_loss,
      test_accuracy (accuracies in percent; "test" is the train split for the embedded sample).

    Raises:
      DataError: missing data. ValueError: a workdir from a different run, or fewer training
        images than one batch.
    """
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tc = config.train
    images, labels = data.load_split(config.data, "train")
    test_images, test_labels, test_split = _eval_split(config)
    steps_per_epoch = len(images) // tc.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(images)} training images, fewer than one batch of {tc.batch_size}")
    total_steps = tc.epochs * steps_per_epoch
    last_step = min(total_steps, tc.max_steps) if tc.max_steps > 0 else total_steps
    model = {
        "depth": int(config.reference.get("depth", 20)),
        "num_classes": int(config.data.num_classes),
    }
    module = ResNet(**model)
    # What a resumed run must share with the checkpoint for the same result.
    meta = {
        "model": model,
        "seed": int(config.seed),
        "batch_size": int(tc.batch_size),
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
    }
    hyper = Hyper(float(tc.learning_rate), float(tc.momentum), float(tc.weight_decay), total_steps)
    schedule = hyper.schedule()
    size = config.data.image_size
    variables = _init(module, jax.random.key(config.seed), size)
    params, batch_stats = variables["params"], variables["batch_stats"]
    opt_state = hyper.optimizer().init(params)
    state = TrainState(jnp.zeros((), jnp.int32), params, batch_stats, opt_state)
    checkpoint, metrics_path = workdir / CHECKPOINT_NAME, workdir / METRICS_NAME
    if checkpoint.exists():
        state = _restore_checkpoint(checkpoint, state, meta)
        logging.info("Resuming from %s at step %d.", checkpoint, int(state.step))
    _truncate_metrics(metrics_path, int(state.step))

    def test_metrics() -> dict[str, float]:
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        evaluation = evaluate(module, variables, test_images, test_labels)
        return {"test_loss": evaluation["loss"], "test_accuracy": evaluation["accuracy"]}

    step, record, compile_s = int(state.step), {}, None
    logging.info(
        "Training ResNet-%d (%d classes) on %d images for %d of %d steps (%d per epoch), "
        "from step %d.",
        module.depth, module.num_classes, len(images), last_step, total_steps, steps_per_epoch,
        step,
    )  # fmt: skip
    while step < last_step:
        epoch, start = divmod(step, steps_per_epoch)
        rng = np.random.default_rng([config.seed, epoch])  # The same order after a resume.
        batches = data.iterate_batches(
            images, labels, tc.batch_size, rng, augment=True, drop_remainder=True, start=start
        )
        sums, tic, timed_from = None, time.perf_counter(), step
        for batch, batch_labels in batches:
            state, metrics = train_step(module, hyper, state, batch, batch_labels)
            sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
            step += 1
            if compile_s is None:
                jax.block_until_ready(state)
                compile_s, tic, timed_from = time.perf_counter() - tic, time.perf_counter(), step
                logging.info("First step (with compilation): %.1f s.", compile_s)
            if step >= last_step:
                break
        sums = jax.device_get(sums)
        seconds = time.perf_counter() - tic
        done_epochs, in_epoch = divmod(step, steps_per_epoch)
        finished = step >= last_step
        record = {
            "step": step,
            "epoch": step / steps_per_epoch,
            "learning_rate": float(schedule(step)),
            "train_loss": float(sums["loss_sum"]) / float(sums["count"]),
            "train_accuracy": 100.0 * float(sums["correct"]) / float(sums["count"]),
            "seconds": seconds,
        }
        if finished or (in_epoch == 0 and done_epochs % tc.eval_every == 0):
            record.update(test_metrics())
        logging.info(
            "epoch %.2f, step %d/%d: train loss %.4f, acc %.2f%%; %s acc %s; lr %.4g; "
            "%.1f s/epoch, ETA %.0f s",
            record["epoch"], step, last_step, record["train_loss"], record["train_accuracy"],
            test_split, f"{record['test_accuracy']:.2f}%" if "test_accuracy" in record else "-",
            record["learning_rate"], seconds / max(step - timed_from, 1) * steps_per_epoch,
            seconds / max(step - timed_from, 1) * (last_step - step),
        )  # fmt: skip
        with open(metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if finished or (in_epoch == 0 and done_epochs % tc.checkpoint_every == 0):
            _save_checkpoint(checkpoint, state, meta)
    if not record:  # Nothing left to train: report the checkpoint's test metrics.
        record = {"step": step, "epoch": step / steps_per_epoch, **test_metrics()}
    return record
