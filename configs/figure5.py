"""The paper's Figure 5: draws needed to fill a population of 50, rejection sampling vs penalty.

Variants: 'ofa' (default): the OFA space at 224 px, width 1.2, MACs with ImageNet's classifier
(OFA's convention), a default sweep of 200, 250, ..., 600 M MACs; 'ofa_cifar': 32 px (CIFAR
stem, 10 classes); 'nb201': NAS-Bench-201's FLOPs on CIFAR-10. Budgets of your own:
--config.figure5.limits=240,300,374.

Run: python launch.py --config configs/figure5.py --workdir workdirs/figure5
Expect: `figure5.csv` (and `figure5.png` with matplotlib) and a table in the log, in seconds.
  For 'ofa', mean rejection draws over 10 seeds: 600 M: 50, 500 M: 56, 400 M: 141, 350 M: 413,
  300 M: about 2,800; at 250 M 9 of 10 seeds and at 200 M all give up after max_draws (100,000:
  about 0.04 % and 0 % of architectures fit); the penalty always draws 50.
"""

from configs import base
from hwnas_jax.errors import UserError

# variant -> (space, resolution, classes, metric).
VARIANTS = {
    'ofa': ('ofa', 224, 1000, 'flops'),
    'ofa_cifar': ('ofa', 32, 10, 'flops'),
    'nb201': ('nb201', 32, 10, 'flops'),
}


def get_config(variant: str = 'ofa'):
    """Returns the Figure 5 experiment of `variant`."""
    if variant not in VARIANTS:
        raise UserError(f'unknown variant {variant!r} of figure5; choose one of {sorted(VARIANTS)}')
    space, resolution, classes, metric = VARIANTS[variant]
    c = base.get_config()
    c.job = 'figure5'
    c.space.name = space
    c.space.width_mult = 1.2
    c.space.resolution = resolution
    c.data.num_classes = classes  # Only the classifier's MACs: OFA's budgets count 1000.
    c.hardware.metric = metric
    c.hardware.device = ''
    c.figure5.population = 50
    c.figure5.seeds = 10
    c.figure5.limits = ''  # The default sweep from tight to loose.
    return c
