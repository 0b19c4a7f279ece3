"""Genetic operators over integer genomes: numpy only, with an explicit ``np.random.Generator``.

A genome is a vector of ``G`` integer genes; gene ``j`` takes values in ``range(cards[j])``
(its cardinality). A population is a ``[P, G]`` integer array and its fitness a ``[P]`` float
array, higher is better. NAS-Bench-201 has 6 genes of 5 (one op per edge); the OFA space has 20
kernel genes of 3, 20 expand genes of 3 and 5 depth genes of 3.

The operators follow the GA of EvNAS / pEvoNAS (Sinha et al.), which HW-EvRSNAS builds on:
generational replacement with elitism, tournaments drawn without replacement, uniform crossover
per gene and per-gene uniform resampling. EvNAS encodes a gene as a real vector decoded by
argmax and mutates it by drawing a fresh vector; on the integer encoding that is exactly a
uniform resample of the gene, which may give back the value it had. The defaults are those of
pEvoNAS's NAS-Bench-201 configuration (population 20, 100 generations, tournament 5, 1 elite,
mutation 0.1), the best match for the settings the paper leaves unstated.

Every function here is pure given its ``rng``: the same seed gives the same search.

References:
  Sinha, Rostami, Shabayek, Kacem, Aouada. "Hardware Aware Evolutionary Neural Architecture
    Search using Representation Similarity Metric". WACV 2024 (Section 3.2, Algorithm 1).
  Sinha, Chen. "Evolving Neural Architecture Using One Shot Model". GECCO 2021 (EvNAS).
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

# Genes are small; int64 is numpy's default integer, so genomes built anywhere compare equal.
GENOME_DTYPE = np.int64


@dataclasses.dataclass(frozen=True)
class GAConfig:
    """Settings of the genetic algorithm.

    Attributes:
      population: N_pop, members per generation.
      generations: N_gen, populations scored (the initial one included), as in the search
        loop; the answer is the best of the last.
      tournament: members drawn (without replacement) per tournament; the best one wins.
      elites: best members copied unchanged into the next generation; ``< population``.
      crossover: uniform crossover, probability that a child's gene comes from the first parent.
      mutation: per-gene probability that a child's gene is resampled uniformly.
    """

    population: int = 20
    generations: int = 100
    tournament: int = 5
    elites: int = 1
    crossover: float = 0.5
    mutation: float = 0.1

    def __post_init__(self) -> None:
        for name in ('population', 'generations', 'tournament', 'elites'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f'GAConfig.{name} must be an integer, got {value!r}.')
            object.__setattr__(self, name, int(value))
        for name in ('crossover', 'mutation'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                raise ValueError(f'GAConfig.{name} must be a probability, got {value!r}.')
            value = float(value)
            if not 0.0 <= value <= 1.0:  # Also rejects NaN.
                raise ValueError(f'GAConfig.{name} must be in [0, 1], got {value}.')
            object.__setattr__(self, name, value)
        if self.population < 2:
            raise ValueError(f'GAConfig.population must be at least 2, got {self.population}.')
        if self.generations < 1:
            raise ValueError(f'GAConfig.generations must be >= 1, got {self.generations}.')
        if not 1 <= self.tournament <= self.population:
            raise ValueError(
                f'GAConfig.tournament must be in [1, population={self.population}] (drawn '
                f'without replacement), got {self.tournament}.'
            )
        if not 0 <= self.elites < self.population:
            raise ValueError(
                f'GAConfig.elites must be in [0, population={self.population}), got '
                f'{self.elites}; at least one child per generation is needed.'
            )

    @classmethod
    def from_config(cls, config: Any) -> GAConfig:
        """Builds a GAConfig from ``config.ga`` (an ml_collections ConfigDict or a mapping).

        Only the fields of GAConfig are read; other keys (such as ``init`` or ``max_draws``,
        which belong to the search loop) are ignored, and missing ones keep their defaults.

        Args:
          config: object with items ``population``, ``generations``, ``tournament``,
            ``elites``, ``crossover``, ``mutation``.

        Returns:
          The validated GAConfig.

        Raises:
          ValueError: on an invalid value.
        """
        keys = set(config.keys())
        values = {f.name: config[f.name] for f in dataclasses.fields(cls) if f.name in keys}
        return cls(**values)


def _cards(cardinalities: ArrayLike) -> np.ndarray:
    """Validated per-gene cardinalities as a [G] int64 array."""
    cards = np.asarray(cardinalities)
    if cards.ndim != 1 or cards.size == 0:
        raise ValueError(
            f'cardinalities must be a non-empty 1-D sequence, one per gene; got shape '
            f'{cards.shape}.'
        )
    if not np.issubdtype(cards.dtype, np.integer):
        raise ValueError(f'cardinalities must be integers, got dtype {cards.dtype}.')
    if np.any(cards < 1):
        bad = np.flatnonzero(cards < 1)
        raise ValueError(
            f'every cardinality must be >= 1; genes {bad.tolist()} have {cards[bad].tolist()}.'
        )
    return cards.astype(GENOME_DTYPE)


def _fitness(fitness: ArrayLike, n: int) -> np.ndarray:
    """Fitness as a [n] float64 array with NaN read as -inf (worse than any member)."""
    fit = np.asarray(fitness, dtype=np.float64)
    if fit.shape != (n,):
        raise ValueError(f'fitness must have shape ({n},), one per member; got {fit.shape}.')
    return np.where(np.isnan(fit), -np.inf, fit)


def validate_population(population: ArrayLike, cardinalities: ArrayLike) -> np.ndarray:
    """Checks a population of genomes against the per-gene cardinalities.

    Args:
      population: [P, G] integer genes, gene j in ``range(cardinalities[j])``.
      cardinalities: [G] positive integers.

    Returns:
      The population as a new [P, G] int64 array.

    Raises:
      ValueError: on a wrong shape, a non-integer dtype or a gene out of range (the message
        names the first offending member and gene).
    """
    cards = _cards(cardinalities)
    pop = np.asarray(population)
    if pop.ndim != 2 or pop.shape[1] != cards.size:
        raise ValueError(
            f'population must have shape [P, {cards.size}] (members x genes), got {pop.shape}.'
        )
    if not np.issubdtype(pop.dtype, np.integer):
        raise ValueError(f'genomes must hold integer genes, got dtype {pop.dtype}.')
    bad = (pop < 0) | (pop >= cards)
    if np.any(bad):
        i, j = np.argwhere(bad)[0]
        raise ValueError(
            f'member {i} gene {j} is {pop[i, j]}, outside range({cards[j]}); '
            f'{int(bad.sum())} gene(s) out of range in all.'
        )
    return pop.astype(GENOME_DTYPE)


def random_population(rng: np.random.Generator, cardinalities: ArrayLike, size: int) -> np.ndarray:
    """Draws ``size`` genomes with every gene uniform over its cardinality.

    Args:
      rng: the random generator.
      cardinalities: [G] positive integers.
      size: P, number of genomes.

    Returns:
      [P, G] int64 genomes.
    """
    cards = _cards(cardinalities)
    size = operator.index(size)
    if size < 0:
        raise ValueError(f'size must be >= 0, got {size}.')
    return rng.integers(0, cards, size=(size, cards.size), dtype=GENOME_DTYPE)


def tournament(rng: np.random.Generator, fitness: ArrayLike, size: int) -> int:
    """Tournament selection: ``size`` distinct members drawn at random, the fittest wins.

    Members are drawn without replacement (as in EvNAS), so ``size == P`` always returns the
    global best. NaN fitness counts as -inf. Among tied drawn members the one drawn first wins
    (EvNAS sorts the drawn members with a stable sort), so ties are broken at random.

    Args:
      rng: the random generator.
      fitness: [P] fitness values, higher is better.
      size: k, members per tournament, ``1 <= k <= P``.

    Returns:
      The index of the winner in ``range(P)``.
    """
    fit = np.asarray(fitness, dtype=np.float64)
    if fit.ndim != 1:
        raise ValueError(f'fitness must be 1-D, got shape {fit.shape}.')
    fit = _fitness(fit, fit.size)
    size = operator.index(size)
    if not 1 <= size <= fit.size:
        raise ValueError(
            f'tournament size must be in [1, {fit.size}] (population size), got {size}.'
        )
    drawn = rng.choice(fit.size, size=size, replace=False)
    return int(drawn[np.argmax(fit[drawn])])  # argmax returns the first of tied maxima.


def uniform_crossover(
    rng: np.random.Generator, a: ArrayLike, b: ArrayLike, p: float = 0.5
) -> np.ndarray:
    """Uniform crossover: each gene comes from ``a`` with probability ``p``, else from ``b``.

    Args:
      rng: the random generator.
      a: [G] genome of the first parent.
      b: [G] genome of the second parent.
      p: probability of taking a gene from ``a``.

    Returns:
      [G] child genome (a new array).
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f'parents must be 1-D genomes of equal length, got {a.shape}, {b.shape}.')
    if not 0.0 <= p <= 1.0:
        raise ValueError(f'crossover probability must be in [0, 1], got {p}.')
    return np.where(rng.random(a.size) < p, a, b).astype(GENOME_DTYPE)


