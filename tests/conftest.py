"""Shared test fixtures: CPU only, and the location of the optional shared data folder."""

import os
import pathlib

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# XLA:CPU's cheapest compile settings: most of these tests' time is compilation of tiny
# networks. Subprocesses (the launch.py tests) inherit them, so in-process and launched runs
# still compute the same numbers.
os.environ.setdefault(
    'XLA_FLAGS', '--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true'
)

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared' / 'data'


@pytest.fixture(scope='session')
def shared_data() -> pathlib.Path:
    """The shared data folder next to the repository; skips the test where it is absent."""
    if not SHARED.is_dir():
        pytest.skip('shared data folder not present next to the repository')
    return SHARED


def make_image_folder(
    root, classes=('a', 'b', 'c'), counts=(('train', 4), ('test', 1)), size=32, separable=True
):
    """An image folder `root/<split>/<class>/<i>.png` of random images (the data.source=folder
    layout); with `separable`, each class is a brighter band of pixel values, so a few training
    steps can learn it. Returns `root`."""
    import numpy as np
    from PIL import Image

    root = pathlib.Path(root)
    rng = np.random.default_rng(0)
    for split, count in counts:
        for label, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                if separable:
                    pixels = rng.integers(0, 64, (size, size, 3)) + 60 * (label % 4)
                else:
                    pixels = rng.integers(0, 256, (size, size, 3))
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f'{i}.png')
    return root
