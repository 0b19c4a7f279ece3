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


class Progress:
    """Tracks the time per trained member and per generation; prints throttled lines."""

    def __init__(
        self,
        generations: int,
        population: int,
        every: float = 30.0,
        history_seconds: list[float] | None = None,
    ):
        self.generations = generations
        self.population = population
        self.every = every
        self.member_seconds: list[float] = []
        self.gen_seconds: list[float] = list(history_seconds or [])
        self.generation = 0
        self.done = 0
        self.total = 0
        self._last_line = time.perf_counter()

    def start_generation(self, generation: int, new: int) -> None:
        self.generation, self.done, self.total = generation, 0, new

    def per_member(self) -> float | None:
        return float(np.mean(self.member_seconds[-20:])) if self.member_seconds else None

    def _eta(self) -> str:
        per = self.per_member()
        if per is None:
            return ''
        gen_left = per * (self.total - self.done)
        later = self.generations - self.generation - 1
        per_gen = (
            float(np.mean(self.gen_seconds[-10:])) if self.gen_seconds else per * self.population
        )
        return (
            f'  {per:.1f} s/member  ETA generation {_minutes(gen_left)}, '
            f'search {_minutes(gen_left + later * per_gen)}'
        )

    def member_done(self, seconds: float, count: int = 1) -> None:
        """After `count` members trained in `seconds` (compile excluded)."""
        self.member_seconds.extend([seconds / count] * count)
        self.done += count
        now = time.perf_counter()
        if now - self._last_line >= self.every or len(self.member_seconds) == count:
            self._last_line = now
            logging.info(
                'gen %d/%d  trained %d/%d new architectures%s',
                self.generation + 1,
                self.generations,
                self.done,
                self.total,
                self._eta(),
            )

    def heartbeat(self, doing: str, elapsed: float) -> None:
        """Called every ~30 s of a long compile or compiled call."""
        self._last_line = time.perf_counter()
        if doing == 'compiling':
            logging.info('still compiling (%s so far)', _minutes(elapsed))
            return
        per = self.per_member()
        about = f', about {per:.0f} s per member so far' if per else ''
        logging.info(
            'gen %d/%d  training new architecture %d/%d: %s%s',
            self.generation + 1,
            self.generations,
            self.done + 1,
            self.total,
            _minutes(elapsed),
            about,
        )

    def generation_line(self, rec: dict) -> str:
        self.gen_seconds.append(rec['seconds'])
        self._last_line = time.perf_counter()
        left = self.generations - rec['generation'] - 1
        eta = float(np.mean(self.gen_seconds[-10:])) * left
        cost = rec['best_cost']
        return (
            f'gen {rec["generation"] + 1}/{self.generations}  best fitness '
            f'{rec["best_fitness"]:.4f} (score {rec["best_score"]:.4f}, cost '
            f'{cost if cost is None else f"{cost:.4g}"})  feasible '
            f'{rec["feasible_fraction"]:.0%}  new {rec["evaluations"]} hits '
            f'{rec["cache_hits"]}  {rec["seconds"]:.1f}s/gen (+{rec["compile_seconds"]:.1f}s '
            f'compile)  ETA {_minutes(eta)}'
        )
