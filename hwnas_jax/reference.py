"""The reference model whose features RMI matches: import, load, run and train it.

Two architectures (``config.reference.arch``; empty: the search space's own):
  'resnet20': the CIFAR ResNet (``models.resnet``, depth ``config.reference.depth``), the
    reference of RMI-NAS and of the paper on NAS-Bench-201;
  'ofa_max': the largest subnet of the OFA MobileNetV3 space (kernel 7, expand 6, depth 4 in
    every block), the paper's reference on the OFA space, at ``config.space.width_mult`` and
    ``config.space.resolution``; its features are the outputs of ``config.space.feature_stages``.

Two sources (``config.reference.checkpoint``):
  unset: the packaged CIFAR-10 ResNet-20 of akamaster/pytorch_resnet_cifar10 (BSD-2-Clause,
    converted by ``tools/convert_reference.py``; 91.78 % on CIFAR-10, 81.0 % on the JPEG copy),
    checked against its sha256 on every load.
    No OFA weights ship: an 'ofa_max' reference must be trained (``configs/train_reference_ofa``);
  a path: a checkpoint written by ``train`` (``job='train_reference'``), or its workdir; its
    recorded sha256 is checked on load (``hwnas_jax.checkpoint``).

``train`` trains the configured reference from scratch with ``training.fit`` (SGD with momentum,
cosine decay, L2 weight decay, crop + flip; resumable from its workdir).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
from absl import logging
from flax import traverse_util

from hwnas_jax import fileio, training
from hwnas_jax.errors import UserError
from hwnas_jax.models.resnet import ResNet

PRETRAINED_ASSET = 'resnet20_cifar10.npz'
# File sha256 of the packaged weights (tools/convert_reference.py; NOTICE-resnet20.txt).
PRETRAINED_SHA256 = 'd9f6844725a6339ff082b813adb75e8f9a255269d79d205e6f9af0493e951404'
CHECKPOINT_NAME = training.CHECKPOINT_NAME
METRICS_NAME = training.METRICS_NAME
BN_MODES = {'eval': False, 'train': True}  # bn_mode -> `train` flag of the module.
ARCHS = ('resnet20', 'ofa_max')
SPACE_ARCHS = {'nb201': 'resnet20', 'ofa': 'ofa_max'}  # The default reference of each space.
OFA_MAX_GENOME = (2,) * 45  # Kernel 7, expand 6, depth 4 everywhere (see spaces.ofa_net).

Variables = dict[str, Any]

# Re-exported: the evaluation and the evaluated split are those of the shared training loop.
evaluate = training.evaluate
_eval_split = training.eval_split


def _to_variables(module: nn.Module, flat: Mapping[str, Any], what: str) -> Variables:
    """Checks flat arrays against the module's variables and nests them."""
    size = getattr(module, 'resolution', 32)  # ResNets take any size; OFA nets their own.
    return training.to_variables(training.flat_shapes(module, size), flat, what)


def arch(config: Any) -> str:
    """The reference architecture of ``config``: ``reference.arch``, else the space's default.

    Raises:
      UserError: an unknown architecture or space.
    """
    name = config.reference.get('arch', '') or SPACE_ARCHS.get(config.space.name)
    if name not in ARCHS:
        raise UserError(
            f'unknown reference.arch {name!r} (space {config.space.name!r}); choose one of {ARCHS}'
        )
    return name


def _ofa_network(model: Mapping[str, Any]) -> nn.Module:
    from hwnas_jax.spaces import ofa_net  # Only OFA references pay for importing the space.

    return ofa_net.Network(
        genome=OFA_MAX_GENOME, num_classes=int(model["num_classes"]),
        width_mult=float(model["width_mult"]), resolution=int(model["resolution"]),
    )  # fmt: skip


def _module(model: Mapping[str, Any]) -> nn.Module:
    """The network a checkpoint's model description names (ResNets predate the 'arch' key)."""
    kind = model.get('arch', 'resnet20')
    if kind == 'resnet20':
        return ResNet(depth=int(model['depth']), num_classes=int(model['num_classes']))
    if kind == 'ofa_max':
        return _ofa_network(model)
    raise UserError(f'unknown reference architecture {kind!r} in a checkpoint')


