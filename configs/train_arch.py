"""Trains an architecture found by a search from scratch, to measure its real accuracy.

Variants: 'nb201' (default): NAS-Bench-201's network (C=16, N=5) with its recipe (200 epochs,
batch 256, learning rate 0.1 cosine, weight decay 5e-4; plain momentum, not Nesterov); 'ofa':
an OFA subnet at 224 px, width 1.2 (CIFAR upsampled); 'ofa_cifar': at 32 px (CIFAR stem).
The architecture is --config.space.genome: a search's best.json, its 'genome', an NB201 arch
string or an OFA config {"ks": [...], "e": [...], "d": [...]}.

Data: by default the packaged CIFAR-10 sample (data.source='embedded': 1,024 training images,
the accuracy on 1,000 test images; offline, enough to check the pipeline, not to rank
architectures). For the real accuracy point the job at the full dataset:
--config.data.source=folder --config.data.root=/path/to/cifar10 (train/<class>/<image> and
test/<class>/<image>), or --config.data.source=tfds with `pip install 'hwnas_jax[tfds]'`.

Batch: OFA subnets need up to about 1 GB of memory per image and training step at 224 px and
0.31 GB at 32 px (the largest one; configs/train_reference_ofa.py), so 'ofa' defaults to batch
8 and 'ofa_cifar' to 32, the learning rate scaled linearly from the recipe's 0.1 at 128, which
fit a 24 GB machine whatever the subnet; on a large GPU: --config.train.batch_size=128
--config.train.learning_rate=0.1.

Run:
  python launch.py --config configs/train_arch.py \
      --config.space.genome=workdirs/nb201/best.json --workdir workdirs/nb201_arch
  python launch.py --config configs/train_arch.py:ofa \
      --config.space.genome='{"ks": [7, ...], "e": [6, ...], "d": [4, 4, 4, 4, 4]}'
  A smoke run: --config.train.max_steps=2 --config.train.eval_size=8.
Expect: `arch.json` (the architecture, its FLOPs/MACs and parameters), the test accuracy per
  epoch in `metrics.jsonl` and the log, resumable with the same --workdir. On CIFAR-10,
  NAS-Bench-201 architectures reach up to about 94.4 % with this recipe (NAS-Bench-201's own
  training of the best one), a good one found under a budget typically 90-94 %.
  Cost measured on a 2-core CPU shared with other jobs (2 steps, --config.train.max_steps=2;
  peak RSS from /usr/bin/time -v): 'nb201' (batch 256, an architecture of 185 M FLOPs):
  first step (compilation) 9 s, then 4 s per step, peak RSS 3.0 GB. An OFA subnet of 378 M
  MACs at 224 px (110 M at 32 px): 'ofa' (batch 8): first step 35 s, then 1.7 s per step,
  peak RSS 4.5 GB;
  'ofa_cifar' (batch 32): first step 33 s, then 4.0 s per step, peak RSS 4.9 GB (at batch
  128: 97 s, 38 s per step, 13.7 GB). The largest subnet costs as the OFA reference.
"""

from configs import base
from hwnas_jax.errors import UserError

RECIPE_LR = 0.1  # Peak learning rate of the recipes, at batch 256 (nb201) or 128 (ofa).
# variant -> (space, resolution, epochs, batch size, learning rate).
VARIANTS = {
    'nb201': ('nb201', 32, 200, 256, RECIPE_LR),
    'ofa': ('ofa', 224, 100, 8, RECIPE_LR * 8 / 128),
    'ofa_cifar': ('ofa', 32, 200, 32, RECIPE_LR * 32 / 128),
}


def get_config(variant: str = 'nb201'):
    """Returns the from-scratch training of `config.space.genome` of `variant`."""
    if variant not in VARIANTS:
        raise UserError(
            f'unknown variant {variant!r} of train_arch; choose one of {sorted(VARIANTS)}'
        )
    space, resolution, epochs, batch_size, learning_rate = VARIANTS[variant]
    c = base.get_config()
    c.job = 'train_arch'
    c.space.name = space
    c.space.width_mult = 1.2
    c.space.resolution = resolution
    c.data.source = 'embedded'  # The packaged CIFAR-10 sample: offline (see the docstring).
    c.data.image_size = resolution
    c.data.resize = True
    c.train.epochs = epochs
    c.train.batch_size = batch_size
    c.train.learning_rate = learning_rate
    c.train.weight_decay = 5e-4
    c.train.eval_size = 0  # Test images evaluated (evenly spaced); 0: the whole split.
    return c
