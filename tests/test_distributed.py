"""Several processes, one search: two CPU processes of launch.py on this machine.

The two processes (one CPU device each, a coordinator on a free localhost port) must end with
exactly the outputs of one process on a mesh of the same size (two CPU devices forced): the
member axis spans the same two devices, so every member runs the same compiled shard and every
score is bit for bit the same. (One process on one device differs in the last bits of some
scores, by up to 1e-6: XLA compiles a one-device program differently from a two-device one; that
is so without any multi-process code, and the GA may then take another path.)
"""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import jax
import pytest

from hwnas_jax import config as config_lib
from hwnas_jax import distributed, jobs, proxy
from hwnas_jax.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[1]
SMALL = ['--config.ga.generations=2', '--config.ga.population=4', '--config.ga.tournament=2']
ENV_NAMES = ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID')


def test_one_process_without_the_environment():
    assert distributed.requested({}) is None
    assert distributed.requested({'JAX_NUM_PROCESSES': '1'}) is None
    assert distributed.initialize({}) is False
    assert not jax.distributed.is_initialized()
    assert distributed.process_count() == 1 and distributed.is_primary()
    assert distributed.devices() == jax.local_devices()
    assert distributed.broadcast_object({'a': [1.5, None]}) == {'a': [1.5, None]}
    assert distributed.same_everywhere([3, 1])


def test_the_environment_that_asks_for_several_processes():
    explicit = {'JAX_COORDINATOR_ADDRESS': 'h:1', 'JAX_NUM_PROCESSES': '2', 'JAX_PROCESS_ID': '1'}
    assert distributed.requested(explicit) == {
        'coordinator_address': 'h:1',
        'num_processes': 2,
        'process_id': 1,
    }
    slurm = dict.fromkeys(
        ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_PROCID', 'SLURM_LOCALID'), '0'
    )
    assert distributed.requested({**slurm, 'SLURM_NTASKS': '1'}) is None  # One task.
    assert distributed.requested({**slurm, 'SLURM_NTASKS': '2'}) == {}  # JAX detects the rest.
    assert distributed.requested({'JAX_COORDINATOR_ADDRESS': 'h:1'}) == {}
    for bad, needle in (
        ({'JAX_NUM_PROCESSES': '2'}, 'JAX_COORDINATOR_ADDRESS=host:port'),
        ({**explicit, 'JAX_PROCESS_ID': '2'}, 'outside 0..1'),
        ({**explicit, 'JAX_NUM_PROCESSES': 'two'}, "JAX_NUM_PROCESSES='two'"),
        ({'JAX_PROCESS_ID': '0'}, 'without JAX_NUM_PROCESSES'),
    ):
        with pytest.raises(UserError, match=needle):
            distributed.requested(bad)


def test_what_runs_in_one_process_only_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(distributed, 'process_count', lambda: 2)
    with pytest.raises(UserError, match='strategy=loop'):
        proxy.ExactScorer(None, {}, proxy.Settings())
    config = config_lib.get_config()
    config.job = 'figure5'
    with pytest.raises(UserError, match='config.job=figure5 runs in one process'):
        jobs.check(config, str(tmp_path))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('localhost', 0))
        return s.getsockname()[1]


def _start(workdir, cache, log, *args, cwd=REPO, **env_extra) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    env.update(
        JAX_PLATFORMS='cpu',
        JAX_COMPILATION_CACHE_DIR=str(cache),
        HWNAS_JAX_CACHE=str(cache),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
        **env_extra,
    )
    cmd = [sys.executable, str(REPO / 'launch.py'), f'--config={REPO / "configs/smoke.py"}']
    cmd += [f'--workdir={workdir}', *SMALL, *args]
    with open(log, 'w') as f:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)


def _wait(procs: dict, returncode: int = 0) -> dict:
    """Waits for every process; returns {name: log text}, asserting each exited so."""
    try:
        for p, _ in procs.values():
            p.wait(timeout=600)
    finally:
        for p, _ in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    logs = {name: pathlib.Path(log).read_text() for name, (_, log) in procs.items()}
    for name, (p, _) in procs.items():
        assert p.returncode == returncode, f'{name}:\n{logs[name][-4000:]}'
    return logs