def build(config: Any) -> tuple[nn.Module, dict[str, Any]]:
    """The untrained reference of ``config`` and its description (saved in checkpoints).

    Raises:
      UserError: unknown architecture, or an OFA resolution other than the data's image size.
    """
    classes = int(config.data.num_classes)
    if arch(config) == 'resnet20':
        model = {'depth': int(config.reference.get('depth', 20)), 'num_classes': classes}
        return _module(model), model
    if config.space.resolution != config.data.image_size:
        raise UserError(
            f'the OFA reference takes {config.space.resolution}px images (space.resolution) '
            f'but data.image_size is {config.data.image_size}: set both to the same value '
            '(and --config.data.resize=True to resize the stored images)'
        )
    model = {"arch": "ofa_max", "num_classes": classes,
             "width_mult": float(config.space.width_mult),
             "resolution": int(config.space.resolution)}  # fmt: skip
    return _module(model), model


def load_pretrained(num_classes: int = 10) -> tuple[ResNet, Variables]:
    """Loads the packaged pretrained CIFAR-10 ResNet-20.

    Args:
      num_classes: classes of the task; must be 10 (the packaged model is CIFAR-10's).

    Returns:
      ``(ResNet(depth=20, num_classes=10), {'params': ..., 'batch_stats': ...})``.

    Raises:
      UserError: another number of classes, or a missing or altered asset (reinstall).
    """
    if num_classes != 10:
        raise UserError(
            f'the packaged reference is a CIFAR-10 model (10 classes), not {num_classes}: train '
            "one with job='train_reference' and set --config.reference.checkpoint=<workdir>"
        )
    module = ResNet(depth=20, num_classes=10)
    path = fileio.checked_asset(PRETRAINED_ASSET, PRETRAINED_SHA256)
    flat = fileio.load_npz(path, what="the packaged ResNet-20 weights",
                           fix="reinstall hwnas_jax")  # fmt: skip
    return module, _to_variables(module, flat, PRETRAINED_ASSET)


def load_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, Variables]:
    """Loads a reference written by ``train``.

    Args:
      path: the checkpoint file, or the training workdir holding ``checkpoint.msgpack``.

    Returns:
      ``(module, {'params': ..., 'batch_stats': ...})``: ``ResNet(depth, num_classes)``, or the
      OFA max subnet ``spaces.ofa_net.Network`` (features of stages 1, 3, 5; ``load`` sets the
      configured stages).

    Raises:
      UserError: missing, damaged (digest mismatch), corrupt or mismatched checkpoint.
    """
    state = training.read_checkpoint(path)
    model = state['model']
    if not isinstance(model, Mapping) or 'space' in model:
        raise UserError(f'{path} holds an architecture trained by train_arch, not a reference')
    module = _module(model)
    flat = traverse_util.flatten_dict(
        {'params': state['params'], 'batch_stats': state['batch_stats']}, sep='/'
    )
    return module, _to_variables(module, flat, str(path))


def _train_command(config: Any) -> str:
    variant = config.data.name if config.data.name in ('cifar10', 'cifar100') else 'cifar10'
    if config.space.resolution == 32:
        variant += '_32'
    return (
        f'python launch.py --config configs/train_reference_ofa.py:{variant} '
        '--workdir workdirs/ofa_max'
    )


