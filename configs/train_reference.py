"""Trains the reference CIFAR ResNet-20 from scratch (only needed for data other than CIFAR-10).

Run:
  python launch.py --config configs/train_reference.py --workdir workdirs/resnet20
  python launch.py --config configs/train_reference.py \
      --config.data.source=folder --config.data.root=/path/to/cifar10 --workdir workdirs/resnet20
  Rerunning a command with the same --workdir resumes it; a search then uses the result with
  --config.reference.checkpoint=workdirs/resnet20.
Expect: about 91-92 % test accuracy after 200 epochs on the real CIFAR-10 (tfds `cifar10`;
  akamaster's ResNet-20 reports 91.78 %, He et al. 2016 91.25 %), in `metrics.jsonl` and the
  last progress line; lower when trained and tested on a lossy JPEG copy. A few hours on one
  GPU, days on a CPU.
"""

from configs import base


def get_config():
    """Returns the config of a from-scratch reference training on CIFAR-10 (tfds)."""
    c = base.get_config()
    c.job = 'train_reference'
    c.data.source = 'tfds'
    return c
