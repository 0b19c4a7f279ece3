"""The Space interface: everything the search, the proxy and the jobs need from a search space.

A search space lives in its own files under ``spaces/``: a numpy-only codec module (genome
checks, ``canonical``, encodings, analytic costs), a Flax module of its networks, and one class
implementing :class:`Space`, bound to a run's config. The rest of the package talks to a space
only through this class, so adding a space (a DARTS-like or FBNet space, say) is one new module
``spaces/<name>_space.py`` with a ``Space`` subclass, plus one line in ``spaces.REGISTRY``.

What a space provides:
  codec      ``cardinalities`` (choices per gene), ``validate``, ``random_genomes``,
             ``canonical`` (functionally identical genomes map to one), ``parse_genome`` (the
             text forms a user may give), ``describe`` (a JSON-able record of a genome).
  networks   ``exact_network(genome)`` (the subnet alone), ``population_network(strategy)``
             (one network for every genome, the genome an array input), ``exact_variables``
             (population variables -> exact ones), ``auto_strategy(backend)``; both networks
             return ``(logits, features)``, the features being the layers RMI matches.
  costs      ``metrics``/``units``, ``check_constraints``, ``costs(genomes, constraint)`` [n],
             ``cheapest(constraint)`` and ``cost_report(genome)`` (every cost, for best.json).
  reference  ``reference_arch``: the reference model's name (``hwnas_jax.reference``).
  truth      ``ground_truth(genome, objective)``: accuracies where a benchmark has them.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np


class Space(abc.ABC):
    """A search space bound to a run's config (its `space`, `data` and `hardware` sections)."""

    name: ClassVar[str]
    reference_arch: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]  # Cost metrics the space has tables for.
    units: ClassVar[dict[str, str]]  # Metric -> unit, for best.json.
    device_metrics: ClassVar[tuple[str, ...]] = ()  # Metrics measured on a named device.
    genome_forms: ClassVar[str]  # The text forms parse_genome takes, for messages.

    def __init__(self, config):
        self.config = config

    # -- codec (numpy only) --------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def cardinalities(self) -> np.ndarray:
        """[G] int: the number of choices of each gene."""

    @abc.abstractmethod
    def validate(self, genome) -> np.ndarray:
        """One checked genome as int64 [G]; UserError saying what a genome is otherwise."""

    @abc.abstractmethod
    def random_genomes(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """[n, G] genomes drawn uniformly from the space."""

    @abc.abstractmethod
    def canonical(self, genome) -> tuple[int, ...]:
        """The representative of the genome's class of functionally identical genomes."""

    def all_genomes(self) -> np.ndarray | None:
        """Every genome of the space [N, G] where it is small enough to list, else None."""
        return None

    @abc.abstractmethod
    def parse_genome(self, text: str) -> tuple[int, ...]:
        """A genome from text: a list of genes, or the space's own forms; UserError otherwise."""

    @abc.abstractmethod
    def describe(self, genome) -> dict[str, Any]:
        """JSON-able record of a genome at the config's network size."""

    # -- networks (import JAX and Flax on first use) -----------------------------------------
    @abc.abstractmethod
    def network_kwargs(self) -> dict[str, Any]:
        """The networks' constructor arguments from the config (besides genome and impl)."""

    @abc.abstractmethod
    def exact_network(self, genome, *, backend: str = 'cpu'):
        """The Flax network of one genome, `__call__(x, *, train) -> (logits, features)`."""

    @abc.abstractmethod
    def population_network(self, *, strategy: str, backend: str = 'cpu'):
        """The network of every genome, `__call__(x, genome, *, train) -> (logits, features)`."""

    @abc.abstractmethod
    def exact_variables(self, variables, genome):
        """The exact network's variables cut from the population network's."""

    @abc.abstractmethod
    def auto_strategy(self, backend: str) -> str:
        """The proxy strategy 'auto' resolves to on `backend` ('cpu', 'gpu', 'tpu')."""

    # -- costs ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def check_constraints(self, constraints) -> None:
        """UserError if a constraint names a metric (or device) the space has no table for."""

    @abc.abstractmethod
    def costs(
        self, genomes, metric: str, device: str | None = None, *, missing: str | None = None
    ) -> np.ndarray:
        """[n] float64 cost of `genomes` [n, G] (inf where a missing value is infeasible)."""

    @abc.abstractmethod
    def cheapest(self, metric: str, device: str | None = None) -> float:
        """The lowest cost any architecture of the space reaches."""

    @abc.abstractmethod
    def cost_report(self, genome) -> dict[str, float | None]:
        """Every cost of one genome the tables have ('metric' or 'metric@device' -> value)."""

    def unit(self, name: str) -> str:
        """Unit of a cost name ('latency@pixel3' -> 'ms')."""
        return self.units.get(name.split('@')[0], '')

    # -- evaluation ----------------------------------------------------------------------------
    def ground_truth(self, genome, objective) -> dict[str, Any]:
        """Benchmark accuracies of `genome` (evaluation only); here: none for this space."""
        return {
            'evaluation_only': True,
            'applicable': False,
            'reason': f'no benchmark of trained accuracies ships for the {self.name} space',
        }

    @classmethod
    def validate_config(cls, config) -> None:
        """UserError naming a field of `config.space` that this space cannot take."""
        return None  # A space without size fields has nothing to check.