def load(config: Any) -> tuple[nn.Module, Variables]:
    """The reference ``config.reference`` names: a trained checkpoint, or the packaged model.

    Raises:
      UserError: an OFA reference without a checkpoint (the message says how to train one);
        a checkpoint of another architecture, classes or resolution than the config's.
    """
    kind = arch(config)
    path = config.reference.checkpoint
    if not path:
        if kind == 'resnet20':
            return load_pretrained(config.data.num_classes)
        raise UserError(
            'no pretrained OFA reference ships with hwnas_jax: train the largest OFA subnet '
            f'with `{_train_command(config)}` (--config.data.* for your training data; the '
            'same space.width_mult and space.resolution as this run), then pass '
            '--config.reference.checkpoint=workdirs/ofa_max'
        )
    module, variables = load_checkpoint(path)
    found = 'ofa_max' if hasattr(module, 'genome') else 'resnet20'
    if found != kind:
        raise UserError(
            f'reference {path} is a {found} model but reference.arch is {kind!r} (space '
            f'{config.space.name!r}): set --config.reference.arch={found} to use it'
        )
    if module.num_classes != config.data.num_classes:
        raise UserError(
            f'reference {path} has {module.num_classes} classes, '
            f'data.num_classes is {config.data.num_classes}'
        )
    if kind == 'ofa_max':
        if module.resolution != config.space.resolution:
            raise UserError(
                f'reference {path} was trained at {module.resolution}px, the search runs at '
                f'space.resolution={config.space.resolution}: train one at that resolution'
            )
        if module.width_mult != config.space.width_mult:
            logging.warning("Reference %s has width %g, the search space %g.", path,
                            module.width_mult, config.space.width_mult)  # fmt: skip
        stages = tuple(int(s) for s in str(config.space.feature_stages).split(','))
        module = module.clone(feature_stages=stages)
    return module, variables


def make_feature_fn(
    module: nn.Module, variables: Variables, *, bn_mode: str = 'eval'
) -> Callable[[jax.Array], tuple[jax.Array, list[jax.Array]]]:
    """A jitted ``images -> (logits, features)`` of the reference.

    Args:
      module: the reference network (as ``load`` returns it).
      variables: its ``{'params', 'batch_stats'}``.
      bn_mode: 'eval' uses the running statistics; 'train' normalises with the batch's own
        statistics (as RMI-NAS's reference in train mode), without updating anything.

    Returns:
      A function of ``images [n, h, w, 3]`` float32, normalised with ``data.normalize``, to
      ``(logits [n, classes], features)``: ResNet stages 1-3, or the outputs of the OFA
      stages the module was built with (``config.space.feature_stages`` through ``load``).

    Raises:
      UserError: unknown ``bn_mode`` (``config.reference.bn_mode``).
    """
    if bn_mode not in BN_MODES:
        raise UserError(f'unknown bn_mode {bn_mode!r}; choose one of {sorted(BN_MODES)}')
    # Variables are an argument, not closed-over constants baked into the compiled program.
    return functools.partial(_features, module, BN_MODES[bn_mode], variables)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _features(
    module: nn.Module, train: bool, variables: Variables, images: jax.Array
) -> tuple[jax.Array, list[jax.Array]]:
    if train:  # Batch statistics; the updated running averages are dropped.
        out, _ = module.apply(variables, images, train=True, mutable=['batch_stats'])
        return out
    return module.apply(variables, images, train=False)


def train(config: Any, workdir: str | os.PathLike) -> dict[str, float]:
    """Trains the reference of ``config`` from scratch, resuming from ``workdir``.

    The architecture is ``arch(config)``: a ResNet of depth ``config.reference.depth``, or the
    OFA max subnet at ``config.space.{width_mult, resolution}``; the recipe is ``training.fit``
    with ``config.train.*`` on ``config.data``. ``load_checkpoint`` reads the result.

    Returns:
      The last record: step, epoch, learning_rate, train_loss, train_accuracy, test_loss,
      test_accuracy (accuracies in percent, on the test split of ``config.data``).

    Raises:
      UserError (DataError included): missing data, a workdir from a different run, fewer
        training images than one batch, or an OFA resolution other than the data's image size.
    """
    module, model = build(config)
    if isinstance(module, ResNet):
        name = f'ResNet-{module.depth} ({module.num_classes} classes)'
    else:
        name = (f"the OFA max subnet (k7, e6, d4; width {module.width_mult:g}, "
                f"{module.num_classes} classes)")  # fmt: skip
    return training.fit(module, config, workdir, model=model, name=name)
