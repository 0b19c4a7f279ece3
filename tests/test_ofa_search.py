"""End-to-end OFA search: a tiny OFA reference trained here, then the README-style command.

The reference is the largest OFA subnet at width 1.0 and 32 px, trained for one step on a tiny
image folder; the search runs `launch.py --config configs/ofa_flops.py:cifar` on it with a tiny
population, and its best.json feeds train_arch's genome parser.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from hwnas_jax import reference, spaces, train_arch
from hwnas_jax.spaces import ofa
from tests.conftest import make_image_folder

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = [
    '--config.space.width_mult=1.0',
    '--config.data.source=folder',
    '--config.data.num_classes=3',
    '--config.proxy.steps=1',
    '--config.proxy.batch_size=4',
    '--config.proxy.pool_size=8',
    '--config.ga.population=2',
    '--config.ga.tournament=2',
    '--config.ga.generations=2',
    '--config.ga.mutation=0.0',
    '--config.ga.crossover=1.0',
    '--config.hardware.limit=80',
    # One exact network per architecture: on XLA:CPU the masked population form of OFA
    # compiles and runs far slower (depthwise-convolution gradients at the largest kernel).
    '--config.proxy.strategy=exact',
]


def _ofa_config(root):
    from configs import ofa_flops

    config = ofa_flops.get_config('cifar')
    config.space.width_mult = 1.0
    config.data.update(source='folder', root=str(root), num_classes=3)
    config.train.update(epochs=1, batch_size=4, max_steps=1)
    return config


@pytest.fixture(scope='module')
def folder(tmp_path_factory) -> pathlib.Path:
    return make_image_folder(tmp_path_factory.mktemp('images'))


@pytest.fixture(scope='module')
def ofa_reference(folder, tmp_path_factory) -> pathlib.Path:
    workdir = tmp_path_factory.mktemp('ofa_max')
    record = reference.train(_ofa_config(folder), workdir)
    assert record['step'] == 1 and np.isfinite(record['train_loss'])
    return workdir


def test_ofa_reference_needs_a_checkpoint_and_says_how_to_train_one(folder):
    config = _ofa_config(folder)
    assert reference.arch(config) == 'ofa_max'
    with pytest.raises(ValueError, match=r'configs/train_reference_ofa.py:cifar10_32'):
        reference.load(config)
    config.space.resolution = 64
    with pytest.raises(ValueError, match='data.image_size'):
        reference.train(config, folder / 'unused')
    config.reference.arch = 'vgg'
    with pytest.raises(ValueError, match='unknown reference.arch'):
        reference.arch(config)


@pytest.mark.slow
def test_ofa_reference_loads_with_the_configured_feature_stages(folder, ofa_reference):
    config = _ofa_config(folder)
    config.reference.checkpoint = str(ofa_reference)
    config.space.feature_stages = '2,5'
    module, variables = reference.load(config)
    assert module.genome == (2,) * 45 and module.feature_stages == (2, 5)
    x = np.zeros((2, 32, 32, 3), np.float32)
    logits, features = reference.make_feature_fn(module, variables, bn_mode='train')(x)
    assert logits.shape == (2, 3)
    assert [f.shape for f in features] == [(2, 16, 16, 40), (2, 4, 4, 160)]
    for field, value, match in (
        ('data.num_classes', 10, 'classes'),
        ('space.resolution', 64, 'trained at 32px'),
        ('reference.arch', 'resnet20', 'arch=ofa_max'),
    ):
        other = _ofa_config(folder)
        other.reference.checkpoint = str(ofa_reference)
        section, name = field.split('.')
        setattr(other[section], name, value)
        with pytest.raises(ValueError, match=match):
            reference.load(other)


@pytest.mark.slow
def test_tiny_ofa_search_end_to_end(folder, ofa_reference, tmp_path):
    workdir = tmp_path / 'search'
    # Default XLA options: at backend optimisation level 0 the OFA member runs about 20x
    # slower on CPU (200 s instead of 10 s), more than the compilation it saves.
    env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'cache'))
    cmd = [
        sys.executable,
        'launch.py',
        '--config=configs/ofa_flops.py:cifar',
        f'--workdir={workdir}',
        f'--config.data.root={folder}',
        f'--config.reference.checkpoint={ofa_reference}',
        *TINY,
    ]
    res = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert res.returncode == 0, res.stderr[-4000:]
    assert 'gen 2/2' in res.stderr
    lines = [json.loads(x) for x in (workdir / 'metrics.jsonl').read_text().splitlines()]
    assert [r['generation'] for r in lines] == [0, 1]
    best = json.loads((workdir / 'best.json').read_text())
    genome = best['genome']
    assert len(genome) == 45 and np.isfinite(best['score'])
    assert best['costs']['macs'] == pytest.approx(ofa.macs(genome, 32, 3, 1.0))
    assert best['fitness'] == pytest.approx(best['score'] + min(0.0, 80 - best['costs']['macs']))
    # The found architecture is what train_arch trains, given the best.json.
    space = spaces.make(_ofa_config(folder))
    assert train_arch.parse_genome(space, str(workdir / 'best.json')) == tuple(genome)
