"""The search's state on disk: a typed, versioned `state.json` and the `scores.jsonl` journal.

`state.json` holds what the GA needs to go on (generation, population, generator state,
history), written atomically after every generation. `scores.jsonl` holds one line per scored
architecture (canonical genome, score, final loss, per-layer CKAs), appended and fsynced the
moment it is scored: a search killed at any moment loses at most the architecture in flight,
and a resumed one never trains an architecture twice. Scores depend only on the architecture
and the proxy settings, so the journal replays exactly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import numpy as np

from hwnas_jax import config as config_lib
from hwnas_jax import fileio
from hwnas_jax.errors import UserError

STATE_VERSION = 2
Genome = tuple[int, ...]


def fingerprint(config) -> dict:
    """Config fields a resumed search must share with the run that wrote its state."""
    # The store is a cache and `workers` runs the same program side by side: neither changes
    # a score, so a resume may change them.
    proxy = {k: v for k, v in config.proxy.to_dict().items() if k not in ('store', 'workers')}
    return json.loads(
        json.dumps(
            {
                'seed': config.seed,
                'space': config.space.to_dict(),
                'proxy': proxy,
                'ga': config.ga.to_dict(),
                'hardware': config.hardware.to_dict(),
                'data': config.data.to_dict(),
                'reference': config.reference.to_dict(),
            }
        )
    )


@dataclasses.dataclass
class SearchState:
    """Everything a search needs to resume exactly (besides the scores journal)."""

    fingerprint: dict
    generation: int  # Populations scored so far; `population` is the next one to score.
    population: np.ndarray  # [P, G] int64.
    rng: dict  # The GA generator's bit_generator.state.
    batch_digest: str
    history: list[dict] = dataclasses.field(default_factory=list)
    best_feasible: dict | None = None
    last_fitness: list | None = None

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d['population'] = np.asarray(self.population).tolist()
        d['version'] = STATE_VERSION
        return d

    @classmethod
    def from_json(cls, d: Any, path: str) -> SearchState:
        if not isinstance(d, dict) or d.get('version') != STATE_VERSION:
            raise UserError(
                f'{path} was written by another version of hwnas_jax (or is not a '
                'search state); use a new --workdir'
            )
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [
            n for n in names if n not in d and n not in ('history', 'best_feasible', 'last_fitness')
        ]
        if missing:
            raise UserError(
                f'{path} lacks {", ".join(missing)}: it was changed by hand or '
                'damaged; delete it to start the search again'
            )
        kw = {n: d[n] for n in names if n in d}
        try:
            kw['population'] = np.asarray(kw['population'], np.int64)
            kw['generation'] = int(kw['generation'])
        except (TypeError, ValueError) as e:
            raise UserError(
                f'{path} is damaged ({e}); delete it to start the search again'
            ) from None
        return cls(**kw)


def state_path(workdir: str) -> str:
    return os.path.join(workdir, 'state.json')


def load(workdir: str, config) -> SearchState | None:
    """The saved state of `workdir`, or None for a new search.

    Raises:
      UserError: the state is damaged, from another version, or from other settings.
    """
    path = state_path(workdir)
    if not os.path.exists(path):
        return None
    state = SearchState.from_json(
        fileio.load_json(path, what='the search state', fix='delete it to start the search again'),
        path,
    )
    diff = config_lib.fingerprint_differences(fingerprint(config), state.fingerprint)
    if diff:
        raise UserError(
            f'{workdir} holds a search with other settings ({", ".join(diff)}); resume it '
            'with the same config, or use a new --workdir'
        )
    return state


def save(workdir: str, state: SearchState) -> None:
    fileio.atomic_write_json(state_path(workdir), state.to_json())


def _record(value: dict) -> dict:
    def num(x):
        return math.nan if x is None else float(x)

    return {
        'score': num(value['score']),
        'loss': num(value['loss']),
        'ckas': [num(v) for v in value['ckas']],
        'generation': int(value['generation']),
    }


class Journal:
    """`scores.jsonl`: canonical genome -> proxy record, appended as architectures are scored.

    Each record holds 'score', 'loss', 'ckas' and 'generation' (the generation that met it).
    With `write=False` (the processes of a multi-process search but the primary) it reads the
    file and keeps new records in memory only.
    """

    def __init__(self, path: str, *, write: bool = True):
        self.path = path
        self.write = write
        self.records: dict[Genome, dict] = {}
        if os.path.exists(path):
            self._load()

    def _load(self) -> None:
        with open(self.path, 'rb') as f:
            lines = f.read().split(b'\n')
        good = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                self.records[tuple(int(v) for v in rec['genome'])] = _record(rec)
                good.append(line)
            except (ValueError, KeyError, TypeError):
                if i >= len(lines) - 2:  # The last line, cut by a kill: drop it.
                    if self.write:
                        text = b''.join(x + b'\n' for x in good).decode()
                        fileio.atomic_write_text(self.path, text)
                    break
                raise UserError(
                    f'{self.path}: line {i + 1} is damaged; delete the file to '
                    "train the search's architectures again"
                ) from None

    def __contains__(self, genome: Genome) -> bool:
        return genome in self.records

    def __len__(self) -> int:
        return len(self.records)

    def met_by(self, generation: int) -> int:
        """Architectures first met in generations up to `generation`."""
        return sum(r['generation'] <= generation for r in self.records.values())

    def __getitem__(self, genome: Genome) -> dict:
        return self.records[genome]

    def add(self, genome: Genome, record: dict, generation: int) -> None:
        """Records `genome`'s score, first met in `generation`; durable when this returns."""
        rec = _record({**record, 'generation': generation})
        self.records[genome] = rec
        if not self.write:
            return
        line = fileio.dumps({'genome': list(genome), **rec}) + '\n'
        with open(self.path, 'a') as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
