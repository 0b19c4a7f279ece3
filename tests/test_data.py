"""Tests of the batch sources: embedded sample, image folders, tfds errors, augmentation."""

import importlib.util
import io
import pathlib
import sys
import tarfile

import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import config_dict
from PIL import Image

from configs import base
from hwnas_jax import data, fileio
from hwnas_jax.errors import UserError
from tests.conftest import make_image_folder

REPO = pathlib.Path(__file__).resolve().parents[1]


def _config(**data_fields) -> config_dict.ConfigDict:
    config = base.get_config()
    config.data.update(data_fields)
    return config


def _make_folder(root: pathlib.Path, classes, per_class=3, size=8, splits=('train', 'test')):
    return make_image_folder(
        root, classes, [(s, per_class) for s in splits], size=size, separable=False
    )


def test_normalize_matches_formula_on_numpy_and_jax():
    images = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    expected = (images / 255.0 - np.array(data.MEAN, np.float64)) / np.array(data.STD, np.float64)
    out = data.normalize(images)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(data.normalize(jnp.asarray(images)), expected, atol=1e-5)


def test_augment_is_a_padded_crop_possibly_flipped():
    rng = np.random.default_rng(1)
    images = rng.integers(1, 256, (16, 8, 8, 3), dtype=np.uint8)
    out = data.augment(np.random.default_rng(2), images)
    assert out.shape == images.shape and out.dtype == images.dtype
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    flips = 0
    for i in range(len(images)):
        windows = [
            (padded[i, y : y + 8, x : x + 8][:, ::step], step)
            for y in range(9) for x in range(9) for step in (1, -1)
        ]  # fmt: skip
        matches = [step for w, step in windows if np.array_equal(w, out[i])]
        assert matches, f'image {i} is no crop of its padded original'
        flips += matches[0] == -1
    assert 0 < flips < len(images)


def test_iterate_batches_covers_the_data_and_resumes_mid_pass():
    images = np.arange(10 * 2 * 2 * 3, dtype=np.uint8).reshape(10, 2, 2, 3)
    labels = np.arange(10, dtype=np.int32)
    plain = list(data.iterate_batches(images, labels, 4))
    assert [len(b) for _, b in plain] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b for _, b in plain]), labels)

    def run(start):
        rng = np.random.default_rng(7)
        return list(data.iterate_batches(
            images, labels, 4, rng, augment=True, drop_remainder=True, start=start
        ))  # fmt: skip

    full, tail = run(0), run(1)
    assert len(full) == 2 and len(tail) == 1
    assert len(set(np.concatenate([b for _, b in full]).tolist())) == 8
    np.testing.assert_array_equal(tail[0][0], full[1][0])
    np.testing.assert_array_equal(tail[0][1], full[1][1])
    with pytest.raises(ValueError, match='rng'):
        next(data.iterate_batches(images, labels, 4, augment=True))


