"""End-to-end: the README command on a tiny config, outputs, resume after a kill."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def launch(workdir, *extra, config='configs/smoke.py', wait=True, cache=None):
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    if cache:
        # Compiled programs are shared between the test's runs through JAX's persistent cache.
        env.update(JAX_COMPILATION_CACHE_DIR=str(cache),
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
    cmd = [sys.executable, 'launch.py', f'--config={config}', f'--workdir={workdir}',
           *extra]
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp('jax_cache')


@pytest.fixture(scope='module')
def full_run(tmp_path_factory, cache):
    workdir = tmp_path_factory.mktemp('run') / 'w'
    res = launch(workdir, cache=cache)
    assert res.returncode == 0, res.stderr[-4000:]
    return workdir, res


def test_outputs(full_run):
    workdir, res = full_run
    for name in ('config.json', 'command.txt', 'batch.npz', 'state.json', 'metrics.jsonl',
                 'best.json'):
        assert (workdir / name).exists(), name
    lines = [json.loads(x) for x in (workdir / 'metrics.jsonl').read_text().splitlines()]
    assert [r['generation'] for r in lines] == list(range(6))
    assert sum(r['evaluations'] for r in lines) == lines[-1]['distinct_evaluated']
    best = json.loads((workdir / 'best.json').read_text())
    assert best['genome'] == lines[-1]['best_genome']
    assert best['fitness'] == pytest.approx(lines[-1]['best_fitness'])
    assert 0 <= best['score'] <= 3
    assert 'latency@pixel3' in best['costs'] and 'flops' in best['costs']
    assert 0 <= best['index'] < 15625
    assert 'gen 6/6' in res.stderr


def test_kill_mid_generation_and_resume_gives_the_same_result(full_run, tmp_path, cache):
    want_dir, _ = full_run
    workdir = tmp_path / 'w'
    proc = launch(workdir, wait=False, cache=cache)
    metrics = workdir / 'metrics.jsonl'
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 1:
            break
        time.sleep(0.01)
    assert proc.poll() is None, 'the run ended before it could be interrupted'
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(metrics.read_text().splitlines())
    assert done < 6
    res = launch(workdir, cache=cache)
    assert res.returncode == 0, res.stderr[-4000:]
    assert 'Resuming' in res.stderr
    got = json.loads((workdir / 'best.json').read_text())
    want = json.loads((want_dir / 'best.json').read_text())
    assert got == want
    strip = ('seconds', 'compile_seconds')
    a = [{k: v for k, v in json.loads(x).items() if k not in strip}
         for x in metrics.read_text().splitlines()]
    b = [{k: v for k, v in json.loads(x).items() if k not in strip}
         for x in (want_dir / 'metrics.jsonl').read_text().splitlines()]
    assert a == b


def test_user_errors_are_one_line(tmp_path):
    res = launch(tmp_path / 'a', '--config.hardware.device=iphone')
    assert res.returncode == 2
    assert 'Traceback' not in res.stderr and 'iphone' in res.stderr
    assert 'pixel3' in res.stderr  # It lists what exists.
    res = launch(tmp_path / 'e', '--config.hardware.device=edgegpu')
    assert res.returncode == 2 and 'Traceback' not in res.stderr
    assert 'hardware.missing=infeasible' in res.stderr  # Says so at the start, not hours later.
    res = launch(tmp_path / 'b', '--config.hardware.nonsense=1')
    assert res.returncode != 0 and 'nonsense' in res.stderr
    res = launch(tmp_path / 'c', '--config.data.source=folder',
                 '--config.data.root=/nonexistent/cifar')
    assert res.returncode == 2 and 'Traceback' not in res.stderr


def test_resume_with_other_settings_is_refused(full_run):
    workdir, _ = full_run
    res = launch(workdir, '--config.seed=5')
    assert res.returncode == 2 and 'different settings' in res.stderr


def tiny_config():
    sys.path.insert(0, str(REPO))
    from configs import smoke
    return smoke.get_config()


def test_interrupt_inside_scoring_then_resume(full_run, tmp_path, monkeypatch):
    """Deterministic mid-generation interruption: scoring of generation 3 dies after training."""
    from hwnas_jax import proxy
    from hwnas_jax.search import loop

    want_dir, _ = full_run
    calls = []
    real = proxy.Engine.score

    def dying(self, genomes):
        out = real(self, genomes)
        calls.append(len(genomes))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(proxy.Engine, 'score', dying)
    workdir = str(tmp_path / 'w')
    with pytest.raises(KeyboardInterrupt):
        loop.run(tiny_config(), workdir)
    state = json.loads((tmp_path / 'w' / 'state.json').read_text())
    assert state['generation'] == 2
    monkeypatch.setattr(proxy.Engine, 'score', real)
    got = loop.run(tiny_config(), workdir)
    assert got == json.loads((want_dir / 'best.json').read_text())
