"""HW-EvRSNAS on NAS-Bench-201 (CIFAR-10) under a latency budget on one HW-NAS-Bench device.

Run: python launch.py --config configs/nb201_latency.py --config.hardware.device=pixel3 \
       --config.hardware.limit=5.0
Expect: one progress line per generation; after 100 generations of 20 members, `best.json` in
  the work directory holds the best-fitness architecture of the last generation, feasible
  (latency <= limit), with its RMI score near the top of the feasible ones (about 2.9-3.0 of 3
  at full size: phi saturates, README "How good is it?"), its NAS-Bench-201 accuracy, the best
  feasible architecture and the regret.
  Devices: edgegpu, raspi4, edgetpu, pixel3, eyeriss, fpga (latency in ms per image).
  HW-NAS-Bench lacks edgegpu/edgetpu values for some architectures: add
  --config.hardware.missing=infeasible (or =predict) for those two devices.
  Variants: ':paper' (the default), ':layer2' (ranks by the CKA of the second matched layer
  alone, proxy.score_layers=2: better than phi on held-out cells in the proxy study).
"""

from configs import base

VARIANTS = base.PRESETS  # Named search presets: hwnas_jax/config.py.


def get_config(variant: str = 'paper'):
    """The search of the paper's settings, or of a named preset (`base.PRESETS`)."""
    c = base.get_config()
    c.hardware.metric = 'latency'
    c.hardware.device = 'pixel3'
    c.hardware.limit = 5.0
    return base.search_preset(c, variant, 'nb201_latency')
