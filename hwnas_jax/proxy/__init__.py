"""The RMI proxy: single-batch training of fresh candidate networks, scored by linear CKA.

:mod:`~hwnas_jax.proxy.program` holds the device side (pure functions of arrays: the member's
training, initial weights, the compiled population program); :mod:`~hwnas_jax.proxy.scorers`
the strategies that run it ('vmap', 'loop'; 'exact' in :mod:`~hwnas_jax.proxy.exact`), one
class each with a common `score`, and `make_scorer`, which picks one.
"""

from hwnas_jax.proxy.exact import ExactScorer
from hwnas_jax.proxy.program import (
    PROGRAMS,
    TRACES,
    Settings,
    init_members,
    make_member_fn,
    member_seeds,
    optimizer,
    population_program,
)
from hwnas_jax.proxy.scorers import (
    OUTPUTS,
    STRATEGIES,
    LoopScorer,
    PopulationScorer,
    Scorer,
    VmapScorer,
    auto_workers,
    from_config,
    make_scorer,
)

__all__ = [
    'OUTPUTS',
    'PROGRAMS',
    'STRATEGIES',
    'TRACES',
    'ExactScorer',
    'LoopScorer',
    'PopulationScorer',
    'Scorer',
    'Settings',
    'VmapScorer',
    'auto_workers',
    'from_config',
    'init_members',
    'make_member_fn',
    'make_scorer',
    'member_seeds',
    'optimizer',
    'population_program',
]
