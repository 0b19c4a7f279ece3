"""Tests of the shared training loop (any Flax classifier) and of resizing images to the model."""

import json
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import config_dict

from configs import base
from hwnas_jax import checkpoint, data, training
from hwnas_jax.errors import UserError
from tests.conftest import make_image_folder


class Tiny(nn.Module):
    """A small classifier with the (x, *, train) -> (logits, features) contract."""

    num_classes: int = 3
    batch_norm: bool = True

    @nn.compact
    def __call__(self, x, *, train):
        h = nn.Conv(4, (3, 3), strides=2, name='conv')(x)
        if self.batch_norm:
            h = nn.BatchNorm(use_running_average=not train, name='bn')(h)
        h = nn.relu(h)
        return nn.Dense(self.num_classes, name='head')(h.mean(axis=(1, 2))), [h]


def _folder(root: pathlib.Path, size: int = 32) -> pathlib.Path:
    return make_image_folder(root, counts=(('train', 4), ('test', 2)), size=size)


def _config(root, *, image_size=16, max_steps=0, seed=0) -> config_dict.ConfigDict:
    config = base.get_config()
    config.seed = seed
    config.data.update(source='folder', root=str(root), num_classes=3, image_size=image_size)
    config.data.resize = True  # New field (configs/base.py may not have it yet).
    config.train.update(epochs=2, batch_size=4, max_steps=max_steps, learning_rate=0.05)
    return config


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp('folder'))


def test_resize_and_load_split_at_the_configured_size(folder):
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    small = data.resize(images, 16)
    assert small.shape == (2, 16, 16, 3) and small.dtype == np.uint8
    assert data.resize(images, 32) is images
    flat = np.full((1, 8, 8, 3), 77, np.uint8)  # A constant image stays constant.
    np.testing.assert_array_equal(data.resize(flat, 24), 77)
    config = _config(folder)
    assert data.load_split(config.data, 'train')[0].shape == (12, 16, 16, 3)
    assert data.load_split(config.data, 'train', stored_size=True)[0].shape == (12, 32, 32, 3)
    pool, labels = data.random_pool(config, np.random.default_rng(0), 5)
    assert pool.shape == (5, 16, 16, 3) and len(labels) == 5
    config.data.resize = False
    with pytest.raises(data.DataError, match='data.resize'):
        data.load_split(config.data, 'train')


def test_fit_trains_any_module_and_resumes_exactly(folder, tmp_path):
    # 12 images, batches of 4: 3 steps per epoch, 6 in all, at 16 px resized from 32.
    model = {'kind': 'tiny', 'classes': (3,)}
    straight = training.fit(Tiny(), _config(folder), tmp_path / 'a', model=model, name='tiny')
    first = training.fit(Tiny(), _config(folder, max_steps=4), tmp_path / "b", model=model,
                         name="tiny")  # fmt: skip
    assert first['step'] == 4 and 'test_accuracy' in first
    resumed = training.fit(Tiny(), _config(folder), tmp_path / 'b', model=model, name='tiny')
    assert straight['step'] == resumed['step'] == 6
    assert resumed['test_accuracy'] == pytest.approx(straight['test_accuracy'])
    a, b = (training.read_checkpoint(tmp_path / d) for d in 'ab')
    assert a['model'] == {'kind': 'tiny', 'classes': [3]}
    for x, y in zip(jax.tree.leaves(a['params']), jax.tree.leaves(b['params'])):
        np.testing.assert_array_equal(x, y)
    lines = (tmp_path / 'b' / 'metrics.jsonl').read_text().splitlines()
    steps = [json.loads(line)['step'] for line in lines]
    assert steps == [3, 4, 6]
    with pytest.raises(UserError, match='different run'):
        training.fit(Tiny(), _config(folder), tmp_path / "b", model={"kind": "other"},
                     name="tiny")  # fmt: skip
    with pytest.raises(UserError, match='different run'):
        training.fit(Tiny(), _config(folder, seed=1), tmp_path / 'b', model=model, name='tiny')


def test_fit_without_batch_norm_and_evaluate(folder, tmp_path):
    module = Tiny(batch_norm=False)
    record = training.fit(module, _config(folder, max_steps=1), tmp_path, model={}, name='no bn')
    assert record['step'] == 1 and np.isfinite(record['train_loss'])
    state = training.read_checkpoint(tmp_path)
    variables = {'params': jax.tree.map(jnp.asarray, state['params'])}
    images, labels = data.load_split(_config(folder).data, 'test')
    result = training.evaluate(module, variables, images, labels, batch_size=4)
    assert result['accuracy'] == pytest.approx(record['test_accuracy'])
    assert result['loss'] == pytest.approx(record['test_loss'], rel=1e-5)


