"""Every `python launch.py` command of the README, run as written (in a scratch directory).

Commands are shrunk only by the overrides the README's "Small runs" table shows for their kind,
and placeholder paths (`/path/to/cifar10`) point at a tiny image folder made here. Commands that
name each other's work directories (a chain: train the reference, search with it, train the
result) run in the order the README gives, in one directory, so the chain is tested as a chain.
A README that drifts from the code fails here.
"""

import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from hwnas_jax import data as data_lib
from tests.conftest import make_image_folder

REPO = pathlib.Path(__file__).resolve().parents[1]
README = (REPO / 'README.md').read_text()


def _blocks(text: str) -> list[str]:
    return re.findall(r'```[a-z]*\n(.*?)```', text, flags=re.S)


def readme_commands() -> list[str]:
    """Each launch.py command of the README's code blocks, continuation lines joined."""
    out = []
    for block in _blocks(README):
        for line in block.replace('\\\n', ' ').splitlines():
            if 'python launch.py' in line:
                out.append(line[line.index('python launch.py') :].strip())
    return out


def small_overrides() -> list[tuple[list[str], list[str]]]:
    """The README's "Small runs" table: (config names, overrides) per row."""
    section = README.split('### Small runs', 1)[1].split('\n#', 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if len(cells) != 2 or not cells[1].startswith('`--config.'):
            continue
        names = re.findall(r'`([\w/.:*]+)`', cells[0])
        rows.append((names, shlex.split(cells[1].strip('`'))))
    assert rows, 'the README lost its Small runs table'
    return rows


def shrink(cmd: list[str]) -> list[str]:
    config = next(
        a.split('=', 1)[1] if '=' in a else cmd[i + 1]
        for i, a in enumerate(cmd)
        if a.startswith('--config') and not a.startswith('--config.')
    )
    path, _, variant = config.partition(':')
    name = pathlib.Path(path).stem
    rows = small_overrides()
    for key in (f'{name}:{variant}', name):  # A row for the variant wins over the config's.
        for names, overrides in rows:
            if key in names:
                return cmd + overrides
    raise AssertionError(f'no Small runs row for {config}')


@pytest.fixture(scope='module')
def scratch(tmp_path_factory):
    """A user's directory: launch.py and configs/ as in the repository, nothing else."""
    d = tmp_path_factory.mktemp('user')
    shutil.copy(REPO / 'launch.py', d / 'launch.py')
    shutil.copytree(REPO / 'configs', d / 'configs')
    make_image_folder(
        d / 'cifar10', data_lib.CIFAR10_CLASSES, (('train', 5), ('test', 3)), separable=False
    )
    return d


def run_command(line: str, cwd: pathlib.Path, cache: pathlib.Path):
    cmd = shlex.split(line.replace('/path/to/cifar10', str(cwd / 'cifar10')), comments=True)
    assert cmd[:2] == ['python', 'launch.py'], line
    cmd = shrink([sys.executable, *cmd[1:]])
    env = dict(
        os.environ,
        JAX_PLATFORMS='cpu',
        HWNAS_JAX_CACHE=str(cache),
        JAX_COMPILATION_CACHE_DIR=str(cache / 'xla'),
    )
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)


def test_the_readme_has_the_quickstart_commands():
    blocks = _blocks(README.split('## Quickstart', 1)[1].split('\n## ', 1)[0])
    assert blocks[0].strip() == (
        'pip install -e . && python launch.py --config configs/nb201_latency.py'
    )
    assert blocks[1].strip() == "pip install -e '.[test]' && python -m pytest -q tests"
    ci = (REPO / '.ci' / 'run').read_text()
    assert 'python3 -m pytest -q tests' in ci  # CI runs the README's test command.


@pytest.mark.slow
def test_every_readme_command_runs_as_written(scratch, tmp_path_factory):
    cache = tmp_path_factory.mktemp('cache')
    commands = readme_commands()
    assert len(commands) >= 8
    for line in commands:
        res = run_command(line, scratch, cache)
        assert res.returncode == 0, f'{line}\n{res.stderr[-4000:]}'
        if '--workdir' not in line:  # The default work directory is used and said.
            name = pathlib.Path(
                re.search(r'--config[= ](\S+)', line).group(1).partition(':')[0]
            ).stem
            assert re.search(rf'Work directory: workdirs/{name}\S*-\d{{8}}-\d{{6}}', res.stderr)
        if 'launch.py' in line:  # The backend in one line of ours, not JAX's TPU probe.
            assert re.search(r'JAX \S+, backend \w+', res.stderr), res.stderr[-2000:]
            assert 'Unable to initialize backend' not in res.stderr
    assert list((scratch / 'workdirs').glob('nb201_latency-*/best.json'))
    assert list((scratch / 'workdirs').glob('smoke-*/best.json'))


def test_the_layout_names_every_module():
    """The README's Layout names every module of the package (a subpackage named as `dir/`
    covers its modules unless the Layout lists some of them, then it must list all)."""
    layout = _blocks(README.split('## Layout', 1)[1])[0]
    package = REPO / 'hwnas_jax'

    def named(name):
        return re.search(rf'(?<![\w/]){re.escape(name)}', layout) is not None

    missing = []
    for d in [package, *sorted(p.parent for p in package.glob('*/__init__.py'))]:
        modules = [p.name for p in sorted(d.glob('*.py')) if p.name != '__init__.py']
        if d != package and not named(f'{d.name}/'):
            missing.append(f'{d.name}/')
        elif d == package or any(named(m) for m in modules):
            missing += [m for m in modules if not named(m)]
    assert not missing, f'README Layout does not name {missing}'
