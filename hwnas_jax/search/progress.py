"""Progress lines of a search: what is compiling, members done, seconds per member, ETAs.

A line at least every `every` seconds while anything runs (compiling, training a member, or
between members), and one per generation, so a user never waits in silence.
"""

from __future__ import annotations

import time

import numpy as np
from absl import logging


def _minutes(seconds: float) -> str:
    if seconds < 90:
        return f'{seconds:.0f} s'
    if seconds < 5400:
        return f'{seconds / 60:.1f} min'
    return f'{seconds / 3600:.1f} h'


# How fast a GA stops meeting new architectures: the number it scores in generation g falls
# about as (g + 1) ** -DECAY (`expected_new`'s model). The seven finished searches of the
# Figure 2 slice (population 20, 100 generations) scored 168-231 distinct cells, 190 on
# average, which the model gives at DECAY = 0.74 (20 in the first generation).
DECAY = 0.74
_PRIOR_WEIGHT = 20.0  # The prior counts as this many generations of the search's own data.


def expected_new(counts: list[int], later: int) -> float:
    """Expected number of new architectures in the `later` generations after `counts`.

    `counts[g]` is how many generation g trained. The model: a (g + 1) ** -b. The decay b is
    the slope of `log(n_g + 0.5)` against `log(g + 1)` over the search's own generations,
    pulled towards DECAY by a prior worth twenty generations (a GA's counts swing from one
    generation to the next: 3, 7, 7, 3, 4 in the slice) and kept in [0, 2] (0: a constant
    rate, as in rejection sampling). The level a makes the model's total over those
    generations equal theirs (fitted on the counts, not on their logarithms, which the
    generations with 0 or 1 new pull low: on a slice search that fit predicted 0.23-0.53 of
    the cells still to come after generations 5, 10, 40 and 60, this one 0.50-0.71;
    tests/test_progress.py). A prediction no larger per generation than the most the search
    has trained in one.
    """
    if later <= 0 or not counts:
        return 0.0
    k = len(counts)
    n = np.asarray(counts, np.float64)
    g = np.arange(1, k + 1, dtype=np.float64)
    if k >= 2:
        b_fit = -np.polyfit(np.log(g), np.log(n + 0.5), 1)[0]
        b = float(np.clip((k * b_fit + _PRIOR_WEIGHT * DECAY) / (k + _PRIOR_WEIGHT), 0.0, 2.0))
    else:
        b = DECAY
    a = n.sum() / np.sum(g**-b)
    future = a * np.arange(k + 1, k + later + 1, dtype=np.float64) ** -b
    return float(np.sum(np.clip(future, 0.0, max(n.max(), 1.0))))


class Progress:
    """Tracks the time per trained member and per generation; prints throttled lines."""

    def __init__(
        self,
        generations: int,
        population: int,
        every: float = 30.0,
        history_seconds: list[float] | None = None,
        history_new: list[int] | None = None,
    ):
        self.generations = generations
        self.population = population
        self.every = every
        self.member_seconds: list[float] = []
        self.gen_seconds: list[float] = list(history_seconds or [])
        self.gen_new: list[int] = list(history_new or [])
        self._timed_here = len(self.gen_seconds)  # Generations before it ran elsewhere.
        self.generation = 0
        self.at_once = 1  # Members trained side by side (the scorer's workers).
        self.done = 0
        self.total = 0
        self._last_line = time.perf_counter()
        self._beat_since_trained = False  # A heartbeat line since the last 'trained' line.

    def start_generation(self, generation: int, new: int) -> None:
        self.generation, self.done, self.total = generation, 0, new

    def per_member(self) -> float | None:
        return float(np.mean(self.member_seconds[-20:])) if self.member_seconds else None

    def later_seconds(self, later: int, counts: list[int]) -> float:
        """Seconds the `later` generations after those of `counts` should take.

        Each trains fewer new architectures than the last (`expected_new`) at the recent
        seconds per member, plus a generation's own overhead (the recent median, over the
        generations of this process only: a resumed search's earlier ones may have run on a
        slower machine or with fewer calls at once).
        """
        per = self.per_member()
        if per is None:
            return float('nan')
        here = zip(self.gen_seconds[self._timed_here :], self.gen_new[self._timed_here :])
        recent = list(here)[-10:]
        overhead = float(np.median([max(0.0, s - n * per) for s, n in recent])) if recent else 0.0
        return expected_new(counts, later) * per + later * overhead

    def _eta(self) -> str:
        per = self.per_member()
        if per is None:
            return ''
        gen_left = per * (self.total - self.done)
        later = self.generations - self.generation - 1
        search = gen_left + self.later_seconds(later, [*self.gen_new, self.total])
        return (
            f'  {per:.1f} s/member  ETA generation {_minutes(gen_left)}, search {_minutes(search)}'
        )

    def member_done(self, seconds: float, count: int = 1) -> None:
        """After `count` members trained in `seconds` (compile excluded)."""
        self.member_seconds.extend([seconds / count] * count)
        self.done += count
        now = time.perf_counter()
        first = len(self.member_seconds) == count
        # After a heartbeat ('training ...: 30 s'), say when those members are done, with the
        # ETA: with calls of 30-60 s the heartbeats would otherwise be the only lines.
        if now - self._last_line >= self.every or first or self._beat_since_trained:
            self._last_line = now
            self._beat_since_trained = False
            logging.info(
                'gen %d/%d  trained %d/%d new architectures%s',
                self.generation + 1,
                self.generations,
                self.done,
                self.total,
                self._eta(),
            )

    def heartbeat(self, doing: str, elapsed: float) -> None:
        """Called every second or so of a long compile or compiled call (`elapsed` seconds in).

        Prints a line when `every` seconds have passed since the last line, whatever printed
        it, so that lines come at least every `every` seconds however long the calls are.
        """
        now = time.perf_counter()
        if now - self._last_line < self.every:
            return
        self._last_line = now
        if doing == 'compiling':
            logging.info('still compiling (%s so far)', _minutes(elapsed))
            return
        per = self.per_member()
        about = f', about {per:.0f} s per member so far' if per else ''
        last = min(self.done + self.at_once, self.total)
        which = f' {self.done + 1}' if last <= self.done + 1 else f's {self.done + 1}-{last}'
        self._beat_since_trained = True
        logging.info(
            'gen %d/%d  training new architecture%s/%d: %s%s',
            self.generation + 1,
            self.generations,
            which,
            self.total,
            _minutes(elapsed),
            about,
        )

    def generation_line(self, rec: dict) -> str:
        self.gen_seconds.append(rec['seconds'])
        self.gen_new.append(rec['evaluations'])
        self._last_line = time.perf_counter()
        left = self.generations - rec['generation'] - 1
        if self.per_member() is None:  # Nothing trained in this process yet (all hits).
            eta = float(np.mean(self.gen_seconds[-10:])) * left
        else:
            eta = self.later_seconds(left, self.gen_new)
        cost = rec['best_cost']
        return (
            f'gen {rec["generation"] + 1}/{self.generations}  best fitness '
            f'{rec["best_fitness"]:.4f} (score {rec["best_score"]:.4f}, cost '
            f'{cost if cost is None else f"{cost:.4g}"})  feasible '
            f'{rec["feasible_fraction"]:.0%}  new {rec["evaluations"]} hits '
            f'{rec["cache_hits"]}  {rec["seconds"]:.1f}s/gen (+{rec["compile_seconds"]:.1f}s '
            f'compile)  ETA {_minutes(eta)}'
        )
