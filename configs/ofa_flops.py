"""HW-EvRSNAS on the OFA MobileNetV3 space under a FLOPs (MACs) budget, as the paper's Table 1.

Variants (the text after the colon): '240', '300', '374' (default '300'): the paper's budgets in
M MACs (OFA's convention, which it calls FLOPs) at 224 px and width 1.2; 'cifar': 32 px with the
CIFAR stem and a 90 M MAC budget, the same place in the space's MAC range as 300 M at 224 px
(about 1.7 % of random architectures fit either).

Run:
  python launch.py --config configs/train_reference_ofa.py:cifar10 --workdir workdirs/ofa_max
  python launch.py --config configs/ofa_flops.py:300 \
      --config.reference.checkpoint=workdirs/ofa_max --workdir workdirs/ofa_300
  (for 'cifar': train the reference with configs/train_reference_ofa.py:cifar10_32.)
  Then train the found architecture: configs/train_arch.py:ofa with
  --config.space.genome=workdirs/ofa_300/best.json.
Expect: `best.json` with an OFA subnet (its OFA config `{"ks", "e", "d"}`) of at most the budget
  in `costs.macs` (the CIFAR-10 classifier makes a subnet about 1.5 M MACs cheaper than with
  ImageNet's 1000 classes), after 100 generations of 20; without a checkpoint the run stops at
  once with the command that trains the reference (no OFA weights ship).
"""

from configs import base

# variant -> (resolution, budget in M MACs).
VARIANTS = {'240': (224, 240.0), '300': (224, 300.0), '374': (224, 374.0), 'cifar': (32, 90.0)}


def get_config(variant: str = '300'):
    """Returns the OFA FLOPs-budget search of `variant` on CIFAR-10."""
    if variant not in VARIANTS:
        raise ValueError(f'unknown variant {variant!r} of ofa_flops; choose one of '
                         f'{sorted(VARIANTS)} (e.g. --config configs/ofa_flops.py:240)')
    resolution, limit = VARIANTS[variant]
    c = base.get_config()
    c.space.name = 'ofa'
    c.space.width_mult = 1.2
    c.space.resolution = resolution
    c.data.image_size = resolution
    c.data.resize = True  # CIFAR's 32x32 images, bilinearly upsampled to 224 where needed.
    c.data.num_classes = 10
    c.reference.arch = 'ofa_max'  # The largest subnet; it needs reference.checkpoint.
    c.hardware.metric = 'flops'
    c.hardware.device = ''
    c.hardware.limit = limit
    return c
