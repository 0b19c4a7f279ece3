"""Tests of the reference model: packaged weights, accuracy, PyTorch parity, training + resume."""

import importlib
import io
import json
import pathlib
import tarfile
import time

import jax
import numpy as np
import pytest
from ml_collections import config_dict
from PIL import Image

from hwnas_jax import checkpoint, data, fileio, jobs, reference, training
from hwnas_jax.errors import UserError
from hwnas_jax.models.resnet import ResNet
from tests.conftest import make_image_folder


def _load_config(name: str) -> config_dict.ConfigDict:
    return importlib.import_module(f'configs.{name}').get_config()


@pytest.fixture(scope='module')
def pretrained():
    return reference.load_pretrained()


def _sample(n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    images, labels = data.read_split('embedded', 'train')
    return images[:n], labels[:n]


def test_pretrained_loads_and_matches_the_module(pretrained):
    module, variables = pretrained
    assert module == ResNet(depth=20, num_classes=10)
    assert variables['params']['stem_conv']['kernel'].shape == (3, 3, 3, 16)
    assert variables['batch_stats']['stage3_block2']['bn2']['var'].shape == (64,)
    with pytest.raises(UserError, match='CIFAR-10 model'):
        reference.load_pretrained(num_classes=100)


def test_tampered_pretrained_weights_are_one_user_error(tmp_path, monkeypatch):
    raw = bytearray(fileio.asset_path(reference.PRETRAINED_ASSET).read_bytes())
    raw[len(raw) // 3] ^= 1
    (tmp_path / reference.PRETRAINED_ASSET).write_bytes(bytes(raw))
    monkeypatch.setattr(fileio, 'asset_path', lambda name: tmp_path / name)
    with pytest.raises(UserError, match=r'resnet20_cifar10\.npz.*changed.*reinstall'):
        reference.load_pretrained()


def test_feature_fn_modes(pretrained):
    module, variables = pretrained
    images, labels = _sample(64)
    x = data.normalize(images)
    logits, features = reference.make_feature_fn(module, variables)(x)
    assert logits.shape == (64, 10)
    assert [f.shape for f in features] == [(64, 32, 32, 16), (64, 16, 16, 32), (64, 8, 8, 64)]
    assert np.mean(np.argmax(logits, -1) == labels) > 0.8  # Training images.
    train_logits, _ = reference.make_feature_fn(module, variables, bn_mode='train')(x)
    assert not np.allclose(logits, train_logits, atol=1e-3)
    with pytest.raises(ValueError, match='bn_mode'):
        reference.make_feature_fn(module, variables, bn_mode='frozen')


def test_load_chooses_packaged_or_checkpoint(pretrained, tmp_path):
    config = _load_config('base')
    module, _ = reference.load(config)
    assert module == pretrained[0]
    config.data.num_classes = 100
    with pytest.raises(UserError, match='10 classes'):
        reference.load(config)
    config.reference.checkpoint = str(tmp_path)
    with pytest.raises(UserError, match='cannot read'):
        reference.load(config)
    (tmp_path / reference.CHECKPOINT_NAME).write_bytes(b'\x93corrupt')
    with pytest.raises(UserError, match='corrupt|not a reference checkpoint'):
        reference.load(config)


def test_train_reference_configs_default_to_the_packaged_sample():
    config = _load_config('train_reference')
    assert config.job == 'train_reference' and config.data.source == 'embedded'
    module = importlib.import_module('configs.train_reference')
    assert '\nRun:\n' in module.__doc__ and '\nExpect:' in module.__doc__
    assert 'data.source=folder' in module.__doc__ and '[tfds]' in module.__doc__
    ofa = importlib.import_module('configs.train_reference_ofa')
    for variant in ofa.VARIANTS:
        config = ofa.get_config(variant)
        assert config.data.source == ('tfds' if '100' in variant else 'embedded')
        # At 224 px a step needs about 1 GB per image: the default batch fits 24 GB.
        assert config.train.batch_size <= (8 if config.data.image_size == 224 else 128)
    assert 'data.source=folder' in ofa.__doc__ and '[tfds]' in ofa.__doc__
    with pytest.raises(UserError, match='unknown variant'):
        ofa.get_config('imagenet')


def test_embedded_source_evaluates_on_its_test_split():
    images, labels, split = reference._eval_split(_load_config('train_reference'))
    assert split == 'test' and images.shape == (1000, 32, 32, 3) and len(labels) == 1000


def test_pretrained_accuracy_on_the_packaged_test_images(pretrained):
    # 803 of the 1,000 packaged test images (81.03 % on all 10,000 JPEG test images); on the
    # training sample, images the model was trained on, 87.9 %.
    images, labels = data.read_split('embedded', 'test')
    result = reference.evaluate(*pretrained, images, labels, batch_size=500)
    assert result['accuracy'] == pytest.approx(80.3, abs=0.25)


def _tiny_run(config, workdir) -> dict:
    """Runs `config` as launch.py does, at the smallest size, and checks its test accuracy."""
    config.train.update(max_steps=1, batch_size=8, eval_size=16)
    record = jobs.run(config, str(workdir))
    assert record['step'] == 1 and np.isfinite(record['train_loss'])
    module, variables = reference.load_checkpoint(workdir)
    images, labels, split = training.eval_split(config)
    assert split == 'test' and len(images) == 16
    # The reported accuracy is that of the test images (not of the training sample).
    expected = reference.evaluate(module, variables, images, labels, batch_size=8)
    assert record['test_accuracy'] == pytest.approx(expected['accuracy'])
    return record


@pytest.mark.slow
def test_train_reference_job_runs_offline_on_the_test_images(tmp_path):
    config = _load_config('train_reference')
    config.reference.depth = 8  # Same job and data; a smaller net compiles quicker.
    _tiny_run(config, tmp_path)


@pytest.mark.slow
def test_train_reference_ofa_job_runs_offline_on_the_test_images(tmp_path):
    config = importlib.import_module('configs.train_reference_ofa').get_config('cifar10_32')
    config.space.width_mult = 1.0  # The 224 px default costs 90 s to compile on a CPU.
    _tiny_run(config, tmp_path)


def test_damaged_reference_checkpoint_is_one_user_error(tmp_path):
    path = tmp_path / reference.CHECKPOINT_NAME
    params = {'head': {'bias': np.arange(10, dtype=np.float32)}}
    checkpoint.write(path, {"model": {"depth": 8, "num_classes": 10}, "params": params,
                            "batch_stats": {}})  # fmt: skip
    assert training.read_checkpoint(path)['model'] == {'depth': 8, 'num_classes': 10}
    raw = path.read_bytes()
    config = _load_config('base')
    config.reference.checkpoint = str(path)
    for damaged in (raw[: len(raw) // 2], raw[:-1] + bytes([raw[-1] ^ 1])):
        path.write_bytes(damaged)
        with pytest.raises(UserError, match='damaged') as info:
            reference.load(config)
        assert str(path) in str(info.value)


def _torch_resnet20(torch):
    """akamaster's ResNet-20, written independently from its description in the README."""
    nn, functional = torch.nn, torch.nn.functional

    class Block(nn.Module):
        def __init__(self, cin, planes, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.pad = planes // 4 if (stride != 1 or cin != planes) else None

        def forward(self, x):
            y = self.bn2(self.conv2(functional.relu(self.bn1(self.conv1(x)))))
            if self.pad is not None:
                x = functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
            return functional.relu(y + x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            cin, layers = 16, []
            for planes, stride in ((16, 1), (32, 2), (64, 2)):
                blocks = [Block(cin, planes, stride), Block(planes, planes, 1),
                          Block(planes, planes, 1)]  # fmt: skip
                layers.append(nn.Sequential(*blocks))
                cin = planes
            self.layer1, self.layer2, self.layer3 = layers
            self.linear = nn.Linear(64, 10)

        def forward(self, x):
            y = functional.relu(self.bn1(self.conv1(x)))
            features = []
            for layer in (self.layer1, self.layer2, self.layer3):
                y = layer(y)
                features.append(y)
            return self.linear(y.mean(dim=(2, 3))), features

    return Net()


@pytest.mark.shared
def test_logits_and_features_equal_pytorch(pretrained, shared_data):
    torch = pytest.importorskip('torch')
    checkpoint = torch.load(
        shared_data / 'reference' / 'resnet20-12fca82f.th', map_location='cpu', weights_only=True
    )
    net = _torch_resnet20(torch)
    net.load_state_dict({k.removeprefix('module.'): v for k, v in checkpoint['state_dict'].items()})
    net.eval()
    images, _ = _sample(8)
    x = data.normalize(images)
    with torch.no_grad():
        torch_logits, torch_features = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    logits, features = reference.make_feature_fn(*pretrained)(x)
    np.testing.assert_allclose(logits, torch_logits.numpy(), atol=1e-4, rtol=1e-4)
    for ours, theirs in zip(features, torch_features):
        np.testing.assert_allclose(ours, theirs.numpy().transpose(0, 2, 3, 1), atol=1e-4)


@pytest.mark.shared
@pytest.mark.slow
def test_pretrained_accuracy_on_jpeg_cifar10_test_set(pretrained, shared_data):
    start = time.perf_counter()
    images, labels = [], []
    with tarfile.open(shared_data / 'cifar10' / 'cifar10-jpeg.tar.gz') as archive:
        for member in archive:  # One sequential pass over the gzip stream.
            if member.isfile() and member.name.startswith('test/'):
                with Image.open(io.BytesIO(archive.extractfile(member).read())) as image:
                    images.append(np.asarray(image.convert('RGB')))
                labels.append(data.CIFAR10_CLASSES.index(member.name.split('/')[1]))
    assert len(images) == 10_000
    result = reference.evaluate(*pretrained, np.stack(images), np.asarray(labels), batch_size=500)
    # PyTorch scores the same weights at 81.03 % on these JPEGs (91.78 % on the originals).
    assert result['accuracy'] == pytest.approx(81.03, abs=0.2)
    print(f'accuracy {result["accuracy"]:.2f} % in {time.perf_counter() - start:.1f} s')


def _tiny_config(root: pathlib.Path, max_steps: int) -> config_dict.ConfigDict:
    config = _load_config('train_reference')
    config.data.update(source='folder', root=str(root), num_classes=3, image_size=16)
    config.reference.depth = 8
    config.train.update(epochs=2, batch_size=8, max_steps=max_steps, learning_rate=0.05)
    return config


@pytest.fixture(scope='module')
def tiny_folder(tmp_path_factory) -> pathlib.Path:
    return make_image_folder(
        tmp_path_factory.mktemp('tiny'),
        ('circle', 'square', 'stripe'),
        (('train', 8), ('test', 2)),
        size=16,
    )


@pytest.mark.slow
def test_training_writes_metrics_and_checkpoints_and_resumes_exactly(tiny_folder, tmp_path):
    # 24 images, batches of 8: 3 steps per epoch, 6 in all.
    straight = reference.train(_tiny_config(tiny_folder, 0), tmp_path / 'straight')
    interrupted = tmp_path / 'interrupted'
    first = reference.train(_tiny_config(tiny_folder, 2), interrupted)  # Stops mid-epoch.
    assert first['step'] == 2 and 'test_accuracy' in first
    resumed = reference.train(_tiny_config(tiny_folder, 0), interrupted)
    assert straight['step'] == resumed['step'] == 6
    assert resumed['test_accuracy'] == pytest.approx(straight['test_accuracy'])

    (_, a), (module, b) = (reference.load_checkpoint(tmp_path / "straight"),
                           reference.load_checkpoint(interrupted))  # fmt: skip
    assert module == ResNet(depth=8, num_classes=3)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)

    records = [
        json.loads(line) for line in (interrupted / 'metrics.jsonl').read_text().splitlines()
    ]
    assert [r['step'] for r in records] == [2, 3, 6]
    assert all(np.isfinite(r['train_loss']) for r in records)
    straight_steps = (tmp_path / 'straight' / 'metrics.jsonl').read_text().count('\n')
    assert straight_steps == 2  # One record per epoch.

    # A finished run only reports; a different run in the same workdir is refused.
    again = reference.train(_tiny_config(tiny_folder, 0), interrupted)
    assert again['step'] == 6 and again['test_accuracy'] == resumed['test_accuracy']
    other = _tiny_config(tiny_folder, 0)
    other.seed = 1
    with pytest.raises(UserError, match='different run'):
        reference.train(other, interrupted)
