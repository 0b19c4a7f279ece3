"""Hardware constraints: the soft penalty of HW-EvRSNAS and OFA-style rejection sampling.

HW-EvRSNAS keeps every sampled architecture and lowers the fitness of those over the budget
(Eqs. 4 and 5); OFA's evolution finder instead redraws architectures until they fit. The second
needs ever more draws as the budget tightens (the paper's Figure 5), the first always draws the
population size. Both are here, numpy only, with an explicit ``np.random.Generator``.

A constraint is written ``metric[@device]<=limit`` and several are joined by ``;``, for example
``'latency@pixel3<=5.0; flops<=100'``. With several constraints the penalty is the sum of their
penalties and an architecture is feasible when it satisfies all of them.

References:
  Sinha, Rostami, Shabayek, Kacem, Aouada. "Hardware Aware Evolutionary Neural Architecture
    Search using Representation Similarity Metric". WACV 2024 (Eqs. 4, 5; Section 4.4.2).
  Cai, Gan, Wang, Zhang, Han. "Once-for-All: Train One Network and Specialize it for Efficient
    Deployment". ICLR 2020 (evolution finder with rejection sampling).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

from hwnas_jax.errors import UserError

SYNTAX = "metric[@device]<=limit, joined by ';' (e.g. 'flops<=100;latency@raspi4<=20')"

_NAME = r'[A-Za-z_][A-Za-z0-9_.\-]*'
_PART = re.compile(rf'\s*({_NAME})\s*(?:@\s*({_NAME})\s*)?<=\s*(\S+)\s*')


class InfeasibleError(UserError):
    """Rejection sampling could not find enough feasible architectures within its draws."""


@dataclasses.dataclass(frozen=True)
class Constraint:
    """One hardware budget: ``cost(metric, device) <= limit``.

    Attributes:
      metric: cost name, e.g. ``'latency'``, ``'energy'``, ``'flops'``, ``'params'``.
      device: target device for device-dependent metrics (e.g. ``'pixel3'``), else None.
      limit: Omega, in the metric's unit: a finite number > 0 (every cost is positive, so a
        budget of zero or less admits no architecture, and an infinite one is no budget).

    Raises:
      UserError: a metric or device that is not a name, or a limit that is not a finite
        positive number; the message names the constraint.
    """

    metric: str
    device: str | None
    limit: float

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not re.fullmatch(_NAME, self.metric):
            raise UserError(f'constraint metric must be a name, got {self.metric!r}.')
        if self.device is not None and (
            not isinstance(self.device, str) or not re.fullmatch(_NAME, self.device)
        ):
            raise UserError(f'constraint device must be a name or None, got {self.device!r}.')
        number = not isinstance(self.limit, bool) and isinstance(
            self.limit, (int, float, np.integer, np.floating)
        )
        limit = float(self.limit) if number else math.nan
        if not number or not math.isfinite(limit) or limit <= 0:
            raise UserError(
                f'the budget of constraint {self.name} must be a finite number > 0 (in the '
                f"metric's unit), got {self.limit!r}."
            )
        object.__setattr__(self, 'limit', limit)

    @property
    def name(self) -> str:
        """``metric`` or ``metric@device``."""
        return self.metric if self.device is None else f'{self.metric}@{self.device}'

    def __str__(self) -> str:
        return f'{self.name}<={self.limit:g}'


def parse_constraints(spec: str) -> list[Constraint]:
    """Parses ``'metric[@device]<=limit; ...'`` into constraints.

    Whitespace around the parts is ignored and empty parts are skipped, so ``''`` gives no
    constraint. A metric (with its device) may appear only once: its penalty would count twice.

    Args:
      spec: the constraints, e.g. ``'flops<=100;latency@raspi4<=20'``.

    Returns:
      The constraints, in the order written.

    Raises:
      UserError: quoting the part that does not parse (or whose limit is not a finite number
        > 0, or that repeats a metric and device), and the syntax.
    """
    if not isinstance(spec, str):
        raise UserError(f'constraints must be a string in the syntax {SYNTAX}; got {spec!r}.')
    out: list[Constraint] = []
    for part in spec.split(';'):
        if not part.strip():
            continue
        match = _PART.fullmatch(part)
        if match is None:
            raise UserError(f'cannot parse constraint {part.strip()!r}; expected {SYNTAX}.')
        metric, device, text = match.groups()
        try:
            limit = float(text)
        except ValueError:
            raise UserError(
                f'cannot parse the limit {text!r} of constraint {part.strip()!r}; expected '
                f'{SYNTAX}.'
            ) from None
        try:
            constraint = Constraint(metric, device, limit)
        except UserError as e:
            raise UserError(f'bad constraint {part.strip()!r}: {e} Expected {SYNTAX}.') from None
        if any(c.name == constraint.name for c in out):
            raise UserError(
                f'constraint on {constraint.name!r} given twice in {spec!r} (its penalty would '
                f'count twice); keep one. Expected {SYNTAX}.'
            )
        out.append(constraint)
    return out


def config_constraints(primary: Constraint, extra: str) -> list[Constraint]:
    """The primary constraint (``config.hardware.metric/device/limit``) then ``extra``'s.

    Args:
      primary: the constraint of ``config.hardware.{metric, device, limit}``.
      extra: ``config.hardware.extra``, parsed by :func:`parse_constraints`.

    Returns:
      ``[primary, *parse_constraints(extra)]``.

    Raises:
      UserError: ``extra`` does not parse, or constrains the primary's metric and device again
        (its penalty would count twice).
    """
    out = [primary, *parse_constraints(extra)]
    for c in out[1:]:
        if c.name == primary.name:
            raise UserError(
                f'config.hardware.extra constrains {c.name} ({c}), which the primary budget '
                f'(config.hardware.metric/device/limit: {primary}) already does; its penalty '
                'would count twice: drop it from config.hardware.extra or change the primary.'
            )
    return out


def _costs(cost: ArrayLike) -> np.ndarray:
    cost = np.asarray(cost, dtype=np.float64)
    if np.any(np.isnan(cost)):
        raise ValueError(
            f'{int(np.isnan(cost).sum())} hardware cost(s) are NaN: a bug upstream (a missing '
            'table entry should be +inf, which is infeasible, not NaN).'
        )
    return cost


def _limits(limits: ArrayLike | Sequence[Constraint] | Constraint | float) -> np.ndarray:
    if isinstance(limits, Constraint):
        limits = [limits]
    if isinstance(limits, (list, tuple)):
        limits = [c.limit if isinstance(c, Constraint) else c for c in limits]
    lim = np.atleast_1d(np.asarray(limits, dtype=np.float64))
    if lim.ndim != 1:
        raise ValueError(f'limits must be a scalar or 1-D, one per constraint; got {lim.shape}.')
    if np.any(np.isnan(lim)):
        raise ValueError(f'limits must not be NaN, got {lim.tolist()}.')
    return lim


def _rows(
    costs: ArrayLike | Sequence[ArrayLike],
    limits: ArrayLike | Sequence[Constraint] | Constraint | float,
) -> tuple[np.ndarray, np.ndarray]:
    """Costs as [C, ...] and limits as [C, 1, ...], checked against each other."""
    lim = _limits(limits)
    cost = _costs(costs)
    if lim.size == 1 and cost.ndim <= 1:
        cost = cost[None]
    if cost.ndim == 0 or cost.shape[0] != lim.size:
        raise ValueError(
            f'costs must have one row per constraint ({lim.size}), got shape {cost.shape}.'
        )
    return cost, lim.reshape((lim.size,) + (1,) * (cost.ndim - 1))


def penalty(cost: ArrayLike, limit: ArrayLike) -> np.ndarray:
    """Penalty psi of Eq. 5: 0 within the budget, else ``limit - cost`` (negative).

        psi = 0                if cost <= limit
        psi = limit - cost     otherwise

    The penalty grows with the distance over the budget; an infinite cost (say, an
    architecture a device cannot run) gives -inf.

    Args:
      cost: [...] hardware costs Psi(alpha).
      limit: Omega, broadcastable against ``cost``.

    Returns:
      [...] float64 penalties (the broadcast shape), all <= 0.

    Raises:
      ValueError: if a cost or the limit is NaN.
    """
    cost = _costs(cost)
    limit = np.asarray(limit, dtype=np.float64)
    if np.any(np.isnan(limit)):
        raise ValueError('the limit must not be NaN.')
    over = cost > limit
    out = np.zeros(np.broadcast(cost, limit).shape)
    # Subtract only where over budget: inf - inf elsewhere would warn.
    np.subtract(limit, cost, out=out, where=over)
    return out


def total_penalty(
    costs: ArrayLike | Sequence[ArrayLike],
    limits: ArrayLike | Sequence[Constraint] | Constraint | float,
) -> np.ndarray:
    """Sum of the Eq. 5 penalties of several constraints.

    Args:
      costs: [C, ...] costs, one row (or array in a list) per constraint; with one constraint
        a bare [P] array is accepted too.
      limits: [C] limits, or a sequence of ``Constraint`` (their ``limit`` is used).

    Returns:
      [...] float64 total penalties, e.g. [P].

    Raises:
      ValueError: on NaN or a constraint count that does not match.
    """
    cost, lim = _rows(costs, limits)
    return penalty(cost, lim).sum(axis=0)


def fitness(score: ArrayLike, penalties: ArrayLike) -> np.ndarray:
    """Fitness of Eq. 4: score plus penalty; a non-finite score becomes -inf.

    Args:
      score: [P] performance scores (the RMI score phi, higher is better).
      penalties: [P] (or broadcastable) penalties, all <= 0.

    Returns:
      [P] float64 fitness values.

    Raises:
      ValueError: if a penalty is NaN or positive.
    """
    score = np.asarray(score, dtype=np.float64)
    pen = np.asarray(penalties, dtype=np.float64)
    if np.any(np.isnan(pen)) or np.any(pen > 0):
        raise ValueError(f'penalties must be <= 0 and not NaN, got {pen}.')
    score = np.where(np.isfinite(score), score, -np.inf)
    return score + pen


def feasible(
    costs: ArrayLike | Sequence[ArrayLike],
    limits: ArrayLike | Sequence[Constraint] | Constraint | float,
) -> np.ndarray:
    """Whether each architecture satisfies every constraint.

    Args:
      costs: [C, ...] costs (or a bare [P] with one constraint), as for ``total_penalty``.
      limits: [C] limits or constraints.

    Returns:
      [...] bool, True where every cost is within its limit.
    """
    cost, lim = _rows(costs, limits)
    return np.all(cost <= lim, axis=0)


def check_budget(cheapest_cost: float, limit: float, name: str) -> str | None:
    """Warns when a budget is below the cheapest architecture of the search space.

    Such a budget is allowed: the penalty then steers the search toward the cheapest
    architectures, but none will satisfy it, and the run should say so at the start.

    Args:
      cheapest_cost: the lowest cost of any architecture for this constraint.
      limit: the budget Omega.
      name: the constraint's name for the message, e.g. ``'latency@pixel3'``.

    Returns:
      The warning message for the caller to log, or None when some architecture can fit.
    """
    cheapest_cost = float(cheapest_cost)
    limit = float(limit)
    if math.isnan(cheapest_cost) or math.isnan(limit):
        raise ValueError(f'cheapest cost {cheapest_cost} and limit {limit} must not be NaN.')
    if cheapest_cost <= limit:
        return None
    return (
        f'budget {name} <= {limit:g} is below the cheapest architecture of the search space '
        f'({cheapest_cost:g}): no architecture satisfies it. The search goes on, guided by the '
        'penalty toward the cheapest architectures, but its result will exceed the budget.'
    )


SampleFn = Callable[[np.random.Generator, int], np.ndarray]
CostFn = Callable[[np.ndarray], np.ndarray | Sequence[np.ndarray]]


def rejection_sample(
    rng: np.random.Generator,
    sample_fn: SampleFn,
    cost_fn: CostFn,
    limits: ArrayLike | Sequence[Constraint] | Constraint | float,
    size: int,
    *,
    max_draws: int,
) -> tuple[np.ndarray, int]:
    """Builds a population of feasible architectures by redrawing the infeasible ones.

    This is OFA's way of meeting a budget, the baseline of the paper's Section 4.4.2. Genomes
    are drawn in growing blocks for speed, but the draws are counted as if drawn one at a time:
    the population is the first ``size`` feasible genomes in draw order and ``draws`` is the
    position of the last of them, so the count follows the negative binomial law of sequential
    sampling (mean ``size / P(feasible)``).

    Args:
      rng: the random generator.
      sample_fn: ``sample_fn(rng, n) -> [n, G]`` random genomes.
      cost_fn: ``cost_fn(genomes [n, G]) -> [C, n]`` costs (or [n] with one constraint).
      limits: [C] limits, or a sequence of ``Constraint``.
      size: P, feasible genomes wanted.
      max_draws: give up after this many draws.

    Returns:
      ``(population [P, G], draws)``.

    Raises:
      InfeasibleError: if fewer than ``size`` feasible genomes were found in ``max_draws``
        draws (the feasible region is empty or too small).
    """
    lim = _limits(limits)
    if size < 0 or max_draws < 0:
        raise UserError(
            f'the population size and max_draws (config.ga.max_draws) must be >= 0, '
            f'got {size} and {max_draws}.'
        )
    found: list[np.ndarray] = []
    n_found = drawn = 0
    block = max(size, 64)
    while n_found < size and drawn < max_draws:
        n = min(block, max_draws - drawn)
        genomes = np.asarray(sample_fn(rng, n))
        if genomes.ndim != 2 or genomes.shape[0] != n:
            raise ValueError(f'sample_fn(rng, {n}) must return [{n}, G], got {genomes.shape}.')
        cost = _costs(cost_fn(genomes))
        ok = feasible(cost, lim)
        if ok.shape != (n,):
            raise ValueError(
                f'cost_fn must return [{lim.size}, {n}] costs (or [{n}] for one constraint), '
                f'got shape {cost.shape}.'
            )
        idx = np.flatnonzero(ok)[: size - n_found]
        # Count as if drawn one at a time: stop at the last feasible genome needed.
        drawn += int(idx[-1]) + 1 if n_found + idx.size == size else n
        found.append(genomes[idx])
        n_found += idx.size
        block = min(2 * block, 1 << 16)
    if n_found < size:
        raise InfeasibleError(
            f'rejection sampling found {n_found} feasible architecture(s) in {drawn} draws, '
            f'short of the {size} wanted, under {_describe(limits, lim)}: the feasible region '
            'is empty or too small. Loosen the budget, raise max_draws, or use the penalty.'
        )
    if not found:  # size == 0: an empty population of the right genome length.
        found.append(np.asarray(sample_fn(rng, 0)))
    return np.concatenate(found), drawn


def penalty_sample(
    rng: np.random.Generator, sample_fn: SampleFn, size: int
) -> tuple[np.ndarray, int]:
    """Draws the initial population the penalty way: ``size`` random genomes, none rejected.

    The counterpart of ``rejection_sample`` for the paper's Figure 5: the draw count is always
    the population size, whatever the budget.

    Args:
      rng: the random generator.
      sample_fn: ``sample_fn(rng, n) -> [n, G]`` random genomes.
      size: P, genomes wanted.

    Returns:
      ``(population [P, G], draws)`` with ``draws == size``.
    """
    genomes = np.asarray(sample_fn(rng, size))
    if genomes.ndim != 2 or genomes.shape[0] != size:
        raise ValueError(f'sample_fn(rng, {size}) must return [{size}, G], got {genomes.shape}.')
    return genomes, size


def _describe(limits: object, lim: np.ndarray) -> str:
    if isinstance(limits, Constraint):
        return str(limits)
    if isinstance(limits, (list, tuple)) and all(isinstance(c, Constraint) for c in limits):
        return '; '.join(str(c) for c in limits)
    return 'limits ' + ', '.join(f'{x:g}' for x in lim)