def mutate(
    rng: np.random.Generator, genome: ArrayLike, cardinalities: ArrayLike, rate: float = 0.1
) -> np.ndarray:
    """Per-gene mutation: each gene, with probability ``rate``, is resampled uniformly.

    The resample is over the gene's whole range, so it gives back the current value with
    probability 1 / cardinality, as EvNAS's fresh-vector mutation does; a gene actually changes
    with probability ``rate * (c - 1) / c``.

    Args:
      rng: the random generator.
      genome: [G] genes.
      cardinalities: [G] positive integers.
      rate: per-gene resampling probability.

    Returns:
      [G] mutated genome (a new array).
    """
    cards = _cards(cardinalities)
    genome = np.asarray(genome)
    if genome.shape != cards.shape:
        raise ValueError(f'genome must have shape {cards.shape}, got {genome.shape}.')
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f'mutation rate must be in [0, 1], got {rate}.')
    # Draw both arrays whatever the mask, so the random stream does not depend on the genome.
    resample = rng.random(cards.size) < rate
    fresh = rng.integers(0, cards, dtype=GENOME_DTYPE)
    return np.where(resample, fresh, genome).astype(GENOME_DTYPE)


def best(population: ArrayLike, fitness: ArrayLike) -> int:
    """Index of the fittest member; NaN counts as -inf and ties go to the lowest index.

    Args:
      population: [P, G] genomes (only the member count is used).
      fitness: [P] fitness values, higher is better.

    Returns:
      The index in ``range(P)``.
    """
    n = len(population)
    if n == 0:
        raise ValueError('population is empty.')
    return int(np.argmax(_fitness(fitness, n)))


