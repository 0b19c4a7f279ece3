"""Trains the OFA space's reference, its largest subnet (k7, e6, d4, width 1.2), from scratch.

Variants: 'cifar10' (default) and 'cifar100' at 224 px (CIFAR images upsampled, for
configs/ofa_flops.py:240/300/374), 'cifar10_32' and 'cifar100_32' at 32 px with the CIFAR stem
(for configs/ofa_flops.py:cifar). No OFA weights ship with hwnas_jax: an OFA search needs this.

Data: the CIFAR-10 variants default to the packaged sample (data.source='embedded': 1,024
training images, accuracy on 1,000 test images; offline, for trying the pipeline). For a real
reference point the job at the full dataset: --config.data.source=folder
--config.data.root=/path/to/cifar10 (train/<class>/<image>, test/<class>/<image>), or
--config.data.source=tfds with `pip install 'hwnas_jax[tfds]'` (downloads CIFAR-10). The
CIFAR-100 variants need one of those (data.source='tfds', data.name='cifar100', by default).

Batch: one training step of this network needs about 1 GB of memory per image at 224 px and
0.31 GB at 32 px (measured: XLA's temporary buffers, 3.9 GB at batch 4 and 15.7 GB at 16 at
224 px; 5.0 GB at 16 and 9.9 GB at 32 at 32 px), so the recipe's batch 128 (about 125 GB and
40 GB) cannot fit a 24 GB machine. The defaults are batch 8 at 224 px and 32 at 32 px, the
learning rate scaled linearly from the recipe's 0.1 at 128; on a large GPU run the recipe with
--config.train.batch_size=128 --config.train.learning_rate=0.1. A batch too large for the
memory stops at the first step with an error that says so.

Run:
  python launch.py --config configs/train_reference_ofa.py:cifar10 --workdir workdirs/ofa_max
  python launch.py --config configs/train_reference_ofa.py:cifar10_32 \
      --config.data.source=folder --config.data.root=/path/to/cifar10 --workdir workdirs/ofa_32
  Rerunning with the same --workdir resumes; a search then uses the result with
  --config.reference.checkpoint=<workdir>. ImageNet users: --config.data.source=folder with
  their images at 224 px, --config.data.num_classes=1000. A smoke run:
  --config.train.max_steps=2 --config.train.eval_size=8.
Expect: the test accuracy per epoch in `metrics.jsonl` and the progress lines, and
  `checkpoint.msgpack`. Not measured in this repository: networks of this size trained from
  scratch with this recipe usually reach about 93-95 % on CIFAR-10 and 75-78 % on CIFAR-100.
  Cost measured on a 2-core CPU shared with other jobs (2 steps, --config.train.max_steps=2;
  peak RSS from /usr/bin/time -v): 'cifar10' (224 px, batch 8): first step (compilation)
  45-90 s, then 5 s per step, peak RSS 10.0 GB; 'cifar10_32' (batch 32): first step 59-95 s,
  then 12-17 s per step, peak RSS 12.2 GB (the old default batch 128 stopped: XLA asked for
  39.8 GB). An epoch of the packaged sample is 128 and 32 steps (11 and 6-9 min); one of the
  full CIFAR-10, 6,250 and 1,563 steps (about 9 and 5-7 h): the full recipe is for a GPU.
"""

from configs import base
from hwnas_jax.errors import UserError

RECIPE_BATCH, RECIPE_LR = 128, 0.1
# variant -> (tfds dataset, classes, resolution, epochs, batch size).
VARIANTS = {
    'cifar10': ('cifar10', 10, 224, 100, 8),
    'cifar100': ('cifar100', 100, 224, 100, 8),
    'cifar10_32': ('cifar10', 10, 32, 200, 32),
    'cifar100_32': ('cifar100', 100, 32, 200, 32),
}


def get_config(variant: str = 'cifar10'):
    """Returns the from-scratch training of the OFA max subnet of `variant`."""
    if variant not in VARIANTS:
        raise UserError(
            f'unknown variant {variant!r} of train_reference_ofa; choose one of {sorted(VARIANTS)}'
        )
    name, classes, resolution, epochs, batch_size = VARIANTS[variant]
    c = base.get_config()
    c.job = 'train_reference'
    c.space.name = 'ofa'
    c.space.width_mult = 1.2
    c.space.resolution = resolution
    c.reference.arch = 'ofa_max'
    # The packaged CIFAR-10 sample (offline); CIFAR-100 has none: tfds (or a folder).
    c.data.source = 'embedded' if name == 'cifar10' else 'tfds'
    c.data.name = name
    c.data.num_classes = classes
    c.data.image_size = resolution
    c.data.resize = True
    c.train.epochs = epochs
    c.train.batch_size = batch_size
    c.train.learning_rate = RECIPE_LR * batch_size / RECIPE_BATCH  # Linear scaling.
    c.train.weight_decay = 5e-4  # The usual CIFAR value for MobileNets trained from scratch.
    c.train.eval_size = 0  # Test images evaluated (evenly spaced); 0: the whole split.
    return c