def _two_processes(workdir, cache, tmp, cwds=(REPO, REPO)) -> dict:
    """Two processes of one search; the primary alone opens the score store `cache/store`."""
    address = f'localhost:{_free_port()}'
    return {
        f'process {i}': (
            _start(
                workdir,
                cache,
                tmp / f'p{i}.log',
                f'--config.proxy.store={cache / "store.sqlite"}',
                cwd=cwds[i],
                JAX_COORDINATOR_ADDRESS=address,
                JAX_NUM_PROCESSES='2',
                JAX_PROCESS_ID=str(i),
            ),
            tmp / f'p{i}.log',
        )
        for i in (0, 1)
    }


def _same_outputs(a: pathlib.Path, b: pathlib.Path) -> None:
    assert (a / 'scores.jsonl').read_text() == (b / 'scores.jsonl').read_text()
    assert json.loads((a / 'best.json').read_text()) == json.loads((b / 'best.json').read_text())

    def metrics(d):
        rows = [json.loads(x) for x in (d / 'metrics.jsonl').read_text().splitlines()]
        return [{k: v for k, v in r.items() if 'seconds' not in k} for r in rows]

    assert metrics(a) == metrics(b)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """(two-process workdir, one-process workdir on two devices, logs, cache), run side by side."""
    tmp = tmp_path_factory.mktemp('distributed')
    cache = tmp / 'cache'
    procs = _two_processes(tmp / 'two', cache, tmp)
    flags = os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=2'
    log = tmp / 'one.log'
    procs['one process'] = (_start(tmp / 'one', cache, log, XLA_FLAGS=flags), log)
    return tmp / 'two', tmp / 'one', _wait(procs), cache


@pytest.mark.slow
def test_two_processes_search_as_one(runs):
    two, one, logs, _ = runs
    _same_outputs(two, one)
    assert 'process 0 of 2, 1 local device(s), 2 global device(s) (cpu)' in logs['process 0']
    assert 'process 1 of 2, 1 local device(s), 2 global device(s) (cpu)' in logs['process 1']
    assert 'process 0 of' not in logs['one process']  # One process: no runtime, no such line.
    for name in ('process 0', 'process 1'):
        assert '2 member(s) per call on 2 cpu device(s)' in logs[name]
        assert 'Compiling the loop proxy program' in logs[name]
    # The primary alone wrote the files and holds the lock.
    assert len((two / 'command.txt').read_text().splitlines()) == 1
    assert (two / 'config.json').exists() and (two / 'batch.npz').exists()


@pytest.mark.slow
def test_two_processes_resume_a_killed_search(runs, tmp_path):
    """The finished search rewound to a kill in generation 2 (state after generation 1, the
    journal cut mid-line) resumes on two processes to the uninterrupted result; the primary
    finds generation 2's new architecture in the score store and shares it."""
    two, one, _, cache = runs
    workdir = tmp_path / 'w'
    shutil.copytree(two, workdir)
    state = json.loads((workdir / 'state.json').read_text())
    # After the last generation the population and the generator are left as they were, so
    # the state after generation 1 is the final one with one generation less.
    state['generation'], state['history'] = 1, state['history'][:1]
    (workdir / 'state.json').write_text(json.dumps(state))
    lines = (workdir / 'scores.jsonl').read_text().splitlines()
    kept = [x for x in lines if json.loads(x)['generation'] == 0]
    assert len(kept) < len(lines)
    (workdir / 'scores.jsonl').write_text(''.join(x + '\n' for x in kept) + lines[-1][:20])
    (workdir / 'best.json').unlink()
    logs = _wait(_two_processes(workdir, cache, tmp_path))
    for name in ('process 0', 'process 1'):
        assert 'Resuming' in logs[name] and 'at generation 2/2' in logs[name]
        assert 'proxy program' not in logs[name]  # Nothing left to train: nothing compiled.
    assert 'Score store' in logs['process 0'] and 'Score store' not in logs['process 1']
    _same_outputs(workdir, one)


@pytest.mark.slow
def test_a_work_directory_that_differs_between_processes_is_refused(runs, tmp_path):
    """Each process reads `--workdir=w` in its own folder, as on machines without a shared
    filesystem: process 1 finds a finished search, process 0 none; both stop with one line."""
    two, _, _, cache = runs
    (tmp_path / 'a').mkdir()
    shutil.copytree(two, tmp_path / 'b' / 'w')
    logs = _wait(_two_processes('w', cache, tmp_path, (tmp_path / 'a', tmp_path / 'b')), 2)
    for log in logs.values():
        errors = [x for x in log.splitlines() if x.startswith('error:')]
        assert errors == [
            'error: the processes found different searches in w; put the work directory on a '
            'filesystem that every process sees'
        ], log[-3000:]
    assert not (tmp_path / 'a' / 'w' / 'state.json').exists()  # Refused before writing.
