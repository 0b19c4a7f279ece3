"""The hardware side of the fitness: constraints from the config, their costs and penalties.

Fitness = RMI score + sum of the penalties of all constraints (paper Eqs. 4 and 5). The primary
constraint is `config.hardware.{metric, device, limit}`; `config.hardware.extra` adds more
(e.g. 'flops<=100;latency@raspi4<=20'). Costs come from the HW-NAS-Bench tables for
NAS-Bench-201 and from the analytic MAC/parameter counts for OFA.
"""

from __future__ import annotations

import numpy as np

from hwnas_jax.errors import UserError
from hwnas_jax.hardware import constraints as cons

# Metrics that are measured on a device (the others are properties of the network).
DEVICE_METRICS = ('latency', 'energy', 'arithmetic_intensity')
OFA_METRICS = ('flops', 'macs', 'params')


class Objective:
    """Costs and penalties of genomes of one space under the config's constraints."""

    def __init__(self, config, space):
        hw = config.hardware
        self.space = space
        self.config = config
        primary = cons.Constraint(
            metric=hw.metric, device=hw.device if hw.metric in DEVICE_METRICS else None,
            limit=float(hw.limit))
        self.constraints = cons.config_constraints(primary, hw.extra or '')
        if space.NAME == 'ofa':
            for c in self.constraints:
                if c.metric not in OFA_METRICS:
                    raise UserError(
                        f'the OFA space has no {c.metric!r} table; constrain one of {OFA_METRICS}'
                        ' (MACs in millions, params in millions)')
        if space.NAME == 'nb201':
            self._check_coverage()
        # Fail early (unknown metric, device or dataset) with the cost module's own message.
        self.costs(np.asarray([space.canonical(space.random_genomes(
            np.random.default_rng(0), 1)[0])]))

    @property
    def limits(self) -> np.ndarray:
        return np.asarray([c.limit for c in self.constraints], np.float64)

    def _check_coverage(self) -> None:
        """With missing='error', refuse at the start a table that lacks values for the space."""
        from hwnas_jax.hardware import costs
        hw = self.config.hardware
        if hw.missing != 'error':
            return
        for c in self.constraints:
            if c.device is None:
                continue
            known, total = costs.coverage(c.metric, device=c.device, dataset=hw.dataset,
                                          table=hw.table)
            if known < total:
                raise UserError(
                    f'HW-NAS-Bench has {c.metric} on {c.device} ({hw.dataset}) for only {known} '
                    f'of {total} architectures, and hardware.missing=error would stop the search '
                    'at the first one without a value: set --config.hardware.missing=infeasible '
                    '(they count as over budget) or --config.hardware.missing=predict (a '
                    'least-squares estimate; its held-out error is logged)')

    def _cost(self, genomes: np.ndarray, metric: str, device, missing=None) -> np.ndarray:
        if self.space.NAME == 'ofa':
            s = self.config.space
            base, table = self.space.cost_tables(
                metric, resolution=s.resolution, num_classes=self.config.data.num_classes,
                width_mult=s.width_mult)
            return self.space.batch_costs(genomes, base, table)
        from hwnas_jax.hardware import costs
        hw = self.config.hardware
        return np.asarray(costs.cost(genomes, metric, device=device, dataset=hw.dataset,
                                     missing=missing or hw.missing, table=hw.table), np.float64)

    def costs(self, genomes) -> np.ndarray:
        """[C, P] cost of each constraint for each genome."""
        genomes = np.asarray(genomes)
        return np.stack([self._cost(genomes, c.metric, c.device) for c in self.constraints])

    def penalties(self, genomes) -> tuple[np.ndarray, np.ndarray]:
        """Returns ([P] summed penalty, [C, P] costs) of `genomes`."""
        costs = self.costs(genomes)
        return cons.total_penalty(costs, self.limits), costs

    def describe_constraints(self) -> str:
        return '; '.join(
            f'{c.metric}{"@" + c.device if c.device else ""}<={c.limit:g}'
            for c in self.constraints)

    def cheapest(self) -> np.ndarray:
        """[C] the lowest cost each constraint can reach in the space."""
        if self.space.NAME == 'nb201':
            all_genomes = self.space.indices_to_genomes(np.arange(self.space.NUM_ARCHS))
            # Only the values the table has: the cheapest measured architecture.
            costs = [self._cost(all_genomes, c.metric, c.device, missing='infeasible')
                     for c in self.constraints]
            return np.array([np.min(c[np.isfinite(c)]) if np.isfinite(c).any() else np.inf
                             for c in costs])
        # OFA: every cost is monotone in kernel, expand and depth: the smallest subnet.
        return self.costs(np.zeros((1, len(self.space.CARDINALITIES)), np.int64))[:, 0]

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
        genome = np.asarray(genome)[None]
        out = {}
        if self.space.NAME == 'ofa':
            for m in ('macs', 'params'):
                out[m] = float(self._cost(genome, m, None)[0])
            return out
        from hwnas_jax.hardware import costs
        hw = self.config.hardware
        for metric, devices in costs.available(hw.dataset, hw.table).items():
            for device in devices or [None]:
                key = f'{metric}@{device}' if device else metric
                try:
                    value = costs.cost(genome, metric, device=device, dataset=hw.dataset,
                                       missing='infeasible', table=hw.table)[0]
                except ValueError:
                    continue
                out[key] = float(value) if np.isfinite(value) else None
        return out
