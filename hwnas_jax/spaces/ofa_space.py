"""The OFA MobileNetV3 space as a :class:`~hwnas_jax.spaces.base.Space`.

Codec and analytic MAC/parameter counts in :mod:`hwnas_jax.spaces.ofa` (numpy only), networks
in :mod:`hwnas_jax.spaces.ofa_net`. The reference is the largest subnet (k7, e6, d4); the RMI
features are the outputs of ``space.feature_stages``. Costs are MACs (OFA's "FLOPs") and
parameters, in millions; no device tables exist for this space.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from hwnas_jax.errors import UserError
from hwnas_jax.spaces import base, ofa

WIDTHS = (1.0, 1.2)


class OFA(base.Space):
    """Once-for-All MobileNetV3 (kernel 3/5/7, expand 3/4/6, depth 2/3/4), widths 1.0 and 1.2."""

    name = ofa.NAME
    reference_arch = 'ofa_max'
    metrics = ('flops', 'macs', 'params')
    units = {'flops': 'M MACs', 'macs': 'M MACs', 'params': 'M parameters'}
    genome_forms = (
        'an OFA config JSON \'{"ks": [20 kernels], "e": [20 expands], '
        '"d": [5 depths]}\' or a JSON list of 45 gene indices'
    )

    @property
    def cardinalities(self) -> np.ndarray:
        return ofa.CARDINALITIES

    def validate(self, genome) -> np.ndarray:
        return ofa.validate(genome)

    def random_genomes(self, rng, n):
        return ofa.random_genomes(rng, n)

    def canonical(self, genome):
        return ofa.canonical(genome)

    def parse_genome(self, text: str) -> tuple[int, ...]:
        """A JSON list of 45 genes, or OFA's own config '{"ks": [...], "e": [...], "d": [...]}'."""
        try:
            value = json.loads(str(text))
        except json.JSONDecodeError as e:
            raise UserError(f'cannot read {str(text)[:200]!r} as an OFA genome ({e})') from None
        if isinstance(value, dict):
            value = ofa.from_config(value)
        if not isinstance(value, (list, np.ndarray)):
            raise UserError(
                f'an OFA genome is a list of 45 genes or a config dict, got {type(value).__name__}'
            )
        return tuple(int(v) for v in ofa.validate(np.asarray(value)))

    def _size(self) -> dict[str, Any]:
        s = self.config.space
        return dict(
            resolution=int(s.resolution),
            num_classes=int(self.config.data.num_classes),
            width_mult=float(s.width_mult),
        )

    def describe(self, genome) -> dict[str, Any]:
        return ofa.describe(genome, **self._size())

    # -- networks -----------------------------------------------------------------------------
    def network_kwargs(self) -> dict[str, Any]:
        from hwnas_jax import config as config_lib

        return dict(**self._size(), feature_stages=config_lib.feature_stages(self.config))

    def exact_network(self, genome, *, backend: str = 'cpu'):
        from hwnas_jax.spaces import ofa_net

        return ofa_net.Network(genome=tuple(int(v) for v in genome), **self.network_kwargs())

    def population_network(self, *, strategy: str, backend: str = 'cpu'):
        from hwnas_jax.spaces import ofa_net

        return ofa_net.PopulationNetwork(**self.network_kwargs())

    def exact_variables(self, variables, genome):
        from hwnas_jax.spaces import ofa_net

        return ofa_net.exact_variables(variables, tuple(int(v) for v in genome))

    def auto_strategy(self, backend: str) -> str:
        # The masked population form is far slower to compile and run on XLA:CPU.
        return 'exact' if backend == 'cpu' else 'vmap'

    # -- costs --------------------------------------------------------------------------------
    def check_constraints(self, constraints) -> None:
        for c in constraints:
            if c.metric not in self.metrics:
                raise UserError(
                    f'the OFA space has no {c.metric!r} table; constrain one of '
                    f'{self.metrics} (MACs in millions, params in millions)'
                )

    def costs(self, genomes, metric, device=None, *, missing=None) -> np.ndarray:
        base_cost, table = ofa.cost_tables(metric, **self._size())
        return ofa.batch_costs(np.asarray(genomes), base_cost, table)

    def cheapest(self, metric, device=None) -> float:
        # Every cost is monotone in kernel, expand and depth: the smallest subnet.
        return float(self.costs(np.zeros((1, ofa.NUM_GENES), np.int64), metric)[0])

    def cost_report(self, genome) -> dict[str, float | None]:
        g = np.asarray(genome)[None]
        return {m: float(self.costs(g, m)[0]) for m in ('macs', 'params')}

    @classmethod
    def validate_config(cls, config) -> None:
        from hwnas_jax import config as config_lib

        config_lib.check_choice(config, 'space.width_mult', WIDTHS)
        config_lib.check_number(config, 'space.resolution', 32, 512, integer=True)
        config_lib.feature_stages(config)
        s, d = config.space, config.data
        if config.job != 'figure5' and s.resolution != d.image_size:
            raise UserError(
                f'space.resolution={s.resolution} but data.image_size={d.image_size}: the OFA '
                'networks take images of their resolution; set both to the same value (and '
                '--config.data.resize=True to resize the stored images)'
            )
