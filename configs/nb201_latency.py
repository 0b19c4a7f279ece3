"""HW-EvRSNAS on NAS-Bench-201 (CIFAR-10) under a latency budget on one HW-NAS-Bench device.

Run: python launch.py --config configs/nb201_latency.py --config.hardware.device=pixel3 \
       --config.hardware.limit=5.0
Expect: one progress line per generation; after 100 generations of 20 members, `best.json` in
  the work directory holds the best-fitness architecture of the last generation, feasible
  (latency <= limit), with its RMI score near the top of the feasible ones (about 2.3-2.6 of 3).
  Devices: edgegpu, raspi4, edgetpu, pixel3, eyeriss, fpga (latency in ms per image).
  HW-NAS-Bench lacks edgegpu/edgetpu values for some architectures: add
  --config.hardware.missing=infeasible (or =predict) for those two devices.
"""

from configs import base


def get_config():
    c = base.get_config()
    c.hardware.metric = 'latency'
    c.hardware.device = 'pixel3'
    c.hardware.limit = 5.0
    return c
