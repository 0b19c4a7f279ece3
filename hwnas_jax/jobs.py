"""The jobs launch.py can run, resolved from `config.job` through one explicit table."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from hwnas_jax import distributed
from hwnas_jax.errors import UserError

# job name -> (module, function); each function takes (config, workdir).
JOBS = {
    'search': ('hwnas_jax.search.loop', 'run'),
    'train_reference': ('hwnas_jax.reference', 'train'),
    'train_arch': ('hwnas_jax.train_arch', 'train'),
    'figure5': ('hwnas_jax.search.figure5', 'run'),
    'figure2': ('hwnas_jax.search.figure2', 'run'),
    'proxy_study': ('hwnas_jax.study', 'run'),
}


def get(name: str) -> Callable:
    """Returns the function that runs job `name`; ValueError listing the jobs otherwise."""
    if name not in JOBS:
        raise UserError(f'unknown job {name!r}; config.job must be one of {sorted(JOBS)}')
    module, function = JOBS[name]
    return getattr(importlib.import_module(module), function)


# job name -> (module, function) that refuses, before the run writes anything, to resume a work
# directory that holds a run of other settings.
CHECKS = {
    'search': ('hwnas_jax.search.loop', 'check'),
    'proxy_study': ('hwnas_jax.study', 'check_state'),
}


# Jobs that run as several processes (hwnas_jax.distributed); the others run as one.
MULTIPROCESS = ('search',)


def check(config, workdir: str) -> None:
    """Raises UserError if `workdir` holds a run that `config` cannot resume, or if the job
    cannot run in as many processes as this run has."""
    if distributed.process_count() > 1 and config.job not in MULTIPROCESS:
        raise UserError(
            f'config.job={config.job} runs in one process; unset JAX_COORDINATOR_ADDRESS, '
            'JAX_NUM_PROCESSES and JAX_PROCESS_ID (or launch one task)'
        )
    if config.job in CHECKS:
        module, function = CHECKS[config.job]
        getattr(importlib.import_module(module), function)(config, workdir)


def run(config, workdir: str):
    """Runs `config.job` in `workdir` and returns its result."""
    return get(config.job)(config, workdir)