def test_read_checkpoint_errors(tmp_path):
    with pytest.raises(UserError, match='cannot read'):
        training.read_checkpoint(tmp_path)
    (tmp_path / training.CHECKPOINT_NAME).write_bytes(b'\x81\xa1a\x01')  # msgpack {'a': 1}
    with pytest.raises(UserError, match='not a reference checkpoint'):
        training.read_checkpoint(tmp_path)


@pytest.fixture(scope='module')
def trained(folder, tmp_path_factory) -> pathlib.Path:
    """A checkpoint written by one step of ``fit`` (its workdir)."""
    workdir = tmp_path_factory.mktemp('trained')
    training.fit(Tiny(), _config(folder, max_steps=1), workdir, model={"kind": "tiny"},
                 name="tiny")  # fmt: skip
    return workdir


def _damaged(tmp_path: pathlib.Path, raw: bytes) -> pathlib.Path:
    path = tmp_path / training.CHECKPOINT_NAME
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize('where', [0, 10, 40, 0.5, -1])
def test_checkpoint_with_a_flipped_byte_is_refused(trained, tmp_path, where):
    raw = bytearray((trained / training.CHECKPOINT_NAME).read_bytes())
    assert raw.startswith(checkpoint.MAGIC)
    index = int(where * len(raw)) if isinstance(where, float) else where
    raw[index] ^= 0x10
    path = _damaged(tmp_path, bytes(raw))
    with pytest.raises(UserError) as info:
        training.read_checkpoint(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize('keep', [0, 5, len(checkpoint.MAGIC) + 20, 0.5, -1])
def test_truncated_checkpoint_is_refused(trained, tmp_path, keep):
    raw = (trained / training.CHECKPOINT_NAME).read_bytes()
    keep = int(keep * len(raw)) if isinstance(keep, float) else keep
    path = _damaged(tmp_path, raw[:keep])
    with pytest.raises(UserError, match='damaged') as info:
        training.read_checkpoint(path)
    assert str(path) in str(info.value)


def test_resuming_from_a_damaged_checkpoint_is_refused(folder, trained, tmp_path):
    raw = (trained / training.CHECKPOINT_NAME).read_bytes()
    (tmp_path / training.CHECKPOINT_NAME).write_bytes(raw[:-3] + b'\0\0\0')
    with pytest.raises(UserError, match='checkpoint is damaged'):
        training.fit(Tiny(), _config(folder), tmp_path, model={'kind': 'tiny'}, name='tiny')


def test_checkpoint_without_digest_still_loads(trained, tmp_path):
    raw = (trained / training.CHECKPOINT_NAME).read_bytes()
    legacy = _damaged(tmp_path, raw.split(b'\n', 2)[2])  # Header removed.
    state = training.read_checkpoint(legacy)
    assert state['step'] == 1 and state['model'] == {'kind': 'tiny'}


def test_out_of_memory_is_one_user_error_about_the_batch(folder, tmp_path, monkeypatch):
    def exhausted(*args):
        raise jax.errors.JaxRuntimeError('RESOURCE_EXHAUSTED: Out of memory allocating 1 bytes.')

    monkeypatch.setattr(training, 'train_step', exhausted)
    with pytest.raises(UserError, match=r'out of memory .* batch of 4 .*train\.batch_size'):
        training.fit(Tiny(), _config(folder), tmp_path, model={}, name='tiny')


def test_resume_drops_later_and_partial_metrics_lines(tmp_path):
    path = tmp_path / training.METRICS_NAME
    path.write_text('{"step": 3}\n{"step": 6}\n{"step": 9, "train_lo')  # Killed mid-append.
    training._truncate_metrics(path, 6)
    assert path.read_text() == '{"step": 3}\n{"step": 6}\n'


def test_eval_split_is_the_test_split_or_an_even_subset(folder):
    config = _config(folder)
    images, labels, split = training.eval_split(config)
    assert split == 'test' and len(images) == 6
    np.testing.assert_array_equal(labels, [0, 0, 1, 1, 2, 2])
    config.train.eval_size = 3
    images, labels, _ = training.eval_split(config)
    assert images.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(labels, [0, 1, 2])  # Spread over the class-sorted split.


def test_to_variables_checks_names_and_shapes():
    shapes = training.flat_shapes(Tiny(), 8)
    assert shapes['params/conv/kernel'] == (3, 3, 3, 4) and 'batch_stats/bn/mean' in shapes
    flat = {k: np.zeros(s) for k, s in shapes.items()}
    variables = training.to_variables(shapes, flat, 'x')
    assert variables['params']['head']['kernel'].dtype == jnp.float32
    with pytest.raises(UserError, match='missing'):
        training.to_variables(shapes, {k: v for k, v in flat.items() if 'head' not in k}, 'x')
    flat['params/conv/kernel'] = np.zeros((1, 1, 3, 4))
    with pytest.raises(UserError, match='has shape'):
        training.to_variables(shapes, flat, 'x')
