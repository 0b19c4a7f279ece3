"""The paper's Figure 5: draws needed to fill a population, rejection sampling vs the penalty.

For each budget (``config.figure5.limits``, or a default sweep from tight to loose for the
space) and each of ``config.figure5.seeds`` trials, a population of ``config.figure5.population``
architectures is drawn uniformly from the space in two ways:
  rejection  OFA's way (``constraints.rejection_sample``): redraw until that many fit the budget
             on ``config.hardware.metric``; gives up after ``config.ga.max_draws`` draws;
  penalty    HW-EvRSNAS's way (``constraints.penalty_sample``): keep every draw, so the count is
             the population size whatever the budget (the penalty acts later, on the fitness).
Trial ``t`` draws from the generator ``[seed, t]`` at every budget (common random numbers), so a
trial's rejection count can only grow as the budget tightens.

Outputs in the workdir: ``figure5.csv``, one row per budget (columns below), and
``figure5.png`` when matplotlib imports. Where some trials gave up, ``rejection_mean`` counts
them at ``max_draws`` (a lower bound) and ``rejection_gave_up`` says how many did.

Costs come from ``objective.Objective``, as in a search: for the OFA space its MACs (metric
'flops' or 'macs', millions, OFA's convention) and parameters from per-block tables
(``ofa.cost_tables``), vectorised over genomes and equal to ``ofa.macs`` and ``ofa.num_params``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from absl import logging

from hwnas_jax import fileio, spaces
from hwnas_jax.errors import UserError
from hwnas_jax.hardware import constraints as cons
from hwnas_jax.search.objective import Objective

COLUMNS = (
    'metric',
    'budget',
    'feasible_fraction',
    'expected_rejection_draws',
    'rejection_mean',
    'rejection_std',
    'rejection_min',
    'rejection_max',
    'rejection_gave_up',
    'penalty_mean',
    'penalty_std',
    'penalty_feasible_mean',
    'seeds',
    'population',
    'max_draws',
)
SWEEP_POINTS = 9  # Budgets in a default sweep.
FRACTION_SAMPLES = 1 << 18  # Random genomes behind feasible_fraction (spaces too big to list).

CostFn = Callable[[np.ndarray], np.ndarray]


def cost_fn(config: Any, space: Any) -> CostFn:
    """``genomes [n, G] -> [n]`` cost on ``config.hardware.metric`` (vectorised)."""
    objective = Objective(config, space)
    return lambda genomes: objective.costs(genomes)[0]


def _nice_step(raw: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is >= ``raw``."""
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)


def default_limits(costs: np.ndarray, cheapest: float) -> list[float]:
    """A sweep of budgets from tight to loose: ``SWEEP_POINTS`` round numbers.

    From the first multiple of a round step above the cheapest architecture (where feasible
    architectures are rarest) to about the 99th percentile of the random costs (almost all
    fit); e.g. 200, 250, ..., 600 M MACs for OFA at 224 px and width 1.2.

    Args:
      costs: [n] costs of random architectures (finite ones are used).
      cheapest: the lowest cost in the space.
    """
    costs = costs[np.isfinite(costs)]
    low, high = float(cheapest), float(np.percentile(costs, 99))
    step = _nice_step((high - low) / (SWEEP_POINTS - 1))
    first = math.floor(low / step + 1) * step
    return [round(first + i * step, 10) for i in range(SWEEP_POINTS)]


def parse_limits(text: str) -> list[float]:
    """Budgets from ``'200,250, 300'``; ValueError quoting what does not parse."""
    try:
        limits = [float(v) for v in str(text).split(',') if v.strip()]
    except ValueError:
        raise UserError(
            f'figure5.limits must be numbers separated by commas, got {text!r}'
        ) from None
    if not limits or any(not math.isfinite(v) for v in limits):
        raise UserError(f'figure5.limits must be finite numbers separated by commas: {text!r}')
    return limits


def _population_costs(space: Any, costs: CostFn, seed: int) -> np.ndarray:
    """Costs of every architecture of a small space, else of ``FRACTION_SAMPLES`` random ones."""
    every = space.all_genomes()
    if every is not None:  # Uniform genomes are uniform over a listed space.
        return costs(every)
    rng = np.random.default_rng([seed, 5])
    return np.concatenate(
        [costs(space.random_genomes(rng, 1 << 16)) for _ in range(FRACTION_SAMPLES >> 16)]
    )


