"""launch.py as a user meets it: one `error:` line (exit 2) for bad input, help, default workdir."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def run(*args, cwd=REPO, timeout=600):
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    return subprocess.run(
        [sys.executable, str(REPO / 'launch.py'), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_error_line(res, *needles):
    assert res.returncode == 2, res.stderr[-3000:]
    assert 'Traceback' not in res.stderr, res.stderr[-3000:]
    errors = [x for x in res.stderr.splitlines() if x.startswith('error:')]
    assert len(errors) == 1, res.stderr[-3000:]
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


CASES = {
    'mistyped field': (['--config.proxy.stepz=3'], ['proxy.stepz', "did you mean 'steps'"]),
    'mistyped section': (['--config.prox.steps=3'], ["'prox'"]),
    'bad value type': (['--config.proxy.steps=abc'], ['proxy.steps', 'abc']),
    'nan learning rate': (['--config.proxy.learning_rate=nan'], ['proxy.learning_rate']),
    'huge learning rate': (['--config.proxy.learning_rate=1e30'], ['proxy.learning_rate']),
    'zero generations': (['--config.ga.generations=0'], ['ga.generations']),
    'zero channels': (['--config.space.channels=0'], ['space.channels']),
    'zero cells': (['--config.space.cells_per_stage=0'], ['space.cells_per_stage']),
    'negative budget': (['--config.hardware.limit=-1'], ['hardware.limit']),
    'constraint twice': (['--config.hardware.extra=latency@pixel3<=3'], ['hardware.extra']),
    'batch of one': (['--config.proxy.batch_size=1'], ['proxy.batch_size']),
    'negative seed': (['--config.seed=-1'], ['config.seed']),
    'unknown device': (['--config.hardware.device=iphone'], ['hardware.device', 'pixel3']),
    'device without table values': (
        ['--config.hardware.device=edgegpu'],
        ['hardware.missing=infeasible'],
    ),
    'missing folder': (
        ['--config.data.source=folder', '--config.data.root=/nonexistent/cifar'],
        ['/nonexistent/cifar'],
    ),
    'missing table': (['--config.hardware.table=/nonexistent/t.npz'], ['/nonexistent/t.npz']),
    'missing checkpoint': (['--config.reference.checkpoint=/nonexistent/ck'], ['/nonexistent/ck']),
}


@pytest.mark.parametrize('name', sorted(CASES))
def test_bad_input_is_one_error_line(name, tmp_path):
    args, needles = CASES[name]
    one_error_line(run('--config=configs/smoke.py', f'--workdir={tmp_path / "w"}', *args), *needles)


def test_config_file_errors(tmp_path):
    one_error_line(run('--config=configs/nope.py'), "'configs/nope.py' not found")
    one_error_line(run('--config=configs/smoke.py', 'extra'), 'unexpected arguments')
    one_error_line(run('--config=configs/ofa_flops.py:999'), "unknown variant '999'")
    err = one_error_line(run('--config=configs/nb201_latency.py:bogus'), "unknown variant 'bogus'")
    assert 'UserError' not in err and "'layer2'" in err
    one_error_line(run(), '--config is required')


@pytest.mark.parametrize('damage', ['truncate', 'flip', 'random'])
def test_damaged_batch_is_one_error_line(tmp_path, damage):
    workdir = tmp_path / 'w'
    workdir.mkdir()
    good = workdir / 'batch.npz'
    np.savez(good, images=np.zeros((8, 32, 32, 3), np.uint8), labels=np.zeros(8, np.int32))
    data = good.read_bytes()
    if damage == 'truncate':
        data = data[: len(data) // 2]
    elif damage == 'flip':
        data = data[:100] + bytes(b ^ 0xFF for b in data[100:164]) + data[164:]
    else:
        data = np.random.default_rng(0).bytes(len(data))
    good.write_bytes(data)
    one_error_line(
        run('--config=configs/smoke.py', f'--workdir={workdir}'), 'batch.npz', 'delete it'
    )


@pytest.mark.parametrize('content', ['{"version": 2}', '{not json', '[]'])
def test_damaged_state_is_one_error_line(tmp_path, content):
    workdir = tmp_path / 'w'
    workdir.mkdir()
    (workdir / 'state.json').write_text(content)
    one_error_line(run('--config=configs/smoke.py', f'--workdir={workdir}'), 'state.json')


def test_traceback_flag_shows_the_traceback(tmp_path):
    res = run(
        '--config=configs/smoke.py', f'--workdir={tmp_path}', '--config.seed=-1', '--traceback'
    )
    assert res.returncode != 0 and 'Traceback' in res.stderr


def test_help_lists_the_configs():
    res = run('--help_configs')
    assert res.returncode == 0
    for name in (
        'nb201_latency.py',
        'smoke.py',
        'ofa_flops.py [:240|300|374|cifar]',
        'hwnas_jax/config.py',
    ):
        assert name in res.stdout
    res = run('--help')
    assert '--help_configs' in res.stdout + res.stderr  # absl's --help exits 1.


def _main_patched(argv: list[str], patches: str) -> subprocess.CompletedProcess:
    """launch.py's main in a fresh process with `argv`, after the Python statements `patches`."""
    code = (
        f'import sys; sys.argv = {["launch.py", *argv]!r}; {patches}; '
        'import launch; from absl import app; '
        'app.run(launch.main, flags_parser=launch._parse_flags)'
    )
    return subprocess.run(
        [sys.executable, '-c', code],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, JAX_PLATFORMS='cpu'),
        timeout=600,
    )


def test_a_bug_keeps_its_traceback(tmp_path):
    """An internal error is not dressed up as a user error (exit 1 with a traceback)."""
    res = _main_patched(
        ['--config=configs/smoke.py', f'--workdir={tmp_path}'],
        'import hwnas_jax.search.loop as l; l.run = lambda c, w: 1 / 0',
    )
    assert res.returncode == 1 and 'ZeroDivisionError' in res.stderr
    assert 'Traceback' in res.stderr


def test_ctrl_c_names_the_work_directory_in_use(tmp_path):
    """With several processes every one resumes the primary's directory (its default name has
    a timestamp): Ctrl-C names the broadcast directory, not the process's own default."""
    primary = tmp_path / 'primary'
    res = _main_patched(
        ['--config=configs/smoke.py'],
        'from hwnas_jax import distributed as d; d.initialize = lambda: True; '
        f'd.broadcast_object = lambda w: {str(primary)!r}; '
        'import hwnas_jax.search.loop as l; '
        'l.run = lambda c, w: (_ for _ in ()).throw(KeyboardInterrupt())',
    )
    assert res.returncode == 130, res.stderr[-3000:]
    assert f'resume with: python launch.py --config=configs/smoke.py --workdir={primary}' in (
        res.stderr
    )
