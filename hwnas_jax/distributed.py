"""Several processes, one search: JAX's multi-process runtime, started when the environment asks.

`launch.py` calls :func:`initialize` before anything touches a JAX device. It starts
`jax.distributed.initialize()` (as the Flax examples do) only when the environment asks for
several processes, and does nothing otherwise, so a single-process run is unchanged:

- `JAX_COORDINATOR_ADDRESS=host:port` (read by JAX itself), `JAX_NUM_PROCESSES=n` and
  `JAX_PROCESS_ID=i` (read here: JAX 0.10 has no variables of its own for them) on every
  process, process 0 on `host`. `JAX_COORDINATOR_ADDRESS` alone leaves the count and the index
  to JAX's cluster detection.
- a cluster launcher that JAX detects, with more than one process: SLURM (`srun`, more than
  one task), Open MPI (`mpirun`), Cloud TPU on GKE (more than one worker host).

On CPU the processes' collectives go through gloo (TCP). Then the population axis spans every
process's devices (:mod:`hwnas_jax.proxy.scorers`), every process runs the same host-side GA
on the same gathered scores, and only the primary process (index 0) writes files
(:mod:`hwnas_jax.search.loop`). The helpers here are safe to call in a single process, where
they cost nothing and never start the runtime.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from absl import logging

from hwnas_jax.errors import UserError

_HOW = (
    'set JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES=n and JAX_PROCESS_ID=i '
    '(0 on the coordinator host) on every process, or unset them for one process'
)


def _int(environ: Mapping[str, str], name: str, default: str = '1') -> int:
    try:
        return int(environ.get(name, default))
    except ValueError:
        raise UserError(f'{name}={environ[name]!r} is not an integer; {_HOW}') from None


def _cluster(environ: Mapping[str, str]) -> str | None:
    """The name of a multi-process cluster launch JAX detects, or None (one process)."""
    slurm = ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_NTASKS', 'SLURM_PROCID', 'SLURM_LOCALID')
    if all(v in environ for v in slurm) and _int(environ, 'SLURM_NTASKS') > 1:
        return 'SLURM'
    if 'OMPI_MCA_orte_hnp_uri' in environ and _int(environ, 'OMPI_COMM_WORLD_SIZE') > 1:
        return 'Open MPI'
    hosts = environ.get('TPU_PROCESS_ADDRESSES') or environ.get('TPU_WORKER_HOSTNAMES') or ''
    if len([h for h in hosts.split(',') if h.strip()]) > 1:
        return 'Cloud TPU'
    return None


def requested(environ: Mapping[str, str] | None = None) -> dict | None:
    """The arguments of `jax.distributed.initialize` that `environ` asks for; None: one process.

    Raises:
      UserError: the variables are incomplete or inconsistent (the message says what to set).
    """
    environ = os.environ if environ is None else environ
    address = environ.get('JAX_COORDINATOR_ADDRESS')
    if 'JAX_NUM_PROCESSES' in environ:
        n = _int(environ, 'JAX_NUM_PROCESSES')
        if n <= 1:
            return None
        if not address or 'JAX_PROCESS_ID' not in environ:
            raise UserError(f'JAX_NUM_PROCESSES={n} needs the other variables; {_HOW}')
        i = _int(environ, 'JAX_PROCESS_ID')
        if not 0 <= i < n:
            raise UserError(f'JAX_PROCESS_ID={i} is outside 0..{n - 1}; {_HOW}')
        return {'coordinator_address': address, 'num_processes': n, 'process_id': i}
    if 'JAX_PROCESS_ID' in environ:
        raise UserError(f'JAX_PROCESS_ID is set without JAX_NUM_PROCESSES; {_HOW}')
    if address or _cluster(environ):
        return {}  # JAX's own cluster detection fills in what is not given.
    return None


def initialize(environ: Mapping[str, str] | None = None) -> bool:
    """Starts JAX's multi-process runtime if `environ` (default os.environ) asks for it.

    Call it before anything touches a JAX device. Returns whether the runtime runs (True if it
    already did).

    Raises:
      UserError: incomplete variables, or JAX cannot tell the process count from the cluster.
    """
    import jax

    kwargs = requested(environ)
    if kwargs is None:
        return False
    if jax.distributed.is_initialized():
        return True
    if not os.environ.get('JAX_CPU_COLLECTIVES_IMPLEMENTATION'):
        # Cross-process collectives on CPU (the default of JAX 0.10, made explicit); the GPU
        # and TPU backends bring their own.
        jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    try:
        jax.distributed.initialize(**kwargs)
    except ValueError as e:  # JAX could not tell the address, count or index.
        raise UserError(f'cannot start JAX distributed ({e}); {_HOW}') from None
    return True


def process_count() -> int:
    """The number of processes of the run (1 unless the multi-process runtime runs)."""
    import jax

    return jax.process_count() if jax.distributed.is_initialized() else 1


def is_primary() -> bool:
    """Whether this process writes the run's files (process index 0; True in one process)."""
    import jax

    return not jax.distributed.is_initialized() or jax.process_index() == 0


def devices() -> list:
    """The devices a population spans: every process's in a multi-process run, else local."""
    import jax

    return jax.devices() if process_count() > 1 else jax.local_devices()


def describe() -> str:
    """'process i of n, k local device(s), m global device(s) (backend)'."""
    import jax

    return (
        f'process {jax.process_index()} of {jax.process_count()}, {jax.local_device_count()} '
        f'local device(s), {jax.device_count()} global device(s) ({jax.default_backend()})'
    )


def log_processes() -> None:
    """Logs one line: this process's index, the process count and the devices."""
    logging.info('JAX processes: %s', describe())


def broadcast(tree: Any) -> Any:
    """The primary process's values of a pytree of numpy arrays, bit for bit, on every process.

    Every process passes arrays of the same shapes and dtypes. They travel as their bytes, so
    nothing changes on the way (64-bit values stay 64-bit, -0.0 stays -0.0). In one process:
    `tree` as numpy arrays.
    """
    import jax

    host = jax.tree.map(np.asarray, tree)
    if process_count() == 1:
        return host
    from jax.experimental import multihost_utils

    def as_bytes(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a).reshape(-1).view(np.uint8)

    out = multihost_utils.broadcast_one_to_all(jax.tree.map(as_bytes, host))
    return jax.tree.map(lambda a, b: np.asarray(b).view(a.dtype).reshape(a.shape), host, out)


def broadcast_object(obj: Any) -> Any:
    """The primary process's `obj` (JSON-able; NaN and infinities too) on every process."""
    if process_count() == 1:
        return obj
    data = np.frombuffer(json.dumps(obj).encode(), np.uint8) if is_primary() else None
    n = int(broadcast(np.asarray(0 if data is None else len(data), np.int64)))
    buf = broadcast(data if data is not None else np.zeros(n, np.uint8))
    return json.loads(buf.tobytes().decode())


def on_primary(fn: Callable[[], Any]) -> None:
    """Runs `fn()` on the primary process; a UserError it raises is raised on every process."""
    if process_count() == 1:
        fn()
        return
    error = ''
    if is_primary():
        try:
            fn()
        except UserError as e:
            error = str(e)
    error = broadcast_object(error)
    if error:
        raise UserError(error)


def same_everywhere(values: list[int]) -> bool:
    """Whether every process passes the same `values` (small ints); waits for all of them.

    True in one process, at no cost.
    """
    if process_count() == 1:
        return True
    from jax.experimental import multihost_utils

    seen = np.asarray(multihost_utils.process_allgather(np.asarray(values, np.int32)))
    return bool((seen == seen[:1]).all())
