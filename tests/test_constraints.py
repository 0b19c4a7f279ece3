"""Tests of the hardware penalty, constraint parsing and rejection sampling."""

import numpy as np
import pytest

from hwnas_jax.errors import UserError
from hwnas_jax.hardware import constraints as hc
from hwnas_jax.hardware.constraints import Constraint

GENES, CARD = 45, 3  # An OFA-sized genome with a synthetic cost: the sum of its genes.


def _sample(rng, n):
    return rng.integers(0, CARD, size=(n, GENES))


def _sum_cost(genomes):
    return genomes.sum(axis=1).astype(np.float64)


def _p_sum_at_most(limit):
    """Exact P(sum of GENES uniform{0..CARD-1} genes <= limit), by convolution."""
    dist = np.ones(1)
    for _ in range(GENES):
        dist = np.convolve(dist, np.full(CARD, 1.0 / CARD))
    return dist[: int(np.floor(limit)) + 1].sum()


# Penalty and fitness (Eqs. 4, 5) -----------------------------------------------------------


def test_penalty_worked_examples():
    # Within the budget: 0; over it: Omega - Psi, closer to the budget is a smaller penalty.
    assert hc.penalty(4.0, 5.0) == 0.0
    assert hc.penalty(5.0, 5.0) == 0.0
    assert hc.penalty(7.5, 5.0) == -2.5
    assert hc.penalty(5.1, 5.0) > hc.penalty(6.0, 5.0)
    np.testing.assert_array_equal(
        hc.penalty([0.0, 100.0, 101.0, 250.0], 100.0), [0.0, 0.0, -1.0, -150.0]
    )
    np.testing.assert_array_equal(hc.penalty(8.0, [5.0, 10.0]), [-3.0, 0.0])


def test_penalty_infinities_and_nan():
    np.testing.assert_array_equal(hc.penalty([np.inf, 3.0], 5.0), [-np.inf, 0.0])
    np.testing.assert_array_equal(hc.penalty([np.inf, 1e30], np.inf), [0.0, 0.0])
    with pytest.raises(ValueError, match='NaN'):
        hc.penalty([1.0, np.nan], 5.0)
    with pytest.raises(ValueError, match='NaN'):
        hc.penalty(1.0, np.nan)


def test_fitness_eq4():
    # RMI score 2.4 with latency 7.5 ms under a 5 ms budget: 2.4 - 2.5.
    np.testing.assert_allclose(hc.fitness([2.4, 2.4], hc.penalty([7.5, 4.0], 5.0)), [-0.1, 2.4])
    np.testing.assert_array_equal(
        hc.fitness([np.nan, np.inf, -np.inf, 1.0], 0.0), [-np.inf, -np.inf, -np.inf, 1.0]
    )
    np.testing.assert_array_equal(hc.fitness([1.0, 2.0], [-np.inf, 0.0]), [-np.inf, 2.0])
    with pytest.raises(ValueError, match='penalties'):
        hc.fitness([1.0], [np.nan])
    with pytest.raises(ValueError, match='penalties'):
        hc.fitness([1.0], [0.5])


def test_total_penalty_sums_constraints():
    costs = np.array([[4.0, 7.0, 6.0], [120.0, 90.0, np.inf]])  # latency, flops.
    limits = [5.0, 100.0]
    expected = [0.0 - 20.0, -2.0 + 0.0, -1.0 - np.inf]
    np.testing.assert_array_equal(hc.total_penalty(costs, limits), expected)
    np.testing.assert_array_equal(hc.total_penalty(list(costs), limits), expected)
    cons = hc.parse_constraints('latency@pixel3<=5; flops<=100')
    np.testing.assert_array_equal(hc.total_penalty(costs, cons), expected)
    np.testing.assert_array_equal(hc.feasible(costs, cons), [False, False, False])
    np.testing.assert_array_equal(hc.feasible(costs[:1], [7.0]), [True, True, True])
    # One constraint: a bare [P] row, a scalar limit or a Constraint.
    np.testing.assert_array_equal(hc.total_penalty(costs[0], 5.0), [0.0, -2.0, -1.0])
    np.testing.assert_array_equal(hc.total_penalty(costs[0], cons[0]), [0.0, -2.0, -1.0])
    with pytest.raises(ValueError, match='one row per constraint'):
        hc.total_penalty(costs, [5.0, 100.0, 1.0])
    with pytest.raises(ValueError, match='NaN'):
        hc.total_penalty([[1.0, np.nan]], [5.0])


# Constraints -------------------------------------------------------------------------------


