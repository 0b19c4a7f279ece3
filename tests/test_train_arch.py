"""Tests of train_arch: genome parsing and a tiny from-scratch training per search space."""

import importlib
import json
import pathlib

import numpy as np
import pytest

from hwnas_jax import config as config_lib
from hwnas_jax import jobs, reference, spaces, train_arch, training
from hwnas_jax.errors import UserError
from hwnas_jax.spaces import nb201, ofa
from tests.conftest import make_image_folder


def _space(name: str):
    c = config_lib.get_config()
    c.space.name = name
    return spaces.make(c)


NB201, OFA = _space('nb201'), _space('ofa')

ARCH_STR = '|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|'
SMALL_OFA = (0,) * 45  # k3, e3, d2: the cheapest subnet, quick to compile.


def _config(variant: str, **fields):
    config = importlib.import_module('configs.train_arch').get_config(variant)
    for key, value in fields.items():
        section, name = key.split('__')
        setattr(config[section], name, value)
    return config


@pytest.fixture(scope='module')
def folder(tmp_path_factory) -> pathlib.Path:
    return make_image_folder(tmp_path_factory.mktemp('images'))


def test_parse_nb201_genomes(tmp_path):
    want = nb201.from_arch_str(ARCH_STR)
    assert train_arch.parse_genome(NB201, ARCH_STR) == want
    assert train_arch.parse_genome(NB201, json.dumps(list(want))) == want
    best = tmp_path / 'best.json'
    best.write_text(json.dumps({'genome': list(want), 'score': 1.0}))
    assert train_arch.parse_genome(NB201, str(best)) == want
    for text in (None, '', '  '):
        with pytest.raises(UserError, match='best.json'):
            train_arch.parse_genome(NB201, text)
    for text in ('[1, 2, 3]', '[0, 0, 0, 0, 0, 9]', '|conv~0|', '{"ks": []}', 'nonsense', '3'):
        with pytest.raises(UserError, match='is not a nb201 architecture'):
            train_arch.parse_genome(NB201, text)


def test_parse_ofa_genomes():
    rng = np.random.default_rng(0)
    genome = tuple(int(v) for v in ofa.random_genomes(rng, 1)[0])
    assert train_arch.parse_genome(OFA, json.dumps(list(genome))) == genome
    cfg = ofa.to_config(genome)
    assert train_arch.parse_genome(OFA, json.dumps(cfg)) == genome
    assert train_arch.parse_genome(OFA, json.dumps({**cfg, 'r': [224]})) == genome
    for text in ('[0, 1]', json.dumps({**cfg, 'ks': [4] * 20}), ARCH_STR, '[[0]]'):
        with pytest.raises(UserError, match='is not a ofa architecture'):
            train_arch.parse_genome(OFA, text)
    with pytest.raises(UserError, match='OFA config JSON'):
        train_arch.parse_genome(OFA, None)


def _tiny(config, folder, genome):
    config.space.genome = genome
    config.data.update(source='folder', root=str(folder), num_classes=3)
    config.train.update(epochs=1, batch_size=4, max_steps=2)
    return config


@pytest.mark.slow
def test_train_nb201_architecture(folder, tmp_path):
    config = _tiny(_config('nb201'), folder, ARCH_STR)
    config.space.update(channels=4, cells_per_stage=1)
    config.data.image_size = 16  # Resized from the folder's 32 px.
    record = train_arch.train(config, tmp_path)
    assert record['step'] == 2 and 0 <= record['test_accuracy'] <= 100
    arch = json.loads((tmp_path / 'arch.json').read_text())
    assert arch['arch_str'] == ARCH_STR and arch['flops'] > 0
    lines = (tmp_path / 'metrics.jsonl').read_text().splitlines()
    assert json.loads(lines[-1])['step'] == 2
    with pytest.raises(UserError, match='train_arch'):
        reference.load_checkpoint(tmp_path)


@pytest.mark.slow
def test_train_ofa_architecture(folder, tmp_path):
    config = _tiny(_config('ofa_cifar'), folder, json.dumps(ofa.to_config(SMALL_OFA)))
    config.space.width_mult = 1.0
    record = train_arch.train(config, tmp_path)
    assert record['step'] == 2 and np.isfinite(record['train_loss'])
    arch = json.loads((tmp_path / 'arch.json').read_text())
    assert arch['resolution'] == 32 and arch['width_mult'] == 1.0
    assert arch['macs'] == pytest.approx(ofa.macs(SMALL_OFA, 32, 3, 1.0))
    config.space.resolution = 64
    with pytest.raises(UserError, match='data.image_size'):
        train_arch.train(config, tmp_path / 'other')


def test_configs():
    for variant in ('nb201', 'ofa', 'ofa_cifar'):
        config = _config(variant)
        assert config.job == 'train_arch' and config.space.resolution == config.data.image_size
        assert config.data.source == 'embedded'  # Offline by default.
    assert _config('ofa').train.batch_size == 8  # About 1 GB per image at 224 px.
    with pytest.raises(UserError, match='unknown variant'):
        _config('imagenet')
    doc = importlib.import_module('configs.train_arch').__doc__
    assert '\nRun:\n' in doc and '\nExpect:' in doc
    assert 'data.source=folder' in doc and '[tfds]' in doc


def _run_default(config, workdir: pathlib.Path) -> dict:
    """Runs the job through the API launch.py uses, on the default (packaged) data."""
    config.train.update(max_steps=1, batch_size=8, eval_size=16)
    record = jobs.run(config, str(workdir))
    assert record['step'] == 1 and np.isfinite(record['train_loss'])
    state = training.read_checkpoint(workdir)
    space = spaces.make(config)
    genome = tuple(state['model']['genome'])
    module = space.exact_network(genome)
    variables = {'params': state['params'], 'batch_stats': state['batch_stats']}
    images, labels, split = training.eval_split(config)
    assert split == 'test' and len(images) == 16
    expected = training.evaluate(module, variables, images, labels, batch_size=8)
    assert record['test_accuracy'] == pytest.approx(expected['accuracy'])
    return record


@pytest.mark.slow
def test_train_arch_job_runs_offline_on_the_test_images(tmp_path):
    config = _config('nb201')
    config.space.genome = ARCH_STR
    config.space.update(channels=4, cells_per_stage=1)  # Same job and data, a smaller net.
    _run_default(config, tmp_path)


@pytest.mark.slow
def test_train_arch_ofa_job_runs_offline_on_the_test_images(tmp_path):
    config = _config('ofa_cifar')
    config.space.genome = json.dumps(ofa.to_config(SMALL_OFA))
    _run_default(config, tmp_path)
