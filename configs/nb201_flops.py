"""HW-EvRSNAS on NAS-Bench-201 (CIFAR-10) under a FLOPs budget (NAS-Bench-201's MFLOPs).

Run: python launch.py --config configs/nb201_flops.py --config.hardware.limit=100
Expect: `best.json` with an architecture of at most `limit` MFLOPs (the space spans about 7.8 to
  220 MFLOPs on CIFAR-10) and its latency on every HW-NAS-Bench device, for the paper's
  Figure 2 (g)-(h). Variants: ':paper' (the default), ':layer2' (proxy.score_layers=2, as in
  configs/nb201_latency.py).
"""

from configs import base

VARIANTS = base.PRESETS  # Named search presets: hwnas_jax/config.py.


def get_config(variant: str = 'paper'):
    """The search of the paper's settings, or of a named preset (`base.PRESETS`)."""
    c = base.get_config()
    c.hardware.metric = 'flops'
    c.hardware.device = ''
    c.hardware.limit = 100.0
    return base.search_preset(c, variant, 'nb201_flops')