def test_parse_constraints_good():
    assert hc.parse_constraints('latency@pixel3<=5.0; flops<=100') == [
        Constraint('latency', 'pixel3', 5.0),
        Constraint('flops', None, 100.0),
    ]
    assert hc.parse_constraints('  energy @ edgegpu <= 1e2 ;') == [
        Constraint('energy', 'edgegpu', 100.0)
    ]
    assert hc.parse_constraints('latency@raspi4<=20;latency@pixel3<=4') == [
        Constraint('latency', 'raspi4', 20.0),
        Constraint('latency', 'pixel3', 4.0),
    ]
    assert hc.parse_constraints('') == []
    assert hc.parse_constraints(' ; ') == []
    c = hc.parse_constraints('latency@pixel3<=5.5')[0]
    assert (c.name, str(c)) == ('latency@pixel3', 'latency@pixel3<=5.5')
    assert hc.parse_constraints(str(c)) == [c]


@pytest.mark.parametrize(
    'spec, quoted',
    [
        ('latency<5', 'latency<5'),
        ('flops>=100', 'flops>=100'),
        ('flops<=abc', 'flops<=abc'),
        ('flops<=nan', 'flops<=nan'),
        ('flops<=-inf', 'flops<=-inf'),
        ('flops<=inf', 'flops<=inf'),
        ('flops<=0', 'flops<=0'),
        ('latency@raspi4<=-5', 'latency@raspi4<=-5'),
        ('@pixel3<=5', '@pixel3<=5'),
        ('latency@<=5', 'latency@<=5'),
        ('flops<=100; latency pixel3<=5', 'latency pixel3<=5'),
        ('flops<=5<=6', 'flops<=5<=6'),
        ('flops=5', 'flops=5'),
    ],
)
def test_parse_constraints_bad(spec, quoted):
    with pytest.raises(UserError) as e:
        hc.parse_constraints(spec)
    assert repr(quoted) in str(e.value)
    assert 'metric[@device]<=limit' in str(e.value)
    assert 'flops<=100;latency@raspi4<=20' in str(e.value)  # The syntax, by example.
    assert e.value.__cause__ is None


@pytest.mark.parametrize(
    'spec, name',
    [
        ('flops<=100; flops<=50', 'flops'),
        ('latency@raspi4<=20; flops<=9; latency @ raspi4 <= 20', 'latency@raspi4'),
    ],
)
def test_parse_constraints_duplicate(spec, name):
    with pytest.raises(UserError, match=f'{name!r} given twice.*count twice'):
        hc.parse_constraints(spec)


def test_parse_constraints_type():
    with pytest.raises(UserError, match='string'):
        hc.parse_constraints(100)


def test_config_constraints():
    primary = Constraint('latency', 'pixel3', 5.0)
    assert hc.config_constraints(primary, '') == [primary]
    assert hc.config_constraints(primary, 'latency@raspi4<=20;flops<=100') == [
        primary,
        Constraint('latency', 'raspi4', 20.0),
        Constraint('flops', None, 100.0),
    ]
    with pytest.raises(UserError, match=r'config\.hardware\.extra.*latency@pixel3.*twice'):
        hc.config_constraints(primary, 'flops<=100; latency@pixel3<=4')
    with pytest.raises(UserError, match='abc'):
        hc.config_constraints(primary, 'flops<=abc')


def test_constraint_validation():
    assert Constraint('flops', None, 100).limit == 100.0
    assert Constraint('flops', None, np.float32(2.5)).limit == 2.5
    with pytest.raises(UserError, match='metric'):
        Constraint('', None, 1.0)
    with pytest.raises(UserError, match='device'):
        Constraint('latency', 5.0, 1.0)


@pytest.mark.parametrize(
    'limit',
    ['five', None, True, 0, 0.0, -1.0, -np.inf, np.inf, float('nan'), np.float64('nan'), [1.0]],
)
def test_constraint_limit_must_be_finite_and_positive(limit):
    with pytest.raises(
        UserError,
        match=r'budget of constraint latency@pixel3 must be a finite '
        r'number > 0',
    ):
        Constraint('latency', 'pixel3', limit)


def test_infeasible_error_is_a_user_error():
    assert issubclass(hc.InfeasibleError, UserError)
    assert issubclass(hc.InfeasibleError, ValueError)
    with pytest.raises(UserError, match='max_draws'):
        hc.rejection_sample(np.random.default_rng(0), _sample, _sum_cost, 10.0, 5, max_draws=-1)