def test_embedded_sample_loads():
    images, labels = data.load_split(_config().data, 'train')
    assert images.shape == (1024, 32, 32, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int32 and set(np.unique(labels)) == set(range(10))


def test_embedded_test_split_is_other_images_than_the_train_split():
    config = _config()
    test, test_labels = data.load_split(config.data, 'test')
    train, _ = data.load_split(config.data, 'train')
    assert test.shape == (1000, 32, 32, 3) and test.dtype == np.uint8
    assert test_labels.dtype == np.int32 and set(np.unique(test_labels)) == set(range(10))
    train_keys = {image.tobytes() for image in train}
    assert not any(image.tobytes() in train_keys for image in test)
    with pytest.raises(data.DataError, match='splits'):
        data.load_split(config.data, 'validation')
    config.data.num_classes = 100
    with pytest.raises(data.DataError, match='data.num_classes is 100'):
        data.load_split(config.data, 'train')


def test_notice_records_the_digests_the_loader_checks():
    notice = (REPO / 'hwnas_jax' / 'assets' / 'NOTICE-cifar10.txt').read_text()
    for name, sha256 in data.SAMPLE_ASSETS.values():
        assert f'  {name:<24} {sha256}\n' in notice


@pytest.mark.parametrize('split', ['train', 'test'])
def test_tampered_sample_is_one_user_error(split, tmp_path, monkeypatch):
    name, _ = data.SAMPLE_ASSETS[split]
    tampered = tmp_path / name
    raw = bytearray(fileio.asset_path(name).read_bytes())
    raw[len(raw) // 2] ^= 1
    tampered.write_bytes(bytes(raw))
    monkeypatch.setattr(fileio, 'asset_path', lambda n: tmp_path / n)
    with pytest.raises(UserError, match=f'{name}.*reinstall') as info:
        data.load_split(_config().data, split)
    assert str(tampered) in str(info.value)
    tampered.unlink()
    with pytest.raises(UserError, match='missing.*reinstall'):
        data.load_split(_config().data, split)


@pytest.mark.shared
def test_embedded_test_images_are_cifar10_test_images(shared_data):
    # Independent of tools/make_sample.py: every packaged test image is the decoded JPEG of a
    # file test/<its class>/NNNN.jpg of the archive.
    decoded = {}
    with tarfile.open(shared_data / 'cifar10' / 'cifar10-jpeg.tar.gz') as archive:
        for member in archive:
            if member.isfile() and member.name.startswith('test/'):
                with Image.open(io.BytesIO(archive.extractfile(member).read())) as image:
                    pixels = np.asarray(image.convert('RGB'), dtype=np.uint8)
                label = data.CIFAR10_CLASSES.index(member.name.split('/')[1])
                decoded.setdefault(pixels.tobytes(), set()).add(label)
    assert sum(len(v) for v in decoded.values()) >= 9_990  # 10,000 files, few duplicates.
    images, labels = data.read_split('embedded', 'test')
    for image, label in zip(images, labels):
        assert label in decoded.get(image.tobytes(), ()), 'not a test image of its class'


def test_folder_labels_follow_cifar10_order_or_alphabetical(tmp_path):
    cifar = _make_folder(tmp_path / 'cifar', data.CIFAR10_CLASSES[::-1], per_class=1)
    paths, labels, names = data.list_folder(cifar, 'test')
    assert names == list(data.CIFAR10_CLASSES)
    assert [p.parent.name for p in paths] == [data.CIFAR10_CLASSES[i] for i in labels]
    other = _make_folder(tmp_path / 'other', ['zebra', 'apple', 'mango'], per_class=2)
    images, labels = data.read_split('folder', 'train', root=other)
    assert images.shape == (6, 8, 8, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, [0, 0, 1, 1, 2, 2])  # apple, mango, zebra.


def test_folder_errors_are_single_clear_data_errors(tmp_path):
    with pytest.raises(data.DataError, match='needs data.root'):
        data.read_split('folder', 'train', root=None)
    with pytest.raises(data.DataError, match='root does not exist'):
        data.read_split('folder', 'train', root=tmp_path / 'missing')
    root = _make_folder(tmp_path / 'd', ['a', 'b'], splits=('train',))
    with pytest.raises(data.DataError, match="'test' split"):
        data.read_split('folder', 'test', root=root)
    (root / 'test' / 'a').mkdir(parents=True)
    with pytest.raises(data.DataError, match='no JPEG or PNG'):
        data.read_split('folder', 'test', root=root)
    (root / 'test' / 'a' / 'x.jpg').write_bytes(b'not a jpeg')
    with pytest.raises(data.DataError, match='cannot decode'):
        data.read_split('folder', 'test', root=root)
    with pytest.raises(data.DataError, match='unknown data.source'):
        data.read_split('imagenet', 'train')


def test_config_checks_image_size_and_classes(tmp_path):
    root = _make_folder(tmp_path, ['a', 'b', 'c'], size=8)
    with pytest.raises(data.DataError, match='data.image_size=32'):
        data.load_split(_config(source='folder', root=str(root)).data, 'train')
    with pytest.raises(data.DataError, match='data.num_classes=2'):
        data.load_split(_config(source="folder", root=str(root), image_size=8, num_classes=2).data,
                        "train")  # fmt: skip


def test_missing_tfds_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, 'tensorflow_datasets', None)  # Import fails.
    with pytest.raises(data.DataError, match=r"pip install 'hwnas_jax\[tfds\]'"):
        data.load_split(_config(source='tfds').data, 'train')


def test_random_pool_is_seeded_distinct_and_augmented(tmp_path):
    config = _config()
    a_images, a_labels = data.random_pool(config, np.random.default_rng(3), 64)
    b_images, b_labels = data.random_pool(config, np.random.default_rng(3), 64)
    assert a_images.shape == (64, 32, 32, 3) and a_images.dtype == np.uint8
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_labels, b_labels)
    with pytest.raises(data.DataError, match='pool of 2000'):
        data.random_pool(config, np.random.default_rng(0), 2000)
    root = _make_folder(tmp_path, ['a', 'b'], per_class=4, size=32, splits=('train',))
    images, labels = data.random_pool(_config(source="folder", root=str(root)),
                                      np.random.default_rng(0), 5)  # fmt: skip
    assert images.shape == (5, 32, 32, 3) and set(labels) <= {0, 1}


@pytest.mark.shared
def test_make_sample_reproduces_the_packaged_samples(shared_data, tmp_path):
    spec = importlib.util.spec_from_file_location('make_sample', REPO / 'tools' / 'make_sample.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([str(shared_data / "cifar10" / "cifar10-jpeg.tar.gz"),
                      "--output", str(tmp_path)]) == 0  # fmt: skip
    packaged = REPO / 'hwnas_jax' / 'assets'
    for name in ('cifar10_sample.npz', 'cifar10_test_sample.npz'):  # Both bit-identical.
        assert (tmp_path / name).read_bytes() == (packaged / name).read_bytes(), name
        with np.load(tmp_path / name, allow_pickle=False) as npz:
            assert tuple(npz['class_names']) == data.CIFAR10_CLASSES
    notice = (tmp_path / 'NOTICE-cifar10.txt').read_text()
    assert notice == (packaged / 'NOTICE-cifar10.txt').read_text() and 'd7d05618' in notice
