"""The hardware side of the fitness: constraints from the config, their costs and penalties.

Fitness = RMI score + sum of the penalties of all constraints (paper Eqs. 4 and 5). The primary
constraint is `config.hardware.{metric, device, limit}`; `config.hardware.extra` adds more
(e.g. 'flops<=100;latency@raspi4<=20'). Costs come from the search space
(:meth:`~hwnas_jax.spaces.base.Space.costs`): HW-NAS-Bench tables for NAS-Bench-201, analytic
MAC and parameter counts for OFA.
"""

from __future__ import annotations

import numpy as np

from hwnas_jax.hardware import constraints as cons


class Objective:
    """Costs and penalties of genomes of one space under the config's constraints."""

    def __init__(self, config, space):
        hw = config.hardware
        self.space = space
        self.config = config
        primary = cons.Constraint(
            metric=hw.metric,
            device=hw.device if hw.metric in space.device_metrics else None,
            limit=float(hw.limit),
        )
        self.constraints = cons.config_constraints(primary, hw.extra or '')
        # Fail early (unknown metric or device, incomplete tables) with the space's message.
        space.check_constraints(self.constraints)

    @property
    def limits(self) -> np.ndarray:
        return np.asarray([c.limit for c in self.constraints], np.float64)

    def costs(self, genomes) -> np.ndarray:
        """[C, P] cost of each constraint for each genome."""
        genomes = np.asarray(genomes)
        return np.stack([self.space.costs(genomes, c.metric, c.device) for c in self.constraints])

    def penalties(self, genomes) -> tuple[np.ndarray, np.ndarray]:
        """Returns ([P] summed penalty, [C, P] costs) of `genomes`."""
        costs = self.costs(genomes)
        return cons.total_penalty(costs, self.limits), costs

    def describe_constraints(self) -> str:
        return '; '.join(
            f'{c.metric}{"@" + c.device if c.device else ""}<={c.limit:g}' for c in self.constraints
        )

    def cheapest(self) -> np.ndarray:
        """[C] the lowest cost each constraint can reach in the space."""
        return np.array([self.space.cheapest(c.metric, c.device) for c in self.constraints])

    def budget_warnings(self) -> list[str]:
        """Warnings for budgets below the cheapest architecture (the search still runs)."""
        out = []
        for c, low in zip(self.constraints, self.cheapest()):
            msg = cons.check_budget(low, c.limit, c.name)
            if msg:
                out.append(msg)
        return out

    def report(self, genome) -> dict:
        """Every cost of one genome the tables have: for best.json."""
        return self.space.cost_report(genome)
