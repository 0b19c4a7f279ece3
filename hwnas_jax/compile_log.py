"""How long each compiled program took to build last time, so a user knows what to expect.

Before a long XLA compile the search prints one line saying what is compiled and how long it
took last time on this machine (or, the first time, what to expect). The times live in a small
JSON file next to JAX's persistent compilation cache (`~/.cache/hwnas_jax`, or
`$HWNAS_JAX_CACHE`); losing it loses nothing but the estimate.
"""

from __future__ import annotations

import hashlib
import json
import os

from absl import logging

from hwnas_jax import fileio


def cache_dir() -> str:
    """hwnas_jax's cache folder (compilation cache and compile times)."""
    return os.environ.get('HWNAS_JAX_CACHE') or os.path.join(
        os.path.expanduser('~'), '.cache', 'hwnas_jax'
    )


def _path() -> str:
    return os.path.join(cache_dir(), 'compile_times.json')


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _read() -> dict:
    try:
        with open(_path()) as f:
            times = json.load(f)
        return times if isinstance(times, dict) else {}
    except (OSError, ValueError):
        return {}


def expectation(key: str) -> str:
    """What to expect of compiling the program `key` (any string naming it exactly)."""
    last = _read().get(_digest(key))
    if isinstance(last, (int, float)):
        return (
            f'took {last:.0f} s last time on this machine (seconds if the compilation '
            'cache holds it)'
        )
    return (
        'first time on this machine: from seconds for tiny networks to 1-3 minutes for '
        "full-size ones on a 2-core CPU; XLA may log 'Very slow compile?' meanwhile, "
        'which is expected here'
    )


def record(key: str, seconds: float) -> None:
    """Remembers that compiling `key` took `seconds` (best effort: never fails the run)."""
    try:
        os.makedirs(cache_dir(), exist_ok=True)
        times = _read()
        times[_digest(key)] = round(float(seconds), 1)
        fileio.atomic_write_json(_path(), times)
    except OSError as e:
        logging.debug('could not record the compile time: %s', e)
