"""Trains the OFA space's reference, its largest subnet (k7, e6, d4, width 1.2), from scratch.

Variants: 'cifar10' (default) and 'cifar100' at 224 px (CIFAR images upsampled, for
configs/ofa_flops.py:240/300/374), 'cifar10_32' and 'cifar100_32' at 32 px with the CIFAR stem
(for configs/ofa_flops.py:cifar). No OFA weights ship with hwnas_jax: an OFA search needs this.

Run:
  python launch.py --config configs/train_reference_ofa.py:cifar10 --workdir workdirs/ofa_max
  python launch.py --config configs/train_reference_ofa.py:cifar10_32 \
      --config.data.source=folder --config.data.root=/path/to/cifar10 --workdir workdirs/ofa_32
  Rerunning with the same --workdir resumes; a search then uses the result with
  --config.reference.checkpoint=<workdir>. ImageNet users: --config.data.source=folder with
  their images at 224 px, --config.data.num_classes=1000.
Expect: the test accuracy per epoch in `metrics.jsonl` and the progress lines, and
  `checkpoint.msgpack`. Not measured in this repository: networks of this size trained from
  scratch with this recipe usually reach about 93-95 % on CIFAR-10 and 75-78 % on CIFAR-100.
  The 224 px run costs about 2.5 G multiply-adds per image and step (about 50x the 32 px
  one): hours on a GPU.
"""

from configs import base

# variant -> (tfds dataset, classes, resolution, epochs).
VARIANTS = {
    'cifar10': ('cifar10', 10, 224, 100),
    'cifar100': ('cifar100', 100, 224, 100),
    'cifar10_32': ('cifar10', 10, 32, 200),
    'cifar100_32': ('cifar100', 100, 32, 200),
}


def get_config(variant: str = 'cifar10'):
    """Returns the from-scratch training of the OFA max subnet of `variant`."""
    if variant not in VARIANTS:
        raise ValueError(f'unknown variant {variant!r} of train_reference_ofa; choose one of '
                         f'{sorted(VARIANTS)}')
    name, classes, resolution, epochs = VARIANTS[variant]
    c = base.get_config()
    c.job = 'train_reference'
    c.space.name = 'ofa'
    c.space.width_mult = 1.2
    c.space.resolution = resolution
    c.reference.arch = 'ofa_max'
    c.data.source = 'tfds'
    c.data.name = name
    c.data.num_classes = classes
    c.data.image_size = resolution
    c.data.resize = True
    c.train.epochs = epochs
    c.train.weight_decay = 5e-4  # The usual CIFAR value for MobileNets trained from scratch.
    return c
