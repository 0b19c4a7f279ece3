"""HW-EvRSNAS on NAS-Bench-201 (CIFAR-10) under a FLOPs budget (NAS-Bench-201's MFLOPs).

Run: python launch.py --config configs/nb201_flops.py --config.hardware.limit=100
Expect: `best.json` with an architecture of at most `limit` MFLOPs (the space spans about 7.8 to
  220 MFLOPs on CIFAR-10) and its latency on every HW-NAS-Bench device, for the paper's
  Figure 2 (g)-(h).
"""

from configs import base


def get_config():
    c = base.get_config()
    c.hardware.metric = 'flops'
    c.hardware.device = ''
    c.hardware.limit = 100.0
    return c
