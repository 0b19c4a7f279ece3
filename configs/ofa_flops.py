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
Cost measured on a 2-core CPU shared with other jobs (proxy.strategy 'auto' = 'exact' on a
  CPU; 2 members, a reference trained for 2 steps; peak RSS from /usr/bin/time -v):
  'cifar' (20 proxy steps): 38-57 s to compile each new architecture, then about 11 s per
  member-step (batch 32 at 32 px): about 19 min per member at the default 100 steps; peak RSS
  6.8 GB. '300' (5 proxy steps): 38-45 s per compilation, about 50 s per member-step at
  224 px: over an hour per member at 100 steps; peak RSS 16.7 GB with members of about 350 M
  MACs. A training step needs up to about 1 GB per image at 224 px for the largest members,
  so a 224 px population at proxy.batch_size=32 can exceed 24 GB: on such a machine use
  --config.proxy.batch_size=16 (a different proxy than the paper's). 20 members x 100
  generations are for a GPU at either size.
"""

from configs import base
from hwnas_jax.errors import UserError

# variant -> (resolution, budget in M MACs).
VARIANTS = {'240': (224, 240.0), '300': (224, 300.0), '374': (224, 374.0), 'cifar': (32, 90.0)}


def get_config(variant: str = '300'):
    """Returns the OFA FLOPs-budget search of `variant` on CIFAR-10."""
    if variant not in VARIANTS:
        raise UserError(
            f'unknown variant {variant!r} of ofa_flops; choose one of '
            f'{sorted(VARIANTS)} (e.g. --config configs/ofa_flops.py:240)'
        )
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
