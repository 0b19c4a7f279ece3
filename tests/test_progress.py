"""The search's ETA: fewer new architectures each generation as the GA's population converges."""

import numpy as np
import pytest

from hwnas_jax.search import progress as progress_lib
from hwnas_jax.search.progress import Progress, expected_new


def _power_law(a, b, generations):
    return [a * (g + 1) ** -b for g in range(generations)]


@pytest.mark.parametrize('b', [0.4, progress_lib.DECAY, 1.0])
def test_expected_new_follows_the_searchs_own_decay(b):
    counts = _power_law(20, b, 100)
    seen = 25
    predicted = expected_new(counts[:seen], 100 - seen)
    actual = sum(counts[seen:])
    # The prior (twenty generations' worth) pulls the decay towards DECAY.
    assert 0.7 * actual < predicted < 1.7 * actual, (predicted, actual)
    if b == progress_lib.DECAY:
        assert predicted == pytest.approx(actual, rel=0.15)


# New architectures per generation of a Figure 2 slice search (pixel3, 11 ms, GA seed 2):
# 224 in all, with droughts (generations 35-38) and late bursts (88-93).
SLICE_SEARCH = [
    20, 13, 3, 7, 7, 3, 4, 3, 2, 2, 1, 2, 4, 5, 6, 7, 3, 3, 4, 3, 5, 5, 0, 2, 0, 2, 3, 3, 0, 2,
    1, 2, 1, 1, 1, 0, 0, 0, 0, 1, 1, 2, 0, 3, 1, 1, 0, 0, 1, 1, 2, 0, 1, 4, 0, 2, 1, 0, 1, 3,
    1, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 0, 1, 0, 1, 2, 2, 1, 2, 3, 4, 3, 5, 2, 0, 1, 0, 7, 4,
    4, 1, 6, 5, 2, 1, 3, 1, 1, 0,
]  # fmt: skip


@pytest.mark.parametrize('seen', [1, 2, 5, 10, 20, 30, 40, 60])
def test_expected_new_on_a_real_search(seen):
    # Within a factor of about 2 of what came (the fit on the logarithms of the counts, which
    # the 0s and 1s pull low, predicted 0.23-0.53 of it at generations 5, 10, 40 and 60).
    predicted = expected_new(SLICE_SEARCH[:seen], 100 - seen)
    actual = sum(SLICE_SEARCH[seen:])
    assert 0.45 * actual < predicted < 1.25 * actual, (predicted, actual)


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
    # A drought lowers the estimate without ending it: real searches come back from them
    # (SLICE_SEARCH: four empty generations, then 1, 1, 2, 0, 3).
    assert expected_new([20] + [0] * 10, 89) < 0.25 * expected_new([20] + [4] * 10, 89)
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
    p = Progress(100, 20, every=0.0)
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


def test_a_line_at_least_every_30_s_however_long_the_calls(monkeypatch):
    # Calls of 40 s, two members each (two calls at once): heartbeats counted from the call's
    # start printed at 30 s into each call and the 'trained' line (with the ETA) never came,
    # leaving gaps of up to a minute between lines.
    lines, clock = [], [0.0]
    monkeypatch.setattr(
        progress_lib.logging, 'info', lambda fmt, *args: lines.append((clock[0], fmt % args))
    )
    monkeypatch.setattr(progress_lib.time, 'perf_counter', lambda: clock[0])
    p = Progress(100, 20)
    p.at_once = 2
    p.start_generation(0, 20)
    for _ in range(5):
        start = clock[0]
        while clock[0] < start + 40.0:
            clock[0] += 1.0
            p.heartbeat('training', clock[0] - start)  # Every second, as the scorer calls it.
        p.member_done(40.0, 2)
    times = [0.0] + [t for t, _ in lines]
    assert max(b - a for a, b in zip(times, times[1:])) <= 30.0, lines
    trained = [line for _, line in lines if 'trained' in line]
    assert len(trained) == 5 and all('ETA' in line for line in trained), lines
    assert sum('training new architectures' in line for _, line in lines) == 5, lines