def sweep(
    space: Any,
    costs: CostFn,
    limits: Sequence[float],
    *,
    population: int,
    seeds: int,
    max_draws: int,
    seed: int = 0,
    metric: str = '',
) -> list[dict[str, Any]]:
    """Draws needed by rejection sampling and by the penalty, per budget (see the docstring).

    Returns:
      One dict per budget with the keys ``COLUMNS`` (``feasible_fraction`` and
      ``expected_rejection_draws`` are left to ``run``).
    """
    rows = []
    for limit in limits:
        rejection, gave_up, penalty_feasible = [], 0, []
        for trial in range(seeds):
            try:
                _, draws = cons.rejection_sample(
                    np.random.default_rng([seed, trial]), space.random_genomes, costs, limit,
                    population, max_draws=max_draws)  # fmt: skip
            except cons.InfeasibleError:
                draws, gave_up = max_draws, gave_up + 1
            rejection.append(draws)
            members, _ = cons.penalty_sample(
                np.random.default_rng([seed, trial]), space.random_genomes, population
            )
            penalty_feasible.append(int(np.sum(costs(members) <= limit)))
        penalty = [population] * seeds  # penalty_sample's count, by construction.
        rows.append({
            "metric": metric, "budget": float(limit),
            "rejection_mean": float(np.mean(rejection)), "rejection_std": float(np.std(rejection)),
            "rejection_min": int(np.min(rejection)), "rejection_max": int(np.max(rejection)),
            "rejection_gave_up": gave_up, "penalty_mean": float(np.mean(penalty)),
            "penalty_std": float(np.std(penalty)),
            "penalty_feasible_mean": float(np.mean(penalty_feasible)), "seeds": seeds,
            "population": population, "max_draws": max_draws,
        })  # fmt: skip
    return rows


def _write_csv(path: str, rows: list[dict[str, Any]]) -> None:
    fileio.atomic_write_text(path, fileio.csv_text(rows, COLUMNS))


def plot(path: str, rows: list[dict[str, Any]], unit: str) -> bool:
    """Writes the figure (draws against budget, log scale); False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    budgets = [r['budget'] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(budgets, [r["rejection_mean"] for r in rows],
                yerr=[r["rejection_std"] for r in rows], marker="o", capsize=3,
                label="rejection sampling")  # fmt: skip
    ax.plot(budgets, [r['penalty_mean'] for r in rows], marker='s', label='penalty (HW-EvRSNAS)')
    failed = [r for r in rows if r['rejection_gave_up']]
    if failed:
        ax.scatter(
            [r['budget'] for r in failed],
            [r['max_draws'] for r in failed],
            marker='x',
            s=80,
            color='red',
            zorder=3,
            label='rejection gave up (max_draws)',
        )
    ax.set_yscale('log')
    ax.set_xlabel(f'budget ({unit})')
    ax.set_ylabel(f'draws to fill a population of {rows[0]["population"]}')
    ax.set_title(f'mean ± std over {rows[0]["seeds"]} seeds')
    ax.legend()
    fig.tight_layout()
    fileio.save_figure(path, fig, dpi=150)
    plt.close(fig)
    return True


def run(config: Any, workdir: str) -> list[dict[str, Any]]:
    """Runs the Figure 5 experiment of ``config`` and writes its outputs to ``workdir``.

    Returns:
      The rows of ``figure5.csv``.

    Raises:
      ValueError: unparsable ``figure5.limits``, or an unknown space or metric.
    """
    space = spaces.make(config)
    f5, metric = config.figure5, config.hardware.metric
    costs = cost_fn(config, space)
    if config.hardware.extra:
        logging.warning("Figure 5 uses the primary budget only; hardware.extra=%r is ignored.",
                        config.hardware.extra)  # fmt: skip
    every = _population_costs(space, costs, config.seed)
    if str(f5.limits).strip():
        limits = parse_limits(f5.limits)
    else:  # The smallest choices are OFA's cheapest; NB201 lists every architecture.
        smallest = costs(np.zeros((1, len(space.cardinalities)), np.int64))
        limits = default_limits(every, np.min(np.concatenate([every, smallest])))
    rows = sweep(
        space,
        costs,
        limits,
        population=int(f5.population),
        seeds=int(f5.seeds),
        max_draws=int(config.ga.max_draws),
        seed=config.seed,
        metric=metric,
    )
    for row in rows:
        p = float(np.mean(every <= row['budget']))
        row['feasible_fraction'] = p
        row['expected_rejection_draws'] = row['population'] / p if p > 0 else math.inf
    os.makedirs(workdir, exist_ok=True)
    _write_csv(os.path.join(workdir, 'figure5.csv'), rows)
    unit = space.unit(metric) or metric
    drew = plot(os.path.join(workdir, 'figure5.png'), rows, unit)
    logging.info(
        'Figure 5 on %s (%s), population %d, %d seeds, max_draws %d:\n%s',
        space.name,
        unit,
        f5.population,
        f5.seeds,
        config.ga.max_draws,
        format_table(rows),
    )
    logging.info(
        'Wrote %s%s.',
        os.path.join(workdir, 'figure5.csv'),
        ' and figure5.png' if drew else ' (no figure5.png: matplotlib is not installed)',
    )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table ('>=': means counting given-up trials at max_draws)."""
    header = (
        f'{"budget":>10} {"feasible":>10} {"rejection draws":>24} {"gave up":>8} '
        f'{"penalty draws":>14}'
    )
    lines = [header]
    for r in rows:
        mark = '>=' if r['rejection_gave_up'] else ''
        lines.append(
            f'{r["budget"]:>10g} {r["feasible_fraction"]:>10.3%} '
            f'{mark + format(r["rejection_mean"], ".1f"):>15} ± {r["rejection_std"]:<6.0f} '
            f'{r["rejection_gave_up"]:>8d} {r["penalty_mean"]:>14.0f}'
        )
    return '\n'.join(lines)
