"""NAS-Bench-201 as a :class:`~hwnas_jax.spaces.base.Space`: codec, networks, HW-NAS-Bench costs.

The codec and analytic costs are :mod:`hwnas_jax.spaces.nb201` (numpy only), the networks
:mod:`hwnas_jax.spaces.nb201_net` (imported on first use), the device costs HW-NAS-Bench's
tables (:mod:`hwnas_jax.hardware.costs`), the ground truth NAS-Bench-201's accuracies
(:mod:`hwnas_jax.search.evaluation`). The reference is the CIFAR ResNet-20; its three stage
outputs are matched to the outputs of the three stages of cells (the RMI features).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from hwnas_jax.errors import UserError
from hwnas_jax.hardware import costs as hw_costs
from hwnas_jax.spaces import base, nb201, nb201_costs


def conv_impl(config, backend: str) -> str:
    """`proxy.conv_impl`, with 'auto' resolved: 'xla_cpu' on CPU, XLA's own elsewhere.

    Measured on a 2-core CPU (benchmarks/README.md): 'xla_cpu' trains 1.7-2.0x faster than
    'im2col', which is 10-13x faster than 'xla' there.
    """
    impl = config.proxy.conv_impl
    if impl == 'auto':
        return 'xla_cpu' if backend == 'cpu' else 'xla'
    return impl


class NB201(base.Space):
    """NAS-Bench-201 (6 edges x 5 ops) on CIFAR-10/100 or ImageNet16-120."""

    name = nb201.NAME
    reference_arch = 'resnet20'
    metrics = hw_costs.METRICS
    units = hw_costs.UNITS
    device_metrics = hw_costs.DEVICE_METRICS
    genome_forms = (
        "an arch string like '|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|...|' "
        'or a JSON list of 6 op indices'
    )

    # -- codec --------------------------------------------------------------------------------
    @property
    def cardinalities(self) -> np.ndarray:
        return nb201.CARDINALITIES

    def validate(self, genome) -> np.ndarray:
        return nb201.validate(genome)

    def random_genomes(self, rng, n):
        return nb201.random_genomes(rng, n)

    def canonical(self, genome):
        return nb201.canonical(genome)

    def all_genomes(self) -> np.ndarray:
        """The 15,625 genomes in NAS-Bench-201's index order."""
        return nb201.indices_to_genomes(np.arange(nb201.NUM_ARCHS))

    def parse_genome(self, text: str) -> tuple[int, ...]:
        """An arch string ('|nor_conv_3x3~0|+|...'), a JSON list or '3,3,4,1,3,1'."""
        text = str(text).strip()
        if text.startswith('|'):
            return tuple(nb201.from_arch_str(text))
        try:
            value = json.loads(text if text.startswith('[') else f'[{text}]')
        except json.JSONDecodeError as e:
            raise UserError(f'cannot read {text[:200]!r} as a genome ({e})') from None
        return tuple(int(v) for v in nb201.validate(value))

    def describe(self, genome) -> dict[str, Any]:
        return nb201_costs.describe(genome, num_classes=self.config.data.num_classes)

    # -- networks -----------------------------------------------------------------------------
    def network_kwargs(self) -> dict[str, Any]:
        c = self.config
        return dict(
            channels=int(c.space.channels),
            cells_per_stage=int(c.space.cells_per_stage),
            num_classes=int(c.data.num_classes),
        )

    def exact_network(self, genome, *, backend: str = 'cpu'):
        from hwnas_jax.spaces import nb201_net

        return nb201_net.Network(
            genome=tuple(int(v) for v in genome),
            conv_impl=conv_impl(self.config, backend),
            **self.network_kwargs(),
        )

    def population_network(self, *, strategy: str, backend: str = 'cpu'):
        from hwnas_jax.spaces import nb201_net

        # 'loop' runs members one by one: only each member's chosen ops ('switch'). With
        # proxy.scan_cells a stage's cells run as one scan ('exact' slices unrolled weights).
        return nb201_net.PopulationNetwork(
            conv_impl=conv_impl(self.config, backend),
            dispatch='switch' if strategy == 'loop' else 'select',
            scan_cells=bool(self.config.proxy.get('scan_cells', False)) and strategy != 'exact',
            **self.network_kwargs(),
        )

    def exact_variables(self, variables, genome):
        from hwnas_jax.spaces import nb201_net

        return nb201_net.exact_variables(variables, tuple(int(v) for v in genome))

    def auto_strategy(self, backend: str) -> str:
        # On CPU one compiled program running only each member's ops; batched elsewhere.
        return 'loop' if backend == 'cpu' else 'vmap'

    # -- costs --------------------------------------------------------------------------------
    def _cost(self, genomes, metric, device, missing):
        hw = self.config.hardware
        return np.asarray(
            hw_costs.cost(
                genomes,
                metric,
                device=device,
                dataset=hw.dataset,
                missing=missing or hw.missing,
                table=hw.table,
            ),
            np.float64,
        )

    def check_constraints(self, constraints) -> None:
        """Unknown metrics and devices; with missing='error', tables that lack values."""
        hw = self.config.hardware
        for c in constraints:
            self._cost(
                nb201.random_genomes(np.random.default_rng(0), 1), c.metric, c.device, 'infeasible'
            )  # The cost module's own message for unknown names.
            if c.device is None or hw.missing != 'error':
                continue
            known, total = hw_costs.coverage(
                c.metric, device=c.device, dataset=hw.dataset, table=hw.table
            )
            if known < total:
                raise UserError(
                    f'HW-NAS-Bench has {c.metric} on {c.device} ({hw.dataset}) for only {known} '
                    f'of {total} architectures, and hardware.missing=error would stop the '
                    'search at the first one without a value: set '
                    '--config.hardware.missing=infeasible (they count as over budget) or '
                    '--config.hardware.missing=predict (a least-squares estimate; its held-out '
                    'error is logged)'
                )

    def costs(self, genomes, metric, device=None, *, missing=None) -> np.ndarray:
        return self._cost(np.asarray(genomes), metric, device, missing)

    def cheapest(self, metric, device=None) -> float:
        every = self.all_genomes()
        # Only the values the table has: the cheapest measured architecture.
        c = self._cost(every, metric, device, 'infeasible')
        return float(np.min(c[np.isfinite(c)])) if np.isfinite(c).any() else float('inf')

    def cost_report(self, genome) -> dict[str, float | None]:
        hw = self.config.hardware
        genome = np.asarray(genome)[None]
        out = {}
        for metric, devices in hw_costs.available(hw.dataset, hw.table).items():
            for device in devices or [None]:
                key = f'{metric}@{device}' if device else metric
                try:
                    value = self._cost(genome, metric, device, 'infeasible')[0]
                except ValueError:
                    continue
                out[key] = float(value) if np.isfinite(value) else None
        return out

    # -- evaluation and config ----------------------------------------------------------------
    def ground_truth(self, genome, objective) -> dict[str, Any]:
        from hwnas_jax.search import evaluation

        try:
            return evaluation.report(genome, objective)
        except UserError as e:  # E.g. a damaged accuracy table: the search's answer stands.
            return {
                'evaluation_only': True,
                'note': evaluation.NOTE,
                'applicable': False,
                'reason': str(e),
            }

    @classmethod
    def validate_config(cls, config) -> None:
        from hwnas_jax import config as config_lib

        config_lib.check_number(config, 'space.channels', 1, 1024, integer=True)
        config_lib.check_number(config, 'space.cells_per_stage', 1, 64, integer=True)
        config_lib.check_choice(config, 'hardware.dataset', hw_costs.DATASETS)
        config_lib.check_choice(config, 'hardware.missing', hw_costs.MISSING_POLICIES)
