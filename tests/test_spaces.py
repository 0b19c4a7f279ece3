"""The Space interface: both spaces implement it, and the host side never asks a space its name."""

import ast
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from hwnas_jax import config as config_lib
from hwnas_jax import spaces
from hwnas_jax.errors import UserError
from hwnas_jax.spaces import base

REPO = pathlib.Path(__file__).resolve().parents[1]


def make(name):
    c = config_lib.get_config()
    c.space.name = name
    if name == 'ofa':
        c.hardware.metric, c.hardware.device, c.hardware.limit = 'flops', '', 300.0
    return spaces.make(c)


@pytest.mark.parametrize('name', spaces.NAMES)
def test_each_space_implements_the_interface(name):
    space = make(name)
    assert isinstance(space, base.Space) and space.name == name
    rng = np.random.default_rng(0)
    g = space.random_genomes(rng, 3)
    assert g.shape == (3, len(space.cardinalities))
    canon = space.canonical(g[0])
    assert space.canonical(canon) == canon
    assert space.parse_genome(str(list(canon))) == tuple(canon)
    assert space.describe(canon)['genome'] == list(canon)
    for metric in space.metrics[:2]:
        if metric in space.device_metrics:
            continue
        costs = space.costs(g, metric)
        assert costs.shape == (3,) and np.isfinite(costs).all()
        assert space.cheapest(metric) <= costs.min()
    report = space.cost_report(canon)
    assert report and all(space.unit(k) for k in report)
    assert space.auto_strategy('cpu') in ('loop', 'exact')
    assert space.auto_strategy('gpu') == 'vmap'
    with pytest.raises(UserError):
        space.parse_genome('[1, 2')


def test_no_space_name_branches_outside_spaces():
    """The host side asks the space, never its name (`space.NAME ==` and the like)."""
    offenders = []
    for path in (REPO / 'hwnas_jax').rglob('*.py'):
        if 'spaces' in path.parts or path.name in ('evaluation.py', 'study.py'):
            continue  # NAS-Bench-201's ground truth and study are NB201-only by design.
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                text = ast.unparse(node)
                if ('space.name' in text or '.NAME' in text) and any(
                    isinstance(c, ast.Constant) and c.value in spaces.NAMES
                    for c in node.comparators + [node.left]
                ):
                    offenders.append(f'{path.relative_to(REPO)}:{node.lineno}: {text}')
    assert not offenders, offenders


def test_codecs_and_ga_import_with_numpy_only():
    code = (
        'import sys; import hwnas_jax.spaces.nb201, hwnas_jax.spaces.ofa, '
        'hwnas_jax.search.ga, hwnas_jax.hardware.costs; '
        'bad = [m for m in ("jax", "flax", "optax") if m in sys.modules]; '
        'assert not bad, bad'
    )
    subprocess.run([sys.executable, '-c', code], check=True, cwd=REPO)


def test_rmi_imports_with_jax_only():
    code = (
        'import sys; import hwnas_jax.rmi; '
        'bad = [m for m in ("flax", "optax", "absl") if m in sys.modules]; '
        'assert not bad, bad'
    )
    subprocess.run([sys.executable, '-c', code], check=True, cwd=REPO)


def test_no_module_over_400_lines_and_no_import_cycles():
    sizes = {p: len(p.read_text().splitlines()) for p in (REPO / 'hwnas_jax').rglob('*.py')}
    big = {str(p.relative_to(REPO)): n for p, n in sizes.items() if n > 420}
    assert not big, big
    graph = {}
    for path in sizes:
        mod = '.'.join(path.relative_to(REPO).with_suffix('').parts).removesuffix('.__init__')
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.level == 0
                and node.module.startswith('hwnas_jax')
                and node.col_offset == 0
            ):
                deps.add(node.module)
                deps.update(f'{node.module}.{a.name}' for a in node.names)
            elif isinstance(node, ast.Import) and node.col_offset == 0:
                deps.update(a.name for a in node.names if a.name.startswith('hwnas_jax'))
        graph[mod] = deps & {
            '.'.join(p.relative_to(REPO).with_suffix('').parts).removesuffix('.__init__')
            for p in sizes
        }
    # Module-level imports only (imports inside functions are deliberate, lazy edges).
    seen, stack = set(), []

    def visit(m):
        if m in stack:
            raise AssertionError(f'import cycle: {" -> ".join(stack[stack.index(m) :] + [m])}')
        if m in seen:
            return
        stack.append(m)
        for d in graph.get(m, ()):
            if d != m and not m.startswith(d + '.'):  # A package importing its own modules.
                visit(d)
        stack.pop()
        seen.add(m)

    for m in graph:
        visit(m)