def elite_order(fitness: ArrayLike) -> np.ndarray:
    """Member indices by fitness descending; NaN as -inf, ties in index order (stable).

    Args:
      fitness: [P] fitness values.

    Returns:
      [P] int64 indices.
    """
    fit = np.asarray(fitness, dtype=np.float64)
    if fit.ndim != 1:
        raise ValueError(f'fitness must be 1-D, got shape {fit.shape}.')
    return np.argsort(-_fitness(fit, fit.size), kind='stable')


def next_generation(
    rng: np.random.Generator,
    population: ArrayLike,
    fitness: ArrayLike,
    cardinalities: ArrayLike,
    cfg: GAConfig,
) -> np.ndarray:
    """Creates the next generation (generational replacement with elitism).

    Rows ``0 .. elites - 1`` are the ``cfg.elites`` fittest members, copied unchanged, fittest
    first (ties to the lower index). Every other row is a child: two independent tournaments of
    ``cfg.tournament`` pick the parents (possibly the same member), ``uniform_crossover`` with
    ``p = cfg.crossover`` mixes them and ``mutate`` with ``rate = cfg.mutation`` perturbs it.

    Args:
      rng: the random generator.
      population: [P, G] genomes with ``P == cfg.population``.
      fitness: [P] fitness values, higher is better; NaN counts as -inf.
      cardinalities: [G] positive integers.
      cfg: the GA settings.

    Returns:
      [P, G] int64 genomes of the next generation.
    """
    cards = _cards(cardinalities)
    pop = validate_population(population, cards)
    if pop.shape[0] != cfg.population:
        raise ValueError(
            f'population has {pop.shape[0]} members but cfg.population is {cfg.population}.'
        )
    fit = _fitness(fitness, pop.shape[0])
    new = np.empty_like(pop)
    new[: cfg.elites] = pop[elite_order(fit)[: cfg.elites]]
    for i in range(cfg.elites, cfg.population):
        a = pop[tournament(rng, fit, cfg.tournament)]
        b = pop[tournament(rng, fit, cfg.tournament)]
        child = uniform_crossover(rng, a, b, cfg.crossover)
        new[i] = mutate(rng, child, cards, cfg.mutation)
    return new


def evolve(
    rng: np.random.Generator,
    fitness_fn: Any,
    cardinalities: Sequence[int] | np.ndarray,
    cfg: GAConfig,
) -> tuple[np.ndarray, float]:
    """Runs the plain GA loop (Algorithm 1 without the hardware or caching machinery).

    A random population is evaluated, then replaced by the next generation and evaluated again
    until ``cfg.generations`` populations were evaluated: ``cfg.population * cfg.generations``
    evaluations, the same meaning of "generations" as the search loop's.
    The search loop (``search/loop.py``) adds caching, progress and resume around the same
    operators; this function serves tests and quick experiments.

    Args:
      rng: the random generator.
      fitness_fn: maps [P, G] genomes to [P] fitness values, higher is better.
      cardinalities: [G] positive integers.
      cfg: the GA settings.

    Returns:
      The best genome [G] of the last generation and its fitness.
    """
    pop = random_population(rng, cardinalities, cfg.population)
    fit = np.asarray(fitness_fn(pop), dtype=np.float64)
    for _ in range(cfg.generations - 1):
        pop = next_generation(rng, pop, fit, cardinalities, cfg)
        fit = np.asarray(fitness_fn(pop), dtype=np.float64)
    i = best(pop, fit)
    return pop[i], float(fit[i])
