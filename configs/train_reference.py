"""Trains the reference CIFAR ResNet-20 from scratch (only needed for data other than CIFAR-10).

Data: by default the packaged CIFAR-10 sample (data.source='embedded': 1,024 training images,
the accuracy on 1,000 test images; offline, for trying the job). For a real reference point it
at the full dataset: --config.data.source=folder --config.data.root=/path/to/cifar10 (holding
train/<class>/<image> and test/<class>/<image>), or --config.data.source=tfds with
`pip install 'hwnas_jax[tfds]'` (downloads CIFAR-10; --config.data.name=cifar100
--config.data.num_classes=100 for CIFAR-100).

Run:
  python launch.py --config configs/train_reference.py --workdir workdirs/resnet20
  python launch.py --config configs/train_reference.py \
      --config.data.source=folder --config.data.root=/path/to/cifar10 --workdir workdirs/resnet20
  Rerunning a command with the same --workdir resumes it; a search then uses the result with
  --config.reference.checkpoint=workdirs/resnet20. A smoke run: --config.train.max_steps=2.
Expect: about 91-92 % test accuracy after 200 epochs on the real CIFAR-10 (tfds `cifar10`;
  akamaster's ResNet-20 reports 91.78 %, He et al. 2016 91.25 %), in `metrics.jsonl` and the
  last progress line; lower when trained and tested on a lossy JPEG copy. A few hours on one
  GPU, days on a CPU. On the packaged sample (8 steps per epoch) it overfits its 1,024 images.
  Measured on a 2-core CPU shared with other jobs (--config.train.max_steps=2): first step
  (compilation) 13 s, then 1.5 s per step of 128 images, peak RSS 0.86 GB; 31 s in all with
  the evaluation on the 1,000 packaged test images.
"""

from configs import base


def get_config():
    """Returns the config of a from-scratch reference training on the packaged CIFAR-10 sample."""
    c = base.get_config()
    c.job = 'train_reference'
    c.data.source = 'embedded'  # The packaged sample: offline (see the docstring).
    c.train.eval_size = 0  # Test images evaluated (evenly spaced); 0: the whole split.
    return c
