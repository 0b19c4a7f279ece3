"""Trains an architecture found by a search from scratch, to measure its real accuracy.

Variants: 'nb201' (default): NAS-Bench-201's network (C=16, N=5) with its recipe (200 epochs,
batch 256, learning rate 0.1 cosine, weight decay 5e-4; plain momentum, not Nesterov); 'ofa':
an OFA subnet at 224 px, width 1.2 (CIFAR upsampled); 'ofa_cifar': at 32 px (CIFAR stem).
The architecture is --config.space.genome: a search's best.json, its 'genome', an NB201 arch
string or an OFA config {"ks": [...], "e": [...], "d": [...]}.

Run:
  python launch.py --config configs/train_arch.py \
      --config.space.genome=workdirs/nb201/best.json --workdir workdirs/nb201_arch
  python launch.py --config configs/train_arch.py:ofa \
      --config.space.genome='{"ks": [7, ...], "e": [6, ...], "d": [4, 4, 4, 4, 4]}'
Expect: `arch.json` (the architecture, its FLOPs/MACs and parameters), the test accuracy per
  epoch in `metrics.jsonl` and the log, resumable with the same --workdir. On CIFAR-10,
  NAS-Bench-201 architectures reach up to about 94.4 % with this recipe (NAS-Bench-201's own
  training of the best one), a good one found under a budget typically 90-94 %.
"""

from configs import base

# variant -> (space, resolution, epochs, batch size).
VARIANTS = {
    'nb201': ('nb201', 32, 200, 256),
    'ofa': ('ofa', 224, 100, 128),
    'ofa_cifar': ('ofa', 32, 200, 128),
}


def get_config(variant: str = 'nb201'):
    """Returns the from-scratch training of `config.space.genome` of `variant`."""
    if variant not in VARIANTS:
        raise ValueError(f'unknown variant {variant!r} of train_arch; choose one of '
                         f'{sorted(VARIANTS)}')
    space, resolution, epochs, batch_size = VARIANTS[variant]
    c = base.get_config()
    c.job = 'train_arch'
    c.space.name = space
    c.space.width_mult = 1.2
    c.space.resolution = resolution
    c.data.source = 'tfds'
    c.data.image_size = resolution
    c.data.resize = True
    c.train.epochs = epochs
    c.train.batch_size = batch_size
    c.train.weight_decay = 5e-4
    return c
