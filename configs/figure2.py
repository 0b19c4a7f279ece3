"""The paper's Figures 2 and 3: HW-EvRSNAS on NAS-Bench-201, devices x budgets x 10 seeds.

Run: python launch.py --config configs/figure2.py --workdir workdirs/figure2
  Sharded, e.g. over 4 processes or machines sharing one folder (each its own --workdir):
    python launch.py --config configs/figure2.py --config.figure2.shard=2/4 \
        --config.figure2.root=workdirs/figure2 --workdir workdirs/figure2-shard2
  then merge (runs nothing once every search is finished):
    python launch.py --config configs/figure2.py --config.figure2.root=workdirs/figure2 \
        --config.figure2.merge_only=True --workdir workdirs/figure2-merge
Expect: one search per (device, budget, GA seed) in <root>/<device>-<budget>-s<seed>/, each the
  paper's search (population 20, 100 generations, 100 SGD steps) resumable on its own; progress
  lines prefixed '[search k/N name]'; then figure2.csv (one row per search: the found cell, its
  cost, NAS-Bench-201 test/valid accuracy, the best feasible accuracy and the regret, seconds,
  architectures), figure3.csv and, with matplotlib, figure2.png, figure2h.png, figure3-*.png;
  progress.csv (every search, finished or not: generations done, seconds, best so far, regret).
  Grid: the six HW-NAS-Bench devices (latency, ms) and FLOPs, 5 budgets each (quantiles 0.1-0.9
  of the device's costs), 10 GA seeds: 350 searches. The proxy seed stays proxy.seed (default:
  seed) for every search, so the spread over seeds is the GA's, and all searches share one
  score store (<root>/scores.sqlite): the grid trains each architecture once (shards running
  at the same time claim in the store what they train and wait for each other's).
  Cost: a search of 20 x 100 scores 120-263 distinct cells (mean 175 over 20 searches, counted
  with tiny networks), each 16-70 s of training at full size on a shared 2-core CPU (mean 35 s
  over the 4 cells of a measured full-size generation; the search's loop program compiles once
  per process, 45 s): 1-2 h per search here.
  With the shared store the 20 pixel3 and FLOPs searches of seeds 0-1 trained 1,531 of the
  3,503 cells they scored; the whole grid can train at most the 9,445 canonical classes.
  On a CPU, shard over one process per core (`taskset -c <core>` on Linux): the search's loop
  program gains only 1.12x from a second thread, so two pinned shards on 2 cores score 1.6x
  the architectures of one process (measured: 16.5 s per architecture in each against 13 s).
  Variants: ':slice' (the README's measured slice: pixel3, 3 budgets, 3 seeds, 9 full-size
  searches sharing one store; several hours on a 2-core CPU, where each search is 1-2 h alone),
  ':slice_layer2' (the same slice ranked by the preset `layer2`, the CKA of layer 2 alone: its
  effect on regret; the training is the same, so pointing it at the slice's store trains only
  the cells the slice did not:
    python launch.py --config configs/figure2.py:slice_layer2 --workdir workdirs/slice-layer2 \
        --config.figure2.store=<the slice's work directory>/scores.sqlite),
  ':smoke' (a 2-device x 2-budget x 2-seed grid of tiny searches, about a minute).
"""

from configs import base
from hwnas_jax.errors import UserError

VARIANTS = {'paper': None, 'slice': None, 'slice_layer2': None, 'smoke': None}


def get_config(variant: str = 'paper'):
    """Returns the Figure 2 grid (`paper`), a slice of it (`slice`) or a tiny one (`smoke`)."""
    if variant not in VARIANTS:
        raise UserError(f'unknown variant {variant!r} of figure2; choose one of {sorted(VARIANTS)}')
    c = base.get_config()
    c.job = 'figure2'
    c.hardware.missing = 'infeasible'  # HW-NAS-Bench lacks some edgegpu / edgetpu latencies.
    c.figure2.devices = 'edgegpu,raspi4,edgetpu,pixel3,eyeriss,fpga,flops'
    c.figure2.budgets = ''  # Derived from each device's cost table.
    c.figure2.seeds = 10
    if variant in ('slice', 'slice_layer2'):
        c.figure2.devices = 'pixel3'
        c.figure2.num_budgets = 3
        c.figure2.seeds = 3
    if variant == 'slice_layer2':
        c.proxy.score_layers = base.PRESETS['layer2']['score_layers']
    if variant == 'smoke':
        c.space.channels = 4
        c.space.cells_per_stage = 1
        c.proxy.steps = 2
        c.proxy.batch_size = 8
        c.proxy.pool_size = 16
        c.ga.population = 4
        c.ga.tournament = 2
        c.ga.generations = 2
        c.figure2.devices = 'pixel3,flops'
        c.figure2.num_budgets = 2
        c.figure2.seeds = 2
    return c
