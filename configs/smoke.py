"""A tiny NAS-Bench-201 search that runs in under a minute on a CPU (used by the tests).

Run: python launch.py --config configs/smoke.py
Expect: 6 generations of 6 members on tiny networks (4 channels, one cell per stage, 2 SGD
  steps on 8 images); the same outputs as a full search (metrics.jsonl, best.json, ...). The
  scores mean little at this size: it checks the pipeline, not the science.
"""

from configs import nb201_latency


def get_config():
    c = nb201_latency.get_config()
    c.space.channels = 4
    c.space.cells_per_stage = 1
    c.proxy.steps = 2
    c.proxy.batch_size = 8
    c.proxy.pool_size = 16
    c.ga.population = 6
    c.ga.tournament = 3
    c.ga.generations = 6
    return c
