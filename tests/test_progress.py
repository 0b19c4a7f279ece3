"""The search's ETA: fewer new architectures each generation as the GA's population converges."""

import numpy as np
import pytest

from hwnas_jax.search import progress as progress_lib
from hwnas_jax.search.progress import Progress, expected_new


def _power_law(a, b, generations):
    return [int(round(a * (g + 1) ** -b)) for g in range(generations)]


@pytest.mark.parametrize('b', [0.4, 0.66, 1.0])
def test_expected_new_follows_the_searchs_own_decay(b):
    counts = _power_law(20, b, 100)
    seen = 25
    predicted = expected_new(counts[:seen], 100 - seen)
    actual = sum(counts[seen:])
    assert predicted == pytest.approx(actual, rel=0.25), (predicted, actual)


def test_expected_new_at_a_constant_rate_is_linear():
    # A search that keeps meeting new architectures at a steady rate (a high mutation rate):
    # its own data outweigh the prior's decay (60 generations against 20: within 25 %).
    rng = np.random.default_rng(0)
    counts = list(rng.poisson(10, 60))
    assert expected_new(counts, 40) == pytest.approx(10 * 40, rel=0.25)
    assert expected_new(counts, 40) > 5 * expected_new(counts[:3], 40)


def test_expected_new_edges():
    assert expected_new([], 10) == 0.0
    assert expected_new([20, 5], 0) == 0.0
    assert expected_new([20] + [0] * 10, 89) < 1.0  # Converged: nothing new to come.
    # One generation says nothing of the decay: the prior, calibrated on the Figure 2 slice
    # (190 distinct cells in 100 generations of 20).
    assert 20 + expected_new([20], 99) == pytest.approx(190, abs=2)
    # Never more per generation than the search has ever trained in one.
    assert expected_new([3, 3, 3], 10) <= 30


def test_eta_counts_the_architectures_still_to_come():
    p = Progress(100, 20, every=1e9, history_seconds=[400.0, 260.0], history_new=[20, 13])
    p.start_generation(2, 10)
    p.member_done(200.0, 10)  # 20 s per member.
    line = p.generation_line(
        {
            'generation': 2,
            'best_fitness': 2.9,
            'best_score': 2.9,
            'best_cost': 4.0,
            'feasible_fraction': 0.9,
            'evaluations': 10,
            'cache_hits': 10,
            'seconds': 200.0,
            'compile_seconds': 0.0,
        }
    )
    eta_s = 20.0 * expected_new([20, 13, 10], 97)
    assert f'ETA {progress_lib._minutes(eta_s)}' in line, line
    # The old estimate (recent seconds per generation times generations left) said 20 h.
    assert eta_s < 0.25 * np.mean([400, 260, 200]) * 97


def test_a_resumed_search_times_the_rest_by_this_process_only():
    # Its first ten generations ran on a machine 10x slower: 2000 s for 20 members.
    p = Progress(100, 20, every=1e9, history_seconds=[2000.0] * 10, history_new=[20] * 10)
    p.start_generation(10, 2)
    p.member_done(40.0, 2)  # 20 s per member here.
    line = p.generation_line(
        {
            'generation': 10,
            'best_fitness': 2.9,
            'best_score': 2.9,
            'best_cost': 4.0,
            'feasible_fraction': 0.9,
            'evaluations': 2,
            'cache_hits': 18,
            'seconds': 40.0,
            'compile_seconds': 0.0,
        }
    )
    eta_s = 20.0 * expected_new([20] * 10 + [2], 89)
    assert f'ETA {progress_lib._minutes(eta_s)}' in line, line


def test_heartbeat_names_the_members_in_flight(monkeypatch):
    lines = []
    monkeypatch.setattr(progress_lib.logging, 'info', lambda fmt, *args: lines.append(fmt % args))
    p = Progress(100, 20)
    p.start_generation(3, 5)
    p.heartbeat('training', 30.0)
    p.at_once = 2
    p.heartbeat('training', 60.0)
    p.done = 4
    p.heartbeat('training', 90.0)
    assert [line.split(':')[0] for line in lines] == [
        'gen 4/100  training new architecture 1/5',
        'gen 4/100  training new architectures 1-2/5',
        'gen 4/100  training new architecture 5/5',
    ]
