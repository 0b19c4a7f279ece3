"""Rank quality of the RMI proxy on NAS-Bench-201 (CIFAR-10), its variants and baselines.

Run: python launch.py --config configs/proxy_study.py --workdir workdirs/proxy_study
Expect: 100 connected canonical cells (seeded) scored one after another, a progress line each;
  study.csv (one row per cell: NAS-Bench-201 test/valid accuracy, phi, the final loss, per-layer
  CKAs, phi and loss after 0/10/25/50 steps, phi on 32 held-out test images, phi with the
  reference's BatchNorm in 'train' mode, FLOPs, params, NASWOT, synflow), study.md (Kendall
  tau, Spearman rho, top-10 hit rate with 95 % bootstrap intervals; noise; the best variant
  chosen on one half and measured on the other; the regret of each variable's pick among
  random pools of 30 cells under three budgets of --config.hardware.metric/device, pixel3
  latency by default) and, with matplotlib, study.png. Resumable:
  rerun the same command. Measured on this 2-core CPU at full size: 74 min for the 100 cells
  (compiles once, about 2.5 min; then per cell the RMI run with its trajectory and held-out
  CKA about 20 s, the BN pass 15 s, NASWOT + synflow 1-4 s, the seed-noise pass 15 s on the
  first 10 cells); results in README "How good is it?".
  Variants: ':baselines' (no training: FLOPs, params, NASWOT, synflow on 200 cells; measured
  8.7 min with the compiles cached, 1-4 s per cell; Spearman 0.75 for synflow, as the 0.74 of
  Abdelfattah et al. 2021), ':smoke' (3 tiny cells, seconds after compiling).
"""

from configs import base
from hwnas_jax.errors import UserError

VARIANTS = {'paper': None, 'baselines': None, 'smoke': None}


def get_config(variant: str = 'paper'):
    """Returns the proxy study of `variant`."""
    if variant not in VARIANTS:
        raise UserError(
            f'unknown variant {variant!r} of proxy_study; choose one of {sorted(VARIANTS)}'
        )
    c = base.get_config()
    c.job = 'proxy_study'
    c.study.num_archs = 100
    if variant == 'baselines':
        c.study.rmi = False
        c.study.num_archs = 200
    if variant == 'smoke':
        c.space.channels = 4
        c.space.cells_per_stage = 1
        c.proxy.steps = 2
        c.proxy.batch_size = 8
        c.proxy.pool_size = 16
        c.study.num_archs = 3
        c.study.steps_k = '0,1'
        c.study.heldout_size = 8
        c.study.naswot_batch = 8
        c.study.noise_archs = 1
        c.study.bootstrap = 50
    return c