def test_check_budget():
    assert hc.check_budget(3.0, 5.0, 'latency@pixel3') is None
    assert hc.check_budget(5.0, 5.0, 'latency@pixel3') is None
    msg = hc.check_budget(6.25, 5.0, 'latency@pixel3')
    assert 'latency@pixel3 <= 5' in msg and '6.25' in msg and 'penalty' in msg
    with pytest.raises(ValueError, match='NaN'):
        hc.check_budget(float('nan'), 5.0, 'flops')


# Rejection sampling ------------------------------------------------------------------------


def test_rejection_counts_draws_as_if_one_at_a_time():
    # Genomes 0, 1, 2, ... in draw order; every 7th is feasible, so the 50th feasible one is
    # draw 49 * 7 + 1 = 344, whatever the block sizes used internally.
    def counter():
        state = {'next': 0}

        def sample(rng, n):
            start = state['next']
            state['next'] += n
            return np.arange(start, start + n)[:, None]

        return sample

    def cost(genomes):
        return (genomes[:, 0] % 7 != 0).astype(float)

    rng = np.random.default_rng(0)
    pop, draws = hc.rejection_sample(rng, counter(), cost, 0.5, 50, max_draws=10_000)
    assert draws == 344
    np.testing.assert_array_equal(pop[:, 0], np.arange(50) * 7)
    pop, draws = hc.rejection_sample(rng, counter(), cost, 0.5, 50, max_draws=344)
    assert draws == 344 and len(pop) == 50
    with pytest.raises(hc.InfeasibleError, match='found 49 feasible .* in 343 draws'):
        hc.rejection_sample(rng, counter(), cost, 0.5, 50, max_draws=343)


def test_rejection_population_is_feasible_and_deterministic():
    cons = [Constraint('flops', None, 40.0), Constraint('params', None, 12.0)]

    def two_costs(genomes):
        return [_sum_cost(genomes), _sum_cost(genomes[:, :15])]

    pop, draws = hc.rejection_sample(
        np.random.default_rng(1), _sample, two_costs, cons, 30, max_draws=100_000
    )
    assert pop.shape == (30, GENES) and draws >= 30
    assert np.all(hc.feasible(two_costs(pop), cons))
    again = hc.rejection_sample(
        np.random.default_rng(1), _sample, two_costs, cons, 30, max_draws=100_000
    )
    np.testing.assert_array_equal(pop, again[0])
    assert draws == again[1]


def test_rejection_infeasible_region():
    rng = np.random.default_rng(2)
    with pytest.raises(hc.InfeasibleError, match='found 0 feasible .* in 5000 draws'):
        hc.rejection_sample(rng, _sample, _sum_cost, -1.0, 10, max_draws=5000)
    # Sum 0 has probability 3**-45: the region is not empty but far too small.
    with pytest.raises(hc.InfeasibleError, match=r'flops<=0\.5\b'):
        hc.rejection_sample(
            rng, _sample, _sum_cost, Constraint('flops', None, 0.5), 10, max_draws=5000
        )
    assert issubclass(hc.InfeasibleError, ValueError)


def test_rejection_bad_cost_shape():
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match='one row per constraint'):
        hc.rejection_sample(rng, _sample, lambda g: g.astype(float), 10.0, 5, max_draws=100)


def test_penalty_sample():
    pop, draws = hc.penalty_sample(np.random.default_rng(4), _sample, 50)
    assert pop.shape == (50, GENES) and draws == 50


def test_figure5_shape_rejection_grows_penalty_constant():
    # Budgets from loose to tight on the sum of 45 genes of 3 (mean 45, s.d. 5.5), a
    # population of 50 and 10 runs per budget, as in the paper's Figure 5.
    size, runs = 50, 10
    budgets = [90.0, 45.0, 40.0, 35.0, 32.0]
    mean_draws, penalty_draws = [], []
    for budget in budgets:
        draws = [
            hc.rejection_sample(
                np.random.default_rng(seed), _sample, _sum_cost, budget, size, max_draws=1_000_000
            )[1]
            for seed in range(runs)
        ]
        mean_draws.append(np.mean(draws))
        penalty_draws.append(hc.penalty_sample(np.random.default_rng(0), _sample, size)[1])
        # Sequential rejection needs size / P(feasible) draws on average (negative binomial).
        expected = size / _p_sum_at_most(budget)
        assert abs(mean_draws[-1] - expected) < 0.15 * expected, (budget, mean_draws, expected)
    assert mean_draws[0] == size
    assert np.all(np.diff(mean_draws) > 0)
    assert mean_draws[-1] > 50 * size  # Steep: thousands of draws at the tightest budget.
    assert penalty_draws == [size] * len(budgets)
